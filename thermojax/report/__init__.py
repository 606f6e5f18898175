"""The self-contained HTML report of a baseline run (Jinja2, autoescaped, inline CSS and SVG).

:func:`render_report` reads only a :class:`~thermojax.results.Result` (as saved in
``baseline_metrics.json``); it never recomputes a metric. Every string from the result, e.g. the
user-chosen ``model.name``, goes through Jinja2's autoescaping, and an undefined template
variable is an error (``StrictUndefined``), not an empty cell.

Example:
    >>> from thermojax.results import read_result
    >>> html = render_report(read_result("baseline_metrics.json"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from typing import Any

import jinja2
import numpy as np

from thermojax.report.charts import (
    BarChart,
    DigitGrid,
    LineChart,
    bar_chart,
    digit_grid,
    line_chart,
)
from thermojax.results import Result

__all__ = ["BAND_COLORS", "SEVERITY_COLORS", "environment", "render_report"]

BAND_COLORS = {"poor": "#c0392b", "good": "#2874a6", "excellent": "#1e8449"}
SEVERITY_COLORS = {"low": "#b7950b", "medium": "#ca6f1e", "high": "#c0392b"}
_OK, _VIOLATED = "#5d9c59", "#c0392b"


def _number(value: Any, digits: int = 3) -> str:
    """Fixed decimals; ``n/a`` for missing or non-finite values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _percent(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * value:.{digits}f}%"


def environment() -> jinja2.Environment:
    """The report's Jinja2 environment: package templates, autoescape on, strict undefined."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("thermojax.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["pct"] = _percent
    return env


def _boundary_chart(result: Result) -> BarChart:
    involved = set(result.violation_analysis.boundaries_involved)
    labels = [f"b{i}" for i in range(len(result.boundary_scores))]
    at = [f"t={result.time_groups[i][1]}" for i in range(len(result.boundary_scores))]
    colors = [_VIOLATED if i in involved else _OK for i in range(len(result.boundary_scores))]
    line = 1.0 - result.smoothness_threshold / 2.0
    rules = []
    if 0.0 <= line <= 1.0:
        rules.append(
            (line, f"1 - threshold/2 = {line:.2f}", "#c0392b"),
        )
    return bar_chart(
        result.boundary_scores,
        labels,
        sublabels=at,
        title="Boundary scores (mean over layers)",
        y_label="score",
        colors=colors,
        rules=rules,
    )


def _group_ticks(result: Result) -> tuple[list[float], list[str]]:
    """Every group with its t range when they fit; else about 10 ticks with the group index."""
    if result.num_time_groups <= 8:
        return (
            [float(g) for g in range(result.num_time_groups)],
            [f"g{g} [{a},{b})" for g, (a, b) in enumerate(result.time_groups)],
        )
    every = math.ceil(result.num_time_groups / 10)
    groups = range(0, result.num_time_groups, every)
    return [float(g) for g in groups], [f"g{g}" for g in groups]


def _scale_chart(result: Result) -> LineChart:
    groups = list(range(result.num_time_groups))
    scales = np.array([layer.scales for layer in result.layers], np.float64)
    positive = scales[scales > 0]
    log_y = bool(positive.size and positive.max() / positive.min() > 20)
    ticks, labels = _group_ticks(result)
    return line_chart(
        [(layer.name, groups, layer.scales) for layer in result.layers],
        title="Activation scale of each layer across time groups",
        x_label="time group [t range)",
        y_label="scale" + (" (log)" if log_y else ""),
        x_tick_values=ticks,
        x_tick_labels=labels,
        x_range=(-0.5, result.num_time_groups - 0.5),
        markers=result.num_time_groups <= 16,
        log_y=log_y,
        width=1040,
        height=300,
    )


def _edges(result: Result) -> list[int]:
    return [a for a, _ in result.time_groups] + [result.num_timesteps]


def _activation_charts(result: Result) -> list[LineChart]:
    t = np.arange(result.num_timesteps)
    edges = _edges(result)
    qmax = 2**result.act_bits - 1
    charts = []
    for layer in result.layers:
        scales = np.asarray(layer.scales, np.float64)
        zero_points = np.asarray(layer.zero_points, np.float64)
        charts.append(
            line_chart(
                (),
                bands=[("observed min..max", t, layer.activation_min, layer.activation_max)],
                steps=[
                    ("group quantization range", edges, (qmax - zero_points) * scales),
                    ("group quantization range", edges, -zero_points * scales),
                ],
                v_rules=[(e, f"b{i}") for i, e in enumerate(edges[1:-1])],
                title=layer.name,
                x_label="timestep t (0 = least noisy)",
                y_label="input activation",
                width=510,
                height=220,
            )
        )
    return charts


def _drift_chart(result: Result) -> LineChart:
    drift = np.asarray(result.quality.drift_per_timestep, np.float64)
    edges = _edges(result)
    return line_chart(
        [("mean squared drift of x_t", np.arange(drift.size), drift)],
        title="Trajectory drift, quantized vs fp32 (same noise)",
        x_label="timestep t (the sampler runs T-1 down to 0)",
        y_label="drift (log)",
        v_rules=[(e, f"b{i}") for i, e in enumerate(edges[1:-1])],
        log_y=True,
        width=1040,
        height=260,
    )


def _digit_grids(result: Result) -> tuple[DigitGrid, DigitGrid]:
    return (
        digit_grid(result.sample_preview.fp32, title="fp32 samples"),
        digit_grid(result.sample_preview.quantized, title="quantized samples (same noise)"),
    )


def render_report(result: Result) -> str:
    """Render the full HTML report of ``result`` as one self-contained string."""
    fp32_grid, quantized_grid = _digit_grids(result)
    template = environment().get_template("report.html.j2")
    return template.render(
        r=result,
        band_color=BAND_COLORS.get(result.interpretation.band, "#555"),
        severity_colors=SEVERITY_COLORS,
        boundary_chart=_boundary_chart(result),
        scale_chart=_scale_chart(result),
        activation_charts=_activation_charts(result),
        drift_chart=_drift_chart(result),
        fp32_grid=fp32_grid,
        quantized_grid=quantized_grid,
        config_text=json.dumps(result.config, indent=2, sort_keys=False),
        extra_quality=sorted(
            (k, v) for k, v in result.quality.extra.items() if isinstance(v, int | float)
        ),
    )
