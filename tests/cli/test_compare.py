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

import pytest

from thermojax.cli.compare import COLUMNS, collect, pearson

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


def test_summary_lists_every_configuration_and_failure(sweep):
    proc = _compare(str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("8 configurations compared, 1 failed")

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
    assert _compare(str(sweep)).returncode == 0
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


@pytest.mark.parametrize("kind", ["empty", "foreign", "missing"])
def test_empty_or_foreign_folder_is_one_line_and_writes_nothing(tmp_path, kind):
    folder = tmp_path / "dir"
    if kind != "missing":
        folder.mkdir()
    if kind == "foreign":
        (folder / "0").mkdir()
        (folder / "0" / "metrics.json").write_text("{}")
        (folder / "notes.txt").write_text("hello")
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
