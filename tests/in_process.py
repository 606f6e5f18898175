"""A command's own ``main`` run in the test's process, as ``python -m`` would run it: its exit
status and streams as a ``CompletedProcess``, without an interpreter and JAX import per case.
The tests keep a few cases through the real command, a process of its own, beside these."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def run_main(
    main: Callable[[], object],
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    prog: str = "thermojax",
) -> subprocess.CompletedProcess:
    """``main()`` with ``sys.argv = [prog, *argv]``, the environment ``env`` (and nothing else
    of this one) and ``cwd`` as the working folder, all undone after the test; it must end in
    ``SystemExit`` (a command boundary's error), whose code is the returned status."""
    for name in set(os.environ) - set(env):
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [prog, *argv])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    out = capsys.readouterr()
    return subprocess.CompletedProcess([prog, *argv], exited.value.code, out.out, out.err)
