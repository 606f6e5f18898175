"""A worker that waits for another's cache entry says what it waits for and for how long, and
the wait is handed to the caller (the runner keeps it out of the quantization time)."""

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from thermojax.pipeline.cache.store import cache_key, get_or_compute

HOLDER = """
import json, sys, time
from pathlib import Path
import pytest

from thermojax.pipeline.cache.store import get_or_compute
cache, key, computing, release = sys.argv[1:5]
def compute():
    Path(computing).touch()
    while not Path(release).exists():
        time.sleep(0.01)
    return {"by": "holder"}
get_or_compute(key, compute, save=lambda v, p: p.write_text(json.dumps(v)),
               load=lambda p: json.loads(p.read_text()), suffix=".json", cache_dir=cache)
"""


def test_a_held_lock_is_waited_for_out_loud_and_the_wait_is_reported(tmp_path, caplog):
    key = cache_key(kind="lock-test", n=1)
    computing, release = tmp_path / "computing", tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "cache"), key, str(computing), str(release)]
    )
    try:
        deadline = time.monotonic() + 60
        while not computing.exists():
            assert holder.poll() is None
            if time.monotonic() > deadline:
                pytest.fail("the holder never started computing")
            time.sleep(0.01)
        timer = threading.Timer(0.6, release.touch)
        timer.start()
        waits: list[float] = []
        with caplog.at_level(logging.INFO, logger="thermojax.pipeline.cache.store"):
            value = get_or_compute(
                key,
                lambda: {"by": "waiter"},
                save=lambda v, p: p.write_text(json.dumps(v)),
                load=lambda p: json.loads(p.read_text()),
                suffix=".json",
                cache_dir=tmp_path / "cache",
                name="calibration",
                on_wait=waits.append,
            )
        timer.join()
    finally:
        holder.wait(timeout=60)
    assert holder.returncode == 0
    assert value == {"by": "holder"}  # loaded what the holder computed, not computed again
    (waited,) = waits
    assert waited >= 0.5
    messages = [r.getMessage() for r in caplog.records]
    started = next(m for m in messages if m.startswith("waiting for calibration"))
    assert key[:16] in started
    assert f"pid {holder.pid} on {socket.gethostname()} since " in started
    assert any(m.startswith(f"waited {waited:.1f} s for calibration") for m in messages)


def test_a_free_lock_is_taken_without_waiting(tmp_path):
    waits: list[float] = []
    get_or_compute(
        cache_key(kind="lock-test", n=2),
        lambda: 1,
        save=lambda v, p: Path(p).write_text(str(v)),
        load=lambda p: int(Path(p).read_text()),
        suffix=".txt",
        cache_dir=tmp_path,
        on_wait=waits.append,
    )
    (waited,) = waits
    assert waited < 0.05
