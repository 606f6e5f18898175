"""The other commands' arguments at their extremes (issue 23), in-process: every numeric flag of
``thermojax.compare``, ``thermojax.launch``, both trainers and the synthetic checkpoint writer at
0, -1, 2**31, 2**63, 2**64 - 1, huge, NaN, inf, and paths that are empty, very long, hold a NUL
or a newline, are a file, a FIFO or missing. Each ends before any work in exit status 2 and one
``error:`` line, or (a legal value) reaches the work, which is stopped here; never a traceback.

``tests/faults/test_fault_arguments.py`` runs a few of these as real processes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import pytest

from thermojax.cli import compare, launch
from thermojax.models.digits import train as digits_train
from thermojax.models.dream import train as bytes_lm_train
from thermojax.models.hf import synthetic

INTS = ("0", "-1", "1", str(2**31), str(2**63), str(2**64 - 1), "9" * 60, "ten", "1.5", "")
FLOATS = ("0", "-1", "nan", "inf", "-inf", "-0.0", "1e308", "5e-324", "ten", "")


class _ReachedTheWork(Exception):
    """Raised where a command's work (training) would start."""


def _stop(*args, **kwargs):
    raise _ReachedTheWork


@pytest.fixture
def paths(tmp_path) -> list[str]:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    os.mkfifo(tmp_path / "a-fifo")
    return [
        "",
        "x" * 10_000,
        str(tmp_path / ("n" * 300)),
        "a\x00b",
        str(tmp_path / "new\nline\u202e"),
        str(tmp_path / "a-file"),
        str(tmp_path / "a-fifo"),
        str(tmp_path / "a-file" / "below"),
        "/proc",
    ]


@pytest.fixture
def run(monkeypatch, capsys, tmp_path):
    """``run(main, argv)``: the outcome, after checking that a refusal is exit 2 and one line."""
    monkeypatch.setattr(digits_train, "train", _stop)
    monkeypatch.setattr(bytes_lm_train, "train", _stop)
    monkeypatch.setattr(synthetic, "_free_bytes", lambda out: 0)  # a legal size: "no room"
    monkeypatch.chdir(tmp_path)

    def outcome(main: Callable[[Sequence[str]], object], argv: list[str]) -> str:
        try:
            status = main(argv)
        except _ReachedTheWork:
            return "reached the work"
        except SystemExit as exit_:
            status = exit_.code
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert status == 2, (argv, status, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
        assert "Traceback" not in err
        return lines[0]

    return outcome


TRAINERS = {
    "train_digits": (
        digits_train.main,
        ["--steps", "--batch-size", "--classifier-steps", "--seed", "--eval-samples"],
        [],
    ),
    "train_bytes_lm": (
        bytes_lm_train.main,
        [
            "--steps",
            "--batch-size",
            "--seq-len",
            "--warmup-steps",
            "--seed",
            "--eval-windows",
            "--eval-mask-ratios",
            "--sample-count",
            "--sample-steps",
            "--hidden-size",
            "--layers",
            "--intermediate-size",
            "--heads",
            "--kv-heads",
        ],
        ["--learning-rate", "--weight-decay"],
    ),
}


@pytest.mark.parametrize("command", sorted(TRAINERS))
def test_trainer_flags_at_their_extremes_are_refused_before_training(command, run, tmp_path):
    main, int_flags, float_flags = TRAINERS[command]
    out = ["--out", str(tmp_path / "new")]
    reached = []
    for flag in int_flags:
        for value in INTS:
            if run(main, [*out, f"{flag}={value}"]) == "reached the work":
                reached.append((flag, value))
    for flag in float_flags:
        for value in FLOATS:
            if run(main, [*out, f"{flag}={value}"]) == "reached the work":
                reached.append((flag, value))
    # Past 2**31 only a seed is legal; past 2**63 nothing (a step count, a batch, a network
    # size): such a value never reaches the training.
    huge = {str(2**63), str(2**64 - 1), "9" * 60}
    assert not [(f, v) for f, v in reached if v in huge or (v == str(2**31) and f != "--seed")]
    assert ("--steps", "1") in reached


def test_trainer_paths_at_their_extremes(run, paths):
    for main in (digits_train.main, bytes_lm_train.main):
        for path in paths:
            run(main, ["--out", path])  # refused in one line, or a new folder: trains


def test_the_digits_quality_check_needs_two_samples(run, tmp_path):
    line = run(digits_train.main, ["--out", str(tmp_path / "new"), "--eval-samples", "1"])
    assert "--eval-samples 1" in line and "at least 2" in line


def test_synthetic_checkpoint_sizes_at_their_extremes(run, tmp_path, paths):
    out = str(tmp_path / "new")
    for flag in ("--scale", "--layers", "--seed"):
        for value in INTS:
            line = run(synthetic.main, [out, "--scale", "64", f"{flag}={value}"])
            assert "error: " in line
    for value in FLOATS:
        run(synthetic.main, [out, "--scale", "64", f"--shard-gb={value}"])
    run(synthetic.main, [out, "--dtype", "F8"])
    for path in paths:
        run(synthetic.main, [path, "--scale", "64"])


def test_compare_arguments_at_their_extremes(run, tmp_path, paths):
    (tmp_path / "sweep").mkdir()
    for path in paths:
        run(compare.main, [path])
        run(compare.main, [str(tmp_path / "sweep"), "--out", path])
    run(compare.main, [str(tmp_path / "sweep"), "--wandb-mode", "nope"])
    run(compare.main, [])


@pytest.mark.parametrize("flag", ["--connect-timeout", "--wait-timeout"])
def test_launch_timeouts_at_their_extremes(flag, run):
    for value in FLOATS:
        line = run(launch.main, ["--address", "http://127.0.0.1:9", f"{flag}={value}", "seed=1,2"])
        seconds = float(value) if value not in ("ten", "") else math.nan
        if not 0 < seconds <= launch.MAX_TIMEOUT_S:
            assert flag in line, line
        else:  # a legal timeout: nothing answers on port 9
            assert "no Ray job server answers" in line, line


def test_launch_addresses_and_folders_at_their_extremes(run, paths):
    for address in [*paths, "http://[::1", "http://127.0.0.1:99999", "ftp://x", "127.0.0.1:9"]:
        run(launch.main, ["--address", address, "--connect-timeout", "0.5", "seed=1,2"])
    for folder in paths:
        argv = ["--address", "http://127.0.0.1:9", "--sweep-dir", folder, "seed=1,2"]
        run(launch.main, [*argv, "--connect-timeout", "0.5"])
    run(launch.main, [])
