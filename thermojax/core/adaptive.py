"""Adaptive time groups: choose the ``G - 1`` boundaries by dynamic programming over timestep statistics.

Notation, per layer ``l`` and timestep ``t`` (statistics widened to include zero, as the quantizer does):
``m_t = min(stat_min[l, t], 0)``, ``M_t = max(stat_max[l, t], 0)``, ``r_t = M_t - m_t``, and
``R_l = max_t r_t`` (the layer's widest range, used to normalize). A group ``[a, e)`` has the range
``R = max M_t - min m_t`` over its timesteps and quantization parameters ``P = (s, z)`` with
``s = max(R, 1e-6 R_l) / qmax``, ``z = clip(round(-min m_t / s), 0, qmax)``; ``p_t`` are the same for a
single timestep. Parameters are compared with the symmetric Markov jump (a metric)::

    d(P, Q) = |log s_P - log s_Q| + |z_P - z_Q| / qmax

**Within-group cost** ``c(a, e)``, averaged over layers:

- ``cost="range"``: ``sum_{t in [a, e)} (R - r_t) / (T R_l)`` -- how far the group's range exceeds each
  timestep's own range (0 for per-timestep parameters; below 2, since ``R <= 2 R_l``);
- ``cost="mse"``: ``sum_{t in [a, e)} (R^2 - r_t^2) / (T R_l^2)`` -- the excess uniform-quantization noise
  (the noise of a step ``R / qmax`` is ``R^2 / (12 qmax^2)``; the constant factor is dropped).

**Objective** for edges ``e_0 = 0 < e_1 < ... < e_G = T`` with groups ``P_g = P(e_g, e_{g+1})``::

    jump="exact":  J = sum_g c(e_g, e_{g+1}) + lam * mean_{b=1}^{G-1} d(P_{b-1}, P_b)
    jump="bound":  J = sum_g c(e_g, e_{g+1})
                       + lam * mean_{b=1}^{G-1} [d(P_{b-1}, p_{e_b - 1}) + d(p_{e_b - 1}, p_{e_b})
                                                + d(p_{e_b}, P_b)]

(each ``d`` term averaged over layers; the jumps are averaged over the ``G - 1`` boundaries, so ``lam``
trades the mean boundary jump against the fraction of range wasted whatever ``G`` is; ``J`` has no jump
term when ``G = 1``). ``"exact"`` prices the real jump between adjacent groups, which
couples neighbouring groups: its DP keeps the previous group's start in the state and costs
``O(G T^3)``, so it is offered for ``T <= 128`` only. ``"bound"`` routes the jump through the per-timestep
parameters on either side of the boundary; by the triangle inequality it is an upper bound on the exact
jump, and it splits into a cost per group plus a cost per boundary position, so an ``O(G T^2)`` DP finds
its exact minimum. ``adaptive_edges`` returns an exact minimizer of the objective it is given (among
equal-cost partitions, whichever the DP's first-index ``argmin`` picks).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from thermojax.core.quant import check_act_bits

COSTS: tuple[str, ...] = ("range", "mse")
JUMPS: tuple[str, ...] = ("bound", "exact")
EXACT_MAX_TIMESTEPS = 128
MAX_LAM = 1e20
"""The largest jump weight ``lam``: the objective is float32 (largest 3.4e38), and a weight near
that makes the weighted jumps inf, which the search cannot tell from a forbidden group."""
_TINY = 1e-30
_SCALE_FLOOR = 1e-6


def adaptive_edges(
    stat_min: Array,
    stat_max: Array,
    num_groups: int,
    *,
    bits: int,
    lam: float,
    cost: str = "range",
    jump: str = "bound",
    min_group_size: int = 1,
) -> np.ndarray:
    """Edges ``[G + 1]`` (int32) minimizing :func:`segmentation_objective` over all ``G``-group partitions.

    With a large ``lam`` the minimizer may spend boundaries on one-timestep groups where the
    parameters are steady (a boundary there costs almost no jump), which in effect merges groups;
    ``min_group_size`` rules that out by searching only groups of at least that many timesteps.

    Args:
        stat_min: ``[L, T]`` per-timestep activation minima.
        stat_max: ``[L, T]`` per-timestep activation maxima.
        num_groups: ``G``, ``1 <= G <= T``.
        bits: activation bit width (2..16) for the parameters' ``qmax``.
        lam: weight of the boundary jumps, >= 0.
        cost: ``"range"`` or ``"mse"`` within-group cost.
        jump: ``"bound"`` (``O(G T^2)``, any ``T``) or ``"exact"`` (``O(G T^3)``, ``T <= 128``).
        min_group_size: smallest allowed group, ``1 <= min_group_size <= T // G``.

    Returns:
        ``np.ndarray`` int32 ``[G + 1]`` with ``edges[0] = 0`` and ``edges[G] = T``.

    Raises:
        ValueError: naming the offending argument and value.
    """
    stat_min, stat_max = _check(stat_min, stat_max, bits=bits, lam=lam, cost=cost, jump=jump)
    num_timesteps = stat_min.shape[1]
    if not isinstance(num_groups, int | np.integer) or not 1 <= num_groups <= num_timesteps:
        raise ValueError(
            f"num_groups must be an integer in [1, T={num_timesteps}], got num_groups={num_groups!r}"
        )
    if jump == "exact" and num_timesteps > EXACT_MAX_TIMESTEPS:
        raise ValueError(
            f"jump='exact' costs O(G T^3) and is limited to T <= {EXACT_MAX_TIMESTEPS}, "
            f"got T={num_timesteps}; use jump='bound'"
        )
    if not isinstance(min_group_size, int | np.integer) or not (
        1 <= min_group_size <= num_timesteps // num_groups
    ):
        raise ValueError(
            f"min_group_size must be an integer in [1, T // G = {num_timesteps // num_groups}], "
            f"got min_group_size={min_group_size!r}"
        )
    if num_groups == 1:
        return np.array([0, num_timesteps], np.int32)
    solve = _solve_exact if jump == "exact" else _solve_bound
    edges = solve(
        stat_min,
        stat_max,
        jnp.float32(lam),
        jnp.int32(min_group_size),
        num_groups=int(num_groups),
        qmax=2**bits - 1,
        cost=cost,
    )
    return np.asarray(edges, np.int32)


def segmentation_objective(
    stat_min: Array,
    stat_max: Array,
    edges: Array,
    *,
    bits: int,
    lam: float,
    cost: str = "range",
    jump: str = "bound",
) -> Array:
    """The objective ``J(edges)`` that :func:`adaptive_edges` minimizes (module docstring), as a scalar.

    Evaluated directly from the groups (not through the DP tables), so it can score any partition,
    e.g. uniform edges, against the DP's. jit-compatible in ``edges``.
    """
    stat_min, stat_max = _check(stat_min, stat_max, bits=bits, lam=lam, cost=cost, jump=jump)
    return _objective(
        stat_min,
        stat_max,
        jnp.asarray(edges, jnp.int32),
        jnp.float32(lam),
        qmax=2**bits - 1,
        cost=cost,
        jump=jump,
    )


def _check(stat_min, stat_max, *, bits, lam, cost, jump):
    stat_min = jnp.asarray(stat_min, jnp.float32)
    stat_max = jnp.asarray(stat_max, jnp.float32)
    if stat_min.ndim != 2 or stat_min.shape != stat_max.shape:
        raise ValueError(
            f"stat_min and stat_max must both be [layers, timesteps]; got "
            f"stat_min{tuple(stat_min.shape)} and stat_max{tuple(stat_max.shape)}"
        )
    if cost not in COSTS:
        raise ValueError(f"unknown cost={cost!r}; expected one of {COSTS}")
    if jump not in JUMPS:
        raise ValueError(f"unknown jump={jump!r}; expected one of {JUMPS}")
    check_act_bits(bits)
    if not (math.isfinite(float(lam)) and 0 <= float(lam) <= MAX_LAM):
        raise ValueError(f"lam must be a number in [0, {MAX_LAM:g}], got lam={lam!r}")
    return stat_min, stat_max


def _widened(stat_min, stat_max):
    low = jnp.minimum(stat_min, 0.0)
    high = jnp.maximum(stat_max, 0.0)
    widest = jnp.max(high - low, axis=1, keepdims=True)
    return low, high, jnp.maximum(widest, _TINY)


def _params(low, high, widest, qmax):
    """(log scale, zero point) of ranges [low, high]; ``widest`` broadcasts against them."""
    scale = jnp.maximum(high - low, _SCALE_FLOOR * widest) / qmax
    return jnp.log(scale), jnp.clip(jnp.round(-low / scale), 0.0, qmax)


def _distance(log_a, z_a, log_b, z_b, qmax):
    return jnp.abs(log_a - log_b) + jnp.abs(z_a - z_b) / qmax


def _excess(group_range, ranges, widest, cost):
    """Per-timestep within-group cost, before summing over the group's timesteps."""
    if cost == "range":
        return (group_range - ranges) / widest
    return (jnp.square(group_range) - jnp.square(ranges)) / jnp.square(widest)


