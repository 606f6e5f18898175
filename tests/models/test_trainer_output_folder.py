"""Both training commands check their output folder before any training step: a folder that is
not empty, or one that cannot take new files, ends in one ``error:`` line and exit 2, and
nothing is trained or written (issue 23)."""

from __future__ import annotations

import pytest

from thermojax.models.digits import train as digits_train
from thermojax.models.dream import train as bytes_train

TRAINERS = {"train_digits": digits_train, "train_bytes_lm": bytes_train}


def occupied(tmp_path):
    folder = tmp_path / "occupied"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    return folder, "not empty"


def under_a_file(tmp_path):
    """A folder whose parent is a file: no user can create it, root included (a permission
    bit would not stop root)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    return blocker / "model", "cannot take new files"


@pytest.mark.parametrize("trainer", list(TRAINERS))
@pytest.mark.parametrize("folder", [occupied, under_a_file], ids=["not-empty", "unwritable"])
def test_the_output_folder_is_checked_before_training(
    trainer, folder, tmp_path, monkeypatch, capsys
):
    module = TRAINERS[trainer]

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(module, "train", no_training)  # what main() calls after its checks
    out, message = folder(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--out", str(out), "--steps", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert "--out" in err or str(out) in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
