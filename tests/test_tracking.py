"""Tracking: the W&B offline run is read back with `wandb leet inspect`; failures never raise."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import pytest
from result_samples import make_result

from thermojax.config import WandbConfig
from thermojax.results import write_result
from thermojax.tracking import (
    NullTracker,
    WandbTracker,
    boundary_rows,
    layer_rows,
    make_tracker,
    summary_metrics,
)

WANDB = Path(sys.executable).with_name("wandb")


@pytest.fixture(autouse=True)
def wandb_sandbox(tmp_path, monkeypatch):
    """No network, no API key, W&B's own files in tmp_path."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


def inspect_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """``wandb leet inspect``: the run's summary object and its raw records."""
    summary = subprocess.run(
        [str(WANDB), "leet", "inspect", "--summary", "--json", str(run_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    records = subprocess.run(
        [str(WANDB), "leet", "inspect", "--json", str(run_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(summary.stdout), [json.loads(line) for line in records.stdout.splitlines()]


def offline_run_dir(out: Path) -> Path:
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    return run_dir


def test_summary_metrics_leave_out_non_finite_values():
    result = make_result(num_groups=1)
    metrics = summary_metrics(result)
    assert "min_boundary_score" not in metrics
    assert metrics["smoothness_score"] == 1.0 and metrics["band"] == result.interpretation.band
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in metrics.values())


def test_table_rows():
    result = make_result(num_layers=2, num_groups=3, threshold=0.01)
    assert [row[:3] for row in boundary_rows(result)] == [
        [i, result.time_groups[i][1], s] for i, s in enumerate(result.boundary_scores)
    ]
    assert sum(row[3] for row in layer_rows(result)) == result.violation_count


def test_disabled_mode_tracks_nothing(tmp_path):
    tracker = make_tracker(WandbConfig(mode="disabled"), run_dir=tmp_path, name="x")
    assert isinstance(tracker, NullTracker)
    tracker.log(make_result(), {})
    tracker.finish()
    assert list(tmp_path.glob("wandb*")) == []


def test_offline_run_reads_back(tmp_path):
    result = make_result(num_layers=3, num_groups=4, threshold=0.05)
    out = tmp_path / "run"
    html = out / "baseline_metrics.html"
    html.parent.mkdir()
    html.write_text("<html>report</html>")
    files = {"json": write_result(result, out / "baseline_metrics.json"), "html": html}
    tracker = make_tracker(
        WandbConfig(mode="offline"), run_dir=out, name="int2", config=result.config
    )
    assert isinstance(tracker, WandbTracker)
    tracker.log(result, files)
    tracker.finish()

    summary, records = inspect_run(offline_run_dir(out))
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    assert summary["project"] == "thermojax"
    assert summary["config"]["bit_width"] == result.bit_width
    assert summary["config"]["interpretation"]["poor_below"] == 0.65
    logged = summary["summary"]
    assert logged["smoothness_score"] == pytest.approx(result.smoothness_score)
    assert logged["violation_count"] == result.violation_count
    assert logged["band"] == result.interpretation.band
    assert logged["quality/frechet_quantized"] == pytest.approx(result.quality.frechet_quantized)
    for table, rows in (("boundaries", 3), ("layers", 3), ("violations", result.violation_count)):
        assert logged[table]["_type"] == "table-file" and logged[table]["nrows"] == rows
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
    reports = [a for a in artifacts if a.get("type") == "report"]
    assert len(reports) == 1
    manifest = json.dumps(reports[0])
    assert "baseline_metrics.html" in manifest and "baseline_metrics.json" in manifest


def test_a_failing_wandb_is_a_warning_not_an_error(tmp_path, caplog):
    """Online mode without an API key fails for real inside wandb.init; nothing is raised."""
    out = tmp_path / "run"
    out.mkdir()
    report = out / "baseline_metrics.html"
    report.write_text("kept")
    with caplog.at_level(logging.WARNING, logger="thermojax.tracking"):
        tracker = make_tracker(WandbConfig(mode="online"), run_dir=out, name="x")
        tracker.log(make_result(), {"html": report})
        tracker.finish()
    assert "W&B init failed" in caplog.text and "local outputs are kept" in caplog.text
    assert report.read_text() == "kept"


def test_runs_of_a_sweep_share_a_group_named_after_it(tmp_path):
    result = make_result(num_layers=2, num_groups=2)
    sweep = {
        "name": "smoke",
        "preset": "smoke",
        "dir": str(tmp_path / "sweep"),
        "job_num": 3,
        "overrides": ["sweep=smoke", "bit_width=4", "num_time_groups=2"],
    }
    groups = {}
    for group, out in ((None, tmp_path / "a"), ("mine", tmp_path / "b")):
        tracker = make_tracker(
            WandbConfig(mode="offline", group=group),
            run_dir=out,
            name="3",
            config=result.config,
            sweep=sweep,
        )
        tracker.log(result, {})
        tracker.finish()
        summary, records = inspect_run(offline_run_dir(out))
        groups[group] = summary
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        assert run["run_group"] == (group or "smoke") and run["display_name"] == "smoke-3"
    config = groups[None]["config"]
    assert config["bit_width"] == result.bit_width  # the swept keys, comparable in the W&B UI
    assert config["sweep"]["overrides"] == sweep["overrides"] and config["sweep"]["job_num"] == 3


def test_outside_a_sweep_the_group_is_left_alone(tmp_path):
    tracker = make_tracker(WandbConfig(mode="offline"), run_dir=tmp_path, name="single")
    tracker.finish()
    summary, records = inspect_run(offline_run_dir(tmp_path))
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert not run.get("run_group") and "sweep" not in summary.get("config", {})
