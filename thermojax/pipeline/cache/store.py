"""On-disk, content-addressed cache shared by the jobs of a sweep (and by later sweeps).

A value is stored under a key that hashes exactly what it depends on (``cache_key``), so two jobs
that need the same calibration statistics share one entry whatever else differs between them.

Concurrency: several processes (Ray workers, separate sweeps) may ask for the same key at the same
time. ``get_or_compute`` serializes them with an ``fcntl.flock`` on a per-key lock file, so the
value is computed once; the winner publishes it with :func:`thermojax.files.atomic_file` (temporary
file, fsync, rename), so a reader never sees a half-written entry, and an entry that fails to load
(corrupt, truncated by a crash of an older version) is deleted and recomputed. On file systems
without working ``flock`` (some NFS set-ups) the rename alone still guarantees whole entries; at
worst two workers compute the same value.

Workers that do not share a folder (the nodes of a cluster without shared storage) can still
compute each entry once between them through a **peer store** (:class:`PeerStore`, installed with
:func:`set_peer_store`; the Ray launcher installs one kept by the sweep's driver node). On a local
miss the cache asks it: an entry another worker computed is written into the local folder and
loaded; otherwise the store grants this worker a lease on the entry, it computes and publishes
the entry, and the others wait for it, saying so in the log as they do for a lock. This module
knows nothing of how a store reaches its peers.

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
import dataclasses
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
from typing import Any, Protocol, TypeVar

from thermojax.files import atomic_file
from thermojax.files import cache_dir as project_cache_dir

__all__ = [
    "CACHE_SCHEMA_VERSION",
    "PeerClaim",
    "PeerStore",
    "PeerStoreError",
    "arrays_fingerprint",
    "cache_key",
    "entries_dir",
    "entry_path",
    "get_or_compute",
    "set_peer_store",
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


def entries_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds the entries of the cache folder ``cache_dir`` (default
    ``thermojax.files.cache_dir()``)."""
    return _root(cache_dir)


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


PEER_POLL_S = 0.25
"""How often a worker waiting for another's entry asks the peer store again."""


class PeerStoreError(RuntimeError):
    """The peer store cannot be reached; the cache then goes on with its own folder alone."""


@dataclasses.dataclass(frozen=True)
class PeerClaim:
    """A peer store's answer for an entry missing from this worker's folder.

    One of three: ``data`` is set (another worker computed the entry: its bytes), ``lease`` is
    set (nobody has it: this worker computes it, then publishes or releases it), or neither
    (``holder`` is computing it now: ask again later).

    Attributes:
        data: the entry's bytes, as its file holds them.
        lease: this worker's lease on computing the entry (the store's token).
        holder: who holds the lease now (``pid N on HOST since TIME``), while it is held.
        taken_over_from: with a lease, the holder whose lease lapsed (it stopped renewing it:
            its process or node died), else empty.
    """

    data: bytes | None = None
    lease: str | None = None
    holder: str = ""
    taken_over_from: str = ""


class PeerStore(Protocol):
    """Entries shared between workers whose cache folders differ (see the module doc).

    A store answers for one entry at a time, by the entry's local path (its name is the key
    and suffix; its folder tells a store whether it shares that folder). It raises
    :class:`PeerStoreError` when it cannot be reached.
    """

    def describe(self) -> str:
        """Where the store is, for log lines (``head store on node 10.0.0.1``)."""
        ...

    def claim(self, path: Path) -> PeerClaim:
        """The entry's bytes, a lease to compute it, or who is computing it (never blocks)."""
        ...

    def publish(self, claim: PeerClaim, path: Path) -> None:
        """Hand the entry now at ``path`` to the store, and give up ``claim``'s lease."""
        ...

    def release(self, claim: PeerClaim) -> None:
        """Give up ``claim``'s lease without an entry (its computation failed)."""
        ...


_peer_store: PeerStore | None = None


