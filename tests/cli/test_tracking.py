"""Tracking: the W&B offline run is read back with `wandb leet inspect`; failures never raise."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from phase_experiment import SEEDS, VARIANTS
from result_samples import enhanced_result, make_result, phases_result
from wandb_readback import inspect_run, offline_run_dir

from thermojax.cli.run_names import run_name
from thermojax.cli.tracking import (
    NullTracker,
    WandbTracker,
    boundary_rows,
    comparison_metrics,
    layer_rows,
    loss_curve,
    make_tracker,
    optimization_rows,
    phase_columns,
    phase_rows,
    summary_metrics,
    tracked_metrics,
)
from thermojax.pipeline.results.schema import write_result
from thermojax.pipeline.settings import WandbConfig

pytestmark = pytest.mark.usefixtures("wandb_sandbox")  # tests/conftest.py


def test_summary_metrics_leave_out_non_finite_values():
    result = make_result(num_groups=1)
    metrics = summary_metrics(result)
    assert "min_boundary_score" not in metrics
    assert metrics["smoothness_score"] == 1.0 and metrics["band"] == result.interpretation.band
    assert metrics["quality_band"] == result.interpretation.quality_band == "good"
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
    assert logged["quality_band"] == result.interpretation.quality_band
    assert logged["quality/frechet_quantized"] == pytest.approx(result.quality.frechet_quantized)
    for table, rows in (("boundaries", 3), ("layers", 3), ("violations", result.violation_count)):
        assert logged[table]["_type"] == "table-file" and logged[table]["nrows"] == rows
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
    reports = [a for a in artifacts if a.get("type") == "report"]
    assert len(reports) == 1
    manifest = json.dumps(reports[0])
    assert "baseline_metrics.html" in manifest and "baseline_metrics.json" in manifest
    # Every numeric figure is a declared metric with one logged value, the summary's own, so
    # W&B's run comparison and parallel coordinates offer it without setup.
    declared = {r["metric"]["name"]: r["metric"] for r in records if r["type"] == "metric"}
    metrics = tracked_metrics(result)
    assert {"smoothness_score", "violation_count", "quality/frechet_quantized"} <= set(metrics)
    assert set(metrics) <= set(declared)
    assert all(declared[k]["options"]["defined"] for k in metrics)
    assert not {"bit_width", "band"} & set(metrics)  # config and text are not metrics
    (first, *_) = [r["history"]["item"] for r in records if r["type"] == "history"]
    for key, value in metrics.items():
        assert first[key] == pytest.approx(value) and logged[key] == pytest.approx(value), key


def test_a_failing_wandb_is_a_warning_not_an_error(tmp_path, caplog):
    """Online mode without an API key fails for real inside wandb.init; nothing is raised."""
    out = tmp_path / "run"
    out.mkdir()
    report = out / "baseline_metrics.html"
    report.write_text("kept")
    with caplog.at_level(logging.WARNING, logger="thermojax.cli.tracking"):
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
        assert run["run_group"] == (group or "smoke")
        # Named after its configuration: the result's bits, groups and threshold.
        assert run["display_name"] == "W2-G2-t0.3" == run_name(result.config, sweep["overrides"])
    config = groups[None]["config"]
    assert config["bit_width"] == result.bit_width  # the swept keys, comparable in the W&B UI
    assert config["sweep"]["overrides"] == sweep["overrides"] and config["sweep"]["job_num"] == 3


def test_outside_a_sweep_the_group_is_left_alone(tmp_path):
    tracker = make_tracker(WandbConfig(mode="offline"), run_dir=tmp_path, name="single")
    tracker.finish()
    summary, records = inspect_run(offline_run_dir(tmp_path))
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert not run.get("run_group") and "sweep" not in summary.get("config", {})


# --- enhanced runs and the phase table -----------------------------------------------------------


def table_file(run_dir: Path, logged: dict) -> dict:
    """A logged W&B table as written into the offline run: ``{"columns": [...], "data": [...]}``."""
    return json.loads((run_dir / "files" / logged["path"]).read_text())


def test_comparison_metrics_and_loss_curve_of_hand_built_sections():
    result = enhanced_result(loss_history=((4.0, 3.0, 2.5), (8.0, 6.0)))
    metrics = comparison_metrics(result)
    assert metrics["baseline/smoothness_score"] == 0.5 and metrics["baseline/violation_count"] == 7
    assert metrics["enhanced/smoothness_score"] == result.smoothness_score
    assert metrics["baseline/final_mse"] == 2.5 and metrics["baseline/frechet_quantized"] == 7.125
    assert metrics["delta/final_mse"] == pytest.approx(result.quality.final_mse - 2.5)
    assert metrics["delta/violation_count"] == result.violation_count - 7
    assert metrics["optimization/iterations_max"] == 3
    assert metrics["optimization/converged_fraction"] == 0.5
    assert metrics["optimization/final_loss_mean"] == pytest.approx((2.5 + 6.0) / 2)
    # A layer that stopped early keeps its last loss: (4+8)/2, (3+6)/2, (2.5+6)/2.
    assert loss_curve(result) == pytest.approx([6.0, 4.5, 4.25])
    rows = optimization_rows(result)
    assert [r[:3] for r in rows] == [["dense_0", 3, True], ["dense_1", 2, False]]
    plain = make_result()
    assert comparison_metrics(plain) == {} and loss_curve(plain) == []
    assert optimization_rows(plain) == [] and phase_rows(plain) == []


def test_phase_rows_follow_the_columns():
    result = phases_result()
    columns, rows = phase_columns(result), phase_rows(result)
    assert len(rows) == len(result.phases.rows) and all(len(r) == len(columns) for r in rows)
    for line, row in zip(rows, result.phases.rows, strict=True):
        cells = dict(zip(columns, line, strict=True))
        assert cells["variant"] == row.variant and cells["num_seeds"] == row.num_seeds
        assert cells["smoothness_score_mean"] == row.smoothness_score.mean
        assert cells["violation_count_std"] == row.violation_count.std
        delta = row.paired_delta["frechet_quantized"]
        assert cells["frechet_quantized_paired_delta_std"] == delta.std
        assert cells["param_extra_s"] == row.param_extra_s


def test_offline_run_of_hand_built_sections_reads_back(tmp_path):
    """Both sections on one result: the comparison, the loss curve and the phase table."""
    enhanced = enhanced_result()
    out = tmp_path / "enhanced"
    tracker = make_tracker(WandbConfig(mode="offline"), run_dir=out, name="e")
    tracker.log(dataclasses.replace(enhanced, phases=phases_result().phases), {})
    tracker.finish()
    run_dir = offline_run_dir(out)
    summary, records = inspect_run(run_dir)
    logged = summary["summary"]
    assert logged["baseline/violation_count"] == 7
    assert logged["enhanced/violation_count"] == enhanced.violation_count
    assert logged["optimization/loss"] == pytest.approx(loss_curve(enhanced)[-1])
    assert logged["phases/num_variants"] == 10
    phases = table_file(run_dir, logged["phases"])
    assert phases["columns"] == phase_columns(phases_result())
    assert [r[0] for r in phases["data"]] == [r.variant for r in phases_result().phases.rows]
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    curve = [h["optimization/loss"] for h in history if "optimization/loss" in h]
    assert curve == pytest.approx(loss_curve(enhanced))


def run_command(out: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.update(
        HOME=str(root / "home"),
        THERMOJAX_CACHE_DIR=str(root / "cache"),
        WANDB_SILENT="true",
        JAX_PLATFORMS="cpu",
        NO_COLOR="1",
        COLUMNS="160",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "thermojax.baseline",
            *args,
            "calibration=quick",
            "sampling.num_samples=16",
            "thermo.optimization.max_iterations=40",
            "wandb.mode=offline",
            f"hydra.run.dir={out}",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory, phase_experiment):
    """The real command: one enhanced run, and the suite's one phase experiment (made once per
    test run, tests/phase_experiment.py; test_phases reads its table), W&B offline."""
    root = tmp_path_factory.mktemp("tracked")
    enhanced = run_command(
        root / "enhanced",
        root,
        "thermo.smoothing.enabled=true",
        "thermo.smoothing.method=cubic",
        "thermo.smoothing.window=20",
        "thermo.optimization.enabled=true",
    )
    return {"enhanced": (root / "enhanced", enhanced), "phases": phase_experiment}


@pytest.mark.slow
def test_enhanced_run_reads_back_baseline_beside_enhanced_and_the_loss_history(real_runs):
    out, proc = real_runs["enhanced"]
    data = json.loads((out / "baseline_metrics.json").read_text())
    run_dir = offline_run_dir(out)
    summary, records = inspect_run(run_dir)
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    logged = summary["summary"]
    base, opt = data["baseline"], data["enhancement"]["optimization"]
    assert logged["baseline/smoothness_score"] == pytest.approx(base["metrics"]["smoothness_score"])
    assert logged["baseline/violation_count"] == base["metrics"]["violation_count"]
    assert logged["enhanced/smoothness_score"] == pytest.approx(data["smoothness_score"])
    assert logged["enhanced/violation_count"] == data["violation_count"]
    for key in ("final_mse", "frechet_quantized"):
        assert logged[f"baseline/{key}"] == pytest.approx(base["quality"][key])
        assert logged[f"enhanced/{key}"] == pytest.approx(data["quality"][key])
    assert logged["enhancement/description"] == data["enhancement"]["description"]
    assert logged["optimization/iterations_max"] == max(opt["iterations"])
    table = table_file(run_dir, logged["optimization"])
    assert [row[1] for row in table["data"]] == opt["iterations"]
    assert [row[0] for row in table["data"]] == [layer["name"] for layer in data["layers"]]
    # The loss history, recomputed from the JSON's per-layer histories (last value carried).
    histories = opt["loss_history"]
    expected = [
        np.mean([h[min(i, len(h) - 1)] for h in histories])
        for i in range(max(len(h) for h in histories))
    ]
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    points = [
        (h["optimization/iteration"], h["optimization/loss"])
        for h in history
        if "optimization/loss" in h
    ]
    assert [i for i, _ in points] == list(range(len(expected)))
    assert [loss for _, loss in points] == pytest.approx(expected, rel=1e-6)
    # The console shows the same figures side by side.
    assert "baseline  enhanced" in proc.stdout
    assert (
        f"{base['metrics']['smoothness_score']:.4f}    {data['smoothness_score']:.4f}"
        in proc.stdout
    )


@pytest.mark.slow
def test_phase_run_reads_back_the_phase_table(real_runs):
    out, proc = real_runs["phases"]
    table = json.loads((out / "phases.json").read_text())
    run_dir = offline_run_dir(out)
    summary, records = inspect_run(run_dir)
    logged = summary["summary"]
    assert logged["phases/num_variants"] == 1 + len(VARIANTS)
    assert logged["phases/num_seeds"] == SEEDS
    assert logged["phases"]["nrows"] == 1 + len(VARIANTS)
    phases = table_file(run_dir, logged["phases"])
    cells = [dict(zip(phases["columns"], row, strict=True)) for row in phases["data"]]
    assert [c["variant"] for c in cells] == ["baseline", *VARIANTS]
    with open(out / "phases.csv", newline="") as fh:
        csv_rows = list(csv.DictReader(fh))
    for cell, row, line in zip(cells, table["rows"], csv_rows, strict=True):
        for name in ("smoothness_score", "violation_count", "final_mse", "frechet_quantized"):
            assert cell[f"{name}_mean"] == pytest.approx(row[name]["mean"], rel=1e-12)
            assert cell[f"{name}_std"] == pytest.approx(float(line[f"{name}_std"]), rel=1e-12)
        delta = row["paired_delta"]["frechet_quantized"]
        assert cell["frechet_quantized_paired_delta_mean"] == pytest.approx(
            delta["mean"], rel=1e-12
        )
    reports = [
        r["artifact"]
        for r in records
        if r["type"] == "artifact" and r["artifact"].get("type") == "report"
    ]
    (report,) = reports
    paths = {entry["path"] for entry in report["manifest"]["contents"]}
    assert paths == {"baseline_metrics.html", "baseline_metrics.json", "phases.json", "phases.csv"}
    # The console's top of the table and where the CSV went.
    assert f"full phase table: {out / 'phases.csv'}" in proc.stdout
    for row in table["rows"]:
        assert f"  {row['variant']} " in proc.stdout
    assert not list(out.glob(".*.tmp"))
