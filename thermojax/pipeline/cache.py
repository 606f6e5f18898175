"""On-disk, content-addressed cache shared by the jobs of a sweep (and by later sweeps).

A value is stored under a key that hashes exactly what it depends on (``cache_key``), so two jobs
that need the same calibration statistics share one entry whatever else differs between them.

Concurrency: several processes (Ray workers, separate sweeps) may ask for the same key at the same
time. ``get_or_compute`` serializes them with an ``fcntl.flock`` on a per-key lock file, so the
value is computed once; the winner publishes it with :func:`thermojax.files.atomic_file` (temporary
file, fsync, rename), so a reader never sees a half-written entry, and an entry that fails to load (corrupt, truncated by a crash of
an older version) is deleted and recomputed. On file systems without working ``flock`` (some NFS
set-ups) the rename alone still guarantees whole entries; at worst two workers compute the same
value.

Example:
    >>> key = cache_key(kind="calibration", model="digits", bit_width=4, seed=0)
    >>> stats = get_or_compute(
    ...     key,
    ...     lambda: calibrate(model, bit_width=4),
    ...     save=lambda value, path: value.save(path),
    ...     load=CalibrationStats.load,
    ...     suffix=".npz",
    ... )
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from thermojax.files import atomic_file
from thermojax.files import cache_dir as project_cache_dir

__all__ = [
    "CACHE_SCHEMA_VERSION",
    "arrays_fingerprint",
    "cache_key",
    "entry_path",
    "get_or_compute",
]

log = logging.getLogger(__name__)

# Bump when the meaning or on-disk format of any cached value changes: old entries are then
# simply never looked up again.
CACHE_SCHEMA_VERSION = 1

T = TypeVar("T")

_SUBDIR = "entries"


def _canonical(value: Any, name: str) -> Any:
    """A JSON-ready copy of ``value`` whose serialization does not depend on dict order or types
    that compare equal (numpy scalars, tuples, Paths)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cache key part {name!r} is not finite: {value!r}")
        # repr round-trips exactly; 1.0 and 1 stay distinct on purpose (they may mean different
        # settings to the caller).
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, f"{name}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v, f"{name}[{i}]") for i, v in enumerate(value)]
    # numpy / JAX scalars and small arrays, without importing numpy here.
    if hasattr(value, "tolist") and callable(value.tolist):
        return _canonical(value.tolist(), name)
    raise ValueError(
        f"cache key part {name!r} has type {type(value).__name__}, which has no canonical "
        "JSON form; pass plain numbers, strings, lists or dicts"
    )


def cache_key(**parts: Any) -> str:
    """A stable hash of exactly what a cached value depends on.

    Args:
        **parts: the inputs the value depends on (model identity, weight bit width, calibration
            settings, seed, ...). Order does not matter; numpy scalars hash like Python numbers.

    Returns:
        64 hex characters: SHA-256 of a canonical JSON of ``parts`` plus ``CACHE_SCHEMA_VERSION``.

    Raises:
        ValueError: if ``parts`` is empty, or a part has no canonical JSON form (or is NaN/inf).
    """
    if not parts:
        raise ValueError("cache_key needs at least one part")
    payload = {"schema": CACHE_SCHEMA_VERSION, "parts": _canonical(parts, "parts")}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def arrays_fingerprint(arrays: Mapping[str, Any]) -> str:
    """A SHA-256 of named arrays (names, dtypes, shapes and bytes), e.g. a model's weights.

    Use it as the model's part of a key: a retrained or different checkpoint changes it, a copy
    of the same checkpoint at another path does not.
    """
    import numpy as np

    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(np.asarray(arrays[name]))
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _root(cache_dir: str | os.PathLike[str] | None) -> Path:
    base = Path(cache_dir) if cache_dir is not None else project_cache_dir()
    return base / _SUBDIR


