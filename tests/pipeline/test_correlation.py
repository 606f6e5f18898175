"""Spearman's rank correlation and its percentile bootstrap interval, against scipy and a plain
float64 reference written from the definition (rho = 1 - 6 sum d^2 / (n (n^2 - 1)) without ties;
with ties, Pearson's r of the average ranks computed by counting)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from thermojax.pipeline.results.correlation import (
    average_ranks,
    bootstrap_interval,
    rank_correlation,
    spearman,
)


def counted_ranks(values) -> list[float]:
    """Each value's rank by counting: 1 + how many are smaller + (how many equal - 1) / 2."""
    return [1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values]


def reference_spearman(x, y) -> float:
    rx, ry = counted_ranks(list(x)), counted_ranks(list(y))
    mx, my = math.fsum(rx) / len(rx), math.fsum(ry) / len(ry)
    cov = math.fsum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = math.fsum((a - mx) ** 2 for a in rx)
    vy = math.fsum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy)


@pytest.mark.parametrize("n", [2, 5, 40, 257], ids=lambda n: f"n{n}")
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_spearman_matches_scipy_and_the_reference(n, ties):
    rng = np.random.default_rng(n + 1000 * ties)
    x, y = rng.normal(size=n), rng.normal(size=n) + 0.5 * rng.normal(size=n)
    if ties:  # a handful of values, as weight cosine or group counts give
        x, y = np.round(x), np.round(y * 2) / 2
        if len(set(x)) == 1 or len(set(y)) == 1:
            x[0], y[0] = x[0] + 1, y[0] + 1
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert spearman(x, y) == pytest.approx(reference_spearman(x, y), abs=1e-12)


def test_without_ties_it_is_the_textbook_formula():
    rng = np.random.default_rng(7)
    x, y = rng.permutation(30).astype(float), rng.permutation(30).astype(float)
    d = average_ranks(x) - average_ranks(y)
    assert spearman(x, y) == pytest.approx(1 - 6 * np.sum(d**2) / (30 * (30**2 - 1)), abs=1e-12)


def test_average_ranks_match_scipy_rankdata():
    x = np.array([3.0, 1.0, 3.0, 2.0, 3.0, -1.0, 2.0])
    np.testing.assert_array_equal(average_ranks(x), stats.rankdata(x))
    assert average_ranks(x).tolist() == counted_ranks(x.tolist())


def test_monotone_maps_are_perfect_and_a_constant_side_has_no_correlation():
    x = np.linspace(0.1, 3.0, 11)
    assert spearman(x, np.exp(x)) == 1.0 and spearman(x, -(x**3)) == -1.0
    assert math.isnan(spearman(x, np.ones_like(x)))


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([1.0], [2.0], "at least 2 pairs"),
        ([1.0, 2.0], [1.0, 2.0, 3.0], "one length"),
        ([1.0, math.nan], [1.0, 2.0], "finite"),
    ],
    ids=["one-pair", "lengths", "nan"],
)
def test_bad_input_names_what_is_wrong(x, y, message):
    with pytest.raises(ValueError, match=message):
        spearman(x, y)


def test_the_bootstrap_is_the_percentile_interval_of_resampled_pairs():
    rng = np.random.default_rng(3)
    x = rng.normal(size=25)
    y = x + rng.normal(size=25)
    low, high = bootstrap_interval(x, y, rng=np.random.default_rng(11), resamples=300)
    # The reference: the same resamples (same generator, same draw), scipy's correlation.
    picks = np.random.default_rng(11).integers(0, 25, size=(300, 25))
    found = np.array([stats.spearmanr(x[p], y[p]).statistic for p in picks])
    found = found[np.isfinite(found)]
    np.testing.assert_allclose([low, high], np.quantile(found, [0.025, 0.975]), atol=1e-12)
    assert low < spearman(x, y) < high


def test_the_same_seed_gives_the_same_interval_and_more_data_a_narrower_one():
    rng = np.random.default_rng(5)
    x = rng.normal(size=400)
    y = x + rng.normal(size=400)
    first = rank_correlation(x, y, rng=np.random.default_rng(1), resamples=400)
    again = rank_correlation(x, y, rng=np.random.default_rng(1), resamples=400)
    assert first == again and first.n == 400
    small = rank_correlation(x[:40], y[:40], rng=np.random.default_rng(1), resamples=400)
    assert first.high - first.low < small.high - small.low


def test_constant_resamples_are_left_out_and_all_constant_gives_nan():
    low, high = bootstrap_interval([1.0, 1.0], [2.0, 3.0], rng=np.random.default_rng(0))
    assert math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_interval([1.0, 2.0], [1.0, 2.0], rng=np.random.default_rng(0), resamples=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval([1.0, 2.0], [1.0, 2.0], rng=np.random.default_rng(0), level=1.0)
