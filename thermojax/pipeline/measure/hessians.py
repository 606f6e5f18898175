"""Time-aware Hessians for GPTQ: every layer's ``x x^T`` from the per-step calibration inputs.

GPTQ rounds a layer's weights to minimize ``||(W - Q) X||^2`` over its inputs ``X``, through the
Hessian ``H = X X^T``. A diffusion model's layers see different inputs at every denoising step,
and the steps do not matter alike to the final sample, so thermojax builds ``H`` from the steps:

- :func:`collect_hessians` runs the fp32 sampler once (one ``lax.scan``, the calibration's
  noise) and accumulates every layer's ``x x^T`` per time group: ``H_g`` is the mean over the
  group's steps and the rows each step feeds the layer.
- :func:`group_sensitivity` measures, per time group, how far the final sample moves when the
  weights are minmax-quantized in that group's steps only (fp32 elsewhere): one sampler run per
  group, from the same noise as fp32. That is the injected-error sensitivity of each stretch of
  the chain; a per-step figure would take T runs (1000 for the digits DDPM).
- :func:`gptq_hessians` mixes them: ``uniform`` weighs each group by its share of the steps (the
  plain mean over all steps), ``sensitivity`` by its measured sensitivity.

Example:
    >>> from thermojax.models import load_model
    >>> from thermojax.core.timegroups import uniform_edges
    >>> model = load_model()
    >>> groups = collect_hessians(model, edges=uniform_edges(1000, 4), num_samples=8, seed=0)
    >>> groups["block0"].shape  # [G, in, in]
    (4, 256, 256)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.models.base import DiffusionModel, run_sampler
from thermojax.pipeline.settings import HESSIAN_WEIGHTINGS

__all__ = ["HessianSet", "collect_hessians", "gptq_hessians", "group_sensitivity"]


@dataclasses.dataclass(frozen=True)
class HessianSet:
    """The Hessians GPTQ ran with and how they were weighted.

    Attributes:
        hessians: layer name -> float32 ``[in, in]``.
        weighting: ``uniform`` or ``sensitivity``.
        edges: the time groups ``[G + 1]`` the steps were pooled by.
        group_weights: float64 ``[G]``, the weights of the groups' mean Hessians (sum 1).
        sensitivity: float64 ``[G]`` measured sensitivity per group (``None`` for ``uniform``).
    """

    hessians: dict[str, np.ndarray]
    weighting: str
    edges: tuple[int, ...]
    group_weights: np.ndarray
    sensitivity: np.ndarray | None


def _group_of_step(num_timesteps: int, edges: Sequence[int]) -> np.ndarray:
    """int32 ``[T]``: the time group of each timestep."""
    edges = np.asarray(edges, np.int64)
    return (np.searchsorted(edges, np.arange(num_timesteps), side="right") - 1).astype(np.int32)


@partial(jax.jit, static_argnames=("num_samples", "num_groups"))
def _hessian_program(
    model: DiffusionModel,
    weights: dict[str, jax.Array],
    group_of_step: jax.Array,
    key: jax.Array,
    *,
    num_samples: int,
    num_groups: int,
) -> tuple[jax.Array, ...]:
    """Per layer ``[G, in, in]``: the sum over each group's steps of ``x^T x`` of its inputs.

    One scan over the steps with the sums in the carry (stacking per-step Hessians would take
    ``T * in**2`` floats per layer: 1.5 GB for the digits DDPM)."""
    widths = [int(weights[name].shape[0]) for name in model.layer_names]
    init_key, step_key, _ = jax.random.split(key, 3)
    x_init = model.initial_state(init_key, num_samples)
    sums = tuple(jnp.zeros((num_groups, w, w), jnp.float32) for w in widths)

    def body(carry, t):
        x_t, acc = carry
        x_prev, inputs = model.step(weights, x_t, t, jax.random.fold_in(step_key, t))
        g = group_of_step[t]
        acc = tuple(
            a.at[g].add(jnp.einsum("ni,nj->ij", x, x, precision=jax.lax.Precision.HIGHEST))
            for a, x in (
                (a, h.reshape(-1, h.shape[-1]).astype(jnp.float32))
                for a, h in zip(acc, inputs, strict=True)
            )
        )
        return (x_prev, acc), None

    timesteps = jnp.arange(model.num_timesteps - 1, -1, -1, dtype=jnp.int32)
    (_, sums), _ = jax.lax.scan(body, (x_init, sums), timesteps)
    return sums


def _rows_per_step(model: DiffusionModel, num_samples: int) -> dict[str, int]:
    """How many input rows each layer sees at one step (samples x positions)."""
    weights = model.quantizable_weights()
    shapes = jax.eval_shape(
        lambda: model.step(
            weights,
            model.initial_state(jax.random.PRNGKey(0), num_samples),
            jnp.int32(0),
            jax.random.PRNGKey(0),
        )[1]
    )
    return {
        name: int(np.prod(s.shape[:-1])) for name, s in zip(model.layer_names, shapes, strict=True)
    }


def collect_hessians(
    model: DiffusionModel, *, edges: Sequence[int], num_samples: int, seed: int
) -> dict[str, np.ndarray]:
    """Every layer's mean ``x x^T`` per time group, from one fp32 sampler run.

    Args:
        model: the model.
        edges: int ``[G + 1]`` time-group edges from 0 to T.
        num_samples: N samples of the sampler (the calibration's noise for the same ``seed``).
        seed: PRNG seed.

    Returns:
        layer name -> float32 ``[G, in, in]``, group ``g``'s sum divided by its steps and rows.
    """
    edges = np.asarray(edges, np.int64)
    num_groups = len(edges) - 1
    sums = _hessian_program(
        model,
        dict(model.quantizable_weights()),
        jnp.asarray(_group_of_step(model.num_timesteps, edges)),
        jax.random.PRNGKey(seed),
        num_samples=int(num_samples),
        num_groups=num_groups,
    )
    rows = _rows_per_step(model, int(num_samples))
    steps = np.diff(edges).astype(np.float64)
    return {
        name: (np.asarray(s, np.float64) / (steps[:, None, None] * rows[name])).astype(np.float32)
        for name, s in zip(model.layer_names, sums, strict=True)
    }


@partial(jax.jit, static_argnames=("num_samples",))
def _masked_weights_program(
    model: DiffusionModel,
    fp32: dict[str, jax.Array],
    quantized: dict[str, jax.Array],
    use_quantized: jax.Array,
    key: jax.Array,
    *,
    num_samples: int,
) -> jax.Array:
    """The final state of the sampler with ``quantized`` weights at the steps where
    ``use_quantized[t]`` and fp32 weights elsewhere (same noise as :func:`run_sampler`)."""
    init_key, step_key, _ = jax.random.split(key, 3)
    x_init = model.initial_state(init_key, num_samples)

    def body(x_t, t):
        weights = jax.tree.map(lambda q, f: jnp.where(use_quantized[t], q, f), quantized, fp32)
        x_prev, _ = model.step(weights, x_t, t, jax.random.fold_in(step_key, t))
        return x_prev, None

    timesteps = jnp.arange(model.num_timesteps - 1, -1, -1, dtype=jnp.int32)
    x0, _ = jax.lax.scan(body, x_init, timesteps)
    return x0


def _state_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared difference of float states; fraction of differing entries of integer ones."""
    if np.issubdtype(a.dtype, np.integer):
        return float(np.mean(a != b))
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def group_sensitivity(
    model: DiffusionModel,
    quantized: Mapping[str, Any],
    *,
    edges: Sequence[int],
    num_samples: int,
    seed: int,
) -> np.ndarray:
    """float64 ``[G]``: how far the final sample moves with ``quantized`` weights in one time
    group's steps only, per group (mean squared difference to fp32 from the same noise; the
    fraction of differing tokens for a token state).

    Args:
        model: the model.
        quantized: layer name -> dense ``[in, out]`` weights carrying the injected error.
        edges: int ``[G + 1]`` time-group edges.
        num_samples, seed: the sampler runs' size and noise.
    """
    fp32 = dict(model.quantizable_weights())
    quantized = {name: jnp.asarray(quantized[name]) for name in fp32}
    key = jax.random.PRNGKey(seed)
    x0, _, _ = run_sampler(model, fp32, key=key, num_samples=int(num_samples))
    reference = np.asarray(x0)
    group = _group_of_step(model.num_timesteps, edges)
    out = []
    for g in range(len(edges) - 1):
        moved = _masked_weights_program(
            model, fp32, quantized, jnp.asarray(group == g), key, num_samples=int(num_samples)
        )
        out.append(_state_distance(np.asarray(moved), reference))
    return np.asarray(out, np.float64)


def gptq_hessians(
    model: DiffusionModel,
    *,
    weighting: str,
    edges: Sequence[int],
    num_samples: int,
    seed: int,
    injected: Mapping[str, Any] | None = None,
) -> HessianSet:
    """Each layer's Hessian for GPTQ, its time groups weighted by ``weighting``.

    Args:
        model: the model.
        weighting: ``uniform`` (each group by its share of the steps) or ``sensitivity`` (by
            :func:`group_sensitivity` of the ``injected`` weights; groups that move nothing
            measurable fall back to uniform weights).
        edges: int ``[G + 1]`` time-group edges (the run's groups).
        num_samples, seed: the sampler runs' size and noise.
        injected: ``sensitivity`` only: dense ``[in, out]`` weights carrying the error to inject
            (the minmax-quantized weights).

    Raises:
        ValueError: an unknown ``weighting``, or ``sensitivity`` without ``injected``.
    """
    if weighting not in HESSIAN_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {HESSIAN_WEIGHTINGS}, got {weighting!r}")
    edges = np.asarray(edges, np.int64)
    groups = collect_hessians(model, edges=edges, num_samples=num_samples, seed=seed)
    shares = np.diff(edges) / float(edges[-1])
    sensitivity = None
    weights = shares
    if weighting == "sensitivity":
        if injected is None:
            raise ValueError("weighting='sensitivity' needs the injected weights")
        sensitivity = group_sensitivity(
            model, injected, edges=edges, num_samples=num_samples, seed=seed
        )
        total = float(np.sum(sensitivity))
        weights = sensitivity / total if total > 0 and np.isfinite(total) else shares
    hessians = {
        name: np.tensordot(weights, np.asarray(h, np.float64), axes=1).astype(np.float32)
        for name, h in groups.items()
    }
    return HessianSet(
        hessians=hessians,
        weighting=weighting,
        edges=tuple(int(e) for e in edges),
        group_weights=np.asarray(weights, np.float64),
        sensitivity=sensitivity,
    )
