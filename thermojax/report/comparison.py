"""The sweep comparison page: one sweep's configurations side by side (Jinja2, inline SVG).

:func:`render_comparison` reads only a :class:`SweepSummary` (the rows that
``python -m thermojax.compare`` collects from the sweep's saved results) and draws it with the
report's chart toolkit: the smoothness heatmap over bit width x time groups, violations against
the threshold, sample quality against smoothness, the table of every configuration and the
failures. The page is self-contained and every string is autoescaped.

Example:
    >>> html = render_comparison(summary)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from thermojax.pipeline.quality.kind import quality_kinds
from thermojax.pipeline.results.sweep import COLUMNS, MIN_POINTS, SweepSummary
from thermojax.report import environment
from thermojax.report.charts import PALETTE, LineChart, ScatterChart, line_chart, scatter_chart
from thermojax.report.grids import Heatmap, heatmap

__all__ = [
    "BIT_COLORS",
    "quality_scatter",
    "render_comparison",
    "smoothness_heatmap",
    "summary_csv",
    "violations_chart",
]

BIT_COLORS = {2: "#c0392b", 4: "#2874a6", 8: "#1e8449"}
"""Each weight bit width's colour in the scatter plots (other widths take palette colours)."""


def summary_csv(summary: SweepSummary) -> str:
    """The ``sweep_summary.csv`` content: one row per configuration, empty cells for ``None``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in summary.rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in COLUMNS})
    return buffer.getvalue()


def _bit_colors(bit_widths: Sequence[Any]) -> dict[Any, str]:
    others = iter(c for c in PALETTE if c not in BIT_COLORS.values())
    return {b: BIT_COLORS.get(b) or next(others) for b in sorted(set(bit_widths))}


def _cell_means(
    rows: Sequence[dict[str, Any]], column: str, value: str
) -> tuple[list[int], list[Any], list[list[list[dict[str, Any]]]], list[list[float | None]]]:
    """Rows grouped by (bit width, ``column``): the bit widths, the columns, each cell's rows and
    each cell's mean ``value`` (``None`` for an empty cell)."""
    bits = sorted({row["bit_width"] for row in rows})
    columns = sorted({row[column] for row in rows})
    cells = [
        [[r for r in rows if (r["bit_width"], r[column]) == (b, c)] for c in columns] for b in bits
    ]
    means = [
        [float(np.mean([r[value] for r in cell])) if cell else None for cell in line]
        for line in cells
    ]
    return bits, columns, cells, means


def smoothness_heatmap(rows: Sequence[dict[str, Any]]) -> Heatmap | None:
    """Mean smoothness per (bit width, time groups) of completed rows, or ``None`` without any.

    The mean is over the cell's thresholds and seeds (the score does not depend on the threshold).
    """
    if not rows:
        return None
    bits, groups, cells, means = _cell_means(rows, "num_time_groups", "smoothness_score")
    tooltips = [
        [
            f"INT{b}, {g} groups: mean smoothness {mean:.4f} over {len(cell)} run(s)"
            if cell
            else "not run"
            for g, cell, mean in zip(groups, line, mean_line, strict=True)
        ]
        for b, line, mean_line in zip(bits, cells, means, strict=True)
    ]
    return heatmap(
        means,
        row_labels=[f"INT{b}" for b in bits],
        column_labels=[str(g) for g in groups],
        tooltips=tooltips,
        title="Mean smoothness score",
        x_label="time groups",
        y_label="weight bits",
        missing_tooltip="not run",
    )


def cosine_heatmap(rows: Sequence[dict[str, Any]]) -> Heatmap | None:
    """Weight cosine per (bit width, group size) of completed rows, or ``None`` without any.

    Shown for sweeps over weight quantization (a weight-only checkpoint has no smoothness)."""
    rows = [r for r in rows if r["cosine_similarity"] is not None and r["group_size"] is not None]
    if not rows:
        return None
    bits, sizes, cells, means = _cell_means(rows, "group_size", "cosine_similarity")
    tooltips = [
        [
            f"INT{b}, group {g}: weight cosine {mean:.5f}, {cell[0]['model_size_mb']:.4g} MB"
            if cell
            else "not run"
            for g, cell, mean in zip(sizes, line, mean_line, strict=True)
        ]
        for b, line, mean_line in zip(bits, cells, means, strict=True)
    ]
    return heatmap(
        means,
        row_labels=[f"INT{b}" for b in bits],
        column_labels=[str(g) for g in sizes],
        tooltips=tooltips,
        title="Weight cosine",
        x_label="group size",
        y_label="weight bits",
        missing_tooltip="not run",
    )


