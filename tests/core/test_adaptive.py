"""Adaptive time groups: the DP against exhaustive search on a float64 numpy objective."""

import itertools

import numpy as np
import pytest

from thermojax.core.adaptive import adaptive_edges, segmentation_objective


def ref_objective(stat_min, stat_max, edges, *, bits, lam, cost, jump):
    """float64 reference of the module docstring's objective, straight from the definitions."""
    qmax = 2**bits - 1
    low = np.minimum(np.asarray(stat_min, np.float64), 0)
    high = np.maximum(np.asarray(stat_max, np.float64), 0)
    num_layers, num_timesteps = low.shape
    ranges = high - low
    widest = np.maximum(ranges.max(axis=1), 1e-30)

    def params(lo, hi, layer):
        scale = max(hi - lo, 1e-6 * widest[layer]) / qmax
        return np.log(scale), np.clip(np.round(-lo / scale), 0, qmax)

    def dist(p, q):
        return abs(p[0] - q[0]) + abs(p[1] - q[1]) / qmax

    total = 0.0
    num_groups = len(edges) - 1
    for layer in range(num_layers):
        groups = []
        for a, e in itertools.pairwise(edges):
            lo, hi = low[layer, a:e].min(), high[layer, a:e].max()
            r = ranges[layer, a:e]
            if cost == "range":
                total += np.sum((hi - lo) - r) / (num_timesteps * widest[layer]) / num_layers
            else:
                total += (
                    np.sum((hi - lo) ** 2 - r**2)
                    / (num_timesteps * widest[layer] ** 2)
                    / num_layers
                )
            groups.append(params(lo, hi, layer))
        for b in range(1, num_groups):
            left, right = groups[b - 1], groups[b]
            if jump == "exact":
                d = dist(left, right)
            else:
                before = params(low[layer, edges[b] - 1], high[layer, edges[b] - 1], layer)
                after = params(low[layer, edges[b]], high[layer, edges[b]], layer)
                d = dist(left, before) + dist(before, after) + dist(after, right)
            total += lam * d / (num_layers * (num_groups - 1))
    return total


def random_stats(seed, layers, timesteps):
    """Drifting activation ranges (a random walk), sometimes straddling zero."""
    rng = np.random.default_rng(seed)
    centre = np.cumsum(rng.normal(size=(layers, timesteps)), axis=1)
    stat_min = centre - rng.uniform(0.2, 2.0, size=(layers, timesteps))
    stat_max = centre + rng.uniform(0.2, 2.0, size=(layers, timesteps))
    return stat_min.astype(np.float32), stat_max.astype(np.float32)


def all_partitions(num_timesteps, num_groups):
    for inner in itertools.combinations(range(1, num_timesteps), num_groups - 1):
        yield np.array((0, *inner, num_timesteps))


@pytest.mark.parametrize("jump", ["bound", "exact"])
@pytest.mark.parametrize("cost", ["range", "mse"])
@pytest.mark.parametrize(
    ("timesteps", "groups", "lam", "bits"),
    [(10, 2, 0.0, 8), (11, 3, 0.3, 4), (12, 4, 2.0, 2), (9, 3, 10.0, 8)],
    ids=["T10-G2-lam0", "T11-G3", "T12-G4", "T9-G3-bigjump"],
)
def test_dp_matches_brute_force(jump, cost, timesteps, groups, lam, bits):
    stat_min, stat_max = random_stats(timesteps * 7 + groups, 3, timesteps)
    options = {"bits": bits, "lam": lam, "cost": cost, "jump": jump}
    edges = adaptive_edges(stat_min, stat_max, groups, **options)
    assert edges.dtype == np.int32 and edges[0] == 0 and edges[-1] == timesteps
    assert np.all(np.diff(edges) >= 1) and len(edges) == groups + 1
    best = min(
        ref_objective(stat_min, stat_max, e, **options) for e in all_partitions(timesteps, groups)
    )
    found = ref_objective(stat_min, stat_max, edges, **options)
    assert found <= best + 1e-5 * max(1.0, abs(best))


@pytest.mark.parametrize("jump", ["bound", "exact"])
@pytest.mark.parametrize("cost", ["range", "mse"])
def test_objective_matches_reference(jump, cost):
    stat_min, stat_max = random_stats(5, 4, 30)
    rng = np.random.default_rng(6)
    for _ in range(5):
        edges = np.concatenate([[0], np.sort(rng.choice(np.arange(1, 30), 4, replace=False)), [30]])
        options = {"bits": 4, "lam": 0.7, "cost": cost, "jump": jump}
        np.testing.assert_allclose(
            segmentation_objective(stat_min, stat_max, edges, **options),
            ref_objective(stat_min, stat_max, edges, **options),
            rtol=2e-5,
        )


