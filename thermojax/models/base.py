"""The narrow interface a diffusion model offers to calibration, quantized sampling and evaluation.

Callers (``thermojax.pipeline.calibrate``, ``thermojax.pipeline.sampling``, the pipeline) only use what is declared
here, so a later model (another architecture, a real safetensors checkpoint) plugs in by
implementing this protocol; the digits DDPM is the first implementation, not a special case.

A model is a pytree whose leaves are its parameters and nothing else; its architecture, noise
schedule, quality reference and metadata are static (marked ``pytree_node=False`` on the field),
hashable and compared by content. Jitted programs take the model as an argument: one compiled
program serves every model of the same architecture and shapes, and no parameter is baked into a
program as a constant.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.core.sample_metrics import class_coverage, frechet_distance

Array = jax.Array

ActHook = Callable[[int, Array, Array], Array]
"""``hook(layer_index, layer_input, t) -> layer_input'``: applied to the input of each quantizable
layer (``layer_index`` is a static Python int in ``layer_names`` order, ``t`` the traced scalar
timestep). Quantized sampling passes a fake-quantizer; ``None`` means full precision."""


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
        num_timesteps: T; timestep t = 0 is the least noisy, the sampler runs T-1 .. 0.
        layer_names: the L quantizable layers, in the fixed order used by every ``[L, ...]`` array.
        layer_input_widths: input width of each quantizable layer (weights are grouped along it).
        data_shape: shape of one sample in pixel space, e.g. ``(8, 8)``.
        state_size: size of the flattened model-space state x_t.
        reference: real data + classifier for quality metrics, or ``None``.
    """

    name: str
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
        weights: Mapping[str, Array],
        x_t: Array,
        t: Array,
        *,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """One network evaluation with the given per-layer weights (jit-safe).

        Args:
            weights: layer name -> ``[in, out]`` weight (dequantized), one per ``layer_names``.
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
        weights: Mapping[str, Array],
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
        weights: Mapping[str, Array] | None = None,
        *,
        key: Array,
        num_samples: int,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, Array]:
        """Run the whole sampler: ``(x0 [N, state_size], trajectory [T, N, state_size])``.

        ``trajectory[t]`` is the state after the step at timestep t (so ``trajectory[0] == x0``).
        """
        ...

    def to_pixels(self, x: Array | np.ndarray) -> np.ndarray:
        """Model-space states ``[N, state_size]`` -> pixel-space samples ``[N, *data_shape]``."""
        ...


Observer = Callable[[Array, tuple[Array, ...], Array], Any]
"""``observe(t, layer_inputs, key) -> pytree`` evaluated inside the sampler scan at each step."""


def run_sampler(
    model: DiffusionModel,
    weights: Mapping[str, Array],
    *,
    key: Array,
    num_samples: int,
    act_hook: ActHook | None = None,
    observe: Observer | None = None,
) -> tuple[Array, Array, Any]:
    """The ancestral sampler of any :class:`DiffusionModel` as one ``lax.scan`` over T-1 .. 0.

    Every sampler and calibration pass goes through here, so the same ``key`` gives the same
    initial noise and the same per-step noise whatever the weights or hooks are: fp32 and
    quantized trajectories can be compared step by step.

    Args:
        model: the model.
        weights: per-layer ``[in, out]`` weights to run with.
        key: PRNG key; split into the initial-noise key and the per-step key (folded with t).
        num_samples: N.
        act_hook: optional activation transform per quantizable layer.
        observe: optional per-step function of ``(t, layer_inputs, key)``; its outputs are
            stacked over timesteps.

    Returns:
        ``(x0 [N, D], trajectory [T, N, D], observed)``, all indexed by timestep t, with
        ``trajectory[t]`` the state after the step at t and ``observed`` a pytree of ``[T, ...]``
        (``None`` without ``observe``).
    """
    init_key, step_key, observe_key = jax.random.split(key, 3)
    x_init = model.initial_state(init_key, num_samples)

    def body(x_t: Array, t: Array) -> tuple[Array, tuple[Array, Any]]:
        x_prev, layer_inputs = model.step(
            weights, x_t, t, jax.random.fold_in(step_key, t), act_hook=act_hook
        )
        seen = None
        if observe is not None:
            seen = observe(t, layer_inputs, jax.random.fold_in(observe_key, t))
        return x_prev, (x_prev, seen)

    timesteps = jnp.arange(model.num_timesteps - 1, -1, -1, dtype=jnp.int32)
    x0, (trajectory, observed) = jax.lax.scan(body, x_init, timesteps)
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
