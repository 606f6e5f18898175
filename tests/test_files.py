"""thermojax.files.atomic_folder: a folder appears whole or not at all."""

from __future__ import annotations

import pytest

from thermojax.files import atomic_folder


def test_a_folder_appears_whole_and_a_failure_leaves_nothing(tmp_path):
    out = tmp_path / "model"
    with atomic_folder(out) as staging:
        (staging / "a.json").write_text("{}")
        assert not out.exists() and staging.name.startswith(".model.")
    assert [p.name for p in out.iterdir()] == ["a.json"]
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "other") as staging:
        (staging / "half").write_text("x")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left


def test_a_full_folder_is_refused_unless_replaced(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.json").write_text("old")
    with (
        pytest.raises(FileExistsError, match="exists and is not an empty folder"),
        atomic_folder(out),
    ):
        pass
    assert (out / "old.json").read_text() == "old"
    with atomic_folder(out, replace=True) as staging:
        (staging / "new.json").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the old one removed
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_folder(empty) as staging:
        (staging / "x").write_text("x")
    assert (empty / "x").is_file()