@pytest.mark.parametrize(
    ("jump", "timesteps"), [("bound", 300), ("exact", 48)], ids=["bound-T300", "exact-T48"]
)
@pytest.mark.parametrize("lam", [0.0, 0.5, 5.0])
def test_dp_beats_or_equals_uniform(jump, timesteps, lam):
    stat_min, stat_max = random_stats(11, 4, timesteps)
    options = {"bits": 8, "lam": lam, "cost": "range", "jump": jump}
    for groups in (2, 5, 8):
        uniform = np.arange(groups + 1) * timesteps // groups
        edges = adaptive_edges(stat_min, stat_max, groups, **options)
        dp = float(segmentation_objective(stat_min, stat_max, edges, **options))
        assert dp <= float(segmentation_objective(stat_min, stat_max, uniform, **options)) + 1e-6


def test_bound_objective_is_an_upper_bound_of_the_exact_one():
    stat_min, stat_max = random_stats(3, 3, 40)
    rng = np.random.default_rng(4)
    for _ in range(10):
        edges = np.concatenate([[0], np.sort(rng.choice(np.arange(1, 40), 5, replace=False)), [40]])
        options = {"bits": 4, "lam": 1.0, "cost": "mse"}
        exact = segmentation_objective(stat_min, stat_max, edges, jump="exact", **options)
        bound = segmentation_objective(stat_min, stat_max, edges, jump="bound", **options)
        assert float(bound) >= float(exact) - 1e-6


def test_finds_regime_changes_without_jump_penalty():
    # Three regimes of constant range: cutting exactly at the changes wastes nothing.
    widths = np.concatenate([np.full(17, 1.0), np.full(45, 4.0), np.full(38, 0.5)])
    stat_max = np.stack([widths, 2 * widths])
    stat_min = -0.5 * stat_max
    edges = adaptive_edges(stat_min, stat_max, 3, bits=8, lam=0.0)
    np.testing.assert_array_equal(edges, [0, 17, 62, 100])
    assert float(segmentation_objective(stat_min, stat_max, edges, bits=8, lam=0.0)) < 1e-7


@pytest.mark.parametrize("jump", ["bound", "exact"])
def test_min_group_size_matches_constrained_brute_force(jump):
    stat_min, stat_max = random_stats(21, 2, 14)
    options = {"bits": 8, "lam": 5.0, "cost": "range", "jump": jump}
    free = adaptive_edges(stat_min, stat_max, 3, **options)
    assert np.diff(free).min() < 4  # the constraint binds on this data
    edges = adaptive_edges(stat_min, stat_max, 3, min_group_size=4, **options)
    assert np.diff(edges).min() >= 4
    allowed = [e for e in all_partitions(14, 3) if np.diff(e).min() >= 4]
    best = min(ref_objective(stat_min, stat_max, e, **options) for e in allowed)
    assert ref_objective(stat_min, stat_max, edges, **options) <= best + 1e-5


def test_one_group_and_one_group_per_timestep():
    stat_min, stat_max = random_stats(0, 2, 12)
    np.testing.assert_array_equal(adaptive_edges(stat_min, stat_max, 1, bits=8, lam=1.0), [0, 12])
    np.testing.assert_array_equal(
        adaptive_edges(stat_min, stat_max, 12, bits=8, lam=1.0), np.arange(13)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cost": "l1"}, "cost='l1'"),
        ({"jump": "approx"}, "jump='approx'"),
        ({"lam": -0.1}, "lam=-0.1"),
        ({"bits": 1}, "bits=1"),
        ({"num_groups": 0}, "num_groups=0"),
        ({"num_groups": 21}, "num_groups=21"),
        ({"min_group_size": 6}, "min_group_size=6"),
        ({"min_group_size": 0}, "min_group_size=0"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    stat_min, stat_max = random_stats(0, 2, 20)
    options = {"num_groups": 4, "bits": 8, "lam": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        adaptive_edges(stat_min, stat_max, **options)


def test_rejects_exact_on_long_schedules_and_bad_shapes():
    stat_min, stat_max = random_stats(0, 1, 200)
    with pytest.raises(ValueError, match="T=200"):
        adaptive_edges(stat_min, stat_max, 4, bits=8, lam=0.1, jump="exact")
    with pytest.raises(ValueError, match="stat_max"):
        adaptive_edges(stat_min, stat_max[:, :10], 4, bits=8, lam=0.1)
