"""``python -m thermojax.compare``: the sweep summary (CSV, JSON) and the comparison dashboard.

Sweeps are built from tests/fixtures/compare/report_template.json (a real baseline_metrics.json,
trimmed to one layer), with the compared figures set per configuration, plus failure records as
the Ray launcher writes them. Expected values are recomputed here independently.
"""

import csv
import html
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from html_reading import cards, parse, table_after, table_rows

from thermojax.cli.compare import main as compare_main
from thermojax.pipeline.results.sweep import COLUMNS, collect, pearson
from thermojax.report.comparison import (
    BIT_COLORS,
    SweepSummary,
    cosine_heatmap,
    quality_scatter,
    render_comparison,
    smoothness_heatmap,
    violations_chart,
)

TEMPLATE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "compare" / "report_template.json").read_text()
)
OUTPUTS = ("sweep_summary.csv", "sweep_summary.json", "comparison.html")

# (bits, groups) -> (smoothness, drift_mean, frechet_quantized); thresholds change only violations.
FIGURES = {
    (2, 2): (0.91, 0.30, 400.0),
    (2, 4): (0.95, 0.25, 380.0),
    (4, 2): (0.97, 0.06, 170.0),
    (4, 4): (0.99, 0.05, 160.0),
}
THRESHOLDS = (0.1, 0.3)
BANDS = {(2, 2): "poor", (2, 4): "good", (4, 2): "excellent", (4, 4): "excellent"}
# The quality band (schema 5); (4, 4) keeps the template's older interpretation without one.
QUALITY_BANDS = {(2, 2): "poor", (2, 4): "fair", (4, 2): "good"}


def _violations(bits: int, groups: int, threshold: float) -> int:
    return int(bits * groups / (threshold * 10))


def _write_report(job_dir: Path, bits: int, groups: int, threshold: float) -> None:
    smoothness, drift, frechet = FIGURES[bits, groups]
    report = json.loads(json.dumps(TEMPLATE))
    report.update(
        bit_width=bits,
        num_time_groups=groups,
        smoothness_threshold=threshold,
        smoothness_score=smoothness,
        violation_count=_violations(bits, groups, threshold),
    )
    report["quality"].update(drift_mean=drift, frechet_quantized=frechet)
    report["interpretation"]["band"] = BANDS[bits, groups]
    if (bits, groups) in QUALITY_BANDS:
        report["interpretation"]["quality_band"] = QUALITY_BANDS[bits, groups]
    # Figures that differ per configuration, so that a column shown from another row shows.
    report.update(
        cosine_similarity=0.9 + bits / 100 + groups / 1000,
        compression_ratio=32 / bits - threshold,
        min_boundary_score=0.5 + groups / 100 + threshold,
        quantization_time_s=bits * 10 + groups + threshold,
    )
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "baseline_metrics.json").write_text(json.dumps(report))


def _write_failure(job_dir: Path, overrides: list[str], error_type: str, message: str) -> None:
    job_dir.mkdir(parents=True)
    record = {"overrides": overrides, "error_type": error_type, "message": message}
    (job_dir / "failure.json").write_text(json.dumps(record))


