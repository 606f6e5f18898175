"""Faults in what the user gives, refused before any work: one ``error:`` line naming the value,
exit 2, nothing written, no process left (README: Faults and hostile input). Each a real command,
but where many cases go through the same code (the training arguments, a checkpoint's
model.json) every case runs the command's main in this process and a few the real command."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from faultlib import FAST, assert_one_error, chattr_works, command, command_env, immutable
from in_process import run_main

from thermojax.cli.baseline import main as baseline_main
from thermojax.models.digits.checkpoint import SHIPPED_CHECKPOINT
from thermojax.models.train_digits import main as train_digits_main

TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "compare" / "report_template.json"


@pytest.fixture
def env(tmp_path):
    return command_env(tmp_path / "home", tmp_path / "cache")


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody may write, root included (``chattr +i``); undone at teardown."""
    if not chattr_works(tmp_path / "probe"):
        pytest.skip("chattr +i is not honoured on this file system")
    folder = tmp_path / "read-only"
    folder.mkdir()
    undo = immutable(folder)
    yield folder
    undo()


def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


# ------------------------------------------------------------------ launch


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--connect-timeout", "-1"], "--connect-timeout -1"),
        (["--connect-timeout", "nan"], "--connect-timeout nan"),
        (["--wait-timeout", "0"], "--wait-timeout 0"),
    ],
    ids=["negative-connect-timeout", "nan-connect-timeout", "zero-wait-timeout"],
)
def test_launch_timeouts_that_cannot_be_waited(flags, named, tmp_path, env):
    proc = command(
        "thermojax.launch",
        ["--address", "http://127.0.0.1:9", *flags, "bit_width=2,4"],
        cwd=tmp_path,
        env=env,
    )
    assert_one_error(proc, 2, named, "positive number of seconds")


# ------------------------------------------------------------------ training


def _snapshot(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--steps", "0"], "--steps 0"),
        (["--batch-size", "-1"], "--batch-size -1"),
        (["--classifier-steps", "0"], "--classifier-steps 0"),
        (["--eval-samples", "-5"], "--eval-samples -5"),
        (["--seed", "-1"], "--seed -1"),
        (["--out", str(SHIPPED_CHECKPOINT)], "pass --ship"),
        (["--ship", "--out", "x"], "exclusive"),
        (["--steps", "ten"], "invalid int value"),
    ],
    ids=[
        "steps-0",
        "batch-negative",
        "classifier-steps-0",
        "eval-negative",
        "seed-negative",
        "out-is-shipped",
        "ship-and-out",
        "steps-not-a-number",
    ],
)
def test_training_arguments_refused_before_training(flags, named, tmp_path, capsys, monkeypatch):
    # The command's own main in this process (its command boundary, as `python -m` runs it):
    # the real command, process and all, is test_training_arguments_refused_by_the_command's.
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("thermojax.models.digits.train.train", no_training)
    before = _snapshot(SHIPPED_CHECKPOINT)
    monkeypatch.chdir(tmp_path)  # where ./digits_ddpm would go
    with pytest.raises(SystemExit) as exited:
        train_digits_main(flags)
    err = capsys.readouterr()
    proc = subprocess.CompletedProcess(flags, exited.value.code, err.out, err.err)
    assert_one_error(proc, 2, named)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no ./digits_ddpm, nothing else
    assert _snapshot(SHIPPED_CHECKPOINT) == before


# One refused by argparse, one by the command's own range check: the same code as every case
# above, here through `python -m` (exit status, one line, no process left behind).
@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--steps", "ten"], "invalid int value"), (["--seed", "-1"], "--seed -1")],
    ids=["steps-not-a-number", "seed-negative"],
)
def test_training_arguments_refused_by_the_command(flags, named, tmp_path, env):
    before = _snapshot(SHIPPED_CHECKPOINT)
    proc = command("thermojax.models.train_digits", flags, cwd=tmp_path, env=env)
    assert_one_error(proc, 2, named)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no ./digits_ddpm, nothing else
    assert _snapshot(SHIPPED_CHECKPOINT) == before


def test_training_into_a_folder_that_is_not_empty_or_through_a_file(tmp_path, env):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "mine.txt").write_text("keep")
    proc = command("thermojax.models.train_digits", ["--out", str(occupied)], cwd=tmp_path, env=env)
    assert_one_error(proc, 2, str(occupied), "not empty")
    assert [p.name for p in occupied.iterdir()] == ["mine.txt"]
    blocked = a_file(tmp_path) / "ckpt"
    proc = command("thermojax.models.train_digits", ["--out", str(blocked)], cwd=tmp_path, env=env)
    assert_one_error(proc, 2, "--out", "not a folder")


# ------------------------------------------------------------------ the baseline's folders


def test_run_folder_through_a_file(tmp_path, env):
    blocked = a_file(tmp_path) / "run"
    proc = command("thermojax.baseline", [*FAST, f"hydra.run.dir={blocked}"], cwd=tmp_path, env=env)
    assert_one_error(proc, 2, "hydra.run.dir", str(blocked), "not a folder")
    assert not (tmp_path / "cache").exists()  # refused before any work


def test_run_folder_that_cannot_be_created(tmp_path, env):
    proc = command(
        "thermojax.baseline", [*FAST, "hydra.run.dir=/proc/thermojax-run"], cwd=tmp_path, env=env
    )
    assert_one_error(proc, 2, "hydra.run.dir", "/proc/thermojax-run")


def test_run_folder_in_a_read_only_folder(tmp_path, env, read_only):
    run = read_only / "run"
    proc = command("thermojax.baseline", [*FAST, f"hydra.run.dir={run}"], cwd=tmp_path, env=env)
    assert_one_error(proc, 2, "hydra.run.dir", "operation not permitted")
    assert list(read_only.iterdir()) == []


