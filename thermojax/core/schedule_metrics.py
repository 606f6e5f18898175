"""Markov metrics of a per-timestep parameter schedule, measured on the parameters the sampler uses.

A smoothed (Phase 2) or per-timestep optimized (Phase 3) schedule changes a little at many timesteps
instead of once per boundary. Averaging its ``T - 1`` per-step jumps would make any schedule look smooth,
so each group boundary instead reports the **largest per-step jump inside its window**, and the headline
score uses the same formulas as :func:`thermojax.core.markov.markov_metrics` over those ``G - 1`` maxima.

Windows partition the steps: boundary ``b`` (between groups ``b - 1`` and ``b``) owns timesteps
``[edges[b] - left_b, edges[b] + right_b)`` with the budgets of
:func:`thermojax.core.smoothing.boundary_budgets` (an interior group is split at its middle, the first and
last groups belong wholly to their single boundary), and step ``t -> t + 1`` belongs to the window that
holds timestep ``t + 1``. Every smoothing window lies inside its boundary's window, and no step goes
unmeasured. For a piecewise-constant schedule (the baseline expanded to timesteps) the window view equals
the group-level metrics exactly, so baseline and enhanced variants are scored on the same scale.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.core.markov import MarkovMetrics, markov_metrics, severity_levels
from thermojax.core.smoothing import boundary_budgets


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["windows", "steps", "groups"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class ScheduleMetrics:
    """Smoothness of a per-timestep schedule ``[L, T]`` cut into ``G`` time groups.

    Attributes:
        windows: :class:`MarkovMetrics` ``[L, G - 1]``: per group boundary, the largest per-step scale
            jump and the largest per-step zero-point jump inside its window (each maximized on its own),
            with boundary scores, smoothness score, violations and severity computed from them.
        steps: :class:`MarkovMetrics` ``[L, T - 1]`` of every consecutive-timestep step.
        groups: :class:`MarkovMetrics` ``[L, G - 1]`` of the group-level view: each group's mean scale
            and mean zero point over its timesteps.
    """

    windows: MarkovMetrics
    steps: MarkovMetrics
    groups: MarkovMetrics


def schedule_metrics(
    scales: jax.Array,
    zero_points: jax.Array,
    edges: np.ndarray | jax.Array,
    *,
    qmax: float,
    threshold: float | jax.Array,
    round_zero_points: bool = True,
) -> ScheduleMetrics:
    """Markov metrics of per-timestep schedules, per boundary window and per group.

    Args:
        scales: ``[L, T]`` per-timestep scales (> 0).
        zero_points: ``[L, T]`` per-timestep zero points.
        edges: int ``[G + 1]`` time-group edges (``edges[G] = T``).
        qmax: activation ``2**bits - 1``.
        threshold: scalar or 1-D array of K scale-jump thresholds (``violations`` gain a ``[K]`` axis).
        round_zero_points: measure ``clip(round(z), 0, qmax)``, the zero points the quantizer applies
            (schedules from :mod:`thermojax.core.smoothing` keep them fractional).

    Returns:
        A :class:`ScheduleMetrics`.

    Raises:
        ValueError: on mismatched shapes, bad edges, ``qmax <= 0`` or a threshold with more than 1 axis.
    """
    scales = jnp.asarray(scales, jnp.float32)
    zero_points = jnp.asarray(zero_points, jnp.float32)
    if scales.ndim != 2 or scales.shape != zero_points.shape:
        raise ValueError(
            f"scales and zero_points must both be [layers, timesteps]; got scales"
            f"{tuple(scales.shape)} and zero_points{tuple(zero_points.shape)}"
        )
    num_timesteps = scales.shape[1]
    edges = np.asarray(edges)
    if (
        edges.ndim != 1
        or edges.size < 2
        or edges[0] != 0
        or edges[-1] != num_timesteps
        or np.any(np.diff(edges) < 1)
    ):
        raise ValueError(
            f"edges must rise strictly from 0 to T={num_timesteps}, got {edges.tolist()}"
        )
    if not float(qmax) > 0:
        raise ValueError(f"qmax must be > 0, got qmax={qmax!r}")
    threshold = jnp.asarray(threshold, jnp.float32)
    if threshold.ndim > 1:
        raise ValueError(f"threshold must be a scalar or 1-D, got shape {threshold.shape}")
    if round_zero_points:
        zero_points = jnp.clip(jnp.round(zero_points), 0.0, qmax)
    steps = markov_metrics(scales, zero_points, qmax=qmax, threshold=threshold)
    group = np.searchsorted(edges, np.arange(num_timesteps), side="right") - 1
    num_groups = edges.size - 1
    sizes = np.diff(edges).astype(np.float32)
    group_scales = jax.ops.segment_sum(scales.T, group, num_groups).T / sizes[None, :]
    group_zps = jax.ops.segment_sum(zero_points.T, group, num_groups).T / sizes[None, :]
    groups = markov_metrics(group_scales, group_zps, qmax=qmax, threshold=threshold)
    if num_groups < 2:
        return ScheduleMetrics(windows=groups, steps=steps, groups=groups)
    left, _ = boundary_budgets(edges)
    window_starts = np.asarray(edges[1:-1] - np.asarray(left))  # first timestep of each window
    step_window = np.searchsorted(window_starts[1:], np.arange(1, num_timesteps), side="right")
    windows = _window_metrics(
        steps.scale_jumps,
        steps.zero_point_jumps,
        jnp.asarray(step_window, jnp.int32),
        threshold,
        num_windows=num_groups - 1,
    )
    return ScheduleMetrics(windows=windows, steps=steps, groups=groups)


@functools.partial(jax.jit, static_argnames=("num_windows",))
def _window_metrics(scale_steps, zero_point_steps, step_window, threshold, *, num_windows):
    scale_jumps = jax.ops.segment_max(scale_steps.T, step_window, num_windows).T
    zero_point_jumps = jax.ops.segment_max(zero_point_steps.T, step_window, num_windows).T
    total = scale_jumps + zero_point_jumps
    smoothness = 1.0 - jnp.minimum(1.0, jnp.sum(total, axis=-1) / (2.0 * num_windows))
    limit = jnp.reshape(threshold, threshold.shape + (1,) * scale_jumps.ndim)
    violations = jnp.expand_dims(scale_jumps, 0) > limit if threshold.ndim else scale_jumps > limit
    severity = severity_levels(scale_jumps, violations)
    return MarkovMetrics(
        scale_jumps=scale_jumps,
        zero_point_jumps=zero_point_jumps,
        boundary_scores=1.0 - jnp.minimum(1.0, total / 2.0),
        smoothness_score=smoothness,
        violations=violations,
        severity=severity,
    )
