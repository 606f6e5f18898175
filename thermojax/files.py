"""Where thermojax keeps its caches, the names of the files it publishes, and the one way it
publishes a file (atomically).

Every file thermojax writes for someone else to read (reports, samples, checkpoints, cache
entries, sweep records) goes through :func:`atomic_file`: written under a temporary name in the
destination folder, flushed to disk (``fsync``), given the permissions a plain ``open`` would
give, then renamed into place. A reader sees the old file or the whole new one, never a part; a
failure or a kill mid-write leaves at most a ``.NAME.*.tmp`` file that no reader takes for the real
one (and that a sweep's resume deletes, :data:`TEMPORARY_GLOB`).

The file names below are the one definition that the writers (the baseline command), the readers
(the sweep comparison) and the Ray launcher's resume and failure records share.

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write_text(folder / "note.txt", "hello\\n").read_text()
    'hello\\n'
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "COMPARISON_HTML",
    "FAILURE_JSON",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "PHASES_CSV",
    "PHASES_JSON",
    "PHASE_RUNS_DIR",
    "REPORT_HTML",
    "REPORT_JSON",
    "RUN_LOG",
    "SAMPLES_NPZ",
    "SWEEP_SUMMARY_CSV",
    "SWEEP_SUMMARY_JSON",
    "TEMPORARY_GLOB",
    "TEMPORARY_SUFFIX",
    "UnreadableJSON",
    "atomic_file",
    "atomic_folder",
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_dir",
    "check_writable_folder",
    "publish_staged",
    "read_json_file",
    "remove_temporaries",
    "staged_path",
]

# ---------------------------------------------------------------- the files of a run and a sweep

REPORT_JSON = "baseline_metrics.json"
"""A run's ``Result`` as JSON; a sweep's resume takes a parseable one as "this job finished"."""
REPORT_HTML = "baseline_metrics.html"
"""A run's self-contained HTML report."""
RUN_LOG = "baseline_metrics.log"
"""A run's full log."""
SAMPLES_NPZ = "samples.npz"
"""A run's fp32 and quantized samples."""
PHASES_JSON = "phases.json"
"""The phase table of ``experiment=phases``."""
PHASES_CSV = "phases.csv"
"""The phase table as CSV."""
PHASE_RUNS_DIR = "phases"
"""The folder of the phase experiment's per-run records."""
FAILURE_JSON = "failure.json"
"""Where the Ray launcher records a failed job's error, in the job's folder."""
SWEEP_SUMMARY_CSV = "sweep_summary.csv"
"""The sweep comparison's table (``python -m thermojax.compare``)."""
SWEEP_SUMMARY_JSON = "sweep_summary.json"
"""The sweep comparison's table, failures and correlations as JSON."""
COMPARISON_HTML = "comparison.html"
"""The sweep comparison page."""

TEMPORARY_SUFFIX = ".tmp"
"""How the name of every temporary (an unfinished atomic write, a staged file) ends."""
TEMPORARY_GLOB = f".*{TEMPORARY_SUFFIX}"
"""Matches every temporary this module names in a folder (hidden, ``.tmp`` at the end)."""