@functools.partial(jax.jit, static_argnames=("qmax", "cost", "jump"))
def _objective(stat_min, stat_max, edges, lam, *, qmax, cost, jump):
    low, high, widest = _widened(stat_min, stat_max)
    num_layers, num_timesteps = low.shape
    num_groups = edges.shape[0] - 1
    group = jnp.searchsorted(edges, jnp.arange(num_timesteps), side="right") - 1
    group_low = jax.ops.segment_min(low.T, group, num_groups).T  # [L, G]
    group_high = jax.ops.segment_max(high.T, group, num_groups).T
    ranges = high - low
    group_range = (group_high - group_low)[:, group]
    within = jnp.sum(_excess(group_range, ranges, widest, cost)) / (num_timesteps * num_layers)
    if num_groups == 1:
        return within
    log_s, zp = _params(group_low, group_high, widest, qmax)
    if jump == "exact":
        jumps = _distance(log_s[:, :-1], zp[:, :-1], log_s[:, 1:], zp[:, 1:], qmax)
    else:
        step_log, step_zp = _params(low, high, widest, qmax)
        before, after = edges[1:-1] - 1, edges[1:-1]
        jumps = (
            _distance(log_s[:, :-1], zp[:, :-1], step_log[:, before], step_zp[:, before], qmax)
            + _distance(
                step_log[:, before], step_zp[:, before], step_log[:, after], step_zp[:, after], qmax
            )
            + _distance(step_log[:, after], step_zp[:, after], log_s[:, 1:], zp[:, 1:], qmax)
        )
    return within + lam * jnp.sum(jumps) / (num_layers * (num_groups - 1))


