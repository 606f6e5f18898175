"""A sweep in W&B: run names that say the configuration, and the summary run that compares them.

The summary run is real and offline, read back from its own files (``wandb leet inspect``, the
table files it wrote): one table row per configuration with the numbers of sweep_summary.csv,
the correlations of sweep_summary.json, the heatmap and scatters as W&B plots, the page and the
files as an artifact. The fixture sweep is test_compare's (reports built from a real one).
"""

import base64
import csv
import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_compare import FIGURES, THRESHOLDS, _violations, _write_failure, _write_report
from wandb_readback import inspect_run

from thermojax.cli.compare import main as compare_main
from thermojax.cli.run_names import run_name, swept_keys
from thermojax.cli.sweep_tracking import (
    CORRELATION_COLUMNS,
    HEATMAP_PRESET,
    comparison_settings,
    heatmap_rows,
)
from thermojax.pipeline.results.sweep import COLUMNS

pytestmark = pytest.mark.usefixtures("wandb_sandbox")  # tests/conftest.py


@pytest.fixture
def sweep(tmp_path) -> Path:
    """test_compare's sweep: 8 finished configurations (jobs 0..7), one failure (job 8)."""
    root = tmp_path / "sweep"
    for job, ((bits, groups), threshold) in enumerate(itertools.product(FIGURES, THRESHOLDS)):
        _write_report(root / str(job), bits, groups, threshold)
    _write_failure(
        root / "8",
        ["bit_width=8", "num_time_groups=16", "smoothness_threshold=0.3"],
        "UserInputError",
        "num_time_groups=16 crashed",
    )
    return root


# --- run names ---------------------------------------------------------------------------------

BASE = {"bit_width": 2, "act_bits": 8, "num_time_groups": 4, "smoothness_threshold": 0.3}


@pytest.mark.parametrize(
    "config, overrides, swept, name",
    [
        (BASE, ["sweep=smoke", "bit_width=2", "wandb.mode=offline"], None, "W2-G4-t0.3"),
        ({**BASE, "act_bits": 4}, ["act_bits=4"], None, "W2A4-G4-t0.3"),
        (BASE, ["seed=3", "quant.method=gptq", "group_size=128"], None, "W2-G4-t0.3-s3-gptq-g128"),
        (BASE, ["sampling.num_samples=16", "seed=1"], ["seed"], "W2-G4-t0.3-s1"),
        (BASE, ["sampling.num_samples=16"], None, "W2-G4-t0.3-sampling.num_samples=16"),
        (BASE, ["+hydra.launcher.num_cpus=1", "model=pydoc-mdlm"], None, "W2-G4-t0.3-pydoc-mdlm"),
        (BASE, ["act.mode=dynamic", "act.rotation=hadamard"], None, "W2-G4-t0.3-dynamic-hadamard"),
    ],
    ids=["core", "act-bits", "seed-method-group-size", "only-swept", "other-key", "model", "act"],
)
def test_run_name_says_the_configuration(config, overrides, swept, name):
    assert run_name(config, overrides, swept) == name


def test_run_names_are_unique_over_a_methods_x_bits_x_seeds_sweep():
    jobs = itertools.product(["minmax", "mse_clip", "hqq", "gptq"], [2, 4, 8], range(5), [4, 8])
    names = [
        run_name(
            {**BASE, "bit_width": bits, "act_bits": act},
            [f"quant.method={method}", f"bit_width={bits}", f"seed={seed}", f"act_bits={act}"],
            ["quant.method", "bit_width", "seed", "act_bits"],
        )
        for method, bits, seed, act in jobs
    ]
    assert len(set(names)) == len(names) == 120
    assert "W4A4-G4-t0.3-gptq-s2" in names and max(map(len, names)) <= 24


def test_swept_keys_are_the_presets_and_the_command_lines_sweeps(tmp_path):
    multirun = tmp_path / "multirun.yaml"
    multirun.write_text(
        "hydra:\n  overrides:\n    task: [sweep=smoke, bit_width=2, 'num_time_groups=2,4,2000',"
        " 'seed=range(3)', wandb.mode=offline]\n"
    )
    params = {"bit_width": "2,4", "smoothness_threshold": "0.1,0.3"}
    assert swept_keys(params, multirun) == [
        "bit_width",
        "num_time_groups",
        "seed",
        "smoothness_threshold",
    ]
    assert swept_keys(params, tmp_path / "missing.yaml") is None  # then every override counts


