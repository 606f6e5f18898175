"""Console summary (baseline beside enhanced, top of the phase table) and the completion order.

The enhanced and phase sections here are built by hand with known numbers, so every printed
figure is checked against a value the test chose. The order test runs the real ``execute`` and
interrupts it while the log is being written: ``baseline_metrics.json``, the sweep's completion
marker, must not exist then.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
from pathlib import Path

import pytest
from result_samples import (
    FRECHET_DELTAS,
    W2_DIGITS_QUALITY,
    enhanced_result,
    make_result,
    phases_result,
)
from rich.console import Console

import thermojax.cli.tracking
import thermojax.pipeline
from thermojax.cli import baseline as baseline_module
from thermojax.cli.config import to_config
from thermojax.cli.runlog import (
    PHASE_ROWS_SHOWN,
    RunLog,
    comparison_lines,
    phase_lines,
    print_summary,
)
from thermojax.pipeline.results.schema import (
    Result,
)


def printed(result: Result, files: dict[str, Path]) -> str:
    buffer = io.StringIO()
    print_summary(Console(file=buffer, width=200, color_system=None), result, files)
    return buffer.getvalue()


def test_plain_run_prints_neither_comparison_nor_phase_table(tmp_path):
    result = make_result()
    assert comparison_lines(result) == [] and phase_lines(result, {}) == []
    text = printed(result, {"json": tmp_path / "baseline_metrics.json"})
    assert "baseline" not in text.split("outputs:")[0] and "phase table" not in text


@pytest.mark.parametrize(
    ("quality_figures", "quality"),
    [({}, "good (Frechet 1.50x fp32)"), (W2_DIGITS_QUALITY, "poor (Frechet 16.8x fp32)")],
    ids=["good", "poor"],
)
def test_summary_labels_the_smoothness_band_and_shows_the_quality_band(
    tmp_path, quality_figures, quality
):
    result = make_result(quality_figures=quality_figures)
    text = printed(result, {"json": tmp_path / "baseline_metrics.json"})
    assert (
        f"  smoothness {result.smoothness_score:.4f} "
        f"(smoothness band: {result.interpretation.band}), quality band: {quality}, "
        f"{result.violation_count} violations (jump > 0.3)"
    ) in text.splitlines()
    assert f"  next: {'; '.join(result.interpretation.actions)}" in text


def test_summary_of_a_run_without_quality_shows_only_the_smoothness_band(tmp_path):
    result = make_result()
    interpretation = dataclasses.replace(
        result.interpretation, quality_band=None, quality_detail="", verdict=None
    )
    text = printed(dataclasses.replace(result, interpretation=interpretation), {})
    assert f"(smoothness band: {result.interpretation.band}), {result.violation_count} " in text
    assert "quality band" not in text


def test_enhanced_run_shows_baseline_beside_enhanced(tmp_path):
    result = enhanced_result()
    text = printed(result, {"json": tmp_path / "baseline_metrics.json"})
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["baseline", "enhanced"])
    table = {line.split()[0]: line for line in lines[header + 1 : header + 5]}
    expected = {
        "smoothness": ["0.5000", f"{result.smoothness_score:.4f}"],
        "violations": ["7", str(result.violation_count)],
        "final": ["MSE", "2.500", f"{result.quality.final_mse:.3f}"],
        "Frechet": ["7.125", f"{result.quality.frechet_quantized:.3f}"],
    }
    for name, values in expected.items():
        assert table[name].split()[1:] == values, table[name]
    assert f"enhanced: {result.enhancement.description}" in text
    assert "Phase 3: 1/2 layers converged, at most 3 iterations" in text


def test_phase_table_top_is_the_baseline_and_the_best_paired_frechet(tmp_path):
    result = phases_result()
    csv_path = tmp_path / "phases.csv"
    text = printed(result, {"json": tmp_path / "baseline_metrics.json", "phases_csv": csv_path})
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["variant"])
    shown = [line.split() for line in lines[start + 1 : start + 2 + PHASE_ROWS_SHOWN]]
    # Independent ranking: finite deltas ascending, the NaN (if any) last.
    others = sorted(
        range(1, len(FRECHET_DELTAS)),
        key=lambda i: (math.isnan(FRECHET_DELTAS[i]), FRECHET_DELTAS[i]),
    )
    expected = ["baseline", *(f"variant-{i}" for i in others[:PHASE_ROWS_SHOWN])]
    assert [cells[0] for cells in shown] == expected
    for cells in shown:
        row = next(r for r in result.phases.rows if r.variant == cells[0])
        mse, frechet = row.paired_delta["final_mse"], row.paired_delta["frechet_quantized"]
        assert cells[1:] == [
            f"{row.smoothness_score.mean:.4f}",
            f"{row.violation_count.mean:.1f}",
            f"{mse.mean:+.3f}±{mse.std:.3f}",
            f"{frechet.mean:+.3f}±{frechet.std:.3f}",
        ]
    hidden = len(FRECHET_DELTAS) - 1 - PHASE_ROWS_SHOWN
    assert f"... {hidden} more variants" in text
    assert f"full phase table: {csv_path}" in text
    assert "10 variants x 3 seeds" in text


def test_run_log_is_collected_and_written(tmp_path):
    run_log = RunLog()
    with run_log.attached():
        logging.getLogger("thermojax.test").info("stage x took 1 s")
    path = run_log.write(tmp_path / "baseline_metrics.log")
    assert "stage x took 1 s" in path.read_text()
    assert not list(tmp_path.glob(".*.tmp"))


# --- the completion marker comes last --------------------------------------------------------


class RecordingTracker:
    """A tracker that only says when it was called."""

    def __init__(self, events: list) -> None:
        self.events = events

    def log(self, result, files) -> None:
        self.events.append(("tracker", "log"))

    def finish(self) -> None:
        self.events.append(("tracker", "finish"))


def test_execute_publishes_every_output_then_the_log_then_the_json(tmp_path, monkeypatch):
    """The order as an event record: each rename into place, and the tracker's calls. The JSON
    is written first (a report that fails to render loses no number) and published last."""
    out = tmp_path / "job"
    events: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src, dst):
        dst = Path(dst)
        if dst.parent == out:
            events.append(("rename", dst.name))
            if dst.name == "baseline_metrics.log":
                # The log goes into place whole, already saying the run is done, before the JSON.
                assert Path(src).read_text().rstrip().endswith("done")
                assert not (out / "baseline_metrics.json").exists()
        real_replace(src, dst)

    result = make_result()
    monkeypatch.setattr(thermojax.pipeline, "run", lambda config, progress=None: result)
    monkeypatch.setattr(
        thermojax.cli.tracking, "make_tracker", lambda *a, **k: RecordingTracker(events)
    )
    monkeypatch.setattr(baseline_module, "enable_compilation_cache", lambda: tmp_path / "no-jax")
    monkeypatch.setattr(os, "replace", replace)
    files = baseline_module.execute(to_config({"wandb": {"mode": "disabled"}}), out)
    monkeypatch.undo()
    assert events == [
        ("rename", ".baseline_metrics.json.pending.tmp"),  # the numbers first, under a staged name
        ("rename", "samples.npz"),
        ("rename", "baseline_metrics.html"),
        ("tracker", "log"),
        ("tracker", "finish"),
        ("rename", "baseline_metrics.log"),
        ("rename", "baseline_metrics.json"),
    ]
    assert files["json"] == out / "baseline_metrics.json"
    assert json.loads(files["json"].read_text()) == json.loads(json.dumps(result.to_dict()))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["baseline_metrics.html", "samples.npz", "baseline_metrics.log", "baseline_metrics.json"]
    )


FAST = {
    "calibration": {"samples": 16, "samples_per_step": 32},
    "sampling": {"num_samples": 16},
    "wandb": {"mode": "disabled"},
}


@pytest.fixture
def quiet_execute(tmp_path, monkeypatch):
    """``execute`` in this process, with the project cache in tmp_path.

    JAX's persistent compilation cache is left off: turning it on is a process-wide setting that
    would outlive tmp_path in this pytest process.
    """
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(baseline_module, "enable_compilation_cache", lambda: tmp_path / "no-jax")
    return lambda out: baseline_module.execute(to_config(FAST), out)


@pytest.mark.slow
def test_a_kill_while_the_log_is_written_leaves_no_completion_marker(
    tmp_path, monkeypatch, quiet_execute
):
    out = tmp_path / "job"

    def killed(self, path):
        raise KeyboardInterrupt  # what a SIGINT at that moment raises

    monkeypatch.setattr(RunLog, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        quiet_execute(out)
    names = {p.name for p in out.iterdir()}
    assert "baseline_metrics.html" in names  # the run got as far as its outputs
    assert "baseline_metrics.json" not in names and "baseline_metrics.log" not in names
    monkeypatch.undo()


@pytest.mark.slow
def test_the_json_is_renamed_in_after_the_log(tmp_path, quiet_execute, capsys):
    out = tmp_path / "job"
    files = quiet_execute(out)
    log_path, json_path = out / "baseline_metrics.log", out / "baseline_metrics.json"
    assert files["json"] == json_path and files["log"] == log_path
    text = log_path.read_text()
    assert text.rstrip().endswith("done") and "goes into place once this log is written" in text
    assert json.loads(json_path.read_text())["schema_version"] >= 2
    assert not list(out.glob(".*.tmp"))  # the staged JSON was renamed, no temporaries left
    assert "outputs:" in capsys.readouterr().out