def violations_chart(rows: Sequence[dict[str, Any]]) -> LineChart | None:
    """Mean violation count against threshold, one line per (bit width, time groups)."""
    if not rows:
        return None
    thresholds = sorted({row["smoothness_threshold"] for row in rows})
    series = []
    for b in sorted({row["bit_width"] for row in rows}):
        for g in sorted({row["num_time_groups"] for row in rows if row["bit_width"] == b}):
            points = []
            for t in thresholds:
                counts = [
                    r["violation_count"]
                    for r in rows
                    if (r["bit_width"], r["num_time_groups"], r["smoothness_threshold"])
                    == (b, g, t)
                ]
                if counts:
                    points.append((t, float(np.mean(counts))))
            if points:
                series.append((f"INT{b}, G={g}", [p[0] for p in points], [p[1] for p in points]))
    return line_chart(
        series,
        title="Violations against the smoothness threshold",
        x_label="smoothness threshold",
        y_label="violations",
        x_tick_values=thresholds,
        x_tick_labels=[f"{t:g}" for t in thresholds],
    )


def quality_scatter(
    rows: Sequence[dict[str, Any]], metric: str, label: str, correlation: dict[str, Any]
) -> ScatterChart | None:
    """``metric`` against smoothness for completed rows with finite values, or ``None``.

    One point per configuration, coloured by bit width; ``correlation`` is the summary's
    ``{"pearson", "n"}`` entry for the metric, shown in the title.
    """
    pairs = [
        row
        for row in rows
        if row[metric] is not None
        and math.isfinite(row[metric])
        and math.isfinite(row["smoothness_score"])
    ]
    if not pairs:
        return None
    colors = _bit_colors([row["bit_width"] for row in pairs])
    r = correlation["pearson"]
    return scatter_chart(
        [("", row["smoothness_score"], row[metric], 0.0) for row in pairs],
        colors=[colors[row["bit_width"]] for row in pairs],
        tooltips=[
            f"INT{row['bit_width']}, {row['num_time_groups']} groups, threshold "
            f"{row['smoothness_threshold']}: smoothness {row['smoothness_score']:.4f}, "
            f"{label} {row[metric]:.4g}"
            for row in pairs
        ],
        legend=[(f"INT{b}", color) for b, color in colors.items()],
        title=f"{label}: Pearson r = {'n/a' if r is None else f'{r:+.3f}'} (n = {correlation['n']})",
        x_label="smoothness score",
        y_label=label,
        width=510,
        height=300,
    )


def render_comparison(summary: SweepSummary) -> str:
    """The self-contained ``comparison.html`` of a summary."""
    completed = summary.completed
    # Weight-only runs without activation statistics have no smoothness to chart.
    markov = [row for row in completed if row["smoothness_score"] is not None]
    corr = summary.correlations
    key, label = headline_quality(markov)
    empty = {"pearson": None, "n": 0}
    scatters = [
        quality_scatter(markov, "drift_mean", "mean drift", corr["smoothness_vs_drift_mean"]),
        quality_scatter(markov, key, label, corr.get(f"smoothness_vs_{key}", empty)),
    ]
    template = environment().get_template("comparison.html.j2")
    return template.render(
        s=summary,
        rows=summary.rows,
        completed=completed,
        heatmap=smoothness_heatmap(markov),
        cosine_heatmap=cosine_heatmap(completed) if len(markov) < len(completed) else None,
        violations=violations_chart(markov),
        scatters=[chart for chart in scatters if chart is not None],
        headline={"key": key, "label": label, **corr.get(f"smoothness_vs_{key}", empty)},
        within=[
            {"label": name, **entry}
            for metric, name in (("drift_mean", "mean drift"), (key, label))
            for entry in corr.get(f"smoothness_vs_{metric}", empty).get("within", [])
        ],
        min_points=MIN_POINTS,
    )


HEADLINE_QUALITY = tuple(
    dict.fromkeys(pair for kind in quality_kinds() for pair in kind.sweep_headline)
)
"""The quality figure the comparison page sets against smoothness beside the drift: the first
the runs have, of every kind of sample's candidates (images: the Frechet distance; text: the
held-out perplexity bound, or the generative perplexity without held-out text)."""


def headline_quality(rows: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """``(key, label)`` of the :data:`HEADLINE_QUALITY` figure that any of ``rows`` has."""
    for key, label in HEADLINE_QUALITY:
        if any(row.get(key) is not None for row in rows):
            return key, label
    return HEADLINE_QUALITY[0]
