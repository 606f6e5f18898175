"""Sampling, fp32 or quantized (weights, and activations per time group or per token), from
the same noise.

Example:
    >>> from thermojax.models import load_model
    >>> from thermojax.pipeline.measure.sampling import sample
    >>> from thermojax.pipeline.weights.quantize import quantize_weights
    >>> model = load_model()
    >>> qweights, _ = quantize_weights(model, bits=4)
    >>> fp32, quant = sample(model, num_samples=8), sample(model, weights=qweights, num_samples=8)
    >>> fp32.x0.shape == quant.x0.shape == (8, 8, 8)
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.core.quant import (
    ACT_MODES,
    QTensor,
    fake_quantize_activations,
    fake_quantize_per_token,
)
from thermojax.core.timegroups import group_of
from thermojax.errors import UserInputError, value_errors_as_user_input
from thermojax.models.base import DiffusionModel, LayerWeight, SamplerSpec
from thermojax.pipeline.weights.quantize import sampler_weights

__all__ = [
    "ActParams",
    "Samples",
    "check_act_params",
    "check_channel_groups",
    "input_params",
    "quantize_input",
    "sample",
]


@dataclasses.dataclass(frozen=True)
class ActParams:
    """Activation fake-quantization parameters for each layer and each time group.

    Attributes:
        scales: float32 ``[L, S]`` (> 0), ``[2 L, S]`` with ``mask_aware``, ``[K L, S]`` with
            ``channel_groups = K``.
        zero_points: float32 like ``scales``, integer values in ``[0, 2**bits - 1]``.
        edges: int32 ``[S + 1]`` time-group edges (``arange(T + 1)`` for a per-timestep schedule).
        bits: activation bit width.
        mode: ``static`` (the step's group's scales and zero points quantize each layer's
            input) or ``dynamic`` (each token's own range, measured in the step:
            :func:`~thermojax.core.quant.fake_quantize_per_token`; ``scales`` and
            ``zero_points`` then quantize nothing, ``edges`` still cut the drift into groups).
        mask_aware: rows ``0..L-1`` quantize the unmasked positions of a masked-diffusion LM,
            rows ``L..2L-1`` the masked ones (:func:`~thermojax.pipeline.measure.calibrate.act_rows`;
            the model's ``position_kinds`` tells them apart at every step).
        channel_groups: K > 1: row ``k L + j`` quantizes the ``k``-th of K equal blocks of
            layer ``j``'s input channels (1: one set per layer's whole input).
    """

    scales: np.ndarray
    zero_points: np.ndarray
    edges: np.ndarray
    bits: int
    mode: str = "static"
    mask_aware: bool = False
    channel_groups: int = 1


@dataclasses.dataclass(frozen=True)
class Samples:
    """Samples and the sampler trajectory.

    Attributes:
        x0: ``[N, *data_shape]`` (``[N, 8, 8]`` for digits) final samples in pixel range 0..16.
        trajectory: ``[S, N, D]`` model-space state after each step, in the order of
            ``timesteps`` (``trajectory[0]`` is the final model-space sample): float32, or int32
            token ids for a masked-diffusion LM.
        sampler: the sampler that ran (``None``: the model's own, every timestep).
        timesteps: int32 ``[S]``, the model timestep of each step, ascending (``None``:
            ``arange(S)``, every timestep).
    """

    x0: np.ndarray
    trajectory: np.ndarray
    sampler: SamplerSpec | None = None
    timesteps: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.timesteps is None:
            object.__setattr__(self, "timesteps", np.arange(len(self.trajectory), dtype=np.int32))


def input_params(
    table: jax.Array,
    layer: int,
    column,
    *,
    shape: tuple[int, ...],
    num_layers: int,
    channel_groups: int = 1,
    kinds: jax.Array | None = None,
) -> jax.Array:
    """Layer ``layer``'s parameter of ``table`` ``[R, X]`` at ``column`` (a time group or
    timestep, scalar; or int ``[N]``, one per sample along the input's leading axis), shaped to
    broadcast against the layer input of ``shape``:

    - one set per layer (``R = L``): ``table[layer, column]``;
    - ``channel_groups = K > 1`` (``R = K L``, row ``k L + layer`` for the ``k``-th block of
      ``C / K`` input channels): ``[..., K, 1]``, against the input viewed as ``[..., K, C / K]``;
    - mask-aware (``R = 2 L`` and the step's ``kinds``, bool ``[N, length]``, True where
      masked): each position's row, ``[N, length, 1]``.
    """
    rank = len(shape)
    per_sample = jnp.ndim(column) == 1

    def value(row: int) -> jax.Array:
        v = table[row, column]
        return v.reshape((-1,) + (1,) * (rank - 1)) if per_sample else v.reshape((1,) * rank)

    if channel_groups > 1:
        blocks = [value(k * num_layers + layer) for k in range(channel_groups)]
        return jnp.concatenate(blocks, axis=-1)[..., None]
    own = value(layer)
    if table.shape[0] == num_layers:
        return own
    if kinds is None:
        raise ValueError("mask-aware activation parameters need a model with masked positions")
    return jnp.where(kinds[..., None], value(num_layers + layer), own)


def quantize_input(
    h: jax.Array,
    scales: jax.Array,
    zero_points: jax.Array,
    layer: int,
    column,
    *,
    bits: int,
    num_layers: int,
    channel_groups: int = 1,
    kinds: jax.Array | None = None,
) -> jax.Array:
    """Layer ``layer``'s input ``h`` ``[..., C]`` fake-quantized with its parameters of
    :func:`input_params` (per tensor, per block of channels, or per position kind)."""
    options = {"num_layers": num_layers, "channel_groups": channel_groups, "kinds": kinds}
    scale = input_params(scales, layer, column, shape=h.shape, **options)
    zero = input_params(zero_points, layer, column, shape=h.shape, **options)
    if channel_groups == 1:
        return fake_quantize_activations(h, scale, zero, bits=bits)
    grouped = h.reshape(*h.shape[:-1], channel_groups, h.shape[-1] // channel_groups)
    return fake_quantize_activations(grouped, scale, zero, bits=bits).reshape(h.shape)


@partial(jax.jit, static_argnames=("num_samples", "bits", "act_mode", "sampler", "channel_groups"))
def _sample_program(
    model: DiffusionModel,
    weights: dict[str, LayerWeight] | None,
    scales: jax.Array | None,
    zero_points: jax.Array | None,
    edges: jax.Array | None,
    key: jax.Array,
    *,
    num_samples: int,
    bits: int,
    sampler: SamplerSpec | None,
    act_mode: str = "static",
    channel_groups: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """``(x0, trajectory)`` in model space. The model is a pytree argument (its parameters are
    traced, its architecture and schedule static), so models that differ only in parameters
    share this compiled program; so are the weights (``None``: the model's own), packed
    QTensors included: their codes, scales and zero points are arguments, never constants.
    ``act_mode="dynamic"`` quantizes each layer input per token at ``bits`` (no parameters)."""
    act_hook = None
    if act_mode == "dynamic":

        def act_hook(layer: int, h: jax.Array, t: jax.Array, kinds=None) -> jax.Array:
            return fake_quantize_per_token(h, bits=bits)

    elif scales is not None:
        num_layers = len(model.layer_names)

        def act_hook(layer: int, h: jax.Array, t: jax.Array, kinds=None) -> jax.Array:
            g = group_of(t, edges)
            return quantize_input(
                h,
                scales,
                zero_points,
                layer,
                g,
                bits=bits,
                num_layers=num_layers,
                channel_groups=channel_groups,
                kinds=kinds,
            )

    return model.sample(
        weights, key=key, num_samples=num_samples, act_hook=act_hook, sampler=sampler
    )


def check_channel_groups(model: DiffusionModel, channel_groups: int) -> None:
    """``ValueError`` unless ``channel_groups`` is an integer >= 1 dividing every layer's input
    width."""
    integer = isinstance(channel_groups, int | np.integer) and not isinstance(channel_groups, bool)
    if not integer or channel_groups < 1:
        raise ValueError(f"channel_groups must be an integer >= 1, got {channel_groups!r}")
    for name, width in zip(model.layer_names, model.layer_input_widths, strict=True):
        if width % channel_groups:
            raise ValueError(
                f"channel_groups={channel_groups} does not divide the input width {width} of "
                f"layer {name}"
            )


def check_act_params(model: DiffusionModel, act_params: ActParams) -> None:
    """``act_params`` fit ``model``: a known mode, ``[L, G]`` scales and zero points for its L
    layers (``[2 L, G]`` mask-aware, for a model with masked positions), edges from 0 to its T
    timesteps, strictly increasing (``ValueError`` naming which)."""
    if act_params.mode not in ACT_MODES:
        raise ValueError(f"act_params mode must be one of {ACT_MODES}, got {act_params.mode!r}")
    scales = np.asarray(act_params.scales)
    zero_points = np.asarray(act_params.zero_points)
    edges = np.asarray(act_params.edges)
    num_layers, num_timesteps = len(model.layer_names), model.num_timesteps
    if act_params.mask_aware and not hasattr(model, "position_kinds"):
        raise ValueError(f"act_params mask_aware: {type(model).__name__} has no masked positions")
    groups = int(act_params.channel_groups)
    if groups > 1:
        check_channel_groups(model, groups)
        if act_params.mask_aware:
            raise ValueError("act_params: mask_aware with channel_groups > 1 is not supported")
    rows = (2 if act_params.mask_aware else groups) * num_layers
    if scales.ndim != 2 or scales.shape[0] != rows or scales.shape != zero_points.shape:
        raise ValueError(
            f"act_params scales {scales.shape} and zero_points {zero_points.shape} must both be "
            f"[{rows // num_layers} L={rows}, S]"
        )
    if edges.shape != (scales.shape[1] + 1,) or edges[0] != 0 or edges[-1] != num_timesteps:
        raise ValueError(
            f"act_params edges (shape {edges.shape}, first {edges[:1]}, last {edges[-1:]}) must be "
            f"[S+1={scales.shape[1] + 1}] from 0 to T={num_timesteps}"
        )
    if np.any(np.diff(edges) < 1):
        raise ValueError(f"act_params edges must be strictly increasing, got {edges.tolist()}")


def sample(
    model: DiffusionModel,
    *,
    weights: Mapping[str, QTensor | jax.Array] | None = None,
    act_params: ActParams | None = None,
    num_samples: int = 64,
    seed: int = 0,
    sampler: SamplerSpec | None = None,
) -> Samples:
    """Sampling, fp32 or quantized, as one jitted ``lax.scan``.

    The same ``seed`` gives the same initial and per-step noise whatever the weights and
    activation parameters, so fp32 and quantized trajectories compare step by step.

    Args:
        model: the model.
        weights: ``None`` for fp32, else layer name -> QTensor (from :func:`quantize_weights`),
            run packed (each layer dequantized inside the step, right before its matmul), or
            ``[in, out]`` array.
        act_params: per-layer, per-time-group activation fake-quantization (``None``: fp32
            activations); groups are on the model's T timesteps, so the step at timestep t takes
            row ``group_of(t, edges)`` whatever the sampler and its number of steps. With
            ``mode="dynamic"`` every layer input is quantized per token at ``bits`` instead.
        num_samples: N >= 1.
        seed: PRNG seed of the noise.
        sampler: the reverse process and its steps (``None``: the model's own, every timestep).

    Returns:
        :class:`Samples` with pixel-space ``x0`` and the model-space trajectory.

    Raises:
        UserInputError: ``num_samples < 1``, or sampler steps the model cannot run.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
        raise UserInputError(f"num_samples must be a positive integer, got {num_samples!r}")
    if num_samples < 1:
        raise UserInputError(f"num_samples must be at least 1, got {num_samples}")
    with value_errors_as_user_input("sampling"):
        timesteps = (SamplerSpec() if sampler is None else sampler).timesteps(model.num_timesteps)
    chosen = sampler_weights(model, weights)
    scales = zero_points = edges = None
    bits = 0
    act_mode = "static"
    if act_params is not None:
        check_act_params(model, act_params)
        bits, act_mode = int(act_params.bits), act_params.mode
    if act_params is not None and act_mode == "static":
        # Each timestep's row, gathered here: the program then sees [L, T] parameters whatever
        # the number of groups, so one compilation serves every num_time_groups of a sweep.
        # The sampler picks exactly the values it would pick with group_of(t, edges).
        num_timesteps = int(model.num_timesteps)
        group = np.searchsorted(act_params.edges, np.arange(num_timesteps), side="right") - 1
        scales = jnp.asarray(np.asarray(act_params.scales, np.float32)[:, group])
        zero_points = jnp.asarray(np.asarray(act_params.zero_points, np.float32)[:, group])
        edges = jnp.arange(num_timesteps + 1, dtype=jnp.int32)
    x0, trajectory = _sample_program(
        model,
        chosen,
        scales,
        zero_points,
        edges,
        jax.random.PRNGKey(seed),
        num_samples=int(num_samples),
        bits=bits,
        act_mode=act_mode,
        channel_groups=int(act_params.channel_groups) if act_params is not None else 1,
        sampler=sampler,
    )
    trajectory = np.asarray(trajectory)
    integer = np.issubdtype(trajectory.dtype, np.integer)  # token states stay token ids
    return Samples(
        x0=model.to_pixels(x0),
        trajectory=trajectory.astype(np.int32 if integer else np.float32),
        sampler=sampler,
        timesteps=timesteps,
    )
