"""Time groups: contiguous partitions of the diffusion timesteps and per-group activation params.

A partition of ``T`` timesteps into ``G`` groups is an int32 ``edges`` array ``[G + 1]`` with
``edges[0] = 0``, ``edges[G] = T`` and group ``g`` = timesteps ``[edges[g], edges[g + 1])``. A
per-timestep schedule is the special case ``edges = arange(T + 1)``.

Example:
    >>> import numpy as np
    >>> from thermojax import uniform_edges, group_ranges, group_of
    >>> edges = uniform_edges(10, 3)
    >>> edges.tolist(), group_ranges(edges)
    ([0, 3, 6, 10], [(0, 3), (3, 6), (6, 10)])
    >>> int(group_of(7, edges))
    2
"""

from __future__ import annotations

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from thermojax.core.quant import _activation_params, check_act_bits


def uniform_edges(num_timesteps: int, num_groups: int) -> np.ndarray:
    """Uniform partition: ``edges[i] = i * T // G``.

    Args:
        num_timesteps: ``T`` >= 1.
        num_groups: ``G`` in ``[1, T]``.

    Returns:
        int32 array ``[G + 1]``.

    Raises:
        ValueError: ``T < 1``, ``G < 1`` or ``G > T``.
    """
    if int(num_timesteps) != num_timesteps or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive integer, got {num_timesteps!r}")
    if int(num_groups) != num_groups or not 1 <= num_groups <= num_timesteps:
        raise ValueError(
            f"num_groups must be an integer in [1, num_timesteps={num_timesteps}], "
            f"got num_groups={num_groups!r}"
        )
    i = np.arange(int(num_groups) + 1, dtype=np.int64)
    return (i * int(num_timesteps) // int(num_groups)).astype(np.int32)


def _check_steps(timesteps: np.ndarray, num_timesteps: int | None = None) -> np.ndarray:
    """A sampler's timesteps: 1-D, strictly increasing integers in ``[0, T)``."""
    steps = np.asarray(timesteps)
    if steps.ndim != 1 or steps.shape[0] < 1 or not np.issubdtype(steps.dtype, np.integer):
        raise ValueError(f"timesteps must be a 1-D integer array of S >= 1 steps, got {steps!r}")
    if steps[0] < 0 or np.any(np.diff(steps) <= 0):
        raise ValueError(f"timesteps must be strictly increasing from >= 0, got {steps.tolist()}")
    if num_timesteps is not None and steps[-1] >= num_timesteps:
        raise ValueError(f"timesteps must be < T={num_timesteps}, got {int(steps[-1])}")
    return steps.astype(np.int64)


def step_edges(edges: np.ndarray | jax.Array, timesteps: np.ndarray) -> np.ndarray:
    """Time groups on the model's T timesteps -> the same groups over the S steps a sampler runs.

    Group ``g`` holds the steps whose timestep lies in ``[edges[g], edges[g + 1])``: step ``k``
    at timestep ``timesteps[k]`` is in group ``searchsorted(edges, timesteps[k], "right") - 1``,
    as the sampler finds it. Every group must hold at least one step (a group no step visits has
    no calibrated parameters and no drift).

    Args:
        edges: int ``[G + 1]`` partition of ``[0, T)``.
        timesteps: the sampler's S timesteps, ascending, in ``[0, T)``.

    Returns:
        int32 ``[G + 1]`` partition of ``[0, S)`` (``edges`` itself when ``timesteps = arange(T)``).

    Raises:
        ValueError: bad edges or timesteps, or a group that holds none of the steps.

    Example:
        >>> step_edges(np.array([0, 500, 1000]), np.array([249, 499, 749, 999])).tolist()
        [0, 2, 4]
    """
    arr = _concrete_edges(edges).astype(np.int64)
    steps = _check_steps(timesteps, int(arr[-1]))
    out = np.searchsorted(steps, arr, side="left")
    out[-1] = steps.shape[0]
    empty = np.flatnonzero(np.diff(out) <= 0)
    if empty.size:
        g = int(empty[0])
        raise ValueError(
            f"time group {g} [{int(arr[g])}, {int(arr[g + 1])}) holds none of the sampler's "
            f"{steps.shape[0]} steps; use fewer time groups or more steps"
        )
    return out.astype(np.int32)


def timestep_edges(
    edges: np.ndarray | jax.Array, timesteps: np.ndarray, num_timesteps: int
) -> np.ndarray:
    """Groups over a sampler's S steps -> the same groups on the model's T timesteps.

    The inverse of :func:`step_edges` for edges made on the steps (adaptive groups, a
    per-step schedule): the group that starts at step ``k`` starts at timestep ``timesteps[k]``;
    the first starts at 0 and the last ends at T, so the groups cover every timestep and any
    other sampler's steps find theirs.

    Example:
        >>> timestep_edges(np.array([0, 2, 4]), np.array([249, 499, 749, 999]), 1000).tolist()
        [0, 749, 1000]
    """
    arr = _concrete_edges(edges).astype(np.int64)
    steps = _check_steps(timesteps, int(num_timesteps))
    if arr[-1] != steps.shape[0]:
        raise ValueError(f"edges must end at S={steps.shape[0]} steps, got {int(arr[-1])}")
    out = np.concatenate([[0], steps[arr[1:-1]], [int(num_timesteps)]])
    return out.astype(np.int32)


def _concrete_edges(edges: np.ndarray | jax.Array) -> np.ndarray:
    """Validate a concrete partition and return it as int32 numpy."""
    arr = np.asarray(edges)
    if arr.ndim != 1 or arr.shape[0] < 2:
        raise ValueError(
            f"edges must be a 1-D array of G + 1 >= 2 boundaries, got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer) and not np.all(arr == np.round(arr)):
        raise ValueError(f"edges must hold integers, got {arr.tolist()}")
    arr = arr.astype(np.int64)
    if arr[0] != 0:
        raise ValueError(f"edges[0] must be 0, got edges[0]={int(arr[0])}")
    if np.any(np.diff(arr) <= 0):
        bad = int(np.argmax(np.diff(arr) <= 0))
        raise ValueError(
            f"edges must be strictly increasing (no empty group), got edges[{bad}]={int(arr[bad])} "
            f">= edges[{bad + 1}]={int(arr[bad + 1])}"
        )
    return arr.astype(np.int32)


def group_ranges(edges: np.ndarray | jax.Array) -> list[tuple[int, int]]:
    """The half-open timestep range ``(start, stop)`` of every group.

    Raises:
        ValueError: ``edges`` is not a valid partition (1-D, starts at 0, strictly increasing).
    """
    arr = _concrete_edges(edges)
    return [(int(a), int(b)) for a, b in itertools.pairwise(arr)]


def group_of(t: jax.Array | int, edges: jax.Array | np.ndarray) -> jax.Array:
    """Group index of timestep(s) ``t``; usable inside ``jit`` with traced ``t`` and ``edges``.

    ``searchsorted(edges, t, side="right") - 1``, clipped to ``[0, G - 1]`` so out-of-range
    timesteps map to the nearest end group instead of an invalid index.

    Args:
        t: integer timestep(s), any shape.
        edges: int ``[G + 1]`` partition.

    Returns:
        int32 array of ``t``'s shape.
    """
    edges = jnp.asarray(edges)
    g = jnp.searchsorted(edges, jnp.asarray(t), side="right", method="compare_all") - 1
    return jnp.clip(g, 0, edges.shape[0] - 2).astype(jnp.int32)


def _segment_extreme(values: jax.Array, group_ids: jax.Array, num_groups: int, *, is_max: bool):
    """Min or max of ``values [..., T]`` over each group of the last axis -> ``[..., G]``."""
    moved = jnp.moveaxis(values, -1, 0)
    reducer = jax.ops.segment_max if is_max else jax.ops.segment_min
    out = reducer(moved, group_ids, num_segments=num_groups, indices_are_sorted=True)
    return jnp.moveaxis(out, 0, -1)


def _segment_percentile(
    values: jax.Array, group_ids: jax.Array, edges: jax.Array, q: float
) -> jax.Array:
    """Linear-interpolated ``q``-th percentile (numpy's default) of each group -> ``[..., G]``."""
    ids = jnp.broadcast_to(group_ids, values.shape)
    # Sort by (group, value): each group's values land sorted inside its own [start, stop) slice.
    _, ordered = lax.sort((ids, values), dimension=values.ndim - 1, num_keys=2)
    start = edges[:-1]
    count = edges[1:] - start
    pos = (count - 1).astype(jnp.float32) * (q / 100.0)
    below = jnp.floor(pos)
    frac = pos - below
    lo_idx = start + below.astype(jnp.int32)
    hi_idx = jnp.minimum(lo_idx + 1, start + count - 1)
    lead = values.shape[:-1]
    lo_val = jnp.take_along_axis(ordered, jnp.broadcast_to(lo_idx, (*lead, lo_idx.shape[0])), -1)
    hi_val = jnp.take_along_axis(ordered, jnp.broadcast_to(hi_idx, (*lead, hi_idx.shape[0])), -1)
    return lo_val + (hi_val - lo_val) * jnp.broadcast_to(frac, lo_val.shape)


@partial(jax.jit, static_argnames=("bits", "percentile"))
def _group_activation_params(
    stat_min: jax.Array,
    stat_max: jax.Array,
    edges: jax.Array,
    *,
    bits: int,
    percentile: float | None,
) -> tuple[jax.Array, jax.Array]:
    num_timesteps = stat_min.shape[-1]
    num_groups = edges.shape[0] - 1
    group_ids = group_of(jnp.arange(num_timesteps), edges)
    stat_min = stat_min.astype(jnp.float32)
    stat_max = stat_max.astype(jnp.float32)
    if percentile is None:
        lo = _segment_extreme(stat_min, group_ids, num_groups, is_max=False)
        hi = _segment_extreme(stat_max, group_ids, num_groups, is_max=True)
    else:
        lo = _segment_percentile(stat_min, group_ids, edges, 100.0 - percentile)
        hi = _segment_percentile(stat_max, group_ids, edges, percentile)
    return _activation_params(lo, hi, bits=bits)


def group_activation_params(
    stat_min: jax.Array,
    stat_max: jax.Array,
    edges: np.ndarray | jax.Array,
    *,
    bits: int,
    percentile: float | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Per-group activation quantization params from per-timestep range statistics.

    Each group's range is ``[min over its timesteps of stat_min, max over them of stat_max]``; with
    ``percentile=p`` it is ``[(100 - p)-th percentile of stat_min, p-th percentile of stat_max]``
    over the group's timesteps (linear interpolation, as numpy), which clips rare outlier steps.
    The range then goes through :func:`thermojax.activation_params` (widened to include zero).

    Args:
        stat_min: per-timestep minima ``[..., T]``.
        stat_max: per-timestep maxima ``[..., T]``.
        edges: int ``[G + 1]`` partition of ``T`` (concrete: validated here).
        bits: activation bit width in [2, 16].
        percentile: optional ``p`` in ``(50, 100]``; None means plain min/max.

    Returns:
        ``(scales, zero_points)``, float32 ``[..., G]``.

    Raises:
        ValueError: shape mismatch, ``edges[-1] != T``, bad ``bits`` or ``percentile``.
    """
    check_act_bits(bits)
    arr = _concrete_edges(edges)
    if jnp.shape(stat_min) != jnp.shape(stat_max):
        raise ValueError(
            f"stat_min and stat_max must have the same shape, got {jnp.shape(stat_min)} and "
            f"{jnp.shape(stat_max)}"
        )
    if jnp.ndim(stat_min) < 1 or jnp.shape(stat_min)[-1] != arr[-1]:
        raise ValueError(
            f"statistics must be [..., T] with T = edges[-1] = {int(arr[-1])}, "
            f"got shape {jnp.shape(stat_min)}"
        )
    if percentile is not None:
        percentile = float(percentile)
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got percentile={percentile}")
    return _group_activation_params(
        stat_min, stat_max, jnp.asarray(arr), bits=int(bits), percentile=percentile
    )


def expand_to_timesteps(params: jax.Array, edges: np.ndarray | jax.Array) -> jax.Array:
    """Broadcast per-group values ``[..., G]`` to every timestep: ``[..., T]``.

    Args:
        params: per-group values, last axis ``G``.
        edges: concrete int ``[G + 1]`` partition (``T = edges[-1]`` fixes the output shape).

    Returns:
        ``params[..., group_of(t, edges)]`` for ``t`` in ``[0, T)``.

    Raises:
        ValueError: ``params.shape[-1] != G`` or ``edges`` is not a valid partition.
    """
    arr = _concrete_edges(edges)
    num_groups = arr.shape[0] - 1
    if jnp.ndim(params) < 1 or jnp.shape(params)[-1] != num_groups:
        raise ValueError(
            f"params must be [..., G] with G = len(edges) - 1 = {num_groups}, "
            f"got shape {jnp.shape(params)}"
        )
    group_ids = np.repeat(np.arange(num_groups, dtype=np.int32), np.diff(arr))
    return jnp.take(jnp.asarray(params), jnp.asarray(group_ids), axis=-1)
