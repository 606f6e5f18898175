"""The narrow interface a diffusion model offers to calibration, quantized sampling and evaluation.

Callers (``thermojax.pipeline.measure.calibrate``, ``thermojax.pipeline.measure.sampling``, the pipeline) only use what is declared
here, so a later model (another architecture, a real safetensors checkpoint) plugs in by
implementing this protocol; the digits DDPM is the first implementation, not a special case.

A model is a pytree whose leaves are its parameters and nothing else; its architecture, noise
schedule, quality reference and metadata are static (marked ``pytree_node=False`` on the field),
hashable and compared by content. Jitted programs take the model as an argument: one compiled
program serves every model of the same architecture and shapes, and no parameter is baked into a
program as a constant.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.core.quant import QTensor, dequantize
from thermojax.core.sample_metrics import class_coverage, frechet_distance

Array = jax.Array

LayerWeight = QTensor | Array
"""One layer's weight as a sampler takes it: the ``[in, out]`` kernel, or a :class:`QTensor` of
its transpose ``[out, in]`` (how :func:`~thermojax.pipeline.weights.quantize.quantize_weights`
stores it: groups along the input axis, the last axis of the array it quantized), which the model
dequantizes inside its step with :func:`dense`, right before the layer's matmul."""

SAMPLERS = ("ddpm", "ddim")
"""The reverse processes a DDPM-family model samples with (:class:`SamplerSpec`)."""


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """Which reverse process runs, and at which of the model's T training timesteps.

    - ``ddpm``: the ancestral sampler (Ho et al. 2020) at every timestep ``T-1 .. 0``;
      ``steps`` must be ``None`` or T.
    - ``ddim``: DDIM (Song et al. 2021) over ``steps`` timesteps spaced "trailing" as in
      diffusers (``round(T - k * T / S) - 1`` for ``k = 0 .. S-1``: the first step is at
      ``T - 1``, pure noise, as the ancestral sampler's), with noise ``eta`` (0: deterministic
      given the initial noise; 1 with ``S = T``: the ancestral sampler's update).

    Static and hashable: a jitted sampler takes it as a static argument.

    Example:
        >>> SamplerSpec("ddim", steps=4).timesteps(1000).tolist()
        [249, 499, 749, 999]
        >>> SamplerSpec().timesteps(3).tolist(), SamplerSpec().describe(1000)
        ([0, 1, 2], 'DDPM, 1000 steps')
    """

    name: str = "ddpm"
    steps: int | None = None
    eta: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.name!r}")
        steps = self.steps
        if steps is not None and (isinstance(steps, bool) or int(steps) != steps or int(steps) < 1):
            raise ValueError(f"sampler steps must be an integer >= 1, got {steps!r}")
        eta = float(self.eta)
        if not (math.isfinite(eta) and 0.0 <= eta <= 1.0):
            raise ValueError(f"sampler eta must be in [0, 1], got {self.eta!r}")
        if self.name == "ddpm" and eta != 0.0:
            raise ValueError(f"sampler eta={self.eta!r} is DDIM's noise; the ddpm sampler has none")
        object.__setattr__(self, "steps", None if steps is None else int(steps))
        object.__setattr__(self, "eta", eta)

    def num_steps(self, num_timesteps: int) -> int:
        """S, the number of steps that run on a model with ``num_timesteps`` training steps."""
        return int(num_timesteps) if self.steps is None else self.steps

    def timesteps(self, num_timesteps: int) -> np.ndarray:
        """The S timesteps that run, ascending, int32 ``[S]`` in ``[0, T)``.

        Raises:
            ValueError: ``steps > T``, or ``ddpm`` with ``steps != T``.
        """
        total = int(num_timesteps)
        steps = self.num_steps(total)
        if steps > total:
            raise ValueError(f"steps={steps}: exceeds the model's T={total} timesteps")
        if self.name == "ddpm" and steps != total:
            raise ValueError(
                f"steps={steps}: the ddpm sampler runs all T={total} timesteps "
                "(fewer steps: sampler=ddim)"
            )
        if steps == total:
            return np.arange(total, dtype=np.int32)
        k = np.arange(steps, dtype=np.float64)
        trailing = np.floor(total - k * total / steps + 0.5).astype(np.int64) - 1
        return np.sort(trailing).astype(np.int32)

    def describe(self, num_timesteps: int) -> str:
        """``DDPM, 1000 steps`` / ``DDIM, 50 steps, eta 0``."""
        text = f"{self.name.upper()}, {self.num_steps(num_timesteps)} steps"
        return text + (f", eta {self.eta:g}" if self.name == "ddim" else "")

    def to_dict(self, num_timesteps: int) -> dict[str, Any]:
        """``{"sampler", "steps", "eta"}`` with ``steps`` resolved to S."""
        return {"sampler": self.name, "steps": self.num_steps(num_timesteps), "eta": self.eta}


