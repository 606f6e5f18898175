"""Charts made of cells in rows and columns: digit images and heatmaps (inline SVG).

Like :mod:`thermojax.report.charts`, each builder returns a frozen description in SVG pixels and a
macro of ``charts.html.j2`` draws it with autoescaping.

Example:
    >>> h = heatmap([[0.9, 0.95], [0.97, None]], row_labels=["INT2", "INT4"],
    ...             column_labels=["2", "4"], title="smoothness", x_label="groups")
    >>> [cell.text for cell in h.cells], h.low, h.high
    (['0.900', '0.950', '0.970', '-'], 0.9, 0.97)
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from thermojax.report.charts import Tick

__all__ = ["DigitGrid", "HeatCell", "Heatmap", "digit_grid", "heatmap", "ramp"]

_RAMP = ((0.0, (192, 57, 43)), (0.5, (241, 196, 15)), (1.0, (30, 132, 73)))
_MISSING_FILL = "#eef1f4"


@dataclasses.dataclass(frozen=True)
class Pixel:
    """One square of a digit image."""

    x: float
    y: float
    fill: str


@dataclasses.dataclass(frozen=True)
class DigitGrid:
    """Grey-scale images laid out in a grid, as SVG squares."""

    width: int
    height: int
    title: str
    pixels: tuple[Pixel, ...]
    cell: float
    frames: tuple[tuple[float, float, float, float], ...]


@dataclasses.dataclass(frozen=True)
class HeatCell:
    """One heatmap cell: rectangle, colour, the value written on it and its tooltip.

    ``dark_text`` asks for dark lettering (on the light middle of the colour ramp).
    """

    x: float
    y: float
    w: float
    h: float
    fill: str
    text: str
    tooltip: str
    dark_text: bool


@dataclasses.dataclass(frozen=True)
class Heatmap:
    """Values over two categorical axes; colours span ``low`` (red) to ``high`` (green).

    The cells fill ``[left, right] x [top, bottom]``; ``column_ticks`` sit below them,
    ``row_ticks`` left of them.
    """

    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    title: str
    x_label: str
    y_label: str
    cells: tuple[HeatCell, ...]
    column_ticks: tuple[Tick, ...]
    row_ticks: tuple[Tick, ...]
    low: float
    high: float


def ramp(fraction: float) -> str:
    """Red (0) -> amber (0.5) -> green (1), as ``#rrggbb``; ``fraction`` is clipped to [0, 1]."""
    f = min(max(fraction, 0.0), 1.0)
    for (f0, c0), (f1, c1) in itertools.pairwise(_RAMP):
        if f <= f1:
            t = (f - f0) / (f1 - f0)
            rgb = [round(a + (b - a) * t) for a, b in zip(c0, c1, strict=True)]
            return "#{:02x}{:02x}{:02x}".format(*rgb)
    return "#{:02x}{:02x}{:02x}".format(*_RAMP[-1][1])


def heatmap(
    values: Sequence[Sequence[float | None]],
    *,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str,
    x_label: str = "",
    y_label: str = "",
    tooltips: Sequence[Sequence[str]] | None = None,
    digits: int = 3,
    missing_tooltip: str = "no value",
    cell_width: float = 78.0,
    cell_height: float = 40.0,
) -> Heatmap:
    """Cells ``values[row][column]``, each coloured by where it lies between the extremes.

    A ``None`` or non-finite value is a grey ``-`` cell with ``missing_tooltip``. When every
    value is the same, every cell takes the middle of the ramp.
    """
    grid = [
        [None if v is None or not math.isfinite(v) else float(v) for v in row] for row in values
    ]
    if len(grid) != len(row_labels) or any(len(row) != len(column_labels) for row in grid):
        raise ValueError(
            f"values must be [rows={len(row_labels)}][columns={len(column_labels)}], got "
            f"{[len(row) for row in grid]}"
        )
    finite = [v for row in grid for v in row if v is not None]
    low, high = (min(finite), max(finite)) if finite else (math.nan, math.nan)
    left, top = 70.0, 38.0
    cells = []
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            x, y = left + j * cell_width, top + i * cell_height
            w, h = cell_width - 2, cell_height - 2
            if value is None:
                cells.append(HeatCell(x, y, w, h, _MISSING_FILL, "-", missing_tooltip, True))
                continue
            fraction = 0.5 if high - low < 1e-12 else (value - low) / (high - low)
            tooltip = tooltips[i][j] if tooltips is not None else f"{value:.{digits}f}"
            cells.append(
                HeatCell(
                    x, y, w, h, ramp(fraction), f"{value:.{digits}f}", tooltip, 0.2 < fraction < 0.8
                )
            )
    right, bottom = left + len(column_labels) * cell_width, top + len(grid) * cell_height
    return Heatmap(
        # Wide enough for the title too (about 8.5 px a character of the bold 13 px title).
        width=math.ceil(max(right + 10, left + 8.5 * len(title))),
        height=math.ceil(bottom + 44),
        left=left,
        top=top,
        right=right,
        bottom=bottom,
        title=title,
        x_label=x_label,
        y_label=y_label,
        cells=tuple(cells),
        column_ticks=tuple(
            Tick(left + j * cell_width + cell_width / 2, label)
            for j, label in enumerate(column_labels)
        ),
        row_ticks=tuple(
            Tick(top + i * cell_height + cell_height / 2, label)
            for i, label in enumerate(row_labels)
        ),
        low=low,
        high=high,
    )


def digit_grid(
    images: Sequence[Sequence[Sequence[float]]],
    *,
    title: str,
    columns: int = 8,
    vmax: float = 16.0,
    cell: float = 5.0,
    gap: float = 4.0,
) -> DigitGrid:
    """Grey-scale images ``[N, H, W]`` (0 = white, ``vmax`` = black) as a grid of squares;
    colour images ``[N, C, H, W]`` are shown by their mean over the channels."""
    data = np.clip(np.asarray(images, np.float64), 0.0, vmax) / vmax
    if data.ndim == 4:
        data = data.mean(axis=1)
    if data.ndim != 3:
        raise ValueError(f"images must be [N, H, W], got shape {data.shape}")
    count, rows_px, cols_px = data.shape
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns) if count else 0
    tile_w, tile_h = cols_px * cell + gap, rows_px * cell + gap
    pixels = []
    frames = []
    for n in range(count):
        ox = gap / 2 + (n % columns) * tile_w
        oy = gap / 2 + (n // columns) * tile_h
        frames.append((ox, oy, cols_px * cell, rows_px * cell))
        for r in range(rows_px):
            for c in range(cols_px):
                level = round(255 * (1.0 - data[n, r, c]))
                if level < 255:
                    pixels.append(
                        Pixel(ox + c * cell, oy + r * cell, f"rgb({level},{level},{level})")
                    )
    return DigitGrid(
        width=math.ceil(columns * tile_w),
        height=math.ceil(rows * tile_h),
        title=title,
        pixels=tuple(pixels),
        cell=cell,
        frames=tuple(frames),
    )
