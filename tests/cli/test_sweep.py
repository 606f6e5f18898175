"""End to end: the real baseline as a multirun on the Ray launcher, killed midway and resumed,
with a failing configuration inside it, the shared cache across its jobs, its W&B group, the
comparison dashboard over its results, and a second resume that skips everything finished.

Kept small for CI: the smoke preset cut to one bit width (one calibration) and run one job at a
time (so the kill lands between jobs or inside one, never after the last), with a time-group
count the model cannot have (2000 > T) as the failing configuration.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

WANDB = os.path.join(os.path.dirname(sys.executable), "wandb")
OUTPUTS = ("baseline_metrics.json", "baseline_metrics.html", "samples.npz")


def _session_left(sid: int) -> list[psutil.Process]:
    left = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid:
                left.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    return left


def _stop_session(sid: int) -> None:
    """Wait for the processes of session ``sid`` (which we started) to end; kill stragglers."""
    deadline = time.monotonic() + 10
    while (left := _session_left(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for leftover in left:
        leftover.kill()
    assert not left, f"processes outlived the sweep: {[p.pid for p in left]}"


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = _start(args, env)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        _stop_session(proc.pid)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _reports(sweep_dir) -> dict[tuple[int, float], dict]:
    runs = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/baseline_metrics.json"))]
    by_config = {(r["num_time_groups"], r["smoothness_threshold"]): r for r in runs}
    assert len(by_config) == len(runs), "a configuration was reported twice"
    return by_config


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_smoke_sweep_killed_resumed_with_a_failing_configuration_shared_cache_and_compare(
    tmp_path,
):
    with tempfile.TemporaryDirectory(prefix="tjx", dir="/tmp") as cache:
        env = dict(os.environ, THERMOJAX_CACHE_DIR=cache, HOME=str(tmp_path), WANDB_SILENT="true")
        for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "WANDB_MODE", "WANDB_DIR"):
            env.pop(name, None)
        sweep_dir = tmp_path / "sweep"
        command = [
            sys.executable, "-m", "thermojax.baseline", "-m", "sweep=smoke",
            "bit_width=2", "num_time_groups=2,4,2000", "wandb.mode=offline",
            "hydra.launcher.num_cpus=1", f"hydra.sweep.dir={sweep_dir}",
        ]  # fmt: skip

        # Kill the whole sweep (driver, Ray, workers) as soon as its first report lands.
        # A sweep that hangs before its first report is stopped by the test's timeout marker.
        proc = _start(command, env)
        while not list(sweep_dir.glob("*/baseline_metrics.json")):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        _stop_session(proc.pid)
        done_before = _reports(sweep_dir)
        assert 1 <= len(done_before) < 4
        for report in sweep_dir.glob("*/baseline_metrics.json"):
            # The report is written last: where it exists, every other output is whole.
            assert all((report.parent / name).is_file() for name in OUTPUTS)

        resumed = _run(command, env, timeout=400)
        n_done = len(done_before)
        assert f"({6 - n_done} to run, {n_done} already complete)" in resumed.stderr, (
            resumed.stderr[-3000:]
        )
        # The two impossible configurations failed, recorded; the other four finished.
        assert resumed.returncode != 0
        assert "2 of 6 jobs failed" in resumed.stderr, resumed.stderr[-3000:]
        assert "Traceback" not in resumed.stderr
        runs = _reports(sweep_dir)
        assert sorted(runs) == [(2, 0.1), (2, 0.3), (4, 0.1), (4, 0.3)]
        assert not list(sweep_dir.glob("*/.*.tmp"))  # no temporaries of the killed attempt
        failures = sorted(sweep_dir.glob("*/failure.json"))
        assert len(failures) == 2
        for path in failures:
            record = json.loads(path.read_text())
            assert "num_time_groups=2000" in record["overrides"]
            assert record["error_type"] == "UserInputError"
            assert "num_time_groups=2000" in record["message"]
            assert not (path.parent / "baseline_metrics.json").exists()

        # One calibration for the whole sweep (one bit width), computed by the first job and
        # hit by every other, also across the kill; threshold variants share samples + quality.
        first = runs[(2, 0.1)]
        assert first["cache"]["calibration"] == "miss"
        for key, run in runs.items():
            if key != (2, 0.1):
                assert run["cache"]["calibration"] == "hit", (key, run["cache"])
        for groups in (2, 4):
            pair = [runs[(groups, t)]["cache"]["quality"] for t in (0.1, 0.3)]
            # Computed once per pair: a miss here, or in the killed attempt after its quality
            # entry landed and before its report did (then both variants hit).
            assert pair.count("miss") <= 1, (groups, pair)
        entries = sorted(p.name for p in (Path(cache) / "entries").glob("*.npz"))
        assert len(entries) == 4, entries  # calibration, fp32 samples, one quality per G
        logs = [p.read_text() for p in sweep_dir.glob("*/baseline_metrics.log")]
        assert sum("cache hit: calibration" in text for text in logs) == 3

        # Every run of the sweep is in the W&B group named after the preset.
        for run_dir in list(sweep_dir.glob("*/wandb/offline-run-*"))[:2]:
            records = subprocess.run(
                [WANDB, "leet", "inspect", "--json", str(run_dir)],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            )
            (run,) = [
                json.loads(line)["run"]
                for line in records.stdout.splitlines()
                if json.loads(line)["type"] == "run"
            ]
            assert run["run_group"] == "smoke"
            assert '"num_time_groups"' in json.dumps(run["config"])

        compare = subprocess.run(
            [sys.executable, "-m", "thermojax.compare", str(sweep_dir)],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert compare.returncode == 0, compare.stderr
        summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
        assert summary["num_configurations"] == 6 and summary["num_failed"] == 2
        assert (sweep_dir / "comparison.html").stat().st_size > 0

        # Re-run into the same folder: the finished configurations are skipped.
        reports = list(sweep_dir.glob("*/baseline_metrics.json"))
        mtimes = {p: p.stat().st_mtime_ns for p in reports}
        again = _run(command, env, timeout=300)
        assert "(2 to run, 4 already complete)" in again.stderr, again.stderr[-3000:]
        assert {p: p.stat().st_mtime_ns for p in reports} == mtimes
        assert len(list(sweep_dir.glob("*/baseline_metrics.json"))) == 4
