"""Drift per step and per time group: the part of every kind's evaluator that is about time.

Each kind measures how far the quantized sampler's state is from the fp32 one's after each step
its own way (squared pixels, differing tokens); :func:`drift_figures` turns that per-step drift
into what every :class:`~thermojax.pipeline.quality.kind.SampleQuality` holds: the drift per step,
its mean within each time group (groups are on the model's T timesteps, whatever steps the
sampler ran) and its mean.

Example:
    >>> per_step, per_group, mean = group_drift(np.array([1.0, 3.0, 5.0, 7.0]), [0, 2, 4])
    >>> per_group.tolist(), mean
    ([2.0, 6.0], 4.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from thermojax.core.timegroups import step_edges
from thermojax.errors import value_errors_as_user_input
from thermojax.pipeline.measure.sampling import Samples

__all__ = ["chain_edges", "chain_timesteps", "drift_figures", "group_drift"]


def chain_timesteps(model: Any, fp32: Samples, quantized: Samples) -> np.ndarray:
    """The timesteps both sample sets ran (the same sampler is required), ``[S]``."""
    steps_f, steps_q = np.asarray(fp32.timesteps), np.asarray(quantized.timesteps)
    if steps_f.shape != steps_q.shape or np.any(steps_f != steps_q):
        raise ValueError(
            f"fp32 and quantized samples ran different steps ({len(steps_f)} and {len(steps_q)}); "
            "compare samples from one sampler"
        )
    if len(steps_f) and steps_f[-1] >= model.num_timesteps:
        raise ValueError(f"sample timesteps must be < T={model.num_timesteps}")
    if fp32.sampler is None and len(steps_f) != model.num_timesteps:
        raise ValueError(
            f"trajectories of {len(steps_f)} steps from the model's own sampler must both be "
            f"[T={model.num_timesteps}, N, D]"
        )
    return steps_f


def chain_edges(model: Any, edges: Sequence[int] | np.ndarray, timesteps: np.ndarray) -> np.ndarray:
    """Model-axis group ``edges`` over the steps a sampler ran (int64 ``[G + 1]``).

    Raises:
        ValueError: edges that are not a partition of the model's T timesteps.
        UserInputError: a group that holds none of the steps.
    """
    edges = np.asarray(edges, np.int64)
    if edges.ndim != 1 or len(edges) < 2 or edges[0] != 0 or edges[-1] != model.num_timesteps:
        raise ValueError(f"edges must run from 0 to T={model.num_timesteps}, got {edges.tolist()}")
    if np.any(np.diff(edges) < 1):
        raise ValueError(f"edges must be strictly increasing, got {edges.tolist()}")
    if len(timesteps) == model.num_timesteps:
        return edges
    with value_errors_as_user_input(f"sampling with {len(timesteps)} steps"):
        return step_edges(edges, timesteps).astype(np.int64)


def group_drift(
    drift: np.ndarray, step_group_edges: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(drift, drift per group, mean)`` of a per-step drift and group edges on its steps."""
    edges = np.asarray(step_group_edges, np.int64)
    # Group means via cumulative sums: one vectorized pass however many groups there are.
    csum = np.concatenate([[0.0], np.cumsum(drift)])
    return drift, (csum[edges[1:]] - csum[edges[:-1]]) / np.diff(edges), float(drift.mean())


def drift_figures(
    model: Any,
    fp32: Samples,
    quantized: Samples,
    edges: Sequence[int] | np.ndarray,
    per_step: np.ndarray,
) -> dict[str, Any]:
    """The drift fields of a :class:`~thermojax.pipeline.quality.kind.SampleQuality`.

    Args:
        model: the model both sample sets came from.
        fp32, quantized: the two sample sets (the same sampler and steps).
        edges: int ``[G + 1]`` time-group edges on the model's T timesteps.
        per_step: float64 ``[S]``, the kind's drift after each step the sampler ran.

    Raises:
        ValueError: sample sets or edges that do not match the model, or ``per_step`` of
            another length than the steps.
        UserInputError: a time group that holds none of the sampler's steps.
    """
    steps = chain_timesteps(model, fp32, quantized)
    if len(per_step) != len(steps):
        raise ValueError(f"drift of {len(per_step)} steps for a sampler of {len(steps)}")
    drift, per_group, mean = group_drift(per_step, chain_edges(model, edges, steps))
    return {"drift_per_timestep": drift, "drift_per_group": per_group, "drift_mean": mean}
