"""Phase 2 smoothing against an independent float64 numpy reference (loops over boundaries)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoothing_reference import ref_curve, ref_smooth_boundaries, ref_smooth_groups

from thermojax.core.smoothing import blend_weights, smooth_boundaries, smooth_groups

METHODS = ["linear", "cubic", "sigmoid"]


def random_params(rng, layers, groups, qmax=255):
    scales = rng.uniform(0.01, 2.0, size=(layers, groups)).astype(np.float32)
    zero_points = rng.integers(0, qmax + 1, size=(layers, groups)).astype(np.float32)
    return scales, zero_points


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("edges", "window"),
    [
        ([0, 10, 20, 30, 40], 3),
        ([0, 3, 10, 14, 20], 3),  # interior group of 4: both windows clipped to 2
        ([0, 5, 6, 20], 1),  # a one-timestep group
        ([0, 8, 24], 8),  # edge groups give the whole group
    ],
    ids=["uniform", "clipped", "tiny-group", "full-window"],
)
def test_smooth_boundaries_matches_reference(method, edges, window):
    rng = np.random.default_rng(len(edges) * 10 + window)
    edges = np.array(edges)
    scales, zero_points = random_params(rng, 3, len(edges) - 1)
    s, z = smooth_boundaries(
        scales, zero_points, edges, num_timesteps=int(edges[-1]), method=method, window=window
    )
    assert s.shape == z.shape == (3, edges[-1])
    np.testing.assert_allclose(s, ref_smooth_boundaries(scales, edges, window, method), rtol=2e-6)
    np.testing.assert_allclose(
        z, ref_smooth_boundaries(zero_points, edges, window, method), rtol=2e-6, atol=1e-4
    )


@pytest.mark.parametrize("method", METHODS)
def test_unchanged_away_from_boundaries(method):
    rng = np.random.default_rng(0)
    edges = np.array([0, 25, 50, 75, 100])
    window = 5
    scales, zero_points = random_params(rng, 4, 4)
    s, z = smooth_boundaries(
        scales, zero_points, edges, num_timesteps=100, method=method, window=window
    )
    for g in range(4):
        lo = edges[g] + (window if g > 0 else 0)
        hi = edges[g + 1] - (window if g < 3 else 0)
        # Exactly the group's own value, bit for bit, outside every window.
        assert np.all(np.asarray(s)[:, lo:hi] == scales[:, g : g + 1])
        assert np.all(np.asarray(z)[:, lo:hi] == zero_points[:, g : g + 1])
        # ... and different at the timesteps next to a boundary (the window is really used).
        if g > 0:
            assert np.all(np.asarray(s)[:, edges[g]] != scales[:, g])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("direction", [1, -1], ids=["increasing", "decreasing"])
def test_monotone_inputs_give_monotone_schedules(method, direction):
    rng = np.random.default_rng(1)
    raw = np.sort(rng.uniform(0.1, 3.0, size=(5, 6)), axis=1)[:, ::direction].astype(np.float32)
    zps = np.sort(rng.integers(0, 16, size=(5, 6)), axis=1)[:, ::direction].astype(np.float32)
    edges = np.array([0, 7, 20, 31, 40, 52, 60])
    s, z = smooth_boundaries(raw, zps, edges, num_timesteps=60, method=method, window=6)
    for sched in (np.asarray(s), np.asarray(z)):
        steps = np.diff(sched, axis=1) * direction
        assert np.all(steps >= 0)
    # Every zero point stays within the range of the inputs, hence within [0, qmax].
    assert np.asarray(z).min() >= 0 and np.asarray(z).max() <= 15


def test_linear_blend_spreads_the_jump_evenly():
    s, _ = smooth_boundaries(
        jnp.array([[1.0, 3.0]]),
        jnp.zeros((1, 2)),
        np.array([0, 10, 20]),
        num_timesteps=20,
        window=4,
    )
    steps = np.diff(np.asarray(s)[0])
    # 2 units over 2*4 + 1 equal steps, nothing elsewhere.
    np.testing.assert_allclose(steps[5:14], 2.0 / 9, rtol=1e-5)
    assert np.all(steps[:5] == 0) and np.all(steps[14:] == 0)


def test_jit_with_traced_edges_matches_eager():
    rng = np.random.default_rng(2)
    scales, zero_points = random_params(rng, 2, 3)
    edges = np.array([0, 9, 21, 30])
    eager = smooth_boundaries(scales, zero_points, edges, num_timesteps=30, window=4)
    jitted = jax.jit(
        lambda e: smooth_boundaries(scales, zero_points, e, num_timesteps=30, window=4)
    )(jnp.asarray(edges))
    np.testing.assert_array_equal(eager[0], jitted[0])
    np.testing.assert_array_equal(eager[1], jitted[1])


def test_single_group_is_constant():
    s, z = smooth_boundaries(
        jnp.array([[2.0]]), jnp.array([[3.0]]), np.array([0, 7]), num_timesteps=7, window=1
    )
    assert np.all(np.asarray(s) == 2.0) and np.all(np.asarray(z) == 3.0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("window", [1, 2, 5])
def test_smooth_groups_matches_reference(method, window):
    rng = np.random.default_rng(window)
    scales, zero_points = random_params(rng, 4, 6)
    s, z = smooth_groups(scales, zero_points, window=window, method=method)
    np.testing.assert_allclose(s, ref_smooth_groups(scales, window, method), rtol=2e-6)
    np.testing.assert_allclose(z, ref_smooth_groups(zero_points, window, method), rtol=2e-6)
    # Convex combinations: zero points stay in [0, qmax], a constant chain stays constant.
    assert np.asarray(z).min() >= 0 and np.asarray(z).max() <= 255
    const, _ = smooth_groups(np.full((1, 6), 0.5), np.zeros((1, 6)), window=window, method=method)
    np.testing.assert_allclose(const, 0.5, rtol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_blend_curve_endpoints_and_monotone(method):
    u = jnp.linspace(0.0, 1.0, 101)
    f = np.asarray(blend_weights(u, method=method, steepness=7.0))
    assert abs(f[0]) < 1e-6 and abs(f[-1] - 1) < 1e-6
    assert np.all(np.diff(f) > 0)
    np.testing.assert_allclose(f, [ref_curve(float(v), method, 7.0) for v in u], atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "window=0"),
        ({"window": 11}, "window=11"),
        ({"window": 2, "method": "quintic"}, "method='quintic'"),
        ({"window": 2, "method": "sigmoid", "steepness": -1.0}, "steepness=-1.0"),
    ],
    ids=["window-0", "window-too-big", "unknown-method", "bad-steepness"],
)
def test_smooth_boundaries_rejects_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        smooth_boundaries(
            np.ones((1, 3)), np.zeros((1, 3)), np.array([0, 10, 20, 30]), num_timesteps=30, **kwargs
        )


def test_smooth_boundaries_rejects_bad_edges_and_shapes():
    with pytest.raises(ValueError, match="edges"):
        smooth_boundaries(
            np.ones((1, 2)), np.zeros((1, 2)), np.array([0, 10, 25]), num_timesteps=20, window=1
        )
    with pytest.raises(ValueError, match="zero_points"):
        smooth_boundaries(
            np.ones((1, 2)), np.zeros((2, 2)), np.array([0, 10, 20]), num_timesteps=20, window=1
        )


@pytest.mark.parametrize("window", [0, 4])
def test_smooth_groups_rejects_bad_window(window):
    with pytest.raises(ValueError, match=f"window={window}"):
        smooth_groups(np.ones((1, 4)), np.zeros((1, 4)), window=window)
