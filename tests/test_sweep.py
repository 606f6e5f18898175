"""End to end: the real baseline as a multirun on the Ray launcher, a failing configuration
inside it, the comparison dashboard over its results, and a resumed re-run.

Kept small for CI: the smoke preset cut to one bit width (one calibration), with a time-group
count the model cannot have (2000 > T) as the failing configuration.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import psutil
import pytest


def _session_left(sid: int) -> list[psutil.Process]:
    left = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid:
                left.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    return left


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        args,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        deadline = time.monotonic() + 10
        while (left := _session_left(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for leftover in left:
            leftover.kill()
    assert not left, f"processes outlived the sweep: {[p.pid for p in left]}"
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.slow
def test_smoke_sweep_on_ray_with_a_failing_configuration_then_compare_and_resume(tmp_path):
    with tempfile.TemporaryDirectory(prefix="tjx", dir="/tmp") as cache:
        env = dict(os.environ, THERMOJAX_CACHE_DIR=cache, HOME=str(tmp_path))
        for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            env.pop(name, None)
        sweep_dir = tmp_path / "sweep"
        command = [
            sys.executable, "-m", "thermojax.baseline", "-m", "sweep=smoke",
            "bit_width=2", "num_time_groups=2,2000", "wandb.mode=disabled",
            f"hydra.sweep.dir={sweep_dir}",
        ]  # fmt: skip
        first = _run(command, env, timeout=400)

        # The two impossible configurations failed, recorded; the other two finished.
        assert first.returncode != 0
        assert "2 of 4 jobs failed" in first.stderr, first.stderr[-3000:]
        assert "Traceback" not in first.stderr
        reports = sorted(sweep_dir.glob("*/baseline_metrics.json"))
        failures = sorted(sweep_dir.glob("*/failure.json"))
        assert len(reports) == 2 and len(failures) == 2
        runs = [json.loads(p.read_text()) for p in reports]
        assert {(r["bit_width"], r["num_time_groups"]) for r in runs} == {(2, 2)}
        assert sorted(r["smoothness_threshold"] for r in runs) == [0.1, 0.3]
        for path in failures:
            record = json.loads(path.read_text())
            assert "num_time_groups=2000" in record["overrides"]
            assert record["error_type"] == "UserInputError"
            assert "num_time_groups=2000" in record["message"]
            assert not (path.parent / "baseline_metrics.json").exists()

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
        assert summary["num_configurations"] == 4 and summary["num_failed"] == 2
        assert (sweep_dir / "comparison.html").stat().st_size > 0

        # Re-run into the same folder: the finished configurations are skipped.
        mtimes = {p: p.stat().st_mtime_ns for p in reports}
        second = _run(command, env, timeout=300)
        assert "(2 to run, 2 already complete)" in second.stderr, second.stderr[-3000:]
        assert {p: p.stat().st_mtime_ns for p in reports} == mtimes
        assert len(list(sweep_dir.glob("*/baseline_metrics.json"))) == 2
