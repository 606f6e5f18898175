"""Stops an embedded Ray when its driver is killed (``python -m ...._reaper``, started by
:mod:`._cluster`).

A SIGKILLed driver runs no ``finally``: Ray's own reaper takes the GCS and the raylet with it,
but the dashboard and runtime-env agents, and a worker in the middle of a job, live on. This
process watches the driver through a pipe (its stdin; the driver holds the other end): it notes
every process descended from the driver, every half second, and when the pipe closes without
the driver saying ``done`` (so the driver is gone), it kills each noted process that still
exists (the same PID and start time, so never a stranger that reused a PID). Linux only
(``/proc``), like the rest of the launcher's embedded Ray.
"""

from __future__ import annotations

import os
import select
import signal
import sys
from pathlib import Path

DONE = b"done\n"
"""What the driver writes before closing the pipe when it stopped its Ray itself."""

POLL_S = 0.5


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent PID, start time in clock ticks) of ``pid``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19])


def _descendants(root: int, known: dict[int, int]) -> None:
    """Add to ``known`` (PID -> start time) every process below ``root`` or a known process."""
    parents: dict[int, list[tuple[int, int]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                parents.setdefault(stat[0], []).append((int(entry), stat[1]))
    frontier = [root, *known]
    while frontier:
        for child, started in parents.get(frontier.pop(), []):
            if child != os.getpid() and known.get(child) != started:
                known[child] = started
                frontier.append(child)


def _kill(known: dict[int, int]) -> list[int]:
    killed = []
    for pid, started in known.items():
        stat = _stat(pid)
        if stat is not None and stat[1] == started:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                continue
    return killed


def watch(driver: int, pipe: int) -> list[int]:
    """Note the driver's descendants until ``pipe`` closes; kill them unless it said done.

    Returns the PIDs it killed.
    """
    known: dict[int, int] = {}
    received = b""
    while True:
        _descendants(driver, known)
        readable, _, _ = select.select([pipe], [], [], POLL_S)
        if readable:
            chunk = os.read(pipe, 64)
            if not chunk:
                break
            received += chunk
    if received.endswith(DONE):
        return []
    # A last look: what the dying driver's processes started since the previous poll.
    _descendants(driver, known)
    return _kill(known)


def main() -> None:
    # Ctrl-C in the terminal reaches this process too; the driver handles it and says done.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    killed = watch(int(sys.argv[1]), sys.stdin.fileno())
    if killed:
        print(
            f"[sweep] the driver (pid {sys.argv[1]}) died; stopped the {len(killed)} processes "
            f"of its embedded Ray: {' '.join(map(str, sorted(killed)))}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