def _segment_columns(low, high, widest, column_fn, *, qmax, cost):
    """Scan over group ends: ``column_fn(t, within, log_s, zp)`` for all groups ``[a, t + 1)`` at once.

    ``within``, ``log_s`` and ``zp`` are ``[L, T (start a)]``; entries with ``a > t`` are garbage and
    callers mask them. Group minima and maxima are updated incrementally (O(L T) per end, O(L T^2) in
    all); the within-group cost uses prefix sums of the per-timestep ranges.
    """
    num_layers, num_timesteps = low.shape
    ranges = high - low
    moment = ranges if cost == "range" else jnp.square(ranges)
    prefix = jnp.concatenate([jnp.zeros((num_layers, 1)), jnp.cumsum(moment, axis=1)], axis=1)
    starts = jnp.arange(num_timesteps)
    norm = widest if cost == "range" else jnp.square(widest)

    def step(carry, t):
        group_low, group_high = carry
        valid = (starts <= t)[None, :]
        group_low = jnp.where(
            valid, jnp.minimum(group_low, jax.lax.dynamic_slice_in_dim(low, t, 1, 1)), 0.0
        )
        group_high = jnp.where(
            valid, jnp.maximum(group_high, jax.lax.dynamic_slice_in_dim(high, t, 1, 1)), 0.0
        )
        group_range = group_high - group_low
        size = (t + 1 - starts)[None, :].astype(jnp.float32)
        power = group_range if cost == "range" else jnp.square(group_range)
        inside = jax.lax.dynamic_slice_in_dim(prefix, t + 1, 1, 1) - prefix[:, :-1]
        within = (size * power - inside) / (norm * num_timesteps)
        log_s, zp = _params(group_low, group_high, widest, qmax)
        # Garbage starts (a > t) restart from +/-inf so the next valid update is exact.
        carry = (jnp.where(valid, group_low, jnp.inf), jnp.where(valid, group_high, -jnp.inf))
        return carry, column_fn(t, within, log_s, zp)

    init = (jnp.full(low.shape, jnp.inf), jnp.full(low.shape, -jnp.inf))
    _, columns = jax.lax.scan(step, init, jnp.arange(num_timesteps))
    return columns


def _to_table(columns, fill, min_size=1):
    """``[..., T (end - 1), T (start)]`` -> ``[..., T + 1 (start), T + 1 (end)]``.

    Entries that are not groups of at least ``min_size`` timesteps hold ``fill``.
    """
    size = columns.shape[-1] + 1
    table = jnp.swapaxes(columns, -1, -2)
    pad_end = jnp.full(table.shape[:-1] + (1,), fill, table.dtype)
    table = jnp.concatenate([pad_end, table], axis=-1)
    pad_start = jnp.full(table.shape[:-2] + (1, size), fill, table.dtype)
    table = jnp.concatenate([table, pad_start], axis=-2)
    valid = jnp.arange(size)[None, :] - jnp.arange(size)[:, None] >= min_size
    return jnp.where(valid, table, fill)