def cache_dir() -> Path:
    """The project cache folder: ``$THERMOJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/thermojax``.

    Not created here; callers create the subfolder they write into.
    """
    explicit = os.environ.get("THERMOJAX_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "thermojax"


# ---------------------------------------------------------------- atomic publication


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, suffix: str = "") -> Iterator[Path]:
    """Publish ``path`` atomically: yields a temporary path to write (by any means) instead.

    On a clean exit the temporary file is fsynced and renamed to ``path``; on an exception it is
    removed and ``path`` is left as it was. The parent folder is created if needed. The temporary
    is named ``.NAME.<random>.tmp`` in the destination folder, plus ``suffix`` for writers that
    insist on a file-name ending (``numpy.savez`` appends ``.npz`` to a path without it).

    Example:
        >>> import numpy as np, tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "arrays.npz"
        >>> with atomic_file(target) as tmp:
        ...     with open(tmp, "wb") as handle:
        ...         np.savez(handle, x=np.zeros(3))
        >>> sorted(np.load(target).files)
        ['x']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX + suffix
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Publish the folder ``path`` atomically: yields a temporary sibling folder to fill.

    On a clean exit the folder is fsynced and renamed to ``path``, so a reader (or a killed
    writer) sees no folder, the old one, or the whole new one, never one half written; on an
    exception it is removed. The temporary is ``.NAME.<random>.tmp`` (:data:`TEMPORARY_GLOB`).

    Args:
        path: the folder to create.
        replace: an existing ``path`` is replaced (renamed aside, then deleted once the new
            one is in place); without it only a missing or empty ``path`` is filled.

    Raises:
        FileExistsError: ``path`` exists, is not empty and ``replace`` is false (checked
            again at the rename, which never overwrites such a folder).
    """
    path = Path(path)
    if not replace and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path}: exists and is not an empty folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    )
    old = None
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700
        yield staging
        _fsync_dir(staging)
        if replace and path.exists():
            old = Path(
                tempfile.mkdtemp(
                    dir=path.parent, prefix=f".{path.name}.old.", suffix=TEMPORARY_SUFFIX
                )
            )
            os.replace(path, old)  # onto the empty temporary folder
        try:
            os.replace(staging, path)  # replaces an empty folder, refuses a non-empty one
        except OSError as err:
            raise FileExistsError(
                f"{path}: appeared while writing and is not an empty folder ({err.strerror})"
            ) from err
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_file`); returns ``path``."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def staged_path(path: str | os.PathLike[str]) -> Path:
    """Where ``path`` waits, written whole, until :func:`publish_staged` renames it into place.

    ``.NAME.pending.tmp`` beside it: a temporary (:data:`TEMPORARY_GLOB`), so no reader takes
    it for ``path`` and a sweep's resume deletes one that a killed run left.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.pending{TEMPORARY_SUFFIX}")


def publish_staged(path: str | os.PathLike[str]) -> Path:
    """Rename the staged copy of ``path`` (:func:`staged_path`) into place; returns ``path``.

    For a file that must appear only after others were written (the report a sweep's resume
    trusts): stage it with an atomic write to :func:`staged_path`, write the rest, publish.
    """
    os.replace(staged_path(path), path)
    return Path(path)


def check_writable_folder(path: str | os.PathLike[str], *, what: str, create: bool = True) -> Path:
    """Prove that ``path`` can take new files before any work is done; returns it.

    With ``create`` the folder (and its parents) is made; without it (a folder someone else
    makes later, like Hydra's run folder) the check goes to the nearest existing ancestor. Either
    way a temporary file is created and removed there: the real test, which also catches a
    read-only mount, an immutable folder (``chattr +i``) and root-squashed network folders,
    where permission bits tell nothing.

    Raises:
        UserInputError: the path runs through a file, cannot be created, or takes no new file;
            the message starts with ``what`` and names the path.
    """
    from thermojax.errors import UserInputError

    if "\0" in os.fspath(path):  # every OS call on it is a ValueError, not an OSError
        raise UserInputError(f"{what} {os.fspath(path)!r} cannot take new files: a NUL character")
    path = Path(path).expanduser()
    probe_in = path
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        else:
            while not probe_in.exists() and probe_in != probe_in.parent:
                probe_in = probe_in.parent
        if not probe_in.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "is a file, not a folder", str(probe_in))
        fd, name = tempfile.mkstemp(dir=probe_in, prefix=".write-check.", suffix=TEMPORARY_SUFFIX)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        reason = (err.strerror or type(err).__name__).lower()
        culprit = Path(err.filename) if isinstance(err.filename, str) else probe_in
        if culprit.name.startswith(".write-check."):
            culprit = culprit.parent
        where = "" if culprit == path else f" ({culprit}: {reason})"
        message = f"{what} {str(path)!r} cannot take new files" + (where or f": {reason}")
        raise UserInputError(message) from None
    return path


def remove_temporaries(folder: str | os.PathLike[str], *, depth: int = 1) -> list[Path]:
    """Delete the temporaries (:data:`TEMPORARY_GLOB`, files or folders) that a killed writer
    left in ``folder`` and, with ``depth`` > 0, in its subfolders that many levels down; returns
    what was removed. For a rerun into the folder of a killed run: no writer may be using them."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") and entry.name.endswith(TEMPORARY_SUFFIX):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
        elif depth > 0 and entry.is_dir() and not entry.is_symlink():
            removed += remove_temporaries(entry, depth=depth - 1)
    return removed


# ---------------------------------------------------------------- reading a file someone handed us

MAX_JSON_BYTES = 64 << 20
"""Largest JSON document :func:`read_json_file` reads: a report of a 7B model (a few hundred
tensor rows) is under 1 MB; a device or a runaway writer is not read past this."""
MAX_JSON_DEPTH = 64
"""Deepest nesting :func:`read_json_file` accepts: thermojax's documents nest under 10 deep, and
whoever walks a parsed document recursively stays far from Python's recursion limit."""


class UnreadableJSON(ValueError):
    """A JSON file that is not a regular file, too large, not UTF-8, not strict JSON, or nested
    too deep; the message names the file and what is wrong with it (``problem``: without the
    file)."""

    def __init__(self, path: str | os.PathLike[str], problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # picklable despite the signature
        return type(self), (self.path, self.problem)


def _strict_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows a float")
    return value


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not strict JSON")


def _nesting(document: object, limit: int) -> int:
    """The nesting depth of a parsed document (up to just past ``limit``), walked without
    recursion."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
    return deepest


def read_json_file(
    path: str | os.PathLike[str],
    *,
    strict: bool = True,
    max_bytes: int = MAX_JSON_BYTES,
    max_depth: int = MAX_JSON_DEPTH,
) -> object:
    """Strict JSON from a file that may be hostile: the one way to read a report, a failure
    record or any other JSON a user hands over.

    The file is opened without blocking and checked to be a regular file before a byte is read
    (a FIFO would wait for a writer forever, ``/dev/zero`` would be read until memory runs
    out), then read up to ``max_bytes`` (a file that grows while it is read included); with
    ``strict`` (the default) NaN, Infinity and numbers that overflow a float are refused (a
    file someone else wrote, like a model's ``config.json``: ``strict=False``); nesting deeper
    than ``max_depth`` always is.

    Raises:
        UnreadableJSON: (a ``ValueError``) the problem, naming the file.
        OSError: the file cannot be opened (missing, no permission).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.json"
        >>> _ = path.write_text('{"a": [1, 2.5]}')
        >>> read_json_file(path)
        {'a': [1, 2.5]}
        >>> read_json_file("/dev/null")
        Traceback (most recent call last):
        ...
        thermojax.files.UnreadableJSON: /dev/null: not a regular file (a character device)
    """
    import json
    import stat

    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kinds = {
                stat.S_ISDIR: "a folder",
                stat.S_ISFIFO: "a FIFO",
                stat.S_ISCHR: "a character device",
                stat.S_ISBLK: "a block device",
                stat.S_ISSOCK: "a socket",
            }
            kind = next((name for test, name in kinds.items() if test(mode)), "a special file")
            raise UnreadableJSON(path, f"not a regular file ({kind})")
        chunks, size = [], 0
        while size <= max_bytes and (chunk := os.read(fd, min(1 << 20, max_bytes + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > max_bytes:
        raise UnreadableJSON(path, f"larger than {max_bytes} bytes")
    try:
        text = b"".join(chunks).decode("utf-8")
        if strict:
            document = json.loads(text, parse_constant=_reject_constant, parse_float=_strict_float)
        else:
            document = json.loads(text)
    except RecursionError:
        raise UnreadableJSON(path, f"nested deeper than {max_depth} levels") from None
    except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise UnreadableJSON(path, f"not valid JSON ({err})") from None
    if _nesting(document, max_depth) > max_depth:
        raise UnreadableJSON(path, f"nested deeper than {max_depth} levels")
    return document