def dense(weight: LayerWeight, layer_input: Array) -> Array:
    """A weight ready for its float32 matmul: a :class:`QTensor` dequantized to the array it
    quantized (a layer's ``[out, in]``), a bf16 / f16 array upcast, a float32 array as it is.

    Models call it inside the jitted step where a layer consumes its weight (as Qwix's
    quantized layers do), so a compiled sampler takes the packed codes, scales and zero points
    (or the stored half-precision tensors) as arguments and converts one layer at a time,
    never holding a float32 copy of the whole network. A float32 array passes untouched, so
    the dequantize-first and float32 paths compile as before.

    A conversion is tied to ``layer_input``, so that XLA can neither hoist it out of the
    sampler's ``lax.scan`` (its loop-invariant code motion otherwise holds every layer at
    float32 for the whole run) nor run it long before the layer's turn (XLA:CPU's default
    scheduler favours concurrency over memory and would convert every layer at the start of
    each step): an optimization barrier over both, then a select of the weight on a predicate
    of ``layer_input`` that is true for every value, NaN included, but unknown to the compiler
    (the barrier alone is gone by the time XLA schedules). Neither changes a bit. Measured on a
    4-layer synthetic Dream (``write_dream_like(scale=4, layers=4)``, bf16, one sequence of 16
    tokens, XLA:CPU), the sampler's temporaries: 275 MB with W4 weights and 288 MB with the
    bf16 weights themselves, 511 MB for either without the tie, against 369 MB for every linear
    layer at float32. Of the 275 MB, 136 MB are the largest layer (the output projection) at
    its turn and 136 MB the embedding table, which XLA:CPU gathers from at float32.

    A model whose matmul takes the kernel ``[in, out]`` transposes a dequantized QTensor after:
    its groups run along the input axis.

    Args:
        weight: a layer's weight: packed, half precision or float32.
        layer_input: the layer's input (any array the step computes before the matmul).

    Example:
        >>> from thermojax.core.quant import quantize
        >>> w, x = jnp.arange(8.0).reshape(2, 4), jnp.ones((3, 4))
        >>> dense(quantize(w, bits=8, group_size=4), x).dtype, dense(w, x) is w
        (dtype('float32'), True)
    """
    if not isinstance(weight, QTensor) and weight.dtype == jnp.float32:
        return weight
    weight, _ = jax.lax.optimization_barrier((weight, layer_input))
    first = jnp.ravel(layer_input)[0]
    always = (first <= jnp.inf) | jnp.isnan(first)  # true, but only known when it runs
    if isinstance(weight, QTensor):
        codes = jnp.where(always, weight.codes, jnp.zeros((), weight.codes.dtype))
        return dequantize(dataclasses.replace(weight, codes=codes))
    return jnp.where(always, weight, jnp.zeros((), weight.dtype)).astype(jnp.float32)


ActHook = Callable[..., Array]
"""``hook(layer_index, layer_input, t[, kinds]) -> layer_input'``: applied to the input of each
quantizable layer (``layer_index`` is a static Python int in ``layer_names`` order, ``t`` the
traced scalar timestep). A model whose positions are of two kinds (a masked-diffusion LM: masked
or not, :meth:`position_kinds`) passes ``kinds`` too, bool ``[N, length]``, True at the masked
positions; hooks take it as an optional argument. Quantized sampling passes a fake-quantizer;
``None`` means full precision."""


