"""``python -m thermojax.compare`` on hostile sweep folders and outputs, as real processes: a
report of the wrong shape, with nulls, NaN or cut short is a failed row, never a crash; an --out
that takes no files is one line before any work; the three outputs land as a set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faultlib import (
    assert_one_error,
    chattr_works,
    command,
    command_env,
    immutable,
    temporaries,
)

TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "compare" / "report_template.json"
OUTPUTS = {"sweep_summary.csv", "sweep_summary.json", "comparison.html"}


def _nulls(value):
    if isinstance(value, dict):
        return {k: _nulls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nulls(v) for v in value]
    return None if isinstance(value, int | float) and not isinstance(value, bool) else value


HOSTILE = {
    "list": "[]",
    "number": "3",
    "nulls": json.dumps(_nulls(json.loads(TEMPLATE.read_text()))),
    "nan": TEMPLATE.read_text().replace('"smoothness_score": ', '"smoothness_score": NaN, "x": '),
    "cut-short": TEMPLATE.read_text()[:500],
    "not-utf8": "\udcff",
}


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    good = root / "0"
    good.mkdir(parents=True)
    (good / "baseline_metrics.json").write_text(TEMPLATE.read_text())
    for index, (name, text) in enumerate(HOSTILE.items(), start=1):
        job = root / str(index)
        job.mkdir()
        data = text.encode("utf-8", "surrogateescape")
        (job / "baseline_metrics.json").write_bytes(data)
        (job / "kind.txt").write_text(name)
    return root


def test_reports_of_the_wrong_shape_are_failed_rows(sweep, tmp_path):
    proc = command(
        "thermojax.compare",
        [str(sweep)],
        cwd=tmp_path,
        env=command_env(tmp_path / "home", tmp_path / "cache"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert f"1 configurations compared, {len(HOSTILE)} failed" in proc.stdout
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    failed = {row["job"] for row in summary["configurations"] if row["status"] == "failed"}
    assert failed == {str(i) for i in range(1, len(HOSTILE) + 1)}
    assert {p.name for p in sweep.iterdir() if p.is_file()} == OUTPUTS
    assert temporaries(sweep) == []


@pytest.mark.parametrize("where", ["through-a-file", "proc", "read-only"])
def test_an_out_that_takes_no_files_is_one_line_before_any_work(sweep, tmp_path, where):
    undo = None
    if where == "through-a-file":
        (tmp_path / "a-file").write_text("x")
        out = tmp_path / "a-file" / "out"
    elif where == "proc":
        out = Path("/proc/thermojax-out")
    else:
        if not chattr_works(tmp_path / "probe"):
            pytest.skip("chattr +i is not honoured on this file system")
        out = tmp_path / "read-only"
        out.mkdir()
        undo = immutable(out)
    try:
        proc = command(
            "thermojax.compare",
            [str(sweep), "--out", str(out)],
            cwd=tmp_path,
            env=command_env(tmp_path / "home", tmp_path / "cache"),
        )
    finally:
        if undo is not None:
            undo()
    assert_one_error(proc, 2, "--out", str(out))
    assert not any(p.name in OUTPUTS for p in sweep.rglob("*"))


def test_the_outputs_land_as_a_set_and_a_rerun_cleans_a_killed_one(sweep, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    left = out / ".sweep_summary.json.pending.tmp"  # what a kill before the renames leaves
    left.write_text("{")
    env = command_env(tmp_path / "home", tmp_path / "cache")
    proc = command("thermojax.compare", [str(sweep), "--out", str(out)], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == OUTPUTS  # the three, no temporary
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    full = command(
        "thermojax.compare", [str(sweep), "--out", str(out)], cwd=tmp_path, env=env, file_size_kb=4
    )
    assert_one_error(full, 2, str(out), "File too large")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps  # the old set stays
