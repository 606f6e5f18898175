"""The self-contained HTML report of a baseline run (Jinja2, autoescaped, inline CSS and SVG).

:func:`render_report` reads only a :class:`~thermojax.pipeline.results.schema.Result` (as saved in
``baseline_metrics.json``); it never recomputes a metric. Every string from the result, e.g. the
user-chosen ``model.name``, goes through Jinja2's autoescaping, and an undefined template
variable is an error (``StrictUndefined``), not an empty cell. The sweep comparison page is drawn
the same way by :mod:`thermojax.report.comparison`, with the same chart toolkit
(:mod:`~thermojax.report.charts`, :mod:`~thermojax.report.grids`) and templates.

Example:
    >>> from thermojax.pipeline.results.schema import read_result
    >>> html = render_report(read_result("baseline_metrics.json"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import jinja2
import numpy as np

from thermojax.pipeline.quality.kind import QualityKind, quality_kind
from thermojax.pipeline.results.schema import PhasesSection, Result
from thermojax.report.charts import (
    BarChart,
    LineChart,
    ScatterChart,
    bar_chart,
    line_chart,
    scatter_chart,
)
from thermojax.report.grids import digit_grid

__all__ = [
    "BAND_COLORS",
    "NO_VERDICT_COLOR",
    "SEVERITY_COLORS",
    "WEIGHTS_SHOWN",
    "environment",
    "render_report",
]

BAND_COLORS = {"poor": "#c0392b", "fair": "#b9770e", "good": "#2874a6", "excellent": "#1e8449"}
"""Each band's colour: the smoothness bands (poor, good, excellent) and the quality bands (poor,
fair, good)."""
NO_VERDICT_COLOR = "#5d6d7e"
"""The report's headline colour without a verdict (no sample quality measured)."""
SEVERITY_COLORS = {"low": "#b7950b", "medium": "#ca6f1e", "high": "#c0392b"}
_OK, _VIOLATED = "#5d9c59", "#c0392b"


def _number(value: Any, digits: int = 3) -> str:
    """Fixed decimals; ``n/a`` for missing or non-finite values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _signed(value: Any, digits: int = 3) -> str:
    """Fixed decimals with a sign; ``n/a`` for missing or non-finite values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:+.{digits}f}"


def _percent(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * value:.{digits}f}%"


