"""Small inline-SVG charts for the run report and the comparison page: geometry here, markup in
``charts.html.j2``.

Each builder turns plain numbers from a :class:`~thermojax.pipeline.results.schema.Result` (or a sweep's
summary) into a frozen chart description (pixel coordinates, tick labels, colours); the Jinja2
macros render it as SVG with autoescaping, so no markup is assembled from strings in Python. This
module holds the charts over numeric axes (bars, lines, scatter); :mod:`thermojax.report.grids`
the ones made of cells (digit images, heatmaps).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "AXIS_LIMIT",
    "PALETTE",
    "BarChart",
    "LineChart",
    "ScatterChart",
    "Series",
    "Tick",
    "bar_chart",
    "line_chart",
    "nice_ticks",
    "scatter_chart",
]

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
)
"""Series colours (matplotlib's tab10), cycled."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """Outer size and the plot rectangle inside it (SVG pixels, y grows downwards)."""

    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float


@dataclasses.dataclass(frozen=True)
class Tick:
    """An axis tick at pixel position ``pos`` with its text."""

    pos: float
    label: str


@dataclasses.dataclass(frozen=True)
class Rule:
    """A straight line across the plot (threshold, group edge) with an optional label."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    color: str
    dashed: bool = True


@dataclasses.dataclass(frozen=True)
class Bar:
    """One bar: rectangle, colour, two lines of category label below it, the value on it."""

    x: float
    y: float
    w: float
    h: float
    color: str
    label: str
    sublabel: str
    value: str


@dataclasses.dataclass(frozen=True)
class BarChart:
    """A bar chart with y ticks and optional horizontal rules."""

    frame: Frame
    title: str
    y_label: str
    bars: tuple[Bar, ...]
    y_ticks: tuple[Tick, ...]
    rules: tuple[Rule, ...]


@dataclasses.dataclass(frozen=True)
class Series:
    """A polyline (``points`` as SVG text) or, with ``area``, a closed filled polygon."""

    name: str
    color: str
    points: str
    area: bool = False
    dashed: bool = False
    markers: tuple[tuple[float, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class LineChart:
    """Lines or bands over a numeric x axis, with ticks, vertical rules and a legend."""

    frame: Frame
    title: str
    x_label: str
    y_label: str
    series: tuple[Series, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    rules: tuple[Rule, ...]
    legend: tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Point:
    """One labelled point with a vertical error bar from ``y_low`` to ``y_high`` (pixels)."""

    x: float
    y: float
    y_low: float
    y_high: float
    color: str
    label: str
    tooltip: str


@dataclasses.dataclass(frozen=True)
class ScatterChart:
    """Labelled points over two numeric axes, with x and y ticks and an optional legend."""

    frame: Frame
    title: str
    x_label: str
    y_label: str
    points: tuple[Point, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    rules: tuple[Rule, ...] = ()
    legend: tuple[tuple[str, str], ...] = ()


def _frame(width: int, height: int) -> Frame:
    return Frame(width, height, left=62.0, top=38.0, right=width - 16.0, bottom=height - 44.0)


AXIS_LIMIT = 1e300
"""The largest magnitude an axis reaches, and the inverse of the smallest nonzero one. Beyond it
a span, a step or a tick overflows a float (``1e308 - -1e308``), below it a step underflows to
0; a value past it, which only a corrupt report holds, sits at its axis' end (or at 0)."""


def _on_axis(value: float) -> float:
    """``value`` clipped to +-:data:`AXIS_LIMIT`, and 0 below ``1 / AXIS_LIMIT``."""
    value = min(max(float(value), -AXIS_LIMIT), AXIS_LIMIT)
    return 0.0 if abs(value) < 1 / AXIS_LIMIT else value


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering ``[lo, hi]`` (1, 2, 5 x 10^k steps).

    Always a few finite ticks, at once: ``lo`` and ``hi`` are taken within :data:`AXIS_LIMIT`
    (an infinity at it; NaN gives ``[0, 1]``), and a range narrower than floats resolve at its
    magnitude (two values a rounding apart, where adding the step would not move a tick) is
    widened as an empty one is.
    """
    if math.isnan(lo) or math.isnan(hi):
        return [0.0, 1.0]
    count = max(count, 1)
    lo, hi = _on_axis(lo), _on_axis(hi)
    if hi - lo <= 64 * count * math.ulp(max(abs(lo), abs(hi))):
        hi = lo + (abs(lo) if lo else 1.0)
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10) if m * power >= raw), default=10 * power)
    first = math.floor(lo / step) * step
    # Counted, not stepped until past hi: the count is bounded whatever rounding does.
    n = max(1, math.floor((hi - first) / step + 1e-9) + 1)
    ticks = [round(first + i * step, 12) for i in range(n)]
    if ticks[-1] < hi:
        ticks.append(round(first + n * step, 12))
    return ticks


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if 1 <= magnitude < 1e6 and value == round(value):
        return str(round(value))
    if magnitude >= 1e4 or magnitude < 1e-3:
        return f"{value:.0e}"
    return f"{value:.3g}"


_PIXEL_LIMIT = 1e6
"""How far off its frame a point is drawn at most: a value far past its axis (a corrupt report's)
draws off the chart, never at an overflowed coordinate."""


class _Scale:
    """Linear (or log10) map from data to pixels; values beyond +-:data:`AXIS_LIMIT` map as if
    at it."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, *, log: bool = False) -> None:
        self.log = log
        if log:
            lo, hi = (min(max(float(v), 1 / AXIS_LIMIT), AXIS_LIMIT) for v in (lo, hi))
            self.lo, self.hi = math.log10(lo), math.log10(hi)
        else:
            self.lo, self.hi = _on_axis(lo), _on_axis(hi)
        if self.hi == self.lo:
            self.hi = self.lo + 1.0
        self.p0, self.p1 = p0, p1

    def __call__(self, value: float | np.ndarray) -> np.ndarray:
        v = np.clip(np.asarray(value, np.float64), -AXIS_LIMIT, AXIS_LIMIT)
        if self.log:
            v = np.log10(np.maximum(v, 10.0**self.lo))
        with np.errstate(over="ignore"):
            pixels = self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)
        return np.clip(pixels, -_PIXEL_LIMIT, _PIXEL_LIMIT)


def _points(xs: np.ndarray, ys: np.ndarray) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))


