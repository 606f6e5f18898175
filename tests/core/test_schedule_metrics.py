"""Per-timestep schedule metrics against a float64 numpy reference of the window definition."""

import numpy as np
import pytest

from thermojax.core.markov import markov_metrics
from thermojax.core.schedule_metrics import schedule_metrics
from thermojax.core.smoothing import smooth_boundaries


def ref_windows(edges):
    """Window of each boundary b: [edges[b] - left, edges[b] + right) (first/last group whole)."""
    sizes = np.diff(edges)
    num_groups = len(sizes)
    out = []
    for b in range(1, num_groups):
        left = sizes[b - 1] if b == 1 else sizes[b - 1] // 2
        right = sizes[b] if b == num_groups - 1 else sizes[b] - sizes[b] // 2
        out.append((edges[b] - left, edges[b] + right))
    return out


def ref_window_jumps(scales, zero_points, edges, qmax):
    scales = np.asarray(scales, np.float64)
    zps = np.clip(np.round(np.asarray(zero_points, np.float64)), 0, qmax)
    scale_steps = np.abs(np.diff(scales, axis=1)) / scales[:, :-1]
    zp_steps = np.abs(np.diff(zps, axis=1)) / qmax
    windows = ref_windows(edges)
    covered = np.zeros(scales.shape[1] - 1, int)
    s_max, z_max = [], []
    for lo, hi in windows:
        # step t -> t + 1 belongs to the window holding timestep t + 1
        steps = [t for t in range(scales.shape[1] - 1) if lo <= t + 1 < hi]
        covered[steps] += 1
        s_max.append(scale_steps[:, steps].max(axis=1))
        z_max.append(zp_steps[:, steps].max(axis=1))
    assert np.all(covered == 1)  # the windows partition the steps
    return np.stack(s_max, 1), np.stack(z_max, 1)


@pytest.mark.parametrize(
    "edges",
    [[0, 10, 20, 30, 40], [0, 3, 10, 14, 20], [0, 1, 2, 9], [0, 5, 12]],
    ids=["uniform", "uneven", "tiny-groups", "two-groups"],
)
def test_window_maxima_match_reference(edges):
    edges = np.array(edges)
    rng = np.random.default_rng(len(edges))
    num_timesteps = edges[-1]
    scales = np.exp(np.cumsum(rng.normal(scale=0.2, size=(3, num_timesteps)), axis=1)).astype(
        np.float32
    )
    zero_points = rng.uniform(0, 15, size=(3, num_timesteps)).astype(np.float32)
    m = schedule_metrics(scales, zero_points, edges, qmax=15, threshold=0.2)
    s_max, z_max = ref_window_jumps(scales, zero_points, edges, 15)
    np.testing.assert_allclose(m.windows.scale_jumps, s_max, rtol=1e-5)
    np.testing.assert_allclose(m.windows.zero_point_jumps, z_max, rtol=1e-6)
    total = s_max + z_max
    np.testing.assert_allclose(m.windows.boundary_scores, 1 - np.minimum(1, total / 2), rtol=1e-5)
    np.testing.assert_allclose(
        m.windows.smoothness_score,
        1 - np.minimum(1, total.sum(axis=1) / (2 * (len(edges) - 2))),
        rtol=1e-5,
    )
    np.testing.assert_array_equal(m.windows.violations, s_max > 0.2)
    expected_severity = np.where(
        s_max > 0.2, np.where(s_max > 0.5, 3, np.where(s_max > 0.3, 2, 1)), 0
    )
    np.testing.assert_array_equal(m.windows.severity, expected_severity)
    assert m.steps.scale_jumps.shape == (3, num_timesteps - 1)


