"""Per-timestep activation statistics of every quantizable layer, collected in one jitted scan."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.core.quant import QTensor
from thermojax.core.timegroups import step_edges, timestep_edges, uniform_edges
from thermojax.errors import UserInputError, value_errors_as_user_input
from thermojax.files import atomic_file
from thermojax.models.base import DiffusionModel, LayerWeight, SamplerSpec, run_sampler
from thermojax.pipeline.measure.sampling import check_channel_groups
from thermojax.pipeline.weights.quantize import quantize_weights, sampler_weights

__all__ = [
    "CALIBRATION_VERSION",
    "MASKED_SUFFIX",
    "CalibrationStats",
    "act_rows",
    "calibrate",
    "calibration_model",
]

MASKED_SUFFIX = " [masked]"
"""Appended to a layer's name for its masked positions' row (``act.mask_aware``)."""


def act_rows(
    layer_names: tuple[str, ...], mask_aware: bool, channel_groups: int = 1
) -> tuple[str, ...]:
    """The rows of activation statistics and parameters: one per layer; with ``mask_aware``
    (a masked-diffusion LM's masked and unmasked positions apart) the L layers for the
    unmasked positions, then the L layers again for the masked ones (named with
    :data:`MASKED_SUFFIX`); with ``channel_groups = K > 1`` the L layers for each of the K
    blocks of input channels in turn (row ``k L + j``, named ``"<layer> [channels k/K]"``).

    Example:
        >>> act_rows(("a", "b"), True)
        ('a', 'b', 'a [masked]', 'b [masked]')
        >>> act_rows(("a", "b"), False, 2)
        ('a [channels 1/2]', 'b [channels 1/2]', 'a [channels 2/2]', 'b [channels 2/2]')
    """
    names = tuple(layer_names)
    if channel_groups > 1:
        return tuple(
            f"{n} [channels {k + 1}/{channel_groups}]" for k in range(channel_groups) for n in names
        )
    return names + tuple(n + MASKED_SUFFIX for n in names) if mask_aware else names


CALIBRATION_VERSION = 2
"""Bump when :func:`calibrate` computes different numbers for the same inputs: cached statistics
(keyed with this version) from older code are then never used again."""


@dataclasses.dataclass(frozen=True)
class CalibrationStats:
    """Input-activation statistics of each quantizable layer at each step the sampler ran.

    The time axis is the calibration sampler's S steps in ascending timestep order
    (``timesteps``); for the full ancestral sampler that is every timestep, ``S = T``. Time
    groups are defined on the model's T timesteps: :meth:`uniform_edges` and :meth:`step_edges`
    put them onto the S steps, :meth:`model_edges` brings groups made on the steps back.

    Attributes:
        layer_names: the L layers, in the order of the leading axis.
        act_min, act_max, act_mean, act_std: float32 ``[L, S]`` over all samples and channels.
        act_samples: float32 ``[L, S, K]``, K activation values drawn at random (with replacement)
            from the values each layer saw at each step.
        timesteps: int32 ``[S]``, the model timestep of each step (``None``: ``arange(S)``).
        model_timesteps: the model's T (``None``: S).
        sampler: ``{"sampler", "steps", "eta"}`` of the calibration sampler (``None``: DDPM).
    """

    layer_names: tuple[str, ...]
    act_min: np.ndarray
    act_max: np.ndarray
    act_mean: np.ndarray
    act_std: np.ndarray
    act_samples: np.ndarray
    timesteps: np.ndarray | None = None
    model_timesteps: int | None = None
    sampler: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        steps = int(self.act_min.shape[1])
        timesteps = np.arange(steps) if self.timesteps is None else np.asarray(self.timesteps)
        total = steps if self.model_timesteps is None else int(self.model_timesteps)
        if timesteps.shape != (steps,) or (steps and (timesteps[-1] >= total or timesteps[0] < 0)):
            raise ValueError(
                f"calibration timesteps {timesteps.tolist()} must be S={steps} steps in [0, {total})"
            )
        object.__setattr__(self, "timesteps", timesteps.astype(np.int32))
        object.__setattr__(self, "model_timesteps", total)
        if self.sampler is None:
            object.__setattr__(self, "sampler", {"sampler": "ddpm", "steps": total, "eta": 0.0})

    @property
    def num_timesteps(self) -> int:
        """S, the length of the time axis (the steps the calibration sampler ran)."""
        return int(self.act_min.shape[1])

    @property
    def full(self) -> bool:
        """Whether the steps are every one of the model's timesteps (``S = T``)."""
        return self.num_timesteps == self.model_timesteps

    def step_edges(self, edges: np.ndarray) -> np.ndarray:
        """Groups on the model's T timesteps -> over these S steps (``core.timegroups.step_edges``).

        Raises:
            UserInputError: a group that holds none of the calibration steps.
        """
        if self.full:
            return np.asarray(edges, np.int32)
        with value_errors_as_user_input(f"calibration with {self.describe()}"):
            return step_edges(edges, self.timesteps)

    def uniform_edges(self, num_groups: int) -> np.ndarray:
        """The model-axis uniform groups (``i * T // G``) over these steps."""
        return self.step_edges(uniform_edges(self.model_timesteps, num_groups))

    def model_edges(self, edges: np.ndarray) -> np.ndarray:
        """Groups over these steps -> on the model's T timesteps (``core.timegroups.timestep_edges``)."""
        if self.full:
            return np.asarray(edges, np.int32)
        return timestep_edges(edges, self.timesteps, self.model_timesteps)

    def describe(self) -> str:
        """The calibration sampler in words, e.g. ``DDIM, 50 steps, eta 0``."""
        spec = SamplerSpec(self.sampler["sampler"], self.sampler["steps"], self.sampler["eta"])
        return spec.describe(self.model_timesteps)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics to an ``.npz`` file atomically (``thermojax.files.atomic_file``)."""
        with atomic_file(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                layer_names=np.asarray(self.layer_names, dtype=str),
                act_min=self.act_min,
                act_max=self.act_max,
                act_mean=self.act_mean,
                act_std=self.act_std,
                act_samples=self.act_samples,
                timesteps=self.timesteps,
                model_timesteps=np.asarray(self.model_timesteps, np.int64),
                sampler=np.asarray(json.dumps(self.sampler, sort_keys=True)),
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CalibrationStats:
        """Read statistics written by :meth:`save` (one written before samplers: every step)."""
        with np.load(path, allow_pickle=False) as data:
            has_steps = "timesteps" in data.files
            return cls(
                layer_names=tuple(str(n) for n in data["layer_names"]),
                act_min=np.asarray(data["act_min"], np.float32),
                act_max=np.asarray(data["act_max"], np.float32),
                act_mean=np.asarray(data["act_mean"], np.float32),
                act_std=np.asarray(data["act_std"], np.float32),
                act_samples=np.asarray(data["act_samples"], np.float32),
                timesteps=np.asarray(data["timesteps"], np.int32) if has_steps else None,
                model_timesteps=int(data["model_timesteps"]) if has_steps else None,
                sampler=json.loads(str(data["sampler"])) if has_steps else None,
            )


def _layer_stats(flat: jax.Array, key: jax.Array, samples_per_step: int):
    """min, max, mean, std of ``flat`` and ``samples_per_step`` of its values, at random."""
    mean = jnp.mean(flat)
    std = jnp.sqrt(jnp.maximum(jnp.mean(jnp.square(flat - mean)), 0.0))
    idx = jax.random.randint(key, (samples_per_step,), 0, flat.shape[0])
    return jnp.stack([jnp.min(flat), jnp.max(flat), mean, std]), flat[idx]


def _kind_stats(
    h: jax.Array, chosen: jax.Array, key: jax.Array, samples_per_step: int, fallback
) -> tuple[jax.Array, jax.Array]:
    """The statistics of the positions ``chosen`` (bool ``[N, length]``) of ``h``
    ``[N, length, C]`` only, and values drawn from them; ``fallback`` (all positions') where
    no position is chosen at this step (its parameters then quantize nothing here)."""
    weight = jnp.broadcast_to(chosen[..., None], h.shape).reshape(-1)
    flat = h.reshape(-1)
    count = jnp.sum(weight)
    some = count > 0
    n = jnp.maximum(count, 1).astype(jnp.float32)
    mean = jnp.sum(jnp.where(weight, flat, 0.0)) / n
    var = jnp.sum(jnp.where(weight, jnp.square(flat - mean), 0.0)) / n
    stats = jnp.stack(
        [
            jnp.min(jnp.where(weight, flat, jnp.inf)),
            jnp.max(jnp.where(weight, flat, -jnp.inf)),
            mean,
            jnp.sqrt(jnp.maximum(var, 0.0)),
        ]
    )
    # The k-th draw is the position of the k-th of samples_per_step uniform ranks among the
    # chosen values (their cumulative count), so each chosen value is equally likely.
    ranks = jax.random.randint(key, (samples_per_step,), 0, jnp.maximum(count, 1))
    idx = jnp.searchsorted(jnp.cumsum(weight), ranks, side="right")
    picks = flat[jnp.minimum(idx, flat.shape[0] - 1)]
    all_stats, all_picks = fallback
    return jnp.where(some, stats, all_stats), jnp.where(some, picks, all_picks)


def _channel_stats(
    h: jax.Array, groups: int, key: jax.Array, samples_per_step: int
) -> list[tuple[jax.Array, jax.Array]]:
    """:func:`_layer_stats` of each of ``groups`` equal blocks of ``h``'s last axis."""
    blocks = h.reshape(-1, groups, h.shape[-1] // groups).swapaxes(0, 1).reshape(groups, -1)
    keys = jax.random.split(key, groups)
    return [_layer_stats(blocks[k], keys[k], samples_per_step) for k in range(groups)]


@partial(
    jax.jit,
    static_argnames=(
        "num_samples",
        "samples_per_step",
        "sampler",
        "mask_aware",
        "channel_groups",
    ),
)
def _calibration_program(
    model: DiffusionModel,
    weights: dict[str, LayerWeight],
    key: jax.Array,
    *,
    num_samples: int,
    samples_per_step: int,
    sampler: SamplerSpec | None,
    mask_aware: bool = False,
    channel_groups: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """``(stats [S, R, 4] = min/max/mean/std, samples [S, R, K])`` from one sampler scan, R the
    :func:`act_rows` (``mask_aware``: the unmasked positions' L rows, then the masked ones').

    The model is a pytree argument, so models that differ only in parameters share the program;
    so are the weights, packed QTensors included (each layer dequantized inside the step).
    """

    def observe(t, layer_inputs: tuple[jax.Array, ...], step_key: jax.Array, x_t: jax.Array):
        keys = jax.random.split(step_key, len(layer_inputs))
        stats, picks = [], []
        # Layers have different input widths, so they cannot be stacked into one array; this
        # trace-time loop over the L layers unrolls into one fused program per step.
        for h, layer_key in zip(layer_inputs, keys, strict=True):
            layer_stats, layer_picks = _layer_stats(h.reshape(-1), layer_key, samples_per_step)
            stats.append(layer_stats)
            picks.append(layer_picks)
        if mask_aware:
            masked = model.position_kinds(x_t)
            keys = jax.random.split(jax.random.fold_in(step_key, 1), 2 * len(layer_inputs))
            by_kind: list[list] = [[], []]
            for j, h in enumerate(layer_inputs):
                for kind, chosen in enumerate((~masked, masked)):
                    by_kind[kind].append(
                        _kind_stats(
                            h, chosen, keys[2 * j + kind], samples_per_step, (stats[j], picks[j])
                        )
                    )
            rows = by_kind[0] + by_kind[1]
            stats, picks = [s for s, _ in rows], [p for _, p in rows]
        elif channel_groups > 1:
            keys = jax.random.split(jax.random.fold_in(step_key, 2), len(layer_inputs))
            per_layer = [
                _channel_stats(h, channel_groups, k, samples_per_step)
                for h, k in zip(layer_inputs, keys, strict=True)
            ]
            rows = [per_layer[j][k] for k in range(channel_groups) for j in range(len(per_layer))]
            stats, picks = [s for s, _ in rows], [p for _, p in rows]
        return jnp.stack(stats), jnp.stack(picks)

    _, _, (stats, picks) = run_sampler(
        model, weights, key=key, num_samples=num_samples, observe=observe, sampler=sampler
    )
    return stats, picks


def _check_qweights(
    model: DiffusionModel, qweights: Mapping[str, QTensor], bit_width: int, group_size: int
) -> None:
    missing = [n for n in model.layer_names if n not in qweights]
    if missing:
        raise ValueError(f"qweights lack layer(s) {missing}; expected {list(model.layer_names)}")
    wrong = [
        f"{n} ({type(q).__name__} bits={getattr(q, 'bits', None)}, "
        f"group_size={getattr(q, 'group_size', None)})"
        for n, q in ((n, qweights[n]) for n in model.layer_names)
        # A layer may keep other bits than bit_width (quant.keep_bits); the group size is the run's.
        if not isinstance(q, QTensor) or q.group_size != group_size
    ]
    if wrong:
        raise ValueError(
            f"qweights must be QTensors at group_size={group_size} (run at bit_width={bit_width}); "
            f"got {', '.join(wrong)}"
        )


def calibration_model(model: DiffusionModel) -> DiffusionModel:
    """The model calibration runs: ``model.calibration_model()`` where the model has one (a
    masked-diffusion LM whose calibration samples start with passages of ``data.calibration``),
    else ``model`` itself. Same layers, weights and timesteps; only its initial states differ.
    """
    chosen = getattr(model, "calibration_model", None)
    return model if chosen is None else chosen()


def calibrate(
    model: DiffusionModel,
    *,
    bit_width: int,
    group_size: int = 64,
    num_samples: int = 128,
    seed: int = 0,
    samples_per_step: int = 64,
    qweights: Mapping[str, QTensor] | None = None,
    sampler: SamplerSpec | None = None,
    mask_aware: bool = False,
    channel_groups: int = 1,
) -> CalibrationStats:
    """Per-timestep input-activation statistics of every quantizable layer.

    Runs the model's ancestral sampler on ``num_samples`` samples with its weights quantized at
    ``bit_width`` (kept packed, each layer dequantized inside the step, as post-training
    quantization runs them) and full-precision activations, in one jitted ``lax.scan`` over the
    sampler's steps (every one of the T timesteps by default; DDIM's S with ``sampler``). The noise is the same as
    :func:`thermojax.pipeline.measure.sampling.sample` with the same ``seed``, ``num_samples`` and
    ``sampler``, unless the model calibrates from other initial states
    (:func:`calibration_model`).

    Args:
        model: the model.
        bit_width: weight bits, 2, 4 or 8.
        group_size: weight quantization group size along each layer's input dimension.
        num_samples: N >= 1 calibration samples.
        seed: PRNG seed of the sampler noise (and of the activation subsample).
        samples_per_step: K >= 1 activation values kept per layer and timestep.
        qweights: the weights already quantized at ``group_size`` by
            :func:`~thermojax.pipeline.weights.quantize.quantize_weights` (the pipeline has them, by the
            run's method, some layers perhaps at other bits); ``None`` quantizes them here
            (``minmax`` at ``bit_width``).
        sampler: the sampler that runs (``None``: the model's own, every timestep).
        mask_aware: the statistics of the masked and the unmasked positions apart (a model
            with ``position_kinds``: a masked-diffusion LM), ``2 L`` rows (:func:`act_rows`);
            a step without positions of a kind gives that kind all positions' statistics.
        channel_groups: K > 1: the statistics of each of K equal blocks of every layer's input
            channels apart, ``K L`` rows (:func:`act_rows`; K must divide every input width).

    Returns:
        :class:`CalibrationStats` with ``[R, S]`` statistics and ``[R, S, K]`` samples, R the
        rows of :func:`act_rows`.

    Raises:
        UserInputError: ``num_samples < 1``, ``samples_per_step < 1``, bad ``bit_width`` or a
            ``group_size`` that does not divide a layer width.
        ValueError: ``qweights`` that lack a layer or were quantized at other bits or group size.
    """
    for name, value in (("num_samples", num_samples), ("samples_per_step", samples_per_step)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise UserInputError(f"calibration {name} must be an integer >= 1, got {value!r}")
    if mask_aware and not hasattr(model, "position_kinds"):
        raise ValueError(f"mask_aware: {type(model).__name__} has no masked positions")
    if channel_groups != 1:
        check_channel_groups(model, channel_groups)
        if mask_aware:
            raise ValueError("mask_aware with channel_groups > 1 is not supported")
    if qweights is None:
        qweights, _ = quantize_weights(model, bits=bit_width, group_size=group_size)
    else:
        _check_qweights(model, qweights, bit_width, group_size)
    stats, picks = _calibration_program(
        calibration_model(model),
        sampler_weights(model, qweights),
        jax.random.PRNGKey(seed),
        num_samples=int(num_samples),
        samples_per_step=int(samples_per_step),
        sampler=sampler,
        mask_aware=bool(mask_aware),
        channel_groups=int(channel_groups),
    )
    stats = np.asarray(stats, np.float32).transpose(2, 1, 0)  # [4, R, S]
    spec = SamplerSpec() if sampler is None else sampler
    return CalibrationStats(
        layer_names=act_rows(tuple(model.layer_names), mask_aware, channel_groups),
        act_min=stats[0].copy(),
        act_max=stats[1].copy(),
        act_mean=stats[2].copy(),
        act_std=stats[3].copy(),
        act_samples=np.asarray(picks, np.float32).transpose(1, 0, 2).copy(),
        timesteps=spec.timesteps(model.num_timesteps),
        model_timesteps=int(model.num_timesteps),
        sampler=spec.to_dict(model.num_timesteps),
    )
