"""What every fault test asserts about a real process: its exit status, one error line naming
the thing at fault, no traceback, nothing half-written (no temporaries, no partial output set),
and no process of its session left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil
import user_env

FAST = ["calibration=quick", "sampling.num_samples=4", "wandb=disabled"]
"""A baseline run of a few seconds on a warm cache."""
OUTPUTS = {"baseline_metrics.json", "baseline_metrics.html", "baseline_metrics.log", "samples.npz"}


def command_env(home: Path, cache: Path, **extra: str) -> dict[str, str]:
    """The environment of a command run by a user (``user_env.command_env``), 200 columns wide
    so that an error line is never wrapped."""
    return user_env.command_env(home, cache, **{"COLUMNS": "200", **extra})


def start(
    module: str,
    args: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    file_size_kb: int | None = None,
) -> subprocess.Popen:
    """``python -m module args`` in its own session (its processes are found by session id);
    with ``file_size_kb``, under ``ulimit -f`` as a shell sets it (Python ignores SIGXFSZ, so
    a write past the limit fails with EFBIG, as on a full disk)."""
    argv = [sys.executable, "-m", module, *args]
    if file_size_kb is not None:
        argv = ["bash", "-c", f'ulimit -f {int(file_size_kb)} && exec "$@"', "bash", *argv]
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, *, timeout: float = 300) -> subprocess.CompletedProcess:
    """Wait for ``proc``; then no process of its session may remain (after a short grace)."""
    out, err = proc.communicate(timeout=timeout)
    assert_no_process_left(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def command(
    module: str,
    args: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    file_size_kb: int | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run a command to its end, as :func:`start` then :func:`finish`."""
    proc = start(module, args, cwd=cwd, env=env, file_size_kb=file_size_kb)
    return finish(proc, timeout=timeout)


def session_processes(sid: int) -> list[psutil.Process]:
    """Live processes of session ``sid`` (zombies reaped by nobody count as gone)."""
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return found


def assert_no_process_left(sid: int, grace_s: float = 10.0) -> None:
    """No process of the session ``sid`` is alive ``grace_s`` after its leader ended."""
    deadline = time.monotonic() + grace_s
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    names = [f"{p.pid} {' '.join(p.cmdline()[:3])}" for p in left]
    for proc in left:  # clean up for the next test, then fail
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    assert not names, f"processes left behind: {names}"


def assert_one_error(proc: subprocess.CompletedProcess, status: int, *named: str) -> str:
    """Exit ``status``, exactly one ``error:`` line (the last on stderr) naming each of
    ``named``, and no traceback; returns the line."""
    assert proc.returncode == status, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
    for name in named:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def assert_one_line(error: BaseException, *named: str) -> str:
    """An error raised in-process (a reader called directly) is one line naming each of
    ``named``: the ``error:`` line the command would print; returns it."""
    message = str(error)
    assert message and "\n" not in message, message
    for name in named:
        assert name in message, (name, message)
    return message


def temporaries(folder: Path) -> list[Path]:
    """Every temporary of thermojax.files under ``folder`` (``.NAME.*.tmp``, with or without the
    suffix a writer insisted on, e.g. ``.KEY.npz.x1y2.tmp.npz``)."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob(".*") if ".tmp" in p.name and p.name.startswith("."))


def send_when(
    proc: subprocess.Popen,
    ready: Callable[[], bool],
    sig: int,
    *,
    delay_s: float = 0.0,
    timeout_s: float = 120.0,
) -> bool:
    """Send ``sig`` to ``proc`` once ``ready()`` holds (polled every 5 ms), after ``delay_s``;
    ``False`` if the process ended first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    if delay_s:
        time.sleep(delay_s)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, sig)
    return True


def immutable(path: Path) -> Callable[[], None]:
    """``chattr +i path`` (root may not write there either); returns the undo."""
    subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=False, capture_output=True)


def chattr_works(probe: Path) -> bool:
    """Whether ``chattr +i`` is available and honoured here (tmpfs and some containers: no)."""
    probe.mkdir(parents=True, exist_ok=True)
    try:
        undo = immutable(probe)
    except (OSError, subprocess.CalledProcessError):
        return False
    try:
        (probe / "x").touch()
    except OSError:
        return True
    finally:
        undo()
    (probe / "x").unlink(missing_ok=True)
    return False


SIGNAL_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
