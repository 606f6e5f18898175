"""Markov smoothness of per-time-group quantization parameters (vectorized, jit-compatible).

For per-group scales ``s`` and zero points ``z`` (last axis ``G``), boundary ``i`` sits between groups
``i`` and ``i + 1``:

- ``scale_jump[i] = |s[i+1] - s[i]| / s[i]``
- ``zero_point_jump[i] = |z[i+1] - z[i]| / qmax``
- ``boundary_score[i] = 1 - min(1, (scale_jump[i] + zero_point_jump[i]) / 2)``
- ``smoothness_score = 1 - min(1, sum_i(scale_jump[i] + zero_point_jump[i]) / (2 (G - 1)))``, exactly
  1.0 (with empty boundary arrays) when ``G < 2``
- ``violation[i] = scale_jump[i] > threshold``; ``severity[i]`` is 0 where not violated, else 3 if the
  jump is > 0.5, 2 if > 0.3, 1 otherwise.

Example:
    >>> import jax.numpy as jnp
    >>> from thermojax import markov_metrics
    >>> m = markov_metrics(jnp.array([1.0, 1.5, 1.5]), jnp.array([0.0, 0.0, 0.0]),
    ...                    qmax=255, threshold=0.3)
    >>> m.scale_jumps.tolist(), float(m.smoothness_score), m.severity.tolist()
    ([0.5, 0.0], 0.875, [2, 0])
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

MEDIUM_JUMP = 0.3
"""A violation whose scale jump exceeds this is of medium severity (level 2)."""
HIGH_JUMP = 0.5
"""A violation whose scale jump exceeds this is of high severity (level 3)."""
SEVERITY_LABELS = ("none", "low", "medium", "high")
"""``SEVERITY_LABELS[level]`` names the integer ``severity`` levels 0..3 (the result JSON's)."""
_TINY = float(np.finfo(np.float32).tiny)


@partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "scale_jumps",
        "zero_point_jumps",
        "boundary_scores",
        "smoothness_score",
        "violations",
        "severity",
    ],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class MarkovMetrics:
    """Smoothness of a chain of per-group quantization parameters.

    Attributes:
        scale_jumps: float32 ``[..., G-1]``, relative scale change at each boundary.
        zero_point_jumps: float32 ``[..., G-1]``, zero-point change over ``qmax``.
        boundary_scores: float32 ``[..., G-1]`` in [0, 1]; 1 = no change.
        smoothness_score: float32 ``[...]`` in [0, 1]; 1 = constant chain.
        violations: bool ``[..., G-1]`` (``[K, ..., G-1]`` for K thresholds): scale jump > threshold.
        severity: int32, same shape as ``violations``: 0 none, 1 low, 2 medium (> 0.3), 3 high (> 0.5).
    """

    scale_jumps: jax.Array
    zero_point_jumps: jax.Array
    boundary_scores: jax.Array
    smoothness_score: jax.Array
    violations: jax.Array
    severity: jax.Array

    @property
    def violation_count(self) -> jax.Array:
        """Violated boundaries per chain: int32 ``[...]`` (``[K, ...]`` for K thresholds)."""
        return jnp.sum(self.violations, axis=-1, dtype=jnp.int32)


def severity_levels(scale_jumps: jax.Array, violated: jax.Array) -> jax.Array:
    """The int32 severity of each boundary: 0 where not ``violated``, else 1 (low), 2 (medium,
    jump > ``MEDIUM_JUMP``) or 3 (high, jump > ``HIGH_JUMP``); broadcast to ``violated``'s shape."""
    level = jnp.where(scale_jumps > HIGH_JUMP, 3, jnp.where(scale_jumps > MEDIUM_JUMP, 2, 1))
    level = jnp.broadcast_to(level.astype(jnp.int32), violated.shape)
    return jnp.where(violated, level, 0).astype(jnp.int32)


