"""Phase 2: smoothing activation quantization parameters across time-group boundaries.

Two variants, so they can be compared:

- :func:`smooth_boundaries` turns group-level parameters ``[L, G]`` into a per-timestep schedule ``[L, T]``
  that blends the two groups' values over ``window`` timesteps on each side of every boundary
  (the sampler gathers row ``t`` of the schedule, i.e. ``edges = arange(T + 1)``).
- :func:`smooth_groups` is ArrowQuant V2's variant: each group's parameters become a weighted
  average of its own and its neighbours' (``window`` counted in groups); the result stays ``[L, G]``.

Both produce convex combinations of the input values, so scales stay positive and zero points stay inside
``[0, qmax]``. Neither rounds zero points: blended zero points are fractional, and whoever applies them
rounds them (``round`` then ``clip(0, qmax)``), exactly where the quantizer is evaluated.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

METHODS: tuple[str, ...] = ("linear", "cubic", "sigmoid")
MAX_STEEPNESS = float(np.finfo(np.float32).max)
"""The largest sigmoid slope: the blend is computed in float32, where a larger one is inf."""


def blend_weights(u: Array, *, method: str, steepness: float = 10.0) -> Array:
    """The blend curve ``f(u)`` on ``[0, 1]``: increasing, ``f(0) = 0``, ``f(1) = 1``.

    Args:
        u: positions in ``[0, 1]`` (values outside are clipped).
        method: ``"linear"`` (``u``), ``"cubic"`` (smoothstep / cubic Hermite ``3u^2 - 2u^3``) or
            ``"sigmoid"`` (a logistic curve of slope ``steepness`` at ``u = 1/2``, rescaled so that it
            reaches exactly 0 and 1 at the ends).
        steepness: slope parameter of the sigmoid; ignored by the other methods.

    Returns:
        ``f(u)`` with the shape of ``u``.
    """
    _check_method(method, steepness)
    return _blend(jnp.asarray(u, jnp.float32), method, steepness)


def _blend(u: Array, method: str, steepness: float | Array) -> Array:
    u = jnp.clip(u, 0.0, 1.0)
    if method == "linear":
        return u
    if method == "cubic":
        return u * u * (3.0 - 2.0 * u)
    # (sigmoid(s (u - 1/2)) - sigmoid(-s/2)) / (sigmoid(s/2) - sigmoid(-s/2)), written with tanh
    # so that a small slope does not cancel to 0 / 0; a slope that underflows is the linear blend,
    # the curve's limit.
    half = jnp.tanh(0.25 * steepness)
    curve = (jnp.tanh(0.5 * steepness * (u - 0.5)) + half) / (2.0 * jnp.where(half > 0, half, 1.0))
    return jnp.where(half > 0, curve, u)


def boundary_budgets(edges: Array) -> tuple[Array, Array]:
    """How far each boundary may reach into its two groups without meeting another boundary's reach.

    Boundary ``b`` (``1 <= b < G``) sits between group ``b - 1`` and group ``b``. An interior group of
    ``n`` timesteps is split between its two boundaries: the boundary at its start gets the first
    ``n - n // 2`` timesteps, the one at its end the last ``n // 2``. The first and last groups have only
    one boundary, which gets the whole group.

    Args:
        edges: int array ``[G + 1]``.

    Returns:
        ``(left, right)``, int32 arrays ``[G - 1]``: timesteps available before / from boundary ``b``.
    """
    edges = jnp.asarray(edges, jnp.int32)
    sizes = edges[1:] - edges[:-1]
    num_groups = sizes.shape[0]
    groups = jnp.arange(num_groups)
    end_share = jnp.where(groups == 0, sizes, sizes // 2)
    start_share = jnp.where(groups == num_groups - 1, sizes, sizes - sizes // 2)
    return end_share[:-1], start_share[1:]


def smooth_boundaries(
    scales: Array,
    zero_points: Array,
    edges: Array,
    *,
    num_timesteps: int,
    method: str = "linear",
    window: int,
    steepness: float = 10.0,
) -> tuple[Array, Array]:
    """Per-timestep parameter schedules that blend each boundary's two groups over a window.

    Around boundary ``b`` at timestep ``e = edges[b]`` the blending window covers timesteps
    ``[e - wl, e + wr)`` with ``wl = min(window, left budget)`` and ``wr = min(window, right budget)``
    (:func:`boundary_budgets`: windows are clipped so that two windows never overlap and never cross
    another boundary). Inside it the value at timestep ``t`` is

        ``p[b - 1] + f(u) * (p[b] - p[b - 1])``, ``u = (t - (e - wl) + 1) / (wl + wr + 1)``,

    so a linear blend moves in ``wl + wr + 1`` equal steps. Outside every window the group's own value is
    returned exactly. For monotone inputs the schedule is monotone. Vectorized over layers and boundaries
    (one gather per timestep); jit-compatible with ``edges`` traced as long as the keyword options are
    static.

    Zero points are blended like scales and not rounded (they stay within the range of their two groups,
    hence within ``[0, qmax]``); round them where the quantizer uses them.

    Args:
        scales: ``[L, G]`` positive scales.
        zero_points: ``[L, G]`` zero points.
        edges: int ``[G + 1]`` group edges, ``edges[0] = 0``, ``edges[G] = num_timesteps``.
        num_timesteps: ``T``.
        method: ``"linear"``, ``"cubic"`` or ``"sigmoid"`` (:func:`blend_weights`).
        window: timesteps blended on each side of a boundary, ``1 <= window <= `` smallest group size.
        steepness: sigmoid slope (``method="sigmoid"`` only), positive.

    Returns:
        ``(scales [L, T], zero_points [L, T])`` float32.

    Raises:
        ValueError: on a bad method, window, steepness, shapes or edges (checked when concrete).

    Example:
        >>> s, z = smooth_boundaries(jnp.array([[1.0, 2.0]]), jnp.array([[0.0, 4.0]]),
        ...                          jnp.array([0, 4, 8]), num_timesteps=8, window=2)
        >>> [round(float(v), 2) for v in s[0]]
        [1.0, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.0]
    """
    _check_method(method, steepness)
    scales, zero_points = _check_params(scales, zero_points)
    edges = _check_edges(edges, num_groups=scales.shape[-1], num_timesteps=num_timesteps)
    sizes = np.diff(edges) if isinstance(edges, np.ndarray) else None
    if not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"window must be an integer >= 1 timestep, got window={window!r}")
    if sizes is not None and window > sizes.min():
        raise ValueError(
            f"window={window} is larger than the smallest time group ({int(sizes.min())} timesteps)"
        )
    return _smooth_boundaries(
        scales,
        zero_points,
        edges,
        num_timesteps=int(num_timesteps),
        method=method,
        window=int(window),
        steepness=float(steepness),
    )


@functools.partial(jax.jit, static_argnames=("num_timesteps", "method"))
def _smooth_boundaries(scales, zero_points, edges, *, num_timesteps, method, window, steepness):
    scales = scales.astype(jnp.float32)
    zero_points = zero_points.astype(jnp.float32)
    edges = edges.astype(jnp.int32)
    num_groups = scales.shape[-1]
    t = jnp.arange(num_timesteps)
    group = jnp.clip(jnp.searchsorted(edges, t, side="right") - 1, 0, num_groups - 1)
    if num_groups == 1:
        return (
            jnp.broadcast_to(scales, (scales.shape[0], num_timesteps)),
            jnp.broadcast_to(zero_points, (scales.shape[0], num_timesteps)),
        )
    left_budget, right_budget = boundary_budgets(edges)
    # Per boundary b = 1..G-1 (stored at index b, index 0 and G are padding).
    pad = jnp.zeros((1,), jnp.int32)
    wl = jnp.concatenate([pad, jnp.minimum(window, left_budget), pad])
    wr = jnp.concatenate([pad, jnp.minimum(window, right_budget), pad])
    # A timestep can only be in the window of the boundary at its group's start or at its end.
    start_b = group
    end_b = group + 1
    in_start = (group > 0) & (t < edges[start_b] + wr[start_b])
    in_end = (group < num_groups - 1) & (t >= edges[end_b] - wl[end_b])
    boundary = jnp.where(in_start, start_b, end_b)
    inside = in_start | in_end
    low = edges[boundary] - wl[boundary]
    u = (t - low + 1).astype(jnp.float32) / (wl[boundary] + wr[boundary] + 1).astype(jnp.float32)
    f = jnp.where(inside, _blend(u, method, steepness), 0.0)
    left = jnp.where(inside, boundary - 1, group)
    right = jnp.where(inside, boundary, group)

    # p_left + f (p_right - p_left): exactly p_left where f = 0 or the two groups agree, and monotone
    # in f, so monotone inputs give monotone schedules. One clipped take per side for both
    # parameters (indices are in range; "clip" skips the out-of-bounds fill that costs ~2x on CPU).
    params = jnp.concatenate([scales, zero_points], axis=0)
    at_left = jnp.take(params, left, axis=1, mode="clip")
    at_right = jnp.take(params, right, axis=1, mode="clip")
    blended = at_left + f[None, :] * (at_right - at_left)
    return blended[: scales.shape[0]], blended[scales.shape[0] :]


def smooth_groups(
    scales: Array,
    zero_points: Array,
    *,
    window: int,
    method: str = "linear",
    steepness: float = 10.0,
) -> tuple[Array, Array]:
    """ArrowQuant V2's variant: blend whole groups' parameters with their neighbours.

    Group ``g`` becomes ``sum_h k(|g - h|) p[h] / sum_h k(|g - h|)`` over the groups ``h`` with
    ``|g - h| <= window``, where ``k(d) = 1 - f(d / (window + 1))`` and ``f`` is the blend curve
    (:func:`blend_weights`); the kernel is renormalized where it is cut at the first and last group.
    Zero points are averaged, not rounded (they stay within ``[0, qmax]``).

    Args:
        scales: ``[L, G]`` positive scales.
        zero_points: ``[L, G]`` zero points.
        window: neighbouring groups on each side, ``1 <= window <= max(G - 1, 1)``.
        method: ``"linear"``, ``"cubic"`` or ``"sigmoid"``.
        steepness: sigmoid slope (``method="sigmoid"`` only).

    Returns:
        ``(scales [L, G], zero_points [L, G])`` float32.

    Raises:
        ValueError: on a bad method, window or shapes.
    """
    _check_method(method, steepness)
    scales, zero_points = _check_params(scales, zero_points)
    num_groups = scales.shape[-1]
    if not isinstance(window, int | np.integer) or window < 1 or window > max(num_groups - 1, 1):
        raise ValueError(
            f"window must be an integer in [1, {max(num_groups - 1, 1)}] groups "
            f"(num_groups={num_groups}), got window={window!r}"
        )
    return _smooth_groups(
        scales,
        zero_points,
        window=int(window),
        method=method,
        steepness=float(steepness),
    )


@functools.partial(jax.jit, static_argnames=("method",))
def _smooth_groups(scales, zero_points, *, window, method, steepness):
    groups = jnp.arange(scales.shape[-1])
    distance = jnp.abs(groups[:, None] - groups[None, :]).astype(jnp.float32)
    reach = jnp.asarray(window, jnp.float32)
    kernel = 1.0 - _blend(distance / (reach + 1.0), method, steepness)
    kernel = jnp.where(distance <= reach, kernel, 0.0)
    kernel = kernel / jnp.sum(kernel, axis=1, keepdims=True)
    precision = jax.lax.Precision.HIGHEST  # fp32 accumulation on every backend

    def average(params):
        return jnp.matmul(params.astype(jnp.float32), kernel.T, precision=precision)

    return average(scales), average(zero_points)


def _check_method(method: str, steepness: float) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown smoothing method={method!r}; expected one of {METHODS}")
    if method == "sigmoid" and not 0 < float(steepness) <= MAX_STEEPNESS:
        raise ValueError(
            f"sigmoid steepness must be > 0 and <= {MAX_STEEPNESS:.6g} (float32), "
            f"got steepness={steepness!r}"
        )


def _check_params(scales, zero_points) -> tuple[Array, Array]:
    # Shapes only: the jitted kernels cast, so numpy inputs take one transfer, device arrays none.
    scales = scales if hasattr(scales, "shape") else np.asarray(scales)
    zero_points = zero_points if hasattr(zero_points, "shape") else np.asarray(zero_points)
    if len(scales.shape) != 2 or tuple(scales.shape) != tuple(zero_points.shape):
        raise ValueError(
            f"scales and zero_points must both be [layers, groups]; got scales{tuple(scales.shape)} "
            f"and zero_points{tuple(zero_points.shape)}"
        )
    return scales, zero_points


def _check_edges(edges, *, num_groups: int, num_timesteps: int):
    """Validate edges; returns a numpy array when concrete, the traced array otherwise."""
    if isinstance(edges, jax.core.Tracer):
        if edges.shape != (num_groups + 1,):
            raise ValueError(f"edges must have shape ({num_groups + 1},), got {edges.shape}")
        return edges
    edges = np.asarray(edges)
    if edges.shape != (num_groups + 1,):
        raise ValueError(
            f"edges must have shape ({num_groups + 1},) for {num_groups} groups, got {edges.shape}"
        )
    if edges[0] != 0 or edges[-1] != num_timesteps or np.any(np.diff(edges) < 1):
        raise ValueError(
            f"edges must rise strictly from 0 to num_timesteps={num_timesteps}, got {edges.tolist()}"
        )
    return edges.astype(np.int32)
