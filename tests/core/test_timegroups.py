"""Time-group partitions, t -> group lookup and per-group activation params vs numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thermojax import (
    expand_to_timesteps,
    group_activation_params,
    group_of,
    group_ranges,
    uniform_edges,
)


def ref_activation_params(lo, hi, bits):
    qmax = 2**bits - 1
    lo = np.minimum(lo, 0.0)
    hi = np.maximum(hi, 0.0)
    scale = np.where(hi > lo, (hi - lo) / qmax, 1.0)
    return scale, np.clip(np.round(-lo / scale), 0, qmax)


def random_edges(rng, num_timesteps, num_groups):
    inner = np.sort(rng.choice(np.arange(1, num_timesteps), size=num_groups - 1, replace=False))
    return np.concatenate([[0], inner, [num_timesteps]]).astype(np.int32)


@pytest.mark.parametrize(
    ("num_timesteps", "num_groups", "expected"),
    [
        (1000, 4, [0, 250, 500, 750, 1000]),
        (10, 3, [0, 3, 6, 10]),
        (7, 7, [0, 1, 2, 3, 4, 5, 6, 7]),
        (5, 1, [0, 5]),
    ],
)
def test_uniform_edges_by_hand(num_timesteps, num_groups, expected):
    edges = uniform_edges(num_timesteps, num_groups)
    assert edges.dtype == np.int32 and edges.tolist() == expected


@pytest.mark.parametrize(
    ("num_timesteps", "num_groups", "match"),
    [
        (10, 0, "num_groups=0"),
        (10, 11, "num_groups=11"),
        (0, 1, "num_timesteps"),
        (10, -2, "num_groups=-2"),
    ],
)
def test_uniform_edges_bad_counts_raise(num_timesteps, num_groups, match):
    with pytest.raises(ValueError, match=match):
        uniform_edges(num_timesteps, num_groups)


@given(num_timesteps=st.integers(1, 2000), data=st.data())
@settings(max_examples=60, deadline=None)
def test_property_groups_partition_every_timestep_once(num_timesteps, data):
    num_groups = data.draw(st.integers(1, num_timesteps))
    edges = uniform_edges(num_timesteps, num_groups)
    ranges = group_ranges(edges)
    assert len(ranges) == num_groups
    covered = np.concatenate([np.arange(a, b) for a, b in ranges])
    np.testing.assert_array_equal(covered, np.arange(num_timesteps))
    sizes = np.diff(edges)
    assert sizes.min() >= 1 and sizes.max() - sizes.min() <= 1
    assert edges.tolist() == [i * num_timesteps // num_groups for i in range(num_groups + 1)]


def test_group_of_matches_searchsorted_inside_jit():
    rng = np.random.default_rng(0)
    edges = random_edges(rng, 100, 7)
    t = np.arange(100, dtype=np.int32)
    expected = np.searchsorted(edges, t, side="right") - 1
    lookup = jax.jit(group_of)
    got = lookup(jnp.asarray(t), jnp.asarray(edges))
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), expected)
    # Traced scalar t, the way a sampler's scan asks for the current step's group.
    scanned = jax.lax.map(lambda ti: group_of(ti, edges), jnp.asarray(t))
    np.testing.assert_array_equal(np.asarray(scanned), expected)
    # Per-timestep schedule: the group is the timestep itself.
    identity = group_of(jnp.asarray(t), np.arange(101, dtype=np.int32))
    np.testing.assert_array_equal(np.asarray(identity), t)


def test_group_of_clips_out_of_range_timesteps():
    edges = uniform_edges(10, 2)
    assert group_of(jnp.array([-3, 10, 99]), edges).tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("edges", "match"),
    [
        ([1, 5, 10], r"edges\[0\] must be 0"),
        ([0, 5, 5, 10], "strictly increasing"),
        ([0, 6, 4, 10], "strictly increasing"),
        ([[0, 5, 10]], "1-D"),
        ([0], "1-D"),
        ([0.0, 2.5, 10.0], "integers"),
    ],
)
def test_bad_edges_raise(edges, match):
    with pytest.raises(ValueError, match=match):
        group_ranges(np.asarray(edges))


@pytest.mark.parametrize("bits", [2, 4, 8], ids=lambda b: f"int{b}")
@pytest.mark.parametrize("lead", [(), (3,), (2, 4)], ids=["1d", "layers", "batch-layers"])
def test_group_activation_params_match_reference(lead, bits):
    rng = np.random.default_rng(len(lead) + bits)
    num_timesteps = 50
    edges = random_edges(rng, num_timesteps, 6)
    stat_min = (rng.standard_normal((*lead, num_timesteps)) - 1.0).astype(np.float32)
    stat_max = (stat_min + 3 * rng.random((*lead, num_timesteps))).astype(np.float32)
    scales, zps = group_activation_params(stat_min, stat_max, edges, bits=bits)
    assert scales.shape == (*lead, 6) and zps.shape == (*lead, 6)
    lo = np.stack([stat_min[..., a:b].min(-1) for a, b in group_ranges(edges)], -1)
    hi = np.stack([stat_max[..., a:b].max(-1) for a, b in group_ranges(edges)], -1)
    ref_scale, ref_zp = ref_activation_params(lo.astype(np.float64), hi.astype(np.float64), bits)
    np.testing.assert_allclose(np.asarray(scales), ref_scale, rtol=2e-6)
    assert np.max(np.abs(np.asarray(zps) - ref_zp)) <= 1
    assert np.mean(np.asarray(zps) != ref_zp) < 0.05


@pytest.mark.parametrize("percentile", [99.0, 90.0, 75.5, 100.0])
def test_group_activation_params_percentile_matches_numpy(percentile):
    rng = np.random.default_rng(1)
    num_timesteps = 40
    edges = np.array([0, 1, 2, 9, 25, 40], np.int32)  # includes one-step groups
    stat_min = rng.standard_normal((3, num_timesteps)).astype(np.float32) - 2.0
    stat_max = rng.standard_normal((3, num_timesteps)).astype(np.float32) + 2.0
    stat_max[:, 20] = 50.0  # an outlier step that percentile clipping should damp
    scales, _ = group_activation_params(stat_min, stat_max, edges, bits=8, percentile=percentile)
    ranges = group_ranges(edges)
    lo = np.stack([np.percentile(stat_min[:, a:b], 100 - percentile, -1) for a, b in ranges], -1)
    hi = np.stack([np.percentile(stat_max[:, a:b], percentile, -1) for a, b in ranges], -1)
    ref_scale, _ = ref_activation_params(lo.astype(np.float64), hi.astype(np.float64), 8)
    np.testing.assert_allclose(np.asarray(scales), ref_scale, rtol=1e-5)
    plain, _ = group_activation_params(stat_min, stat_max, edges, bits=8)
    if percentile < 100:
        assert np.all(np.asarray(scales)[:, 3] < np.asarray(plain)[:, 3])
    else:
        np.testing.assert_allclose(np.asarray(scales), np.asarray(plain), rtol=1e-6)


def test_group_activation_params_bad_inputs_raise():
    edges = uniform_edges(10, 2)
    with pytest.raises(ValueError, match="same shape"):
        group_activation_params(np.zeros((2, 10)), np.zeros((3, 10)), edges, bits=8)
    with pytest.raises(ValueError, match=r"T = edges\[-1\] = 10"):
        group_activation_params(np.zeros((2, 12)), np.zeros((2, 12)), edges, bits=8)
    with pytest.raises(ValueError, match="bits"):
        group_activation_params(np.zeros(10), np.ones(10), edges, bits=1)
    with pytest.raises(ValueError, match="percentile=40"):
        group_activation_params(np.zeros(10), np.ones(10), edges, bits=8, percentile=40)


def test_expand_to_timesteps_repeats_each_group_value():
    rng = np.random.default_rng(2)
    edges = random_edges(rng, 30, 5)
    params = rng.random((4, 5)).astype(np.float32)
    out = expand_to_timesteps(jnp.asarray(params), edges)
    np.testing.assert_array_equal(np.asarray(out), np.repeat(params, np.diff(edges), axis=-1))
    per_step = np.arange(31, dtype=np.int32)
    values = rng.random((2, 30)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(expand_to_timesteps(values, per_step)), values)


def test_expand_to_timesteps_wrong_group_count_raises():
    with pytest.raises(ValueError, match=r"G = len\(edges\) - 1 = 3"):
        expand_to_timesteps(jnp.zeros((2, 4)), uniform_edges(9, 3))
