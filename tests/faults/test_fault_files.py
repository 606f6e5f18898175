"""Faults of the file system and the cache, each a real run: a full disk (``ulimit -f``), a cache
folder that takes no files, corrupt and wrong cache entries. A user-caused failure is one line and
exit 2 with nothing half-written; a cache fault costs time, never the run (README: Faults)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from faultlib import (
    FAST,
    OUTPUTS,
    assert_one_error,
    chattr_works,
    command,
    command_env,
    immutable,
    temporaries,
)

pytestmark = pytest.mark.slow


def report(run: Path) -> dict:
    return json.loads((run / "baseline_metrics.json").read_text())


def figures(run: Path) -> dict:
    """The numbers a rerun must reproduce (not its timings, cache record or folder)."""
    data = report(run)
    keys = ("smoothness_score", "violation_count", "boundary_scores", "quality", "sample_preview")
    return {k: data[k] for k in keys}


def run_log(run: Path) -> str:
    """The run's full log (the console wraps its warnings to the terminal's width)."""
    return (run / "baseline_metrics.log").read_text()


def copy_cache(cache: Path, to: Path) -> Path:
    shutil.copytree(cache, to, ignore=shutil.ignore_patterns("*.lock"))
    return to


def test_full_disk_while_the_outputs_are_written(warm, tmp_path):
    _, home, cache, reference = warm
    run, env = tmp_path / "run", command_env(home, cache)
    args = [*FAST, f"hydra.run.dir={run}"]
    proc = command("thermojax.baseline", args, cwd=tmp_path, env=env, file_size_kb=100)
    assert_one_error(proc, 2, str(run), "File too large", "ulimit -f")
    assert temporaries(run) == [] and temporaries(cache) == []
    assert not (run / "baseline_metrics.json").exists()  # no completion marker: not a result
    again = command("thermojax.baseline", args, cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p.name for p in run.iterdir()} == OUTPUTS and temporaries(run) == []
    assert figures(run) == figures(reference)


def test_full_disk_for_cache_entries_is_a_warning(warm, tmp_path):
    _, home, _, reference = warm
    cache = tmp_path / "cold-cache"
    run = tmp_path / "run"
    # 400 KB: each output fits, the 1 MB fp32 trajectory entry does not.
    proc = command(
        "thermojax.baseline",
        [*FAST, f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env=command_env(home, cache),
        file_size_kb=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" in proc.stderr and "Traceback" not in proc.stderr
    assert "not stored (File too large); the run goes on" in run_log(run)
    assert {p.name for p in run.iterdir()} == OUTPUTS and figures(run) == figures(reference)
    assert temporaries(cache) == [] and temporaries(run) == []


def test_cache_folder_that_is_a_file(warm, tmp_path):
    _, home, _, reference = warm
    blocked = tmp_path / "cache-file"
    blocked.write_text("not a folder")
    run = tmp_path / "run"
    proc = command(
        "thermojax.baseline",
        [*FAST, f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env=command_env(home, blocked),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" in proc.stderr and "Traceback" not in proc.stderr
    assert f"THERMOJAX_CACHE_DIR '{blocked}/jax' cannot take new files" in run_log(run)
    assert "takes no files" in run_log(run)
    assert {p.name for p in run.iterdir()} == OUTPUTS and figures(run) == figures(reference)
    assert report(run)["cache"] == {
        "calibration": "miss",
        "fp32_samples": "miss",
        "quality": "miss",
    }


def test_read_only_cache_folder(warm, tmp_path):
    if not chattr_works(tmp_path / "probe"):
        pytest.skip("chattr +i is not honoured on this file system")
    _, home, _, reference = warm
    cache = tmp_path / "read-only-cache"
    cache.mkdir()
    undo = immutable(cache)
    try:
        run = tmp_path / "run"
        proc = command(
            "thermojax.baseline",
            [*FAST, f"hydra.run.dir={run}"],
            cwd=tmp_path,
            env=command_env(home, cache),
        )
    finally:
        undo()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" in proc.stderr and "Traceback" not in proc.stderr
    assert "takes no files" in run_log(run)
    assert figures(run) == figures(reference) and list(cache.iterdir()) == []


def _entries(cache: Path) -> dict[str, Path]:
    """The stage entries of a cache by what they hold."""
    kinds = {}
    for path in sorted((cache / "entries").glob("*.npz")):
        with np.load(path) as data:
            names = set(data.files)
        kind = (
            "calibration"
            if "act_min" in names
            else "fp32_samples"
            if "trajectory" in names
            else "quality"
            if "quantized_x0" in names
            else None
        )
        if kind is not None:
            kinds[kind] = path
    return kinds


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00not an npz\xff" * 10)


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


def _rewrite(path: Path, change) -> None:
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    change(arrays)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


CORRUPTIONS = [
    ("calibration", "garbage", _garbage, "unreadable"),
    ("fp32_samples", "truncated", _truncated, "unreadable"),
    (
        "fp32_samples",
        "wrong-shape",
        lambda p: _rewrite(
            p, lambda a: a.update(x0=a["x0"][:2], trajectory=a["trajectory"][:, :2])
        ),
        "x0 has shape (2, 8, 8), this run needs (4, 8, 8)",
    ),
    (
        "calibration",
        "nan",
        lambda p: _rewrite(p, lambda a: a["act_max"].__setitem__((0, 0), np.nan)),
        "act_max holds NaN",
    ),
    (
        "calibration",
        "fewer-samples-per-step",
        lambda p: _rewrite(p, lambda a: a.update(act_samples=a["act_samples"][:, :, :1])),
        "act_samples has shape",
    ),
    (
        "quality",
        "wrong-shape",
        lambda p: _rewrite(p, lambda a: a.update(quantized_x0=a["quantized_x0"].reshape(4, 64))),
        "quantized_x0 has shape (4, 64)",
    ),
]


# Each entry is checked, and recomputed, on its own whatever the others hold: one run damages
# one entry of each kind at once (calibration, fp32 samples, quality), so the six corruptions
# take three runs (and three reruns) instead of six, every one still named, recomputed to the
# same numbers and stored again.
CORRUPTION_RUNS = [
    ["calibration-garbage", "fp32_samples-truncated", "quality-wrong-shape"],
    ["calibration-nan", "fp32_samples-wrong-shape"],
    ["calibration-fewer-samples-per-step"],
]
BY_ID = {f"{e}-{i}": (e, c, n) for e, i, c, n in CORRUPTIONS}
assert sorted(i for run in CORRUPTION_RUNS for i in run) == sorted(BY_ID)  # each one, once
assert all(len({BY_ID[i][0] for i in run}) == len(run) for run in CORRUPTION_RUNS)


@pytest.mark.parametrize("ids", CORRUPTION_RUNS, ids=["+".join(run) for run in CORRUPTION_RUNS])
def test_a_bad_cache_entry_is_recomputed(warm, tmp_path, ids):
    _, home, cache, reference = warm
    cache = copy_cache(cache, tmp_path / "cache")
    damaged = [BY_ID[i] for i in ids]
    paths = _entries(cache)
    for entry, corrupt, _ in damaged:
        corrupt(paths[entry])
    run = tmp_path / "run"
    proc = command(
        "thermojax.baseline",
        [*FAST, f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env=command_env(home, cache),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" in proc.stderr and "Traceback" not in proc.stderr
    for entry, _, named in damaged:  # each entry's own warning line names what is wrong
        lines = [line for line in run_log(run).splitlines() if str(paths[entry]) in line]
        assert any(named in line and "recomputing" in line for line in lines), (entry, lines)
        assert report(run)["cache"][entry] == "miss"
    assert figures(run) == figures(reference)  # recomputed to the same numbers
    for entry, _, _ in damaged:
        assert _entries(cache)[entry].exists()  # and stored again, whole
    proc = command(
        "thermojax.baseline",
        [*FAST, f"hydra.run.dir={tmp_path / 'again'}"],
        cwd=tmp_path,
        env=command_env(home, cache),
    )
    assert proc.returncode == 0
    for entry, _, _ in damaged:
        assert report(tmp_path / "again")["cache"][entry] == "hit"
