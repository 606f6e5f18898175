"""Signals sent to real runs: Ctrl-C (during the work and during XLA compilation), SIGTERM, and a
SIGKILL while W&B writes its run. One line, exit 130 / 143, nothing half-written, the rerun
recovers and cleans what a kill left, no process left (README: Faults and hostile input)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from faultlib import (
    FAST,
    OUTPUTS,
    SIGNAL_STATUS,
    assert_no_process_left,
    assert_one_error,
    command,
    command_env,
    finish,
    send_when,
    start,
    temporaries,
)

pytestmark = pytest.mark.slow

LONGER = ["calibration=quick", "sampling.num_samples=256", "wandb=disabled"]
"""Long enough (a few seconds of sampling on a cold stage cache) for a signal to land mid-work."""


def jax_only(cache: Path, to: Path) -> Path:
    """A cache with the compiled programs but no stage entries: the run computes, fast."""
    shutil.copytree(cache / "jax", to / "jax")
    return to


def assert_recovers(run: Path, env: dict[str, str], cwd: Path, args: list[str]) -> None:
    proc = command("thermojax.baseline", [*args, f"hydra.run.dir={run}"], cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert OUTPUTS <= {p.name for p in run.iterdir()} and temporaries(run) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_during_the_work(warm, tmp_path, sig):
    _, home, cache, _ = warm
    cache = jax_only(cache, tmp_path / "cache")
    env, run = command_env(home, cache), tmp_path / "run"
    proc = start("thermojax.baseline", [*LONGER, f"hydra.run.dir={run}"], cwd=tmp_path, env=env)
    # The entries folder appears as calibration takes its lock: the run is computing.
    sent = send_when(proc, lambda: (cache / "entries").exists(), sig, delay_s=0.3)
    done = finish(proc)
    assert sent, done.stderr[-3000:]
    how = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert_one_error(done, SIGNAL_STATUS[sig], f"interrupted ({how})")
    assert temporaries(run) == [] and temporaries(cache) == []
    assert not (run / "baseline_metrics.json").exists()
    assert_recovers(run, env, tmp_path, LONGER)


def test_ctrl_c_during_xla_compilation_three_times(warm, tmp_path):
    _, home, _, _ = warm
    for attempt, delay in enumerate((0.2, 0.8, 1.6)):
        cache = tmp_path / f"cold-{attempt}"  # nothing compiled: the run starts compiling
        run = tmp_path / f"run-{attempt}"
        env = command_env(home, cache)
        proc = start("thermojax.baseline", [*FAST, f"hydra.run.dir={run}"], cwd=tmp_path, env=env)
        sent = send_when(proc, lambda c=cache: (c / "jax").exists(), signal.SIGINT, delay_s=delay)
        done = finish(proc)
        assert sent, done.stderr[-3000:]
        assert done.returncode != -signal.SIGSEGV, f"attempt {attempt}: SIGSEGV"
        assert_one_error(done, 130, "interrupted (Ctrl-C)")
        assert temporaries(run) == [] and temporaries(cache) == []


def test_sigkill_while_wandb_writes_leaves_nothing_for_wandb_sync(warm, tmp_path):
    _, home, cache, _ = warm
    env, run = command_env(home, cache), tmp_path / "run"
    args = ["calibration=quick", "sampling.num_samples=4", "wandb=offline"]
    proc = start("thermojax.baseline", [*args, f"hydra.run.dir={run}"], cwd=tmp_path, env=env)
    sent = send_when(proc, lambda: any(run.glob(".wandb.*.tmp")), signal.SIGKILL)
    proc.communicate(timeout=120)
    assert sent and proc.returncode == -signal.SIGKILL
    assert_no_process_left(proc.pid)  # W&B's service went with it
    assert not list(run.glob("wandb/offline-run-*"))  # no stub run for `wandb sync` to upload
    assert temporaries(run)  # what the kill left, for the rerun to clean
    assert not (run / "baseline_metrics.json").exists()
    assert_recovers(run, env, tmp_path, args)
    runs = list(run.glob("wandb/offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert (run / "wandb" / "latest-run").resolve() == runs[0].resolve()


def test_a_rerun_cleans_the_temporaries_a_kill_left(warm, tmp_path):
    _, home, cache, _ = warm
    run = tmp_path / "run"
    run.mkdir()
    left = [
        run / ".baseline_metrics.html.k3j4h5a1.tmp",
        run / ".samples.npz.q9w8e7r6.tmp",
        run / ".baseline_metrics.json.pending.tmp",
        run / ".baseline_metrics.log.z1x2c3v4.tmp",
    ]
    for path in left:
        path.write_text("half")
    stub = run / ".wandb.a1b2c3d4.tmp" / "wandb" / "offline-run-20260101_000000-stub"
    stub.mkdir(parents=True)
    (stub / "run-stub.wandb").write_bytes(b"\x00")
    assert_recovers(run, command_env(home, cache), tmp_path, FAST)
    assert not any(path.exists() for path in left) and not stub.exists()
    assert {p.name for p in run.iterdir()} == OUTPUTS
    assert (
        "left by an earlier run killed while writing" in (run / "baseline_metrics.log").read_text()
    )
    assert os.listdir(run) and temporaries(run) == []


SWALLOWED = """
import gc, os, signal, time
from thermojax.errors import command_boundary

def main():
    def callback(phase, info):  # like JAX's _xla_gc_callback: an exception here is swallowed
        if phase == "start" and not getattr(callback, "fired", False):
            callback.fired = True
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs in here
                pass
    gc.callbacks.append(callback)
    gc.collect()
    time.sleep(2)
    print("finished normally")

command_boundary(main, name="demo")
"""


def test_ctrl_c_inside_a_garbage_collector_callback_still_interrupts(tmp_path):
    """Found in CI: a Ctrl-C whose handler ran inside JAX's garbage-collector callback was
    swallowed ("Exception ignored in: _xla_gc_callback") and the run finished with status 0. The
    boundary delivers such an interrupt again."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", SWALLOWED],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.stdout == ""
    assert_one_error(proc, 130, "demo interrupted (Ctrl-C)")