def test_export_into_a_read_only_folder_is_refused_before_the_run(tmp_path, env, read_only):
    run = tmp_path / "run"
    args = [*FAST, f"hydra.run.dir={run}", f"export.path={read_only / 'quantized'}"]
    proc = command("thermojax.baseline", args, cwd=tmp_path, env=env)
    assert_one_error(proc, 2, "export.path", str(read_only))
    assert not run.exists() and not (tmp_path / "cache").exists()


# ------------------------------------------------------------------ a checkpoint's model.json


def _edit(spec: dict, section: str, key: str, value: object) -> dict:
    spec[section][key] = value
    return spec


MODEL_JSON = [
    ("beta-end-above-1", lambda s: _edit(s, "schedule", "beta_end", 1.5), "schedule.beta_end"),
    (
        "zero-timesteps",
        lambda s: _edit(s, "schedule", "num_timesteps", 0),
        "schedule.num_timesteps",
    ),
    (
        "beta-start-above-end",
        lambda s: _edit(s, "schedule", "beta_start", 0.5),
        "schedule.beta_start=0.5",
    ),
    ("nan-beta", lambda s: _edit(s, "schedule", "beta_start", math.nan), "NaN"),
    ("state-size", lambda s: _edit(s, "denoiser", "state_size", 32), "denoiser.state_size"),
    ("hidden-zero", lambda s: _edit(s, "denoiser", "hidden", 0), "denoiser.hidden"),
    ("schedule-not-object", lambda s: {**s, "schedule": [1000]}, "schedule must be an object"),
    ("truncated", None, "unreadable model.json"),
]


def _edited_checkpoint(tmp_path: Path, edit) -> Path:
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(SHIPPED_CHECKPOINT, checkpoint)
    spec_file = checkpoint / "model.json"
    text = spec_file.read_text()
    if edit is None:
        spec_file.write_text(text[: len(text) // 2])
    else:
        spec_file.write_text(json.dumps(edit(json.loads(text))))  # NaN written as NaN
    return checkpoint


@pytest.mark.parametrize(
    ("edit", "named"), [(e, n) for _, e, n in MODEL_JSON], ids=[i for i, _, _ in MODEL_JSON]
)
def test_checkpoint_values_checked_where_they_enter(
    edit, named, tmp_path, env, monkeypatch, capsys
):
    # The command's main in this process (Hydra, the command boundary); the real command, a
    # process of its own, for a value refused and an unreadable file:
    # test_checkpoint_values_checked_by_the_command.
    checkpoint = _edited_checkpoint(tmp_path, edit)
    run = tmp_path / "run"
    args = [*FAST, f"hydra.run.dir={run}", f"model.path={checkpoint}"]
    proc = run_main(
        baseline_main, args, env=env, cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert_one_error(proc, 2, "model.path", named)
    assert not run.exists()  # the folder Hydra made is removed again


THROUGH_THE_COMMAND = [case for case in MODEL_JSON if case[0] in ("beta-end-above-1", "truncated")]


@pytest.mark.parametrize(
    ("edit", "named"),
    [(e, n) for _, e, n in THROUGH_THE_COMMAND],
    ids=[i for i, _, _ in THROUGH_THE_COMMAND],
)
def test_checkpoint_values_checked_by_the_command(edit, named, tmp_path, env):
    checkpoint = _edited_checkpoint(tmp_path, edit)
    run = tmp_path / "run"
    args = [*FAST, f"hydra.run.dir={run}", f"model.path={checkpoint}"]
    proc = command("thermojax.baseline", args, cwd=tmp_path, env=env)
    assert_one_error(proc, 2, "model.path", named)
    assert not run.exists()  # the folder Hydra made is removed again


# ------------------------------------------------------------------ memory


def test_a_run_that_cannot_fit_is_refused_with_its_estimate(tmp_path, env):
    run = tmp_path / "run"
    args = [*FAST, "sampling.num_samples=100000", f"hydra.run.dir={run}"]
    proc = command("thermojax.baseline", args, cwd=tmp_path, env=env)
    line = assert_one_error(proc, 2, "sampling.num_samples=100000", "GB", "samples fit")
    needed = float(line.split("needs about ")[1].split(" GB")[0])
    assert needed > 100  # 1000 x 100000 x 64 float32 is 25.6 GB a trajectory, several held
    assert not run.exists()
    entries = tmp_path / "cache" / "entries"
    assert not entries.exists() or not any(entries.glob("*.npz"))  # nothing computed


@pytest.mark.slow
def test_training_writes_a_new_folder_by_default_never_the_shipped_one(tmp_path, env):
    before = _snapshot(SHIPPED_CHECKPOINT)
    flags = ["--steps", "2", "--classifier-steps", "2", "--eval-samples", "0"]
    proc = command("thermojax.models.train_digits", flags, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = tmp_path / "digits_ddpm"
    assert sorted(p.name for p in written.iterdir()) == [
        "classifier.safetensors",
        "denoiser.safetensors",
        "model.json",
    ]

    def not_strict(name: str) -> float:
        raise AssertionError(f"model.json holds {name}")

    json.loads((written / "model.json").read_text(), parse_constant=not_strict)
    assert {p.name for p in tmp_path.iterdir()} - {"home", "cache"} == {"digits_ddpm"}
    assert _snapshot(SHIPPED_CHECKPOINT) == before
    again = command("thermojax.models.train_digits", flags, cwd=tmp_path, env=env)
    assert_one_error(again, 2, "digits_ddpm", "--force")