def set_peer_store(store: PeerStore | None) -> PeerStore | None:
    """Make ``get_or_compute`` consult ``store`` on a local miss (``None``: the folder alone);
    returns the store it replaces."""
    global _peer_store
    previous, _peer_store = _peer_store, store
    return previous


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
    try:
        if not path.exists():
            return False, None
    except OSError:  # a name too long for the file system: no entry (the lock then says why)
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


def _claim_from_peers(store: PeerStore, final: Path, what: str) -> tuple[PeerClaim | None, float]:
    """Ask ``store`` until it hands over the entry or a lease; with the seconds waited. ``None``
    when the store cannot be reached (the worker then computes the entry itself)."""
    started = time.monotonic()
    next_notice: float | None = None
    while True:
        try:
            claim = store.claim(final)
        except PeerStoreError as err:
            log.warning("%s: %s; computing %s here", store.describe(), err, what)
            return None, time.monotonic() - started
        if claim.data is not None or claim.lease is not None:
            waited = time.monotonic() - started
            if next_notice is not None:
                log.info("waited %.1f s for %s", waited, what)
            if claim.taken_over_from:
                log.warning(
                    "%s stopped renewing its lease on %s (its process or node is gone); "
                    "computing it here",
                    claim.taken_over_from,
                    what,
                )
            return claim, waited
        now = time.monotonic()
        if next_notice is None:
            log.info(
                "waiting for %s: %s is computing it (%s)", what, claim.holder, store.describe()
            )
            next_notice = started + LOCK_NOTICE_S
        elif now >= next_notice:
            log.info(
                "still waiting for %s after %.0f s: %s is computing it",
                what,
                now - started,
                claim.holder,
            )
            next_notice += LOCK_NOTICE_S
        time.sleep(PEER_POLL_S)


def _adopt(data: bytes, final: Path, load: Callable[[Path], T]) -> tuple[bool, T | None]:
    """Write a peer's entry into the local folder and load it (a bad one is deleted)."""
    try:
        with atomic_file(final) as temporary:
            temporary.write_bytes(data)
    except OSError as err:
        log.warning("cache entry %s not stored (%s)", final, err.strerror or err)
        return False, None
    return _try_load(final, load)


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
    load the stored entry. With a peer store installed (:func:`set_peer_store`), the same holds
    for workers with folders of their own: a local miss asks the store, under the key's lock.

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
        on_wait: called with the seconds spent waiting for another process's lock or peer's
            lease (0.0 when both were free), so that a caller can keep the wait out of its own
            timings.

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
        # Another process may have filled the entry while we waited for the lock.
        found, value = _try_load(final, load)
        if found:
            if on_wait is not None:
                on_wait(waited)
            log.info("cache hit %s (filled by another worker)", final.name)
            return value  # type: ignore[return-value]
        store = _peer_store
        claim = None
        if store is not None:
            claim, peer_waited = _claim_from_peers(store, final, f"{name} {key[:16]}")
            waited += peer_waited
            if claim is not None and claim.data is not None:
                found, value = _adopt(claim.data, final, load)
                if found:
                    if on_wait is not None:
                        on_wait(waited)
                    log.info("cache hit %s (from the %s)", final.name, store.describe())
                    return value  # type: ignore[return-value]
                # The peer's bytes do not load here: compute, and publish over them.
        if on_wait is not None:
            on_wait(waited)
        log.info("cache miss %s; computing", final.name)
        try:
            value = compute()
        except BaseException:
            if store is not None and claim is not None:
                with contextlib.suppress(PeerStoreError):
                    store.release(claim)
            raise
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
        except BaseException:
            if store is not None and claim is not None:
                with contextlib.suppress(PeerStoreError):
                    store.release(claim)
            raise
        if store is not None and claim is not None:
            try:
                store.publish(claim, final)
            except PeerStoreError as err:
                log.warning("%s: %s; %s not handed over", store.describe(), err, final.name)
        return value