def bar_chart(
    values: Sequence[float],
    labels: Sequence[str],
    *,
    sublabels: Sequence[str] | None = None,
    title: str,
    y_label: str,
    colors: Sequence[str],
    y_range: tuple[float, float] = (0.0, 1.0),
    rules: Sequence[tuple[float, str, str]] = (),
    width: int = 520,
    height: int = 260,
) -> BarChart:
    """Vertical bars, one per value, with horizontal rules ``(y value, label, colour)``."""
    frame = _frame(width, height)
    y = _Scale(*y_range, frame.bottom, frame.top)
    slot = (frame.right - frame.left) / max(len(values), 1)
    bar_w = min(slot * 0.6, 60.0)
    bars = []
    sublabels = sublabels if sublabels is not None else [""] * len(values)
    # With many bars, label every k-th one only (about 8 two-line labels fit the axis).
    every = max(1, math.ceil(len(values) / 8))
    for i, (value, label, sublabel, color) in enumerate(
        zip(values, labels, sublabels, colors, strict=True)
    ):
        shown = min(max(value, y_range[0]), y_range[1]) if math.isfinite(value) else y_range[0]
        top = float(y(shown))
        bars.append(
            Bar(
                x=frame.left + slot * i + (slot - bar_w) / 2,
                y=top,
                w=bar_w,
                h=frame.bottom - top,
                color=color,
                label=label if i % every == 0 else "",
                sublabel=sublabel if i % every == 0 else "",
                value=f"{value:.3f}" if bar_w >= 26 else "",
            )
        )
    ticks = tuple(Tick(float(y(v)), _fmt(v)) for v in nice_ticks(*y_range))
    return BarChart(
        frame=frame,
        title=title,
        y_label=y_label,
        bars=tuple(bars),
        y_ticks=ticks,
        rules=tuple(
            Rule(frame.left, float(y(v)), frame.right, float(y(v)), label, color)
            for v, label, color in rules
        ),
    )