def test_piecewise_constant_schedule_scores_like_its_groups():
    rng = np.random.default_rng(0)
    edges = np.array([0, 13, 40, 52, 80])
    group_scales = rng.uniform(0.1, 2.0, size=(4, 4)).astype(np.float32)
    group_zps = rng.integers(0, 256, size=(4, 4)).astype(np.float32)
    sizes = np.diff(edges)
    m = schedule_metrics(
        np.repeat(group_scales, sizes, axis=1),
        np.repeat(group_zps, sizes, axis=1),
        edges,
        qmax=255,
        threshold=0.3,
    )
    g = markov_metrics(group_scales, group_zps, qmax=255, threshold=0.3)
    # The window jumps are the group jumps bit for bit; the group means agree to rounding.
    np.testing.assert_array_equal(m.windows.scale_jumps, g.scale_jumps)
    np.testing.assert_array_equal(m.windows.zero_point_jumps, g.zero_point_jumps)
    np.testing.assert_allclose(m.windows.smoothness_score, g.smoothness_score, rtol=1e-6)
    np.testing.assert_array_equal(m.windows.severity, g.severity)
    np.testing.assert_allclose(m.groups.scale_jumps, g.scale_jumps, rtol=1e-5)
    np.testing.assert_allclose(m.groups.zero_point_jumps, g.zero_point_jumps, rtol=1e-5)
    np.testing.assert_array_equal(m.groups.severity, g.severity)


def test_smoothing_lowers_the_window_jumps_it_should():
    group_scales = np.array([[1.0, 2.0, 4.0, 8.0]], np.float32)
    group_zps = np.zeros((1, 4), np.float32)
    edges = np.array([0, 25, 50, 75, 100])
    window = 6
    scales, zps = smooth_boundaries(
        group_scales, group_zps, edges, num_timesteps=100, method="linear", window=window
    )
    m = schedule_metrics(scales, zps, edges, qmax=255, threshold=0.3)
    baseline = markov_metrics(group_scales, group_zps, qmax=255, threshold=0.3)
    # A doubling spread over 2w + 1 equal steps: the largest relative step is the first one.
    expected = (1.0 / (2 * window + 1)) / 1.0
    np.testing.assert_allclose(m.windows.scale_jumps, expected, rtol=1e-5)
    assert float(m.windows.smoothness_score[0]) > float(baseline.smoothness_score[0])
    assert int(m.windows.violations.sum()) == 0 and int(baseline.violations.sum()) == 3


def test_fractional_zero_points_are_measured_as_applied():
    scales = np.ones((1, 20), np.float32)
    zps = np.linspace(0.0, 3.0, 20, dtype=np.float32)[None, :]
    edges = np.array([0, 10, 20])
    applied = schedule_metrics(scales, zps, edges, qmax=15, threshold=0.3)
    raw = schedule_metrics(scales, zps, edges, qmax=15, threshold=0.3, round_zero_points=False)
    np.testing.assert_allclose(applied.windows.zero_point_jumps, 1.0 / 15)
    np.testing.assert_allclose(raw.windows.zero_point_jumps, (3.0 / 19) / 15, rtol=1e-5)


def test_vector_of_thresholds_and_single_group():
    rng = np.random.default_rng(1)
    scales = rng.uniform(0.5, 1.5, size=(2, 30)).astype(np.float32)
    zps = np.zeros((2, 30), np.float32)
    edges = np.array([0, 10, 20, 30])
    m = schedule_metrics(scales, zps, edges, qmax=255, threshold=np.array([0.1, 0.5, 10.0]))
    assert m.windows.violations.shape == m.windows.severity.shape == (3, 2, 2)
    assert m.windows.violations[0].sum() >= m.windows.violations[1].sum()
    assert m.windows.violations[2].sum() == 0
    single = schedule_metrics(scales, zps, np.array([0, 30]), qmax=255, threshold=0.3)
    assert single.windows.scale_jumps.shape == (2, 0)
    np.testing.assert_array_equal(single.windows.smoothness_score, 1.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"edges": np.array([0, 10, 25])}, "edges"),
        ({"zero_points": np.zeros((1, 20))}, "zero_points"),
        ({"qmax": 0}, "qmax=0"),
        ({"threshold": np.zeros((2, 2))}, "threshold"),
    ],
)
def test_rejects_bad_arguments(args, message):
    options = {
        "scales": np.ones((2, 20)),
        "zero_points": np.zeros((2, 20)),
        "edges": np.array([0, 10, 20]),
        "qmax": 255,
        "threshold": 0.3,
        **args,
    }
    scales, zps, edges = options.pop("scales"), options.pop("zero_points"), options.pop("edges")
    with pytest.raises(ValueError, match=message):
        schedule_metrics(scales, zps, edges, **options)