@functools.partial(jax.jit, static_argnames=("num_groups", "qmax", "cost"))
def _solve_bound(stat_min, stat_max, lam, min_size, *, num_groups, qmax, cost):
    low, high, widest = _widened(stat_min, stat_max)
    num_timesteps = low.shape[1]
    step_log, step_zp = _params(low, high, widest, qmax)
    jump_scale = lam / (num_groups - 1)
    gap = jnp.mean(
        _distance(step_log[:, :-1], step_zp[:, :-1], step_log[:, 1:], step_zp[:, 1:], qmax), axis=0
    )
    gap = jnp.concatenate([jnp.zeros((1,)), gap])  # gap[a] = d(p_{a-1}, p_a), none before t = 0
    has_prev = (jnp.arange(num_timesteps) > 0)[None, :]

    def column(t, within, log_s, zp):
        entry = jnp.where(has_prev, _distance(step_log, step_zp, log_s, zp, qmax), 0.0)
        last_log = jax.lax.dynamic_slice_in_dim(step_log, t, 1, 1)
        last_zp = jax.lax.dynamic_slice_in_dim(step_zp, t, 1, 1)
        exit_ = jnp.where(t + 1 < num_timesteps, _distance(log_s, zp, last_log, last_zp, qmax), 0.0)
        per_layer = within + jump_scale * (entry + exit_)
        return jnp.mean(per_layer, axis=0) + jump_scale * gap

    columns = _segment_columns(low, high, widest, column, qmax=qmax, cost=cost)
    return _dp(_to_table(columns, jnp.inf, min_size), num_groups, num_timesteps)


def _dp(table, num_groups, num_timesteps):
    """min over chains 0 = e_0 < ... < e_G = T of sum_g table[e_g, e_{g+1}]; returns the edges."""
    best = jnp.full((num_timesteps + 1,), jnp.inf).at[0].set(0.0)

    def step(best, _):
        candidates = best[:, None] + table  # [start, end]
        return jnp.min(candidates, axis=0), jnp.argmin(candidates, axis=0)

    _, choices = jax.lax.scan(step, best, None, length=num_groups)  # choices[g][end] = start

    def back(end, choice):
        start = choice[end]
        return start, start

    _, starts = jax.lax.scan(back, jnp.int32(num_timesteps), choices, reverse=True)
    return jnp.concatenate([starts.astype(jnp.int32), jnp.array([num_timesteps], jnp.int32)])


@functools.partial(jax.jit, static_argnames=("num_groups", "qmax", "cost"))
def _solve_exact(stat_min, stat_max, lam, min_size, *, num_groups, qmax, cost):
    low, high, widest = _widened(stat_min, stat_max)
    num_timesteps = low.shape[1]
    columns = _segment_columns(
        low, high, widest, lambda t, *per_layer: per_layer, qmax=qmax, cost=cost
    )  # three [T (end - 1), L, T (start)]
    within, log_s, zp = (jnp.moveaxis(c, 1, 0) for c in columns)
    cost_table = _to_table(jnp.mean(within, axis=0), jnp.inf, min_size)  # [start, end]
    log_s, zp = _to_table(log_s, 0.0), _to_table(zp, 0.0)  # [L, start, end]
    # jump[a, b, e] = d(P(a, b), P(b, e)) averaged over layers (one start a at a time: O(L T^2) memory).
    jump = jax.lax.map(
        lambda a: jnp.mean(
            _distance(log_s[:, a, :, None], zp[:, a, :, None], log_s, zp, qmax), axis=0
        ),
        jnp.arange(num_timesteps + 1),
    ) * (lam / (num_groups - 1))
    first = jnp.where(jnp.arange(num_timesteps + 1)[:, None] == 0, cost_table, jnp.inf)  # [a, e]

    def step(state, _):
        # state[a, b]: best cost of [0, b) whose last group is [a, b).
        candidates = state[:, :, None] + jump  # [a, b, e]
        return jnp.min(candidates, axis=0) + cost_table, jnp.argmin(candidates, axis=0)

    final, choices = jax.lax.scan(step, first, None, length=num_groups - 1)
    last_start = jnp.argmin(final[:, num_timesteps]).astype(jnp.int32)

    def back(carry, choice):
        start, end = carry
        previous = choice[start, end].astype(jnp.int32)
        return (previous, start), previous

    _, earlier = jax.lax.scan(back, (last_start, jnp.int32(num_timesteps)), choices, reverse=True)
    return jnp.concatenate([earlier, jnp.stack([last_start, jnp.int32(num_timesteps)])]).astype(
        jnp.int32
    )