def line_chart(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    bands: Sequence[tuple[str, Sequence[float], Sequence[float], Sequence[float]]] = (),
    steps: Sequence[tuple[str, Sequence[float], Sequence[float]]] = (),
    v_rules: Sequence[tuple[float, str]] = (),
    x_tick_values: Sequence[float] | None = None,
    x_tick_labels: Sequence[str] | None = None,
    x_range: tuple[float, float] | None = None,
    markers: bool = False,
    log_y: bool = False,
    width: int = 520,
    height: int = 260,
) -> LineChart:
    """Lines ``(name, xs, ys)``, shaded bands ``(name, xs, lo, hi)`` and dashed step lines.

    Step lines ``(name, edges, values)`` draw ``values[g]`` over ``[edges[g], edges[g+1])``.
    Vertical rules ``(x, label)`` mark e.g. time-group edges. ``log_y`` uses a log10 axis
    (non-positive values are clipped to the smallest positive one). ``x_range`` overrides the
    data's x extent (e.g. half a category of margin on each side); ``markers`` draws a dot at
    every point of the lines.
    """
    frame = _frame(width, height)
    xs_all = (
        [np.asarray(s[1], np.float64) for s in series]
        + [np.asarray(b[1], np.float64) for b in bands]
        + [np.asarray(s[1], np.float64) for s in steps]
    )
    ys_all = (
        [np.asarray(s[2], np.float64) for s in series]
        + [np.asarray(b[2], np.float64) for b in bands]
        + [np.asarray(b[3], np.float64) for b in bands]
        + [np.asarray(s[2], np.float64) for s in steps]
    )
    xs_cat = np.concatenate([x for x in xs_all if x.size] or [np.zeros(1)])
    ys_cat = np.concatenate([y for y in ys_all if y.size] or [np.zeros(1)])
    ys_cat = ys_cat[np.isfinite(ys_cat)]
    if log_y:
        positive = np.clip(ys_cat[ys_cat > 0], 1 / AXIS_LIMIT, AXIS_LIMIT)
        y_lo, y_hi = (positive.min(), positive.max()) if positive.size else (1e-3, 1.0)
        y_lo, y_hi = 10 ** math.floor(math.log10(y_lo)), 10 ** math.ceil(math.log10(y_hi))
        if y_hi <= y_lo:
            y_hi = y_lo * 10
        tick_values = [10.0**k for k in range(round(math.log10(y_lo)), round(math.log10(y_hi)) + 1)]
        if len(tick_values) > 7:
            tick_values = tick_values[:: math.ceil(len(tick_values) / 6)]
    else:
        y_lo, y_hi = (float(ys_cat.min()), float(ys_cat.max())) if ys_cat.size else (0.0, 1.0)
        tick_values = nice_ticks(y_lo, y_hi)
        y_lo, y_hi = tick_values[0], tick_values[-1]
    x_lo, x_hi = x_range if x_range is not None else (float(xs_cat.min()), float(xs_cat.max()))
    x = _Scale(x_lo, x_hi, frame.left, frame.right)
    y = _Scale(y_lo, y_hi, frame.bottom, frame.top, log=log_y)
    drawn: list[Series] = []
    legend: list[tuple[str, str]] = []
    colors: dict[str, str] = {}

    def color_for(name: str) -> str:
        if name not in colors:
            colors[name] = PALETTE[len(colors) % len(PALETTE)]
            legend.append((name, colors[name]))
        return colors[name]

    for name, bx, lo, hi in bands:
        bx = np.asarray(bx, np.float64)
        px = np.concatenate([x(bx), x(bx[::-1])])
        py = np.concatenate([y(np.asarray(hi)), y(np.asarray(lo)[::-1])])
        drawn.append(Series(name, color_for(name), _points(px, py), area=True))
    for name, sx, sy in series:
        px, py = x(np.asarray(sx)), y(np.asarray(sy))
        dots = tuple((round(float(a), 1), round(float(b), 1)) for a, b in zip(px, py, strict=True))
        drawn.append(
            Series(name, color_for(name), _points(px, py), markers=dots if markers else ())
        )
    for name, edges, values in steps:
        edges = np.asarray(edges, np.float64)
        values = np.asarray(values, np.float64)
        sx = np.repeat(edges, 2)[1:-1]
        sy = np.repeat(values, 2)
        drawn.append(Series(name, color_for(name), _points(x(sx), y(sy)), dashed=True))
    label_every = max(1, math.ceil(len(v_rules) / 6))
    if x_tick_values is None:
        x_tick_values = nice_ticks(x_lo, x_hi)
        x_tick_values = [v for v in x_tick_values if x_lo <= v <= x_hi]
    if x_tick_labels is None:
        x_tick_labels = [_fmt(v) for v in x_tick_values]
    return LineChart(
        frame=frame,
        title=title,
        x_label=x_label,
        y_label=y_label,
        series=tuple(drawn),
        x_ticks=tuple(
            Tick(float(x(v)), label) for v, label in zip(x_tick_values, x_tick_labels, strict=True)
        ),
        y_ticks=tuple(Tick(float(y(v)), _fmt(v)) for v in tick_values),
        rules=tuple(
            Rule(
                float(x(v)),
                frame.top,
                float(x(v)),
                frame.bottom,
                label if i % label_every == 0 else "",
                "#888" if len(v_rules) <= 40 else "#ccc",
            )
            for i, (v, label) in enumerate(v_rules)
        ),
        legend=tuple(legend),
    )