@runtime_checkable
class QualityReference(Protocol):
    """Real data plus a classifier, used to judge generated samples (optional for a model).

    It is static metadata of the model's pytree, so it must be hashable, with equality (and hash)
    by content: two loads of one reference compare equal.
    """

    num_classes: int

    def real_pixels(self) -> np.ndarray:
        """The real data set in pixel space, ``[M, *data_shape]``."""
        ...

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """Classifier feature vectors ``[N, F]`` (float64) for pixel-space samples."""
        ...

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities ``[N, num_classes]`` (float64) for pixel-space samples."""
        ...


@runtime_checkable
class DiffusionModel(Protocol):
    """A trained diffusion model whose quantizable layers can be swapped and observed.

    It is a pytree: ``jax.tree.leaves(model)`` are its parameters, so
    ``sum(leaf.size for leaf in jax.tree.leaves(model)) == model.num_parameters()``, and every
    attribute below is static (part of the tree structure, not traced).

    Attributes:
        name: short identifier, e.g. ``"digits-ddpm"``.
        family: the model family it belongs to (a class attribute; the pipeline's registered
            family of that name loads, runs and exports it), e.g. ``"digits-ddpm"``.
        num_timesteps: T; timestep t = 0 is the least noisy, the sampler runs T-1 .. 0.
        layer_names: the L quantizable layers, in the fixed order used by every ``[L, ...]`` array.
        layer_input_widths: input width of each quantizable layer (weights are grouped along it).
        data_shape: shape of one sample in pixel space, e.g. ``(8, 8)``.
        state_size: size of the flattened model-space state x_t.
        reference: real data + classifier for quality metrics, or ``None``.
    """

    name: str
    family: str
    num_timesteps: int
    layer_names: tuple[str, ...]
    layer_input_widths: tuple[int, ...]
    data_shape: tuple[int, ...]
    state_size: int
    reference: QualityReference | None

    def quantizable_weights(self) -> dict[str, Array]:
        """The full-precision weight of each quantizable layer, ``[in, out]``, keyed by layer name."""
        ...

    def num_parameters(self) -> int:
        """All parameters of the network (quantizable weights, biases, anything else)."""
        ...

    def denoise(
        self,
        weights: Mapping[str, LayerWeight],
        x_t: Array,
        t: Array,
        *,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """One network evaluation with the given per-layer weights (jit-safe).

        Args:
            weights: layer name -> :data:`LayerWeight` (an ``[in, out]`` array or a packed
                QTensor, dequantized where the layer uses it), one per ``layer_names``.
            x_t: noisy state ``[N, state_size]``.
            t: scalar int32 timestep.
            act_hook: optional transform of each quantizable layer's input.

        Returns:
            ``(eps_hat [N, state_size], layer_inputs)``, where ``layer_inputs[i]`` is the input of
            layer i before the hook, ``[N, layer_input_widths[i]]``.
        """
        ...

    def initial_state(self, key: Array, num_samples: int) -> Array:
        """x_{T-1} ~ N(0, I), ``[num_samples, state_size]``."""
        ...

    def step(
        self,
        weights: Mapping[str, LayerWeight],
        x_t: Array,
        t: Array,
        key: Array,
        *,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """One ancestral sampling step from timestep t: ``(x_prev, layer_inputs)`` (jit-safe)."""
        ...

    def sample(
        self,
        weights: Mapping[str, LayerWeight] | None = None,
        *,
        key: Array,
        num_samples: int,
        act_hook: ActHook | None = None,
        sampler: SamplerSpec | None = None,
    ) -> tuple[Array, Array]:
        """Run the whole sampler: ``(x0 [N, state_size], trajectory [S, N, state_size])``.

        ``trajectory[k]`` is the state after the step at ``sampler.timesteps(T)[k]`` (the
        timestep t itself for the full sampler; ``trajectory[0] == x0``). ``sampler=None`` is the
        model's own sampler; a model that cannot skip steps raises ``ValueError`` for DDIM.
        """
        ...

    def to_pixels(self, x: Array | np.ndarray) -> np.ndarray:
        """Model-space states ``[N, state_size]`` -> pixel-space samples ``[N, *data_shape]``."""
        ...


Observer = Callable[[Array, tuple[Array, ...], Array, Array], Any]
"""``observe(t, layer_inputs, key, x_t) -> pytree`` evaluated inside the sampler scan at each
step (``x_t`` the state the step started from)."""


@runtime_checkable
class SkippingModel(Protocol):
    """A model that can step between any two timesteps (DDIM); the digits DDPM is one."""

    def step_between(
        self,
        weights: Mapping[str, LayerWeight],
        x_t: Array,
        t: Array,
        t_prev: Array,
        key: Array,
        *,
        eta: float,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """One DDIM step from timestep ``t`` to ``t_prev`` (``-1``: to the clean sample)."""
        ...


def run_sampler(
    model: DiffusionModel,
    weights: Mapping[str, LayerWeight],
    *,
    key: Array,
    num_samples: int,
    act_hook: ActHook | None = None,
    observe: Observer | None = None,
    sampler: SamplerSpec | None = None,
) -> tuple[Array, Array, Any]:
    """The sampler of any :class:`DiffusionModel` as one ``lax.scan`` over its timesteps, descending.

    Every sampler and calibration pass goes through here, so the same ``key`` gives the same
    initial noise and the same per-step noise (keyed by the timestep) whatever the weights or
    hooks are: fp32 and quantized trajectories can be compared step by step, and a DDIM run
    with ``S = T`` draws the ancestral sampler's noise.

    Args:
        model: the model.
        weights: per-layer weights to run with (:data:`LayerWeight`: ``[in, out]`` arrays or
            packed QTensors, which stay packed across the scan).
        key: PRNG key; split into the initial-noise key and the per-step key (folded with t).
        num_samples: N.
        act_hook: optional activation transform per quantizable layer.
        observe: optional per-step function of ``(t, layer_inputs, key, x_t)``; its outputs
            are stacked over the steps.
        sampler: the reverse process and its steps (``None``: the model's own ``step`` at every
            timestep, which for the digits DDPM is ``SamplerSpec("ddpm")``).

    Returns:
        ``(x0 [N, D], trajectory [S, N, D], observed)``, all indexed by step k in the order of
        ``sampler.timesteps(T)`` (ascending; ``k = t`` for S = T), with ``trajectory[k]`` the
        state after the step at ``timesteps[k]`` and ``observed`` a pytree of ``[S, ...]``
        (``None`` without ``observe``).

    Raises:
        ValueError: a DDIM sampler for a model without ``step_between``, or bad steps.
    """
    init_key, step_key, observe_key = jax.random.split(key, 3)
    x_init = model.initial_state(init_key, num_samples)
    spec = SamplerSpec() if sampler is None else sampler
    ascending = spec.timesteps(model.num_timesteps)
    if spec.name == "ddim" and not isinstance(model, SkippingModel):
        raise ValueError(f"sampler=ddim: {type(model).__name__} has no DDIM step (step_between)")

    def body(x_t: Array, pair: tuple[Array, Array]) -> tuple[Array, tuple[Array, Any]]:
        t, t_prev = pair
        step_noise = jax.random.fold_in(step_key, t)
        if spec.name == "ddim":
            x_prev, layer_inputs = model.step_between(
                weights, x_t, t, t_prev, step_noise, eta=spec.eta, act_hook=act_hook
            )
        else:
            x_prev, layer_inputs = model.step(weights, x_t, t, step_noise, act_hook=act_hook)
        seen = None
        if observe is not None:
            seen = observe(t, layer_inputs, jax.random.fold_in(observe_key, t), x_t)
        return x_prev, (x_prev, seen)

    descending = ascending[::-1]
    following = np.concatenate([descending[1:], [-1]]).astype(np.int32)
    pairs = (jnp.asarray(descending, jnp.int32), jnp.asarray(following, jnp.int32))
    x0, (trajectory, observed) = jax.lax.scan(body, x_init, pairs)
    flip = lambda a: jnp.flip(a, axis=0)
    return x0, flip(trajectory), jax.tree.map(flip, observed)


def sample_quality(model: DiffusionModel, pixels: np.ndarray) -> dict[str, float]:
    """Quality of one set of pixel-space samples against the model's real-data reference.

    Returns ``{"frechet", "class_coverage", "classifier_confidence", "class_histogram"}``
    (NaN / empty when the model has no reference).
    """
    ref = model.reference
    if ref is None:
        nan = float("nan")
        return {"frechet": nan, "class_coverage": nan, "classifier_confidence": nan}
    probs = ref.probabilities(pixels)
    coverage, confidence = class_coverage(probs)
    counts = np.bincount(np.argmax(probs, axis=1), minlength=ref.num_classes)
    return {
        "frechet": frechet_distance(ref.features(pixels), ref.features(ref.real_pixels())),
        "class_coverage": coverage,
        "classifier_confidence": confidence,
        "class_histogram": [int(c) for c in counts],
    }
