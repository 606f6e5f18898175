"""The export's folder: refused when taken, written in a hidden staging folder and published by
one rename (:mod:`~thermojax.pipeline.checkpoint.layout`), and the source's companion files."""

from __future__ import annotations

import glob
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from thermojax.errors import UserInputError, os_errors_as_user_input
from thermojax.files import TEMPORARY_SUFFIX, atomic_folder
from thermojax.models.hf.layouts import INDEX_FILE
from thermojax.pipeline.checkpoint.layout import COMPANION_PATTERNS, HF_CONFIG, QUANTIZATION_FILE

__all__ = ["check_target", "companion_files", "stage_and_publish"]

_T = TypeVar("_T")


def check_target(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserInputError(f"{out_dir}: exists and is not an empty folder; choose a new one")


def stage_and_publish(out_dir: Path, write: Callable[[Path], _T]) -> _T:
    """``write(staging_folder)``, then the folder renamed to ``out_dir``
    (:func:`thermojax.files.atomic_folder`); removed on failure. Returns what ``write`` returns.

    A staging folder of this export that a killed run left (``.NAME.*.tmp`` beside ``out_dir``)
    is removed first; a full disk or a folder that takes no files is one line
    (:class:`~thermojax.errors.UserInputError`) naming the export."""
    for left in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*{TEMPORARY_SUFFIX}"):
        shutil.rmtree(left, ignore_errors=True)
    try:
        with (
            os_errors_as_user_input(f"the quantized checkpoint {str(out_dir)!r} (export.path)"),
            atomic_folder(out_dir) as staging,
        ):
            return write(staging)
    except FileExistsError as err:
        raise UserInputError(str(err)) from err


def companion_files(source: Path) -> list[str]:
    """The source's companion files (:data:`COMPANION_PATTERNS`), sorted."""
    skip = {HF_CONFIG, INDEX_FILE, QUANTIZATION_FILE}
    found = {
        path.name
        for pattern in COMPANION_PATTERNS
        for path in source.glob(pattern)
        if path.is_file() and not path.name.startswith(".") and path.name not in skip
    }
    return sorted(found)