def _violations(scale_jumps: jax.Array, threshold: jax.Array) -> tuple[jax.Array, jax.Array]:
    violated = scale_jumps > threshold
    return violated, severity_levels(scale_jumps, violated)


@jax.jit
def _markov_metrics(
    scales: jax.Array, zero_points: jax.Array, qmax: jax.Array, threshold: jax.Array
) -> MarkovMetrics:
    scales = scales.astype(jnp.float32)
    zero_points = zero_points.astype(jnp.float32)
    num_groups = scales.shape[-1]
    previous = scales[..., :-1]
    # Scales are > 0 by contract; a non-positive one is floored so the metrics never hold NaN.
    scale_jumps = jnp.abs(scales[..., 1:] - previous) / jnp.maximum(previous, _TINY)
    zero_point_jumps = jnp.abs(zero_points[..., 1:] - zero_points[..., :-1]) / qmax
    total = scale_jumps + zero_point_jumps
    boundary_scores = 1.0 - jnp.minimum(1.0, total / 2.0)
    if num_groups < 2:
        smoothness = jnp.ones(scales.shape[:-1], jnp.float32)
    else:
        smoothness = 1.0 - jnp.minimum(1.0, jnp.sum(total, axis=-1) / (2.0 * (num_groups - 1)))
    if threshold.ndim == 0:
        violations, severity = _violations(scale_jumps, threshold)
    else:
        violations, severity = jax.vmap(_violations, in_axes=(None, 0))(scale_jumps, threshold)
    return MarkovMetrics(
        scale_jumps=scale_jumps,
        zero_point_jumps=zero_point_jumps,
        boundary_scores=boundary_scores,
        smoothness_score=smoothness,
        violations=violations,
        severity=severity,
    )


def markov_metrics(
    scales: jax.Array,
    zero_points: jax.Array,
    *,
    qmax: float | jax.Array,
    threshold: float | jax.Array,
) -> MarkovMetrics:
    """Markov smoothness metrics of per-group params ``[..., G]`` (any leading batch dims).

    Definitions in the module docstring. The whole computation is one jitted evaluation; a 1-D
    ``threshold`` of K values is vmapped, so ``violations`` and ``severity`` gain a leading ``[K]``
    axis while the jumps and scores (threshold-independent) are computed once.

    Args:
        scales: per-group scales ``[..., G]``, > 0.
        zero_points: per-group zero points, same shape.
        qmax: the activation ``2**bits - 1`` that normalizes zero-point jumps (> 0).
        threshold: scalar or 1-D array of scale-jump thresholds.

    Returns:
        A :class:`MarkovMetrics`.

    Raises:
        ValueError: shapes differ or are scalar, ``threshold`` has more than one axis, ``qmax <= 0``.
    """
    if jnp.shape(scales) != jnp.shape(zero_points):
        raise ValueError(
            f"scales and zero_points must have the same shape [..., G], got {jnp.shape(scales)} "
            f"and {jnp.shape(zero_points)}"
        )
    if jnp.ndim(scales) < 1:
        raise ValueError("scales must have a last axis of G groups, got a scalar")
    if jnp.ndim(threshold) > 1:
        raise ValueError(
            f"threshold must be a scalar or a 1-D array of thresholds, got shape "
            f"{jnp.shape(threshold)}"
        )
    if jnp.ndim(qmax) != 0:
        raise ValueError(f"qmax must be a scalar, got shape {jnp.shape(qmax)}")
    try:
        concrete_qmax = float(qmax)
    except jax.errors.ConcretizationTypeError:  # traced inside a caller's jit: checked by caller
        concrete_qmax = None
    if concrete_qmax is not None and not concrete_qmax > 0:
        raise ValueError(f"qmax must be > 0, got qmax={qmax!r}")
    return _markov_metrics(
        jnp.asarray(scales),
        jnp.asarray(zero_points),
        jnp.asarray(qmax, jnp.float32),
        jnp.asarray(threshold, jnp.float32),
    )