def scatter_chart(
    points: Sequence[tuple[str, float, float, float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    colors: Sequence[str] | None = None,
    tooltips: Sequence[str] | None = None,
    legend: Sequence[tuple[str, str]] = (),
    width: int = 620,
    height: int = 340,
) -> ScatterChart:
    """Points ``(label, x, y, y_std)`` with error bars ``y +- y_std`` and their labels beside them.

    Non-finite points are left out. Axis limits cover every point and error bar. ``colors`` and
    ``tooltips`` go with the points by position (colours cycled); an empty label draws no text, a
    zero ``y_std`` no bar. ``legend`` is ``(name, colour)`` pairs shown under the chart.
    """
    frame = _frame(width, height)
    kept = [
        (i, label, float(x), float(y), float(err) if math.isfinite(err) else 0.0)
        for i, (label, x, y, err) in enumerate(points)
        if math.isfinite(x) and math.isfinite(y)
    ]
    xs = [x for _, _, x, _, _ in kept] or [0.0, 1.0]
    lows = [y - e for *_, y, e in kept] or [0.0]
    highs = [y + e for *_, y, e in kept] or [1.0]
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(lows), max(highs))
    x = _Scale(x_ticks[0], x_ticks[-1], frame.left, frame.right)
    y = _Scale(y_ticks[0], y_ticks[-1], frame.bottom, frame.top)
    colors = list(colors) if colors is not None else list(PALETTE)
    drawn = tuple(
        Point(
            x=float(x(px)),
            y=float(y(py)),
            y_low=float(y(py - err)),
            y_high=float(y(py + err)),
            color=colors[i % len(colors)],
            label=label,
            tooltip=(
                tooltips[i]
                if tooltips is not None
                else f"{label}: {x_label} {px:.4g}, {y_label} {py:.4g} +- {err:.2g}"
            ),
        )
        for i, label, px, py, err in kept
    )
    return ScatterChart(
        frame=frame,
        title=title,
        x_label=x_label,
        y_label=y_label,
        points=drawn,
        x_ticks=tuple(Tick(float(x(v)), _fmt(v)) for v in x_ticks),
        y_ticks=tuple(Tick(float(y(v)), _fmt(v)) for v in y_ticks),
        legend=tuple(legend),
    )