@pytest.fixture
def sweep(tmp_path) -> Path:
    """8 finished configurations (jobs 0..7) and one failure (job 8)."""
    root = tmp_path / "sweep"
    job = 0
    for bits, groups in FIGURES:
        for threshold in THRESHOLDS:
            _write_report(root / str(job), bits, groups, threshold)
            job += 1
    _write_failure(
        root / "8",
        ["bit_width=8", "num_time_groups=16", "smoothness_threshold=0.3"],
        "UserInputError",
        "model.name=<script>alert(1)</script> crashed",
    )
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def _compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "thermojax.compare", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_summary_lists_every_configuration_and_failure(sweep, capsys):
    compare_main([str(sweep)])  # in this process, so that mutation testing sees the code
    assert capsys.readouterr().out.startswith("8 configurations compared, 1 failed")

    with open(sweep / "sweep_summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 9
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 8
    for row in ok:
        bits, groups, threshold = (
            int(row["bit_width"]),
            int(row["num_time_groups"]),
            float(row["smoothness_threshold"]),
        )
        assert float(row["smoothness_score"]) == FIGURES[bits, groups][0]
        assert row["band"] == BANDS[bits, groups]
        assert row["quality_band"] == QUALITY_BANDS.get((bits, groups), "")
        assert int(row["violation_count"]) == _violations(bits, groups, threshold)
    failed = [r for r in rows if r["status"] == "failed"]
    assert [(f["job"], f["bit_width"], f["num_time_groups"]) for f in failed] == [("8", "8", "16")]
    assert failed[0]["error"].startswith("UserInputError: model.name=<script>")
    # Sorted by configuration: bit width, then time groups, then threshold.
    keys = [
        (int(r["bit_width"]), int(r["num_time_groups"]), float(r["smoothness_threshold"]))
        for r in rows
    ]
    assert keys == sorted(keys)

    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["num_configurations"] == 9 and summary["num_failed"] == 1
    assert summary["failures"][0]["overrides"][0] == "bit_width=8"
    # Correlation over the 4 distinct configurations (thresholds do not change the quality).
    smooth = [f[0] for f in FIGURES.values()]
    for metric, index in (("drift_mean", 1), ("frechet_quantized", 2)):
        expected = statistics.correlation(smooth, [f[index] for f in FIGURES.values()])
        entry = summary["correlations"][f"smoothness_vs_{metric}"]
        assert entry["n"] == 4
        assert entry["pearson"] == pytest.approx(expected, abs=1e-12)


def test_dashboard_is_self_contained_escaped_and_shows_each_part(sweep):
    proc = _compare(str(sweep))  # the command itself, as a user runs it
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("8 configurations compared, 1 failed")
    page = (sweep / "comparison.html").read_text()
    # Self-contained: no fetched resources of any kind.
    for needle in ("<script", "src=", "http://", "https://", "<link", "@import"):
        assert needle not in page.lower(), needle
    # The failure's message is shown, escaped.
    assert html.escape("model.name=<script>alert(1)</script> crashed", quote=False) in page
    # Heatmap: one cell per (bits, groups) with its mean smoothness, bits rows x groups columns.
    for (bits, groups), (smoothness, _, _) in FIGURES.items():
        assert f"INT{bits}, {groups} groups: mean smoothness {smoothness:.4f} over 2 run(s)" in page
    assert "Violations against the smoothness threshold" in page
    r = statistics.correlation([f[0] for f in FIGURES.values()], [f[1] for f in FIGURES.values()])
    assert f"mean drift: Pearson r = {r:+.3f} (n = 4)" in page
    assert page.count("<tr>") >= 9 + 1  # every configuration and the failure


def test_dashboard_table_shows_each_configurations_own_values(sweep, capsys):
    """Each row of "Every configuration" holds that job's figures from sweep_summary.json.

    In this process (``main``), so that mutation testing sees which code the page comes from.
    """
    compare_main([str(sweep)])
    assert capsys.readouterr().out.startswith("8 configurations compared, 1 failed")
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    root = parse((sweep / "comparison.html").read_text())
    rows = table_rows(table_after(root, "Every configuration"))

    def cell(value, digits=None):
        if value is None:
            return "" if digits is None else "n/a"
        return str(value) if digits is None else f"{value:.{digits}f}"

    want = [
        [
            row["job"],
            cell(row["bit_width"]),
            cell(row["act_bits"]),
            cell(row["num_time_groups"]),
            cell(row["smoothness_threshold"]),
            cell(row["seed"]),
            f"{row['sampler'].upper()} {row['sampling_steps']}" if row["sampler"] else "",
            cell(row["smoothness_score"], 4),
            row["band"] or "",
            row["quality_band"] or "",
            cell(row["violation_count"]),
            cell(row["min_boundary_score"], 3),
            cell(row["cosine_similarity"], 4),
            cell(row["compression_ratio"], 2),
            cell(row["drift_mean"], 4),
            cell(row["frechet_quantized"], 3),
            cell(row["quantization_time_s"], 1),
            row["status"],
        ]
        for row in summary["configurations"]
    ]
    assert rows == want
    assert len(rows) == 9
    shown = {r[0]: r for r in rows}
    for job in range(8):
        report = json.loads((sweep / str(job) / "baseline_metrics.json").read_text())
        assert shown[str(job)][6] == "DDPM 1000"  # written before schema 6: the full sampler
        assert shown[str(job)][8] == report["interpretation"]["band"]
        assert shown[str(job)][9] == (report["interpretation"].get("quality_band") or "")
        assert shown[str(job)][7] == f"{report['smoothness_score']:.4f}"
    failures = table_rows(table_after(root, "Failures"))
    assert failures == [
        [
            "8",
            "bit_width=8 num_time_groups=16 smoothness_threshold=0.3",
            "UserInputError: model.name=<script>alert(1)</script> crashed",
        ]
    ]
    page = root.text()
    for (bits, groups), (smoothness, _, _) in FIGURES.items():  # the heatmap's cells
        assert f"INT{bits}, {groups} groups: mean smoothness {smoothness:.4f} over 2 run(s)" in (
            (sweep / "comparison.html").read_text()
        )
    headings = [h.text() for h in root.find_all("h2")]
    assert headings[:4] == [
        "Smoothness over bit width \u00d7 time groups",
        "Violations against the threshold",
        "Sample quality against smoothness",
        "Every configuration",
    ]
    for metric, label in (
        ("drift_mean", "mean drift"),
        ("frechet_quantized", "Frechet (quantized)"),
    ):
        r = summary["correlations"][f"smoothness_vs_{metric}"]
        assert f"{label}: Pearson r = {r['pearson']:+.3f} (n = {r['n']})" in page
    assert "Violations against the smoothness threshold" in page
    sub = root.find("p", "sub").text()
    assert sub == f"{sweep} · 8 configurations completed, 1 failed"
    cards_shown = cards(root)
    assert cards_shown["configurations"]["value"] == "9"
    assert cards_shown["failed"]["value"] == "1"
    r = summary["correlations"]["smoothness_vs_drift_mean"]
    assert cards_shown["r(smoothness, mean drift)"]["value"] == f"{r['pearson']:.3f}"
    assert cards_shown["r(smoothness, mean drift)"]["note"] == f"Pearson, n = {r['n']}"


def axis(ticks):
    """Pixel position -> data value, through an axis' first and last tick."""
    (p0, v0), (p1, v1) = [(t.pos, float(t.label)) for t in (ticks[0], ticks[-1])]
    return lambda pos: v0 + (pos - p0) * (v1 - v0) / (p1 - p0)


def chart_values(chart) -> dict[str, list[tuple[float, float]]]:
    """Each series' points in data units, read back through the axes' ticks."""
    to_x, to_y = axis(chart.x_ticks), axis(chart.y_ticks)
    return {
        series.name: [
            (to_x(float(x)), to_y(float(y)))
            for x, y in (pair.split(",") for pair in series.points.split())
        ]
        for series in chart.series
    }


def test_violations_chart_is_the_mean_count_per_threshold_for_each_configuration(sweep):
    rows = collect(sweep).completed
    chart = violations_chart(rows)
    assert [t.label for t in chart.x_ticks] == [f"{t:g}" for t in THRESHOLDS]
    values = chart_values(chart)
    assert list(values) == [f"INT{b}, G={g}" for b, g in FIGURES]
    for (bits, groups), name in zip(FIGURES, values, strict=True):
        want = [(t, _violations(bits, groups, t)) for t in THRESHOLDS]
        np.testing.assert_allclose(values[name], want, rtol=1e-9, atol=1e-9)
    assert [name for name, _ in chart.legend] == list(values)


def test_scatter_points_sit_at_each_configurations_smoothness_and_quality(sweep):
    summary = collect(sweep)
    for metric in ("drift_mean", "frechet_quantized"):
        correlation = summary.correlations[f"smoothness_vs_{metric}"]
        chart = quality_scatter(summary.completed, metric, metric, correlation)
        to_x, to_y = axis(chart.x_ticks), axis(chart.y_ticks)
        got = sorted((round(to_x(p.x), 6), round(to_y(p.y), 6)) for p in chart.points)
        want = sorted(
            (round(r["smoothness_score"], 6), round(r[metric], 6)) for r in summary.completed
        )
        assert got == want, metric
        colors = {p.tooltip.split(",")[0]: p.color for p in chart.points}
        assert colors == {"INT2": BIT_COLORS[2], "INT4": BIT_COLORS[4]}
        assert chart.title == (
            f"{metric}: Pearson r = {correlation['pearson']:+.3f} (n = {correlation['n']})"
        )


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="needs Debian's chromium (make system-deps)"
)
def test_dashboard_renders_in_chromium(sweep, tmp_path):
    assert _compare(str(sweep)).returncode == 0
    proc = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            (sweep / "comparison.html").as_uri(),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert dom.count("<circle") == 2 * 8  # two quality scatters, one point per configuration
    assert "Sweep comparison" in dom


