"""``python -m thermojax.compare SWEEP_DIR``: one sweep's reports side by side.

Reads every ``baseline_metrics.json`` of a sweep folder (through :func:`thermojax.results.read_result`,
never recomputing a metric) and every ``failure.json`` the Ray launcher recorded, and writes into
the sweep folder (or ``--out``):

- ``sweep_summary.csv``: one row per configuration, failed ones included;
- ``sweep_summary.json``: the same rows, the failures and the correlations;
- ``comparison.html``: self-contained (inline CSS and SVG, Jinja2 with autoescaping): the table,
  the smoothness heatmap over bit width x time groups, violations against the threshold, sample
  quality (drift, Frechet distance) against smoothness with their correlation, and the failures.

An empty or foreign folder ends in one ``error:`` line, exit status 2, and nothing written.

Example:
    python -m thermojax.compare multirun/2026-11-27/10-11-31
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thermojax.errors import UserInputError
from thermojax.results import atomic_write_text, read_result

__all__ = [
    "COLUMNS",
    "SUMMARY_SCHEMA_VERSION",
    "SweepSummary",
    "collect",
    "main",
    "pearson",
    "render_comparison",
    "write_comparison",
]

SUMMARY_SCHEMA_VERSION = 1
REPORT_FILE = "baseline_metrics.json"
FAILURE_FILE = "failure.json"
CONFIG_KEYS = ("bit_width", "act_bits", "num_time_groups", "smoothness_threshold", "seed")
COLUMNS = (
    "job",
    "status",
    *CONFIG_KEYS,
    "smoothness_score",
    "violation_count",
    "mean_boundary_score",
    "min_boundary_score",
    "cosine_similarity",
    "compression_ratio",
    "model_size_mb",
    "drift_mean",
    "final_mse",
    "frechet_fp32",
    "frechet_quantized",
    "class_coverage_quantized",
    "band",
    "quantization_time_s",
    "error",
)
BIT_COLORS = {2: "#c0392b", 4: "#2874a6", 8: "#1e8449"}
_OTHER_COLORS = ("#7d3c98", "#ca6f1e", "#17a589", "#5d6d7e")


@dataclass(frozen=True)
class SweepSummary:
    """Everything the comparison shows, as plain JSON-ready data.

    Attributes:
        sweep_dir: the folder read.
        rows: one dict per configuration with the keys of ``COLUMNS`` (``None`` where a value
            does not apply, e.g. metrics of a failed configuration).
        failures: ``{job, overrides, error_type, message}`` per failed configuration.
        correlations: ``smoothness_vs_<metric>`` -> ``{"pearson": r or None, "n": count}`` over
            the distinct configurations apart from the threshold (which changes neither).
    """

    sweep_dir: str
    rows: tuple[dict[str, Any], ...]
    failures: tuple[dict[str, Any], ...]
    correlations: dict[str, dict[str, Any]]

    @property
    def completed(self) -> list[dict[str, Any]]:
        """The rows of configurations that finished."""
        return [row for row in self.rows if row["status"] == "ok"]

    def to_dict(self) -> dict[str, Any]:
        """The ``sweep_summary.json`` content."""
        return {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "sweep_dir": self.sweep_dir,
            "num_configurations": len(self.rows),
            "num_failed": len(self.failures),
            "correlations": self.correlations,
            "configurations": list(self.rows),
            "failures": list(self.failures),
        }


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation of paired finite values; ``None`` below 3 pairs or without spread."""
    x = np.asarray(xs, np.float64)
    y = np.asarray(ys, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
    if denominator <= 1e-300:
        return None
    return float(np.clip(np.sum(dx * dy) / denominator, -1.0, 1.0))


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _row_from_report(job: str, path: Path) -> dict[str, Any]:
    result = read_result(path)
    quality = result.quality
    row = {
        "job": job,
        "status": "ok",
        "bit_width": result.bit_width,
        "act_bits": result.act_bits,
        "num_time_groups": result.num_time_groups,
        "smoothness_threshold": result.smoothness_threshold,
        "seed": result.config.get("seed"),
        "smoothness_score": result.smoothness_score,
        "violation_count": result.violation_count,
        "mean_boundary_score": result.mean_boundary_score,
        "min_boundary_score": result.min_boundary_score,
        "cosine_similarity": result.cosine_similarity,
        "compression_ratio": result.compression_ratio,
        "model_size_mb": result.model_size_mb,
        "drift_mean": quality.drift_mean,
        "final_mse": quality.final_mse,
        "frechet_fp32": quality.frechet_fp32,
        "frechet_quantized": quality.frechet_quantized,
        "class_coverage_quantized": quality.class_coverage_quantized,
        "band": result.interpretation.band,
        "quantization_time_s": result.quantization_time_s,
        "error": None,
    }
    return {key: _finite_or_none(value) for key, value in row.items()}


def _config_from_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for override in overrides:
        key, _, value = str(override).lstrip("+~").partition("=")
        if key in CONFIG_KEYS:
            try:
                found[key] = json.loads(value)
            except ValueError:
                found[key] = value
    return found


def _failed_row(job: str, config: dict[str, Any], error: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(job=job, status="failed", error=error, **config)
    return row


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    def number(value: Any) -> float:
        return float(value) if isinstance(value, int | float) else math.inf

    return (*(number(row[key]) for key in CONFIG_KEYS), row["job"])


def collect(sweep_dir: str | Path) -> SweepSummary:
    """Read a sweep folder's reports and failure records.

    Raises:
        UserInputError: the folder does not exist or holds no sweep report or failure record.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise UserInputError(f"SWEEP_DIR {str(root)!r} is not a folder")
    reports = sorted(root.glob(f"**/{REPORT_FILE}"))
    failure_files = sorted(root.glob(f"**/{FAILURE_FILE}"))
    if not reports and not failure_files:
        raise UserInputError(
            f"SWEEP_DIR {str(root)!r} holds no sweep results (no */{REPORT_FILE} or "
            f"*/{FAILURE_FILE}); give the folder a multirun wrote (hydra.sweep.dir)"
        )
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    reported = set()
    for path in reports:
        job = str(path.parent.relative_to(root))
        reported.add(path.parent)
        try:
            rows.append(_row_from_report(job, path))
        except (OSError, ValueError, KeyError, TypeError) as err:
            message = f"unreadable {REPORT_FILE}: {type(err).__name__}: {err}"
            failures.append(
                {"job": job, "overrides": [], "error_type": "UnreadableReport", "message": message}
            )
            rows.append(_failed_row(job, {}, message))
    for path in failure_files:
        if path.parent in reported:
            continue  # a later attempt of the job finished: its report wins
        job = str(path.parent.relative_to(root))
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            overrides = [str(o) for o in record.get("overrides", [])]
            error_type, message = str(record["error_type"]), str(record["message"])
        except (OSError, ValueError, KeyError, AttributeError) as err:
            overrides, error_type, message = [], "UnreadableFailure", f"{type(err).__name__}: {err}"
        failures.append(
            {"job": job, "overrides": overrides, "error_type": error_type, "message": message}
        )
        rows.append(_failed_row(job, _config_from_overrides(overrides), f"{error_type}: {message}"))
    rows.sort(key=_sort_key)
    failures.sort(key=lambda f: f["job"])
    # Quality and smoothness do not depend on the threshold: count each calibrated and sampled
    # configuration once, or threshold variants would weigh it several times.
    distinct: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        if row["status"] == "ok":
            distinct.setdefault(
                tuple(row[k] for k in CONFIG_KEYS if k != "smoothness_threshold"), row
            )
    correlations = {}
    for metric in ("drift_mean", "frechet_quantized", "final_mse"):
        pairs = [
            (row["smoothness_score"], row[metric])
            for row in distinct.values()
            if row[metric] is not None and row["smoothness_score"] is not None
        ]
        correlations[f"smoothness_vs_{metric}"] = {
            "pearson": pearson([p[0] for p in pairs], [p[1] for p in pairs]),
            "n": len(pairs),
        }
    return SweepSummary(str(root), tuple(rows), tuple(failures), correlations)


# ---------------------------------------------------------------- charts (geometry only)


@dataclass(frozen=True)
class HeatCell:
    """One cell of the smoothness heatmap (SVG coordinates)."""

    x: float
    y: float
    w: float
    h: float
    fill: str
    text: str
    title: str
    dark: bool


@dataclass(frozen=True)
class Heatmap:
    """Mean smoothness per (bit width, time groups), averaged over thresholds and seeds."""

    width: int
    height: int
    cells: tuple[HeatCell, ...]
    x_labels: tuple[tuple[float, str], ...]
    y_labels: tuple[tuple[float, str], ...]
    low: float
    high: float
    left: float
    top: float
    bottom: float


@dataclass(frozen=True)
class Point:
    """One configuration in a scatter plot."""

    x: float
    y: float
    color: str
    title: str


@dataclass(frozen=True)
class Scatter:
    """Quality against smoothness, one point per configuration."""

    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    title: str
    x_label: str
    y_label: str
    points: tuple[Point, ...]
    x_ticks: tuple[tuple[float, str], ...]
    y_ticks: tuple[tuple[float, str], ...]
    legend: tuple[tuple[str, str], ...]


def _bit_color(bits: Any) -> str:
    if bits in BIT_COLORS:
        return BIT_COLORS[bits]
    return _OTHER_COLORS[hash(str(bits)) % len(_OTHER_COLORS)]


def _ramp(fraction: float) -> str:
    """Red (low) -> amber -> green (high)."""
    stops = ((0.0, (192, 57, 43)), (0.5, (241, 196, 15)), (1.0, (30, 132, 73)))
    f = min(max(fraction, 0.0), 1.0)
    for (f0, c0), (f1, c1) in itertools.pairwise(stops):
        if f <= f1:
            t = (f - f0) / (f1 - f0)
            rgb = [round(a + (b - a) * t) for a, b in zip(c0, c1, strict=True)]
            return "#{:02x}{:02x}{:02x}".format(*rgb)
    return "#1e8449"


def smoothness_heatmap(rows: Sequence[dict[str, Any]]) -> Heatmap | None:
    """The heatmap of completed rows, or ``None`` without any."""
    if not rows:
        return None
    bits = sorted({row["bit_width"] for row in rows})
    groups = sorted({row["num_time_groups"] for row in rows})
    cell_w, cell_h, left, top = 78.0, 40.0, 70.0, 28.0
    means = {}
    for b in bits:
        for g in groups:
            scores = [
                r["smoothness_score"]
                for r in rows
                if (r["bit_width"], r["num_time_groups"]) == (b, g)
            ]
            if scores:
                means[b, g] = (float(np.mean(scores)), len(scores))
    low = min(m for m, _ in means.values())
    high = max(m for m, _ in means.values())
    cells = []
    for i, b in enumerate(bits):
        for j, g in enumerate(groups):
            x, y = left + j * cell_w, top + i * cell_h
            if (b, g) not in means:
                cells.append(
                    HeatCell(x, y, cell_w - 2, cell_h - 2, "#eef1f4", "-", "not run", False)
                )
                continue
            mean, count = means[b, g]
            fraction = 0.5 if high - low < 1e-12 else (mean - low) / (high - low)
            title = f"INT{b}, {g} groups: mean smoothness {mean:.4f} over {count} run(s)"
            cells.append(
                HeatCell(
                    x,
                    y,
                    cell_w - 2,
                    cell_h - 2,
                    _ramp(fraction),
                    f"{mean:.3f}",
                    title,
                    0.2 < fraction < 0.8,
                )
            )
    return Heatmap(
        width=int(left + len(groups) * cell_w + 10),
        height=int(top + len(bits) * cell_h + 36),
        cells=tuple(cells),
        x_labels=tuple((left + j * cell_w + cell_w / 2, str(g)) for j, g in enumerate(groups)),
        y_labels=tuple((top + i * cell_h + cell_h / 2, f"INT{b}") for i, b in enumerate(bits)),
        low=low,
        high=high,
        left=left,
        top=top,
        bottom=top + len(bits) * cell_h,
    )


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi - lo < 1e-12:
        return [lo]
    return [lo + (hi - lo) * k / (count - 1) for k in range(count)]


def quality_scatter(
    rows: Sequence[dict[str, Any]], metric: str, label: str, correlation: dict[str, Any]
) -> Scatter | None:
    """``metric`` against smoothness for completed rows with finite values, or ``None``.

    ``correlation`` is the summary's ``{"pearson", "n"}`` entry for the metric, shown in the title.
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
    width, height, left, right, top, bottom = 420, 260, 62.0, 404.0, 28.0, 220.0
    xs = [row["smoothness_score"] for row in pairs]
    ys = [row[metric] for row in pairs]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = min(ys), max(ys)
    pad_x = (x_hi - x_lo) * 0.08 or 0.01
    pad_y = (y_hi - y_lo) * 0.08 or abs(y_hi) * 0.05 or 0.01
    x_lo, x_hi, y_lo, y_hi = x_lo - pad_x, x_hi + pad_x, y_lo - pad_y, y_hi + pad_y

    def sx(v: float) -> float:
        return left + (v - x_lo) / (x_hi - x_lo) * (right - left)

    def sy(v: float) -> float:
        return bottom - (v - y_lo) / (y_hi - y_lo) * (bottom - top)

    points = tuple(
        Point(
            sx(row["smoothness_score"]),
            sy(row[metric]),
            _bit_color(row["bit_width"]),
            f"INT{row['bit_width']}, {row['num_time_groups']} groups, threshold "
            f"{row['smoothness_threshold']}: smoothness {row['smoothness_score']:.4f}, "
            f"{label} {row[metric]:.4g}",
        )
        for row in pairs
    )
    r = correlation["pearson"]
    corr = "n/a" if r is None else f"{r:+.3f}"
    return Scatter(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        title=f"{label}: Pearson r = {corr} (n = {correlation['n']})",
        x_label="smoothness score",
        y_label=label,
        points=points,
        x_ticks=tuple((sx(v), f"{v:.3f}") for v in _ticks(x_lo + pad_x, x_hi - pad_x)),
        y_ticks=tuple((sy(v), f"{v:.3g}") for v in _ticks(y_lo + pad_y, y_hi - pad_y)),
        legend=tuple(
            (f"INT{b}", _bit_color(b)) for b in sorted({row["bit_width"] for row in pairs})
        ),
    )


def violations_chart(rows: Sequence[dict[str, Any]]) -> Any:
    """Mean violation count against threshold, one line per (bit width, time groups)."""
    from thermojax.report.charts import line_chart

    thresholds = sorted({row["smoothness_threshold"] for row in rows})
    if not rows:
        return None
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


# ---------------------------------------------------------------- outputs


def _csv_text(summary: SweepSummary) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in summary.rows:
        writer.writerow({key: "" if row[key] is None else row[key] for key in COLUMNS})
    return buffer.getvalue()


def render_comparison(summary: SweepSummary) -> str:
    """The self-contained ``comparison.html`` of a summary."""
    from thermojax.report import environment

    completed = summary.completed
    corr = summary.correlations
    template = environment().get_template("comparison.html.j2")
    return template.render(
        s=summary,
        rows=summary.rows,
        completed=completed,
        heatmap=smoothness_heatmap(completed),
        violations=violations_chart(completed) if completed else None,
        scatters=[
            chart
            for chart in (
                quality_scatter(
                    completed,
                    "drift_mean",
                    "mean drift",
                    corr["smoothness_vs_drift_mean"],
                ),
                quality_scatter(
                    completed,
                    "frechet_quantized",
                    "Frechet (quantized)",
                    corr["smoothness_vs_frechet_quantized"],
                ),
            )
            if chart is not None
        ],
    )


def write_comparison(summary: SweepSummary, out_dir: str | Path) -> dict[str, Path]:
    """Write the three outputs atomically (everything rendered first, then written)."""
    out = Path(out_dir)
    contents = {
        "csv": ("sweep_summary.csv", _csv_text(summary)),
        "json": (
            "sweep_summary.json",
            json.dumps(summary.to_dict(), indent=2, allow_nan=False) + "\n",
        ),
        "html": ("comparison.html", render_comparison(summary)),
    }
    out.mkdir(parents=True, exist_ok=True)
    return {kind: atomic_write_text(out / name, text) for kind, (name, text) in contents.items()}


def main(argv: Sequence[str] | None = None) -> None:
    """The command line; an empty or foreign folder ends in one ``error:`` line and exit 2."""
    parser = argparse.ArgumentParser(
        prog="python -m thermojax.compare",
        description="Compare the configurations of one sweep: CSV, JSON and an HTML dashboard.",
    )
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="the folder a multirun wrote")
    parser.add_argument("--out", help="where to write (default: SWEEP_DIR)")
    args = parser.parse_args(argv)
    try:
        summary = collect(args.sweep_dir)
        files = write_comparison(summary, args.out or args.sweep_dir)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    done = len(summary.completed)
    print(f"{done} configurations compared, {len(summary.failures)} failed")
    for path in files.values():
        print(f"  {path}")


if __name__ == "__main__":
    main()
