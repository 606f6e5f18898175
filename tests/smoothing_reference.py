"""Phase 2 smoothing in float64 numpy with loops over boundaries and groups (test helper).

Shared by the core's smoothing tests and the pipeline's tests of the parameters a run applies.
"""

import numpy as np


def ref_curve(u: float, method: str, steepness: float) -> float:
    u = min(max(u, 0.0), 1.0)
    if method == "linear":
        return u
    if method == "cubic":
        return 3 * u**2 - 2 * u**3

    def sig(v):
        return 1.0 / (1.0 + np.exp(-v))

    lo, hi = sig(-steepness / 2), sig(steepness / 2)
    return (sig(steepness * (u - 0.5)) - lo) / (hi - lo)


def ref_smooth_boundaries(params, edges, window, method, steepness=10.0):
    """float64 reference: start from the piecewise-constant schedule, then rewrite each window."""
    params = np.asarray(params, np.float64)
    num_groups = params.shape[1]
    sizes = np.diff(edges)
    out = np.repeat(params, sizes, axis=1)
    for b in range(1, num_groups):
        left_size, right_size = sizes[b - 1], sizes[b]
        left_budget = left_size if b - 1 == 0 else left_size // 2
        right_budget = right_size if b == num_groups - 1 else right_size - right_size // 2
        wl, wr = min(window, left_budget), min(window, right_budget)
        start = edges[b] - wl
        for t in range(start, edges[b] + wr):
            f = ref_curve((t - start + 1) / (wl + wr + 1), method, steepness)
            out[:, t] = (1 - f) * params[:, b - 1] + f * params[:, b]
    return out


def ref_smooth_groups(params, window, method, steepness=10.0):
    params = np.asarray(params, np.float64)
    num_groups = params.shape[1]
    out = np.zeros_like(params)
    for g in range(num_groups):
        weights = np.zeros(num_groups)
        for h in range(max(0, g - window), min(num_groups, g + window + 1)):
            weights[h] = 1 - ref_curve(abs(g - h) / (window + 1), method, steepness)
        out[:, g] = params @ (weights / weights.sum())
    return out