def entry_path(
    key: str, *, suffix: str = "", cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where the entry for ``key`` lives (it may not exist).

    Raises:
        ValueError: if ``key`` is not a hex digest as made by ``cache_key``.
    """
    if not key or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"cache key must be a lowercase hex digest, got {key!r}")
    return _root(cache_dir) / f"{key}{suffix}"


LOCK_NOTICE_S = 30.0
"""While a worker waits for another's entry it says so at once, then again every this many seconds."""


def _holder(lock_path: Path) -> str:
    """Who holds a key's lock, as its holder wrote it (``pid N on HOST since TIME``)."""
    try:
        text = lock_path.read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    return text or "another process"


@contextlib.contextmanager
def _locked(lock_path: Path, what: str) -> Iterator[float]:
    """Holds the key's lock; yields the seconds spent waiting for another holder to let go.

    A wait is never silent: it is logged (what it waits for and who holds it) when it starts,
    every :data:`LOCK_NOTICE_S` seconds, and when it ends.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        started = time.monotonic()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(
                "waiting for %s: %s is computing it (lock %s)", what, _holder(lock_path), lock_path
            )
            next_notice = started + LOCK_NOTICE_S
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= next_notice:
                        log.info(
                            "still waiting for %s after %.0f s: %s is computing it",
                            what,
                            time.monotonic() - started,
                            _holder(lock_path),
                        )
                        next_notice += LOCK_NOTICE_S
                    time.sleep(0.05)
            log.info("waited %.1f s for %s", time.monotonic() - started, what)
        waited = time.monotonic() - started
        try:
            # Say who holds it, for whoever waits next (the file is only ever a lock).
            handle.truncate(0)
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode())
            handle.flush()
            yield waited
        finally:
            with contextlib.suppress(OSError):
                handle.truncate(0)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _try_load(path: Path, load: Callable[[Path], T]) -> tuple[bool, T | None]:
    if not path.exists():
        return False, None
    try:
        return True, load(path)
    except Exception as err:  # noqa: BLE001 - any failure to read back means "not a usable entry"
        log.warning(
            "cache entry %s is unreadable (%s: %s); recomputing", path, type(err).__name__, err
        )
        with contextlib.suppress(OSError):  # gone already, or a cache folder read-only to us
            path.unlink()
        return False, None


def get_or_compute(
    key: str,
    compute: Callable[[], T],
    *,
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
    suffix: str = "",
    cache_dir: str | os.PathLike[str] | None = None,
    name: str = "cache entry",
    on_wait: Callable[[float], None] | None = None,
) -> T:
    """The cached value for ``key``, computing and storing it first if needed.

    Safe when several processes ask for the same key at once, also on several machines sharing
    the cache folder (a file system with working ``flock``, such as NFSv4 or Lustre): ``compute``
    runs in one of them while the others wait on the key's lock, saying so in the log, and then
    load the stored entry.

    Args:
        key: from ``cache_key``.
        compute: makes the value (called at most once per call, only on a miss).
        save: writes a value to the given path (a temporary name ending in ``suffix``; the cache
            renames it into place). It must write exactly that path.
        load: reads a value back from a path; any exception marks the entry corrupt, and it is
            recomputed.
        suffix: file-name suffix of entries (e.g. ``".npz"``, which ``numpy.savez`` insists on).
        cache_dir: the cache folder; default ``thermojax.files.cache_dir()``.
        name: what the entry is (``"calibration"``), for the log lines of a wait.
        on_wait: called with the seconds spent waiting for another process's lock (0.0 when
            the lock was free), so that a caller can keep the wait out of its own timings.

    Returns:
        The loaded value on a hit, the computed value on a miss.

    Raises:
        RuntimeError: if ``save`` did not write the path it was given.
    """
    final = entry_path(key, suffix=suffix, cache_dir=cache_dir)
    found, value = _try_load(final, load)
    if found:
        log.info("cache hit %s", final.name)
        return value  # type: ignore[return-value]

    with contextlib.ExitStack() as stack:
        try:
            waited = stack.enter_context(
                _locked(final.parent / f"{key}.lock", f"{name} {key[:16]}")
            )
        except OSError as err:  # a cache folder that takes no files costs time, never the run
            log.warning(
                "cache folder %s takes no files (%s); computing %s without the cache",
                final.parent,
                err.strerror or err,
                name,
            )
            return compute()
        if on_wait is not None:
            on_wait(waited)
        # Another process may have filled the entry while we waited for the lock.
        found, value = _try_load(final, load)
        if found:
            log.info("cache hit %s (filled by another worker)", final.name)
            return value  # type: ignore[return-value]
        log.info("cache miss %s; computing", final.name)
        value = compute()
        try:
            with atomic_file(final, suffix=suffix) as temporary:
                # Hand ``save`` a name that does not exist yet, so that a callback writing
                # elsewhere (numpy.savez adds ".npz" to a path without it) is caught, not
                # published empty.
                temporary.unlink()
                save(value, temporary)
                if not temporary.exists():
                    raise RuntimeError(
                        f"cache save callback did not write the path it was given: {temporary}"
                    )
        except OSError as err:  # a full disk: the run keeps its value, the next one recomputes
            log.warning(
                "cache entry %s not stored (%s); the run goes on", final, err.strerror or err
            )
        return value