def environment(kind: QualityKind | None = None) -> jinja2.Environment:
    """The report's Jinja2 environment: package templates (and the folder of ``kind``'s sample
    partial, for a kind defined outside thermojax), autoescape on, strict undefined."""
    loader: jinja2.BaseLoader = jinja2.PackageLoader("thermojax.report", "templates")
    if kind is not None and kind.template_folder is not None:
        loader = jinja2.ChoiceLoader([loader, jinja2.FileSystemLoader(kind.template_folder)])
    env = jinja2.Environment(
        loader=loader,
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["signed"] = _signed
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
    t = np.asarray(result.calibration_timesteps())
    edges = _edges(result)
    qmax = 2**result.act_bits - 1
    charts = []
    for layer in result.layers:
        scales = np.asarray(layer.scales, np.float64)
        zero_points = np.asarray(layer.zero_points, np.float64)
        # A run of an exported checkpoint has the parameters, not the ranges they came from.
        observed = len(layer.activation_min) == len(layer.activation_max) == len(t) > 0
        charts.append(
            line_chart(
                (),
                bands=(
                    [("observed min..max", t, layer.activation_min, layer.activation_max)]
                    if observed
                    else []
                ),
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


def _chain_chart(result: Result) -> LineChart | None:
    """The chain's error budget over the timesteps: each group's error as a bar over its span,
    the fully quantized chain's total across them, each boundary's cost marked at its edge."""
    chain = result.chain
    if chain is None:
        return None
    edges = chain.edges
    group = "only this group's steps quantized"
    return line_chart(
        [("every step quantized (total)", [edges[0], edges[-1]], [chain.total, chain.total])],
        bands=[
            (group, [edges[g], edges[g + 1]], [0.0, 0.0], [value, value])
            for g, value in enumerate(chain.per_group)
        ],
        v_rules=[
            (edge, f"b{b} {cost:+.2g}")
            for b, (edge, cost) in enumerate(zip(edges[1:-1], chain.per_boundary, strict=True))
        ],
        title="Chain error budget: final error by the time group its steps are quantized in",
        x_label="timestep t (the sampler runs T-1 down to 0)",
        y_label="final-state MSE",
        width=640,
        height=280,
    )


def _drift_chart(result: Result, kind: QualityKind) -> LineChart:
    """The drift per step, in the words of the result's kind of sample."""
    drift = np.asarray(result.quality.drift_per_timestep, np.float64)
    edges = _edges(result)
    text = kind.drift
    return line_chart(
        [(text.measure, np.asarray(result.sampling_timesteps()), drift)],
        title=text.title,
        x_label=text.x_label,
        y_label=text.y_label,
        v_rules=[(e, f"b{i}") for i, e in enumerate(edges[1:-1])],
        log_y=text.log_y,
        width=1040,
        height=260,
    )


def _image_grid(images: Any, title: str) -> Any:
    """A grid of pixel samples (a sample partial's ``image_grid``)."""
    return digit_grid(images, title=title)


def _other_figures(result: Result, kind: QualityKind) -> list[tuple[str, float]]:
    """The quality's finite scalar fields that are not among its kind's figures, by name."""
    quality = result.quality
    names = sorted(f.name for f in dataclasses.fields(quality) if f.name not in kind.figures)
    values = [(name, getattr(quality, name)) for name in names]
    return [
        (name, value)
        for name, value in values
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ]


def _comparison_rows(result: Result) -> list[dict[str, Any]]:
    """Baseline beside enhanced: ``label, baseline, enhanced, change, better`` (True/False/None).

    ``better`` says whether the change goes the good way for that figure (higher smoothness,
    fewer violations, lower error); the figures themselves come from the saved result.
    """
    base, q = result.baseline, result.quality
    bq = base.quality
    enh = result.enhancement
    kind = quality_kind(q.kind)
    rows = [
        (
            "Smoothness score (parameters used)",
            base.metrics.smoothness_score,
            result.smoothness_score,
            4,
            True,
        ),
        ("Violations", base.metrics.violation_count, result.violation_count, 0, False),
        (
            "Smoothness score, group-level view",
            base.metrics.smoothness_score,
            enh.group_view.smoothness_score,
            4,
            True,
        ),
    ]
    for name in kind.compared:
        before, after = bq.figure(name), q.figure(name)
        if before is not None and after is not None:
            shown = kind.labels[name]
            rows.append(
                (kind.comparison_labels[name], before, after, shown.digits, shown.higher_is_better)
            )
    out = []
    for label, before, after, digits, higher_is_better in rows:
        change = after - before
        finite = math.isfinite(change)
        out.append(
            {
                "label": label,
                "baseline": _number(float(before), digits) if digits else str(before),
                "enhanced": _number(float(after), digits) if digits else str(after),
                "change": (f"{change:+.{digits}f}" if finite else "n/a"),
                "better": None if not finite or change == 0 else (change > 0) == higher_is_better,
            }
        )
    return out


def _loss_chart(result: Result) -> LineChart | None:
    opt = result.enhancement.optimization if result.enhancement else None
    if opt is None:
        return None
    return line_chart(
        [
            (layer.name, np.arange(len(history)), history)
            for layer, history in zip(result.layers, opt.loss_history, strict=True)
        ],
        title="Phase 3 loss per layer (relative to the starting quantization error)",
        x_label="iteration",
        y_label="loss",
        width=1040,
        height=260,
    )


def _schedule_chart(result: Result) -> LineChart | None:
    enh = result.enhancement
    if enh is None or enh.schedule_scales is None:
        return None
    t = np.asarray(result.calibration_timesteps())
    edges = _edges(result)
    return line_chart(
        [
            (layer.name, t, row)
            for layer, row in zip(result.layers, enh.schedule_scales, strict=True)
        ],
        title="Per-timestep activation scale schedule used by the sampler",
        x_label="timestep t",
        y_label="scale (log)",
        v_rules=[(e, f"b{i}") for i, e in enumerate(edges[1:-1])],
        log_y=True,
        width=1040,
        height=280,
    )


_PHASE_COLORS = {
    "baseline": "#1d2733",
    "phase 2": "#1f77b4",
    "phase 2 (groups)": "#17becf",
    "phase 3": "#d62728",
    "adaptive": "#2ca02c",
    "combination": "#9467bd",
}


def _phase_figures(phases: PhasesSection) -> list[dict[str, Any]]:
    """The phase table's quality columns after the drift: its kind's compared figures the table
    has, with their label, digits and formats (the first two also get paired deltas)."""
    labels = quality_kind(phases.family).labels
    out = []
    for name in phases.compared()[1:]:
        shown = labels[name]
        out.append(
            {
                "name": name,
                "label": shown.label,
                "percent": shown.percent,
                "digits": shown.table_digits,
                "delta_digits": shown.digits if shown.percent else shown.table_digits,
            }
        )
    return out


def _phase_fp32(phases: PhasesSection) -> list[dict[str, str]]:
    """The fp32 reference figures of a phase table, formatted: ``label, mean, std``."""
    labels = quality_kind(phases.family).labels
    out = []
    for name, spread in phases.fp32.items():
        shown = labels[name]
        if shown.percent:
            mean, std = _percent(spread.mean, shown.table_digits), _percent(spread.std, 0)
        else:
            digits = shown.table_digits
            mean, std = _number(spread.mean, digits), _number(spread.std, digits)
        out.append({"label": shown.label, "mean": mean, "std": std})
    return out


def _phase_scatter(phases: PhasesSection, metric: str, label: str) -> ScatterChart:
    """Smoothness against the paired quality change (variant - baseline, same noise)."""
    return scatter_chart(
        [
            (
                row.variant,
                row.smoothness_score.mean,
                row.paired_delta[metric].mean,
                row.paired_delta[metric].std,
            )
            for row in phases.rows
        ],
        colors=[_PHASE_COLORS.get(row.phase, "#7f7f7f") for row in phases.rows],
        title=(
            f"Smoothness vs {label} change from the baseline, paired by seed "
            f"(mean +- std over {len(phases.seeds)} seeds)"
        ),
        x_label="smoothness score",
        y_label=label,
        width=1040,
        height=360,
    )


def _phase_drift_charts(phases: PhasesSection) -> list[LineChart]:
    """Drift per timestep per variant, and each variant's drift relative to the baseline's."""
    every = max(1, math.ceil(len(phases.rows[0].drift_per_timestep) / 250))
    base = next((r for r in phases.rows if r.variant == "baseline"), phases.rows[0])
    base_drift = np.asarray(base.drift_per_timestep, np.float64)[::every]
    steps = np.arange(0, len(base.drift_per_timestep), every)
    rules = [(e, f"b{i}") for i, e in enumerate(phases.drift_group_edges[1:-1])]
    relative = line_chart(
        [
            (
                row.variant,
                steps,
                np.divide(  # 1 where the baseline has no drift (no NaN in the SVG)
                    np.asarray(row.drift_per_timestep, np.float64)[::every],
                    base_drift,
                    out=np.ones_like(base_drift),
                    where=base_drift > 0,
                ),
            )
            for row in phases.rows
        ],
        title="Trajectory drift per timestep relative to the baseline's (mean over seeds)",
        x_label="timestep t (the sampler runs T-1 down to 0)",
        y_label="drift / baseline drift",
        v_rules=rules,
        width=1040,
        height=320,
    )
    absolute = line_chart(
        [
            (
                row.variant,
                steps,
                np.asarray(row.drift_per_timestep)[::every],
            )
            for row in phases.rows
        ],
        title=f"Trajectory drift per timestep per variant (mean over {len(phases.seeds)} seeds)",
        x_label="timestep t (the sampler runs T-1 down to 0)",
        y_label="drift (log)",
        v_rules=rules,
        log_y=True,
        width=1040,
        height=320,
    )
    return [absolute, relative]


WEIGHTS_SHOWN = 40
"""Tensors in the report's "worst tensors first" table; the blocks below it list every one."""


def _filesize(value: Any) -> str:
    """Bytes as B / kB / MB / GB (decimal units, as the JSON's byte counts)."""
    if value is None:
        return "n/a"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{int(value)} B"


def render_report(result: Result) -> str:
    """Render the full HTML report of ``result`` as one self-contained string.

    A weight-only result (``mode == "weight-only"``) shows the tensors, and the Markov sections
    only when it has them; a run without samples shows no sample quality.
    """
    markov = result.smoothness_score is not None
    weight_only = result.mode == "weight-only"
    kind = quality_kind(result.quality.kind) if result.quality is not None else None
    env = environment(kind)
    env.filters["filesize"] = _filesize
    env.globals["image_grid"] = _image_grid
    template = env.get_template("report.html.j2")
    context: dict[str, Any] = {
        "r": result,
        "weight_only": weight_only,
        "markov": markov,
        "severity_colors": SEVERITY_COLORS,
        "band_color": BAND_COLORS.get(result.interpretation.band, "#555")
        if result.interpretation is not None
        else "#555",
        "verdict_color": BAND_COLORS.get(result.interpretation.verdict, NO_VERDICT_COLOR)
        if result.interpretation is not None
        else NO_VERDICT_COLOR,
        # The graded quality figure leads; the smoothness score stands beside it.
        "headline": (
            kind.graded_ratio(result.quality)
            if kind is not None and kind.graded_ratio is not None
            else None
        ),
        "config_text": json.dumps(result.config, indent=2, sort_keys=False),
        "weights_shown": WEIGHTS_SHOWN,
        "block_tensors": result.weights.tensors_by_block() if result.weights is not None else {},
        "rules_used": sorted(
            {row.rule for row in result.weights.tensors if row.rule}
            if result.weights is not None
            else set()
        ),
        "comparison": _comparison_rows(result) if result.baseline is not None else [],
        "loss_chart": _loss_chart(result),
        "chain_chart": _chain_chart(result),
        "schedule_chart": _schedule_chart(result),
        "phase_charts": (
            [
                _phase_scatter(
                    result.phases, name, quality_kind(result.phases.family).labels[name].label
                )
                for name in result.phases.compared()[1:3]
            ]
            if result.phases is not None
            else []
        ),
        "phase_drift_charts": (
            _phase_drift_charts(result.phases) if result.phases is not None else []
        ),
        "phase_figures": _phase_figures(result.phases) if result.phases is not None else [],
        "phase_fp32": _phase_fp32(result.phases) if result.phases is not None else [],
    }
    if markov:
        context.update(
            boundary_chart=_boundary_chart(result),
            scale_chart=_scale_chart(result),
            activation_charts=_activation_charts(result),
        )
    context["preview"] = None
    if kind is not None:
        # The samples' partial by lookup: the kind's own, else the plain list of its figures.
        found = env.select_template([kind.preview, _FIGURES_PARTIAL])
        context.update(
            preview=found.name,
            kind=kind,
            drift_chart=_drift_chart(result, kind),
            other_figures=_other_figures(result, kind),
        )
    return template.render(**context)


_FIGURES_PARTIAL = "samples/_figures.html.j2"
"""The sample partial of a kind without its own: its figures, labelled, and the drift."""