# --- the summary run ---------------------------------------------------------------------------


def _offline_runs(folder: Path) -> list[Path]:
    return sorted((folder / "wandb").glob("offline-run-*"))


def _table(run_dir: Path, logged: dict) -> dict:
    return json.loads((run_dir / "files" / logged["path"]).read_text())


def _panels(records: list[dict]) -> dict[str, dict]:
    """The custom charts the run declared (``wandb.plot.*``), by their key."""
    panels = {}
    for record in records:
        if record["type"] == "config":
            for key, value in record["config"]["update"].items():
                if key.startswith("_wandb.visualize."):
                    panels[key.removeprefix("_wandb.visualize.")] = value["panel_config"]
    return panels


def _md5_b64(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def test_compare_wandb_summary_run_has_every_configuration_with_the_csv_numbers(sweep, capsys):
    compare_main([str(sweep), "--wandb"])  # in this process, as test_compare's tests do
    out = capsys.readouterr().out
    (run_dir,) = _offline_runs(sweep)
    assert f"W&B summary run sweep-comparison in group sweep (offline): {run_dir}" in out
    assert f"wandb sync {run_dir}" in out
    summary, records = inspect_run(run_dir)
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert (run["display_name"], run["run_group"], run["job_type"]) == (
        "sweep-comparison",
        "sweep",  # no multirun.yaml, no preset: the folder's name, as the sweep's runs had it
        "comparison",
    )
    logged = summary["summary"]
    assert (logged["num_configurations"], logged["num_completed"], logged["num_failed"]) == (
        9,
        8,
        1,
    )

    # The table: one row per configuration of sweep_summary.csv, the same numbers.
    table = _table(run_dir, logged["configurations"])
    with open(sweep / "sweep_summary.csv", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert table["columns"] == list(COLUMNS) == list(csv_rows[0])
    assert len(table["data"]) == len(csv_rows) == 9
    for line, row in zip(table["data"], csv_rows, strict=True):
        for column, cell in zip(table["columns"], line, strict=True):
            text = row[column]
            if cell is None:
                assert text == "", (row["job"], column)
            elif isinstance(cell, str | bool):  # a bool column (act_mask_aware) reads True/False
                assert str(cell) == text, (row["job"], column)
            else:
                assert cell == float(text), (row["job"], column)  # equal, not approximately
    by_job = {line[0]: dict(zip(table["columns"], line, strict=True)) for line in table["data"]}
    assert by_job["8"]["status"] == "failed" and by_job["8"]["num_time_groups"] == 16

    # The correlations: sweep_summary.json's, pooled and within each bit width.
    saved = json.loads((sweep / "sweep_summary.json").read_text())
    assert logged["correlations"] == saved["correlations"]
    correlations = _table(run_dir, logged["correlations_table"])
    assert correlations["columns"] == CORRELATION_COLUMNS
    pooled = {r[0]: r for r in correlations["data"] if r[1] == "all"}
    entry = saved["correlations"]["smoothness_vs_drift_mean"]
    assert pooled["drift_mean"][3:5] == [entry["n"], entry["pearson"]]
    assert [r[1:4] for r in correlations["data"] if r[0] == "drift_mean" and r[1] != "all"] == [
        ["2", "8", 2],
        ["4", "8", 2],
    ]

    # The heatmap: mean smoothness per (bits, groups), on W&B's heatmap chart.
    panels = _panels(records)
    heat = panels["smoothness_heatmap"]
    assert heat["panelDefId"] == HEATMAP_PRESET
    assert heat["fieldSettings"] == {
        "Actual": "weight bits",
        "Predicted": "time groups",
        "nPredictions": "mean smoothness",
    }
    cells = _table(run_dir, logged["smoothness_heatmap_table"])["data"]
    assert cells == [[f"INT{b}", str(g), FIGURES[b, g][0], 2] for b, g in sorted(FIGURES)]

    # Quality against smoothness: one point per finished configuration, r in the title.
    for metric, index in (("drift_mean", 1), ("frechet_quantized", 2)):
        panel = panels[f"quality_vs_smoothness/{metric}"]
        assert panel["panelDefId"] == "wandb/scatter/v0"
        assert panel["fieldSettings"] == {"x": "smoothness_score", "y": metric}
        r = saved["correlations"][f"smoothness_vs_{metric}"]
        assert panel["stringSettings"]["title"] == (
            f"{metric} against smoothness: Pearson r = {r['pearson']:+.3f} (n = {r['n']})"
        )
        points = _table(run_dir, logged[f"quality_vs_smoothness/{metric}_table"])
        xy = sorted((p[-2], p[-1]) for p in points["data"])
        want = [(FIGURES[b, g][0], FIGURES[b, g][index]) for (b, g), _ in
                itertools.product(FIGURES, THRESHOLDS)]  # fmt: skip
        assert xy == sorted(want)

    # Violations against the threshold: one series per (bits, groups), the mean count.
    assert panels["violations_vs_threshold"]["panelDefId"] == "wandb/lineseries/v0"
    lines = _table(run_dir, logged["violations_vs_threshold_table"])
    got = {(key, step): value for step, key, value in lines["data"]}
    for bits, groups in FIGURES:
        for threshold in THRESHOLDS:
            key = f"INT{bits}, G={groups}"
            assert got[key, threshold] == _violations(bits, groups, threshold)

    # The page itself, and the three files as the comparison artifact, byte for byte.
    page = run_dir / "files" / logged["comparison_page"]["path"]
    assert page.read_text() == (sweep / "comparison.html").read_text()
    (artifact,) = [
        r["artifact"]
        for r in records
        if r["type"] == "artifact" and r["artifact"]["type"] == "comparison"
    ]
    contents = {c["path"]: c["digest"] for c in artifact["manifest"]["contents"]}
    names = ("comparison.html", "sweep_summary.csv", "sweep_summary.json")
    assert contents == {name: _md5_b64(sweep / name) for name in names}


def test_heatmap_cells_are_each_cells_mean_over_its_runs():
    rows = [
        {"bit_width": 4, "num_time_groups": 16, "smoothness_score": 0.5},
        {"bit_width": 2, "num_time_groups": 16, "smoothness_score": 0.25},
        {"bit_width": 2, "num_time_groups": 16, "smoothness_score": 0.75},  # another seed
        {"bit_width": 2, "num_time_groups": 4, "smoothness_score": 1.0},
        {"bit_width": 2, "num_time_groups": 8, "smoothness_score": None},  # weight-only: left out
    ]
    assert heatmap_rows(rows, "num_time_groups", "smoothness_score") == [
        ["INT2", "4", 1.0, 1],
        ["INT2", "16", 0.5, 2],
        ["INT4", "16", 0.5, 1],
    ]


def test_group_and_project_come_from_the_sweeps_own_config(sweep):
    (sweep / "multirun.yaml").write_text(
        "wandb: {mode: offline, project: mine, group: null}\n"
        "hydra: {runtime: {choices: {sweep: smoke}}}\n"
    )
    settings, group = comparison_settings(sweep, "offline")
    assert (settings.project, settings.mode, group) == ("mine", "offline", "smoke")
    (sweep / "multirun.yaml").write_text("wandb: {project: p, group: chosen}\n")
    assert comparison_settings(sweep, "online")[1] == "chosen"
    (sweep / "multirun.yaml").unlink()
    settings, group = comparison_settings(sweep, "offline")  # the reports' recorded config
    assert (settings.project, group) == ("thermojax", "sweep")


def _compare(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), WANDB_SILENT="true", WANDB_DATA_DIR=str(home / "wandb-data"))
    return subprocess.run(
        [sys.executable, "-m", "thermojax.compare", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_compare_wandb_with_bad_input_is_one_line_and_writes_nothing(
    tmp_path, kind, capsys, monkeypatch
):
    # "missing" through the real command, a process of its own; "empty", refused by the same
    # check, through the command's main in this process.
    folder = tmp_path / "dir"
    if kind == "empty":
        folder.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    if kind == "missing":
        proc = _compare(str(folder), "--wandb", home=home)
    else:
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("WANDB_DATA_DIR", str(home / "wandb-data"))
        with pytest.raises(SystemExit) as exited:
            compare_main([str(folder), "--wandb"])
        out = capsys.readouterr()
        proc = subprocess.CompletedProcess([], exited.value.code, out.out, out.err)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: SWEEP_DIR '{folder}' ")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no W&B run either


def test_compare_wandb_online_without_an_api_key_keeps_the_local_files(sweep, tmp_path):
    proc = _compare(str(sweep), "--wandb", "--wandb-mode", "online", home=tmp_path / "h")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: W&B summary run failed"), lines
    assert proc.stdout.startswith("8 configurations compared, 1 failed")
    for name in ("sweep_summary.csv", "sweep_summary.json", "comparison.html"):
        assert (sweep / name).stat().st_size > 0


# --- end to end: a real sweep logs its own summary run ----------------------------------------


def _sweep(sweep_dir: Path, cache: str, home: Path, *args: str) -> subprocess.CompletedProcess:
    """The real multirun in its own session; every process it started is gone afterwards."""
    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "RAY_", "HYDRA_"))}
    env.update(THERMOJAX_CACHE_DIR=cache, HOME=str(home), WANDB_SILENT="true")
    command = [
        sys.executable, "-m", "thermojax.baseline", "-m", "bit_width=2", *args,
        "calibration=quick", "sampling.num_samples=16", "wandb.mode=offline",
        f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        left = [p for p in psutil.process_iter() if _session_of(p) == proc.pid]
        psutil.wait_procs(left, timeout=10)
        for leftover in left:
            if leftover.is_running():
                leftover.kill()
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _session_of(process) -> int | None:
    try:
        return os.getsid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def _run_record(run_dir: Path) -> dict:
    _, records = inspect_run(run_dir)
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    return run


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_sweep_logs_its_summary_run_when_it_ends_with_or_without_failures(tmp_path):
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tjx", dir="/tmp") as cache:
        # On Ray, with a configuration the model cannot have: the launcher runs the callback.
        ray_dir = tmp_path / "ray-sweep"
        proc = _sweep(
            ray_dir, cache, tmp_path, "num_time_groups=2,2000", "hydra.launcher.num_cpus=1"
        )
        assert proc.returncode == 2 and "1 of 2 jobs failed" in proc.stderr, proc.stderr[-3000:]
        (summary_dir,) = _offline_runs(ray_dir)
        assert f"[sweep] W&B summary run ray-sweep-comparison (group ray-sweep): {summary_dir}" in (
            proc.stderr
        )
        summary, _ = inspect_run(summary_dir)
        table = _table(summary_dir, summary["summary"]["configurations"])
        with open(ray_dir / "sweep_summary.csv", newline="") as handle:
            csv_rows = list(csv.DictReader(handle))
        cells = [dict(zip(table["columns"], line, strict=True)) for line in table["data"]]
        assert [(c["job"], c["status"], c["num_time_groups"]) for c in cells] == [
            ("0", "ok", 2),
            ("1", "failed", 2000),
        ]
        assert cells[0]["smoothness_score"] == float(csv_rows[0]["smoothness_score"])
        assert cells[0]["drift_mean"] == float(csv_rows[0]["drift_mean"])
        (job_run,) = _offline_runs(ray_dir / "0")
        run = _run_record(job_run)
        assert (run["display_name"], run["run_group"]) == ("W2-G2-t0.3", "ray-sweep")

        # In-process (basic launcher), every job fine: Hydra's own end-of-multirun callback.
        basic_dir = tmp_path / "basic-sweep"
        proc = _sweep(
            basic_dir, cache, tmp_path, "num_time_groups=2", "smoothness_threshold=0.1,0.3",
            "hydra/launcher=basic",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        names = sorted(_run_record(d)["display_name"] for d in basic_dir.glob("*/wandb/offline-*"))
        assert names == ["W2-G2-t0.1", "W2-G2-t0.3"]  # the swept threshold, not the fixed G=2
        (summary_dir,) = _offline_runs(basic_dir)
        summary, _ = inspect_run(summary_dir)
        assert summary["summary"]["num_configurations"] == 2
        assert summary["summary"]["configurations"]["nrows"] == 2