def _not_a_sweep(tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / "dir"
    if kind != "missing":
        folder.mkdir()
    if kind == "foreign":
        (folder / "0").mkdir()
        (folder / "0" / "metrics.json").write_text("{}")
        (folder / "notes.txt").write_text("hello")
    return folder


@pytest.mark.parametrize("kind", ["empty", "foreign", "missing"])
def test_empty_or_foreign_folder_is_one_line_and_writes_nothing(tmp_path, kind, capsys):
    # The command's main in this process (its command boundary); the real command, a process
    # of its own, in test_a_folder_that_is_no_sweep_through_the_command.
    folder = _not_a_sweep(tmp_path, kind)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exited:
        compare_main([str(folder)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: SWEEP_DIR '{folder}' ")
    assert len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_folder_that_is_no_sweep_through_the_command(tmp_path):
    folder = _not_a_sweep(tmp_path, "foreign")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    proc = _compare(str(folder))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: SWEEP_DIR '{folder}' ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_unreadable_report_is_listed_as_a_failure_not_a_crash(sweep):
    (sweep / "3" / "baseline_metrics.json").write_text('{"schema_version": 99}')
    summary = collect(sweep)
    assert len(summary.completed) == 7
    assert any(f["job"] == "3" and f["error_type"] == "UnreadableReport" for f in summary.failures)


def test_report_wins_over_a_stale_failure_of_the_same_job(sweep):
    _write_failure(sweep / "9", ["bit_width=2"], "WorkerCrashedError", "node preempted")
    _write_report(sweep / "9", 2, 2, 0.1)  # the retry finished after the failure was recorded
    summary = collect(sweep)
    assert not any(f["job"] == "9" for f in summary.failures)
    assert len(summary.completed) == 9


@pytest.mark.parametrize(
    "xs, ys",
    [([1, 2, 3, 4], [2, 4, 5, 9]), ([0.9, 0.95, 0.97], [0.3, 0.1, 0.2])],
    ids=["increasing", "mixed"],
)
def test_pearson_matches_the_standard_library(xs, ys):
    assert pearson(xs, ys) == pytest.approx(statistics.correlation(xs, ys), abs=1e-12)


@pytest.mark.parametrize(
    "xs, ys",
    [([1, 2], [3, 4]), ([1, 1, 1], [1, 2, 3]), ([1, 2, float("nan")], [1, 2, 3])],
    ids=["two-points", "no-spread", "nan-leaves-two"],
)
def test_pearson_is_none_when_undefined(xs, ys):
    assert pearson(xs, ys) is None


def test_smoothness_heatmap_cells_are_each_configurations_mean_smoothness(sweep):
    h = smoothness_heatmap(collect(sweep).completed)
    assert [t.label for t in h.row_ticks] == ["INT2", "INT4"]
    assert [t.label for t in h.column_ticks] == ["2", "4"]
    assert (h.title, h.x_label, h.y_label) == (
        "Mean smoothness score",
        "time groups",
        "weight bits",
    )
    # Row-major: bits, then groups; two thresholds per cell with the same smoothness.
    assert [c.text for c in h.cells] == [f"{FIGURES[k][0]:.3f}" for k in FIGURES]
    assert [c.tooltip for c in h.cells] == [
        f"INT{b}, {g} groups: mean smoothness {FIGURES[b, g][0]:.4f} over 2 run(s)"
        for b, g in FIGURES
    ]
    assert (h.low, h.high) == (0.91, 0.99)


def weight_only_row(bits: int, group_size: int, cosine: float, size_mb: float) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(
        job=f"{bits}-{group_size}",
        status="ok",
        mode="weight-only",
        bit_width=bits,
        group_size=group_size,
        cosine_similarity=cosine,
        model_size_mb=size_mb,
    )
    return row


def test_cosine_heatmap_of_a_weight_only_sweep_is_each_cells_cosine_and_size():
    rows = [
        weight_only_row(2, 32, 0.90, 1.5),
        weight_only_row(2, 64, 0.875, 1.25),
        weight_only_row(4, 32, 0.98, 2.5),
        weight_only_row(4, 32, 0.99, 2.5),  # a second seed of one cell: the mean is shown
    ]
    h = cosine_heatmap(rows)
    assert [t.label for t in h.row_ticks] == ["INT2", "INT4"]
    assert [t.label for t in h.column_ticks] == ["32", "64"]
    assert (h.title, h.x_label, h.y_label) == ("Weight cosine", "group size", "weight bits")
    assert [c.text for c in h.cells] == ["0.900", "0.875", "0.985", "-"]
    assert [c.tooltip for c in h.cells] == [
        "INT2, group 32: weight cosine 0.90000, 1.5 MB",
        "INT2, group 64: weight cosine 0.87500, 1.25 MB",
        "INT4, group 32: weight cosine 0.98500, 2.5 MB",
        "not run",
    ]
    assert (h.low, h.high) == (0.875, 0.985)
    assert cosine_heatmap([weight_only_row(2, 32, None, 1.0)]) is None


def test_weight_only_sweep_page_shows_the_cosine_heatmap_and_no_smoothness_one():
    rows = (weight_only_row(2, 32, 0.9, 1.5), weight_only_row(4, 64, 0.98, 2.5))
    empty = {"pearson": None, "n": 0}
    summary = SweepSummary(
        sweep_dir="/sweep",
        rows=rows,
        failures=(),
        correlations={
            "smoothness_vs_drift_mean": empty,
            "smoothness_vs_frechet_quantized": empty,
        },
    )
    page = parse(render_comparison(summary))
    headings = [h.text() for h in page.find_all("h2")]
    assert "Weight cosine over bit width and group size" in headings
    assert "Smoothness over bit width × time groups" not in headings
    assert "Violations against the threshold" not in headings


def test_correlations_are_also_given_within_each_bit_width_with_an_interval():
    """Bit width drives smoothness and quality alike: the summary gives r within each (weight
    bits, activation bits) with a seeded bootstrap interval, and none under 5 configurations."""
    from thermojax.pipeline.results.sweep import MIN_POINTS, within_correlations

    rng = np.random.default_rng(4)
    rows = []
    for bits, count in ((2, 7), (4, 4)):
        for _ in range(count):
            smooth = float(rng.uniform(0.9, 1.0))
            rows.append(
                {
                    "bit_width": bits,
                    "act_bits": 8,
                    "smoothness_score": smooth,
                    "drift_mean": float(0.1 * bits + smooth + rng.normal(0, 0.02)),
                }
            )
    rows.append({"bit_width": 2, "act_bits": 8, "smoothness_score": None, "drift_mean": 1.0})
    got = within_correlations(rows, "drift_mean")
    assert [(g["bit_width"], g["n"]) for g in got] == [(2, 7), (4, 4)]
    int2 = [r for r in rows if r["bit_width"] == 2 and r["smoothness_score"] is not None]
    xs, ys = [r["smoothness_score"] for r in int2], [r["drift_mean"] for r in int2]
    assert got[0]["pearson"] == pytest.approx(statistics.correlation(xs, ys), abs=1e-12)
    low, high = got[0]["interval"]
    assert -1 <= low <= got[0]["pearson"] <= high <= 1
    assert within_correlations(rows, "drift_mean") == got  # seeded: the same interval again
    assert MIN_POINTS == 5 and got[1]["pearson"] is None and got[1]["interval"] is None
