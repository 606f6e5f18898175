"""The pieces each kind of sample grades its figures with for the quality band.

A kind's ``grade(quality, bands)`` (:class:`~thermojax.pipeline.quality.kind.QualityKind`) returns
one :data:`Graded` per figure the run has: ``good`` within the figure's ``good_*`` limit, ``poor``
past its ``poor_*`` limit, ``fair`` in between; the verdict
(:func:`~thermojax.pipeline.results.verdict.quality_band`) takes the worst.

Example:
    >>> grade(1.3, 1.5, 3.0), grade(0.6, 0.9, 0.5, higher_is_better=True), times(16.81)
    ('good', 'fair', '16.8x')
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

__all__ = ["Check", "Graded", "GradedRatio", "finite", "grade", "graded", "ratio", "times"]


@dataclasses.dataclass(frozen=True)
class Check:
    """One criterion of a band, with the measured value and whether it holds."""

    criterion: str
    value: str
    met: bool


Graded = tuple[str, str, Check]
"""A figure's band, the short text naming it (``Frechet 16.8x fp32``), and its criterion."""


class GradedRatio(NamedTuple):
    """The ratio to fp32 a kind grades first, which the report headlines: ``label`` says what
    it divides (``"Frechet / fp32"``), ``value`` is quantized / fp32 (:func:`ratio`)."""

    label: str
    value: float

    @property
    def text(self) -> str:
        """The value as people read it (:func:`times`)."""
        return times(self.value)


def finite(*values: float | None) -> bool:
    """Whether every value is a finite number (not ``None``, not NaN or infinite)."""
    return all(v is not None and math.isfinite(v) for v in values)


def ratio(quantized: float, fp32: float) -> float:
    """quantized / fp32, guarded: a zero fp32 figure gives 1 for an equal one, inf for more."""
    if fp32 > 0:
        return quantized / fp32
    return 1.0 if quantized <= fp32 else math.inf


def times(value: float) -> str:
    """A ratio to fp32 as people read it: ``0.93x``, ``1.01x``, ``16.8x``."""
    return f"{value:.3g}x" if value >= 10 else f"{value:.2f}x"


def grade(value: float, good: float, poor: float, *, higher_is_better: bool = False) -> str:
    """``good``, ``fair`` or ``poor`` of ``value`` against its limits."""
    value = round(value, 9)  # float noise on a limit (0.8 - 0.7, 1 / (1 / 1.05)) stays on it
    if higher_is_better:
        return "good" if value >= good else "poor" if value < poor else "fair"
    return "good" if value <= good else "poor" if value > poor else "fair"


def graded(band: str, detail: str, criterion: str, value: str) -> Graded:
    """A :data:`Graded` whose criterion is met when the band is ``good``."""
    return band, detail, Check(criterion, value, band == "good")
