"""Rank correlation of a figure with quality, and its percentile bootstrap interval.

Which figure predicts quality is a question about order: a figure is useful when the
configurations it calls worse are the ones whose samples are worse. Spearman's rank correlation
answers it (Pearson's correlation of the ranks, ties given their average rank, as
``scipy.stats.spearmanr`` does), and the percentile bootstrap over configurations says how far
the answer could move with other configurations of the same kind (pairs resampled with
replacement from an explicit :class:`numpy.random.Generator`, so the same seed gives the same
interval). Pure numpy: arrays in, floats out.

Example:
    >>> spearman([1.0, 2.0, 3.0, 4.0], [10.0, 30.0, 20.0, 40.0])
    0.8
    >>> spearman([1.0, 1.0, 2.0], [3.0, 2.0, 1.0])  # ties take their average rank
    -0.8660254037844387
    >>> lo, hi = bootstrap_interval([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5],
    ...                             rng=np.random.default_rng(0))
    >>> bool(lo <= spearman([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5]) <= hi)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["RankCorrelation", "average_ranks", "bootstrap_interval", "rank_correlation", "spearman"]

DEFAULT_RESAMPLES = 2000
"""Bootstrap resamples of :func:`bootstrap_interval` unless told."""


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks ``1..n`` of ``values`` (1-d), ties given the mean of the ranks they span.

    Example:
        >>> average_ranks([3.0, 1.0, 3.0, 2.0]).tolist()
        [3.5, 1.0, 3.5, 2.0]
    """
    x = np.asarray(values, np.float64)
    if x.ndim != 1:
        raise ValueError(f"average_ranks takes a 1-d array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("average_ranks: values must be finite (no NaN or inf)")
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    # Runs of equal values: each starts where the value changes.
    starts = np.flatnonzero(np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]]))
    ends = np.concatenate([starts[1:], [len(x)]])
    mean_rank = (starts + ends + 1) / 2.0  # ranks start..end-1 (0-based) -> mean, 1-based
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.dot(a, b)) / denominator if denominator > 0 else math.nan


def _pairs(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-d of one length, got shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError(f"a rank correlation needs at least 2 pairs, got {len(x)}")
    return x, y


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of paired ``x`` and ``y``: Pearson's correlation of their
    :func:`average_ranks`. NaN when either is constant (no order to compare).

    Raises:
        ValueError: not two 1-d sequences of one length, fewer than 2 pairs, or a value that
            is not finite.
    """
    x, y = _pairs(x, y)
    return _pearson(average_ranks(x), average_ranks(y))


def bootstrap_interval(
    x: Sequence[float],
    y: Sequence[float],
    *,
    rng: np.random.Generator,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`spearman` at ``level``: the pairs resampled with
    replacement ``resamples`` times, the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles
    of the resampled correlations. Resamples where a side is constant (no correlation) are left
    out; NaN, NaN when every one is.

    Args:
        x, y: paired values.
        rng: the resampling's generator (``np.random.default_rng(seed)``): same seed, same
            interval.
        resamples: how many resamples (>= 1).
        level: the interval's coverage, in (0, 1).
    """
    x, y = _pairs(x, y)
    if isinstance(resamples, bool) or int(resamples) != resamples or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    picks = rng.integers(0, len(x), size=(int(resamples), len(x)))
    found = np.array([spearman(x[p], y[p]) for p in picks])
    found = found[np.isfinite(found)]
    if not len(found):
        return math.nan, math.nan
    lo, hi = np.quantile(found, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


class RankCorrelation(NamedTuple):
    """Spearman's correlation ``rho``, its bootstrap interval ``[low, high]``, and ``n`` pairs."""

    rho: float
    low: float
    high: float
    n: int


def rank_correlation(
    x: Sequence[float],
    y: Sequence[float],
    *,
    rng: np.random.Generator,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
) -> RankCorrelation:
    """:func:`spearman` of ``x`` and ``y`` with its :func:`bootstrap_interval`."""
    low, high = bootstrap_interval(x, y, rng=rng, resamples=resamples, level=level)
    return RankCorrelation(spearman(x, y), low, high, len(x))
