"""One stage cache for a sweep whose nodes have folders of their own: the head store.

A Ray actor, one per sweep, placed on the driver's node, keeps the entries in the driver's cache
folder and hands out one lease per entry (:class:`HeadStore`). Each job's worker installs a
:class:`HeadStoreClient` as the stage cache's peer store (:func:`thermojax.pipeline.cache.store.
set_peer_store`): on a local miss it asks the actor, and either copies the entry into its own
folder or, holding the lease, computes it and sends it to the actor. So each entry is computed
once in the cluster, whatever storage the nodes have.

A lease lives as long as its holder renews it (every :data:`RENEW_EVERY_S`, from a thread of
the holder's worker): a worker or node that dies mid-computation stops renewing, and after
:data:`LEASE_TTL_S` the next worker to ask takes the lease over. Should the actor itself be
lost, every worker goes on with its own folder (``PeerStoreError``).

A worker whose folder is the actor's (the driver's node, or shared storage) finds the marker the
driver left there (:func:`place_marker`) and sends no bytes: the actor already sees its files.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import re
import secrets
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thermojax.pipeline.cache.store import PeerClaim

log = logging.getLogger(__name__)

LEASE_TTL_S = 15.0
"""A lease not renewed for this long is given to the next worker that asks."""
RENEW_EVERY_S = 2.0
"""How often the holder of a lease renews it."""

_ENTRY_NAME = re.compile(r"[0-9a-f]{16,64}(\.[a-z0-9]{1,8})?")
MARKER_PREFIX = ".head-store-"


@dataclasses.dataclass
class _Lease:
    token: str
    holder: str
    renewed: float


class HeadStore:
    """The actor (``ray.remote`` is applied by :func:`start_head_store`): entries and leases.

    Args:
        folder: the driver's entries folder (``thermojax.pipeline.cache.store.entries_dir()``); the
            actor reads entries from it and writes handed-over ones into it atomically.
        lease_ttl_s: see :data:`LEASE_TTL_S`.
    """

    def __init__(self, folder: str, lease_ttl_s: float = LEASE_TTL_S) -> None:
        # Imported now, while the jobs start, not in the first publish, which every other
        # call would queue behind (thermojax loads JAX).
        from thermojax.files import atomic_file

        self._atomic_file = atomic_file
        self.folder = Path(folder)
        self.lease_ttl_s = lease_ttl_s
        self.leases: dict[str, _Lease] = {}
        self.counts = {"handed_out": 0, "received": 0, "leases": 0, "taken_over": 0}

    def _path(self, name: str) -> Path:
        if not _ENTRY_NAME.fullmatch(name):
            raise ValueError(f"not a cache entry name: {name!r}")
        return self.folder / name

    def claim(self, name: str, holder: str) -> tuple[bytes | None, str | None, str, str]:
        """``(data, lease, holder, taken_over_from)``, as :class:`PeerClaim` has them."""
        path = self._path(name)
        with contextlib.suppress(FileNotFoundError):
            data = path.read_bytes()
            self.counts["handed_out"] += 1
            return data, None, "", ""
        now = time.monotonic()
        lease = self.leases.get(name)
        if lease is not None and now - lease.renewed <= self.lease_ttl_s:
            return None, None, lease.holder, ""
        taken_over = lease.holder if lease is not None else ""
        self.counts["taken_over"] += bool(taken_over)
        self.counts["leases"] += 1
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        token = secrets.token_hex(8)
        self.leases[name] = _Lease(token, f"{holder} since {stamp}", now)
        return None, token, "", taken_over

    def renew(self, name: str, token: str) -> bool:
        """Keep ``token``'s lease on ``name``; ``False`` when it is no longer that lease."""
        lease = self.leases.get(name)
        if lease is None or lease.token != token:
            return False
        lease.renewed = time.monotonic()
        return True

    def publish(self, name: str, token: str | None, data: bytes | None) -> None:
        """Store ``data`` as the entry (unless ``None``: it is in the folder already), and end
        ``token``'s lease. A lapsed lease's late entry is stored too (the same key, the same
        value)."""
        path = self._path(name)
        try:
            if data is not None:
                with self._atomic_file(path) as temporary:
                    temporary.write_bytes(data)
                self.counts["received"] += 1
        finally:  # a folder that takes no files: the next asker computes it again
            self.release(name, token)

    def release(self, name: str, token: str | None) -> None:
        """End ``token``'s lease on ``name`` (nothing when it is no longer that lease)."""
        lease = self.leases.get(name)
        if lease is not None and lease.token == token:
            del self.leases[name]

    def stats(self) -> dict[str, int]:
        """How many entries it handed out and received, leases it granted and took over."""
        return dict(self.counts)


def place_marker(folder: Path) -> Path:
    """A file the driver leaves in its entries folder for the sweep, so that a worker can tell
    that its folder is the actor's (the same name there means the same folder)."""
    from thermojax.files import atomic_write_text

    marker = folder / f"{MARKER_PREFIX}{secrets.token_hex(8)}"
    return atomic_write_text(marker, f"pid {os.getpid()} on {socket.gethostname()}\n")


def start_head_store(folder: Path, node_id: str, *, lease_ttl_s: float = LEASE_TTL_S) -> Any:
    """The sweep's :class:`HeadStore` actor on ``node_id`` (the driver's node), taking no CPU.

    It lives as long as the driver (Ray ends a job's actors with it)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor = ray.remote(
        num_cpus=0,
        max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    )(HeadStore)
    return actor.remote(str(folder), lease_ttl_s)


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


class HeadStoreClient:
    """A job's view of the head store: :class:`thermojax.pipeline.cache.store.PeerStore`.

    Args:
        actor: the sweep's :class:`HeadStore` handle.
        marker: the name of the driver's marker (:func:`place_marker`).
        where: the actor's node, for log lines.
        timeout_s: how long one call to the actor may take before the store counts as lost.
        renew_every_s: see :data:`RENEW_EVERY_S` (well under the actor's lease time).
    """

    def __init__(
        self,
        actor: Any,
        marker: str,
        where: str,
        *,
        timeout_s: float = 120.0,
        renew_every_s: float = RENEW_EVERY_S,
    ) -> None:
        self.actor = actor
        self.marker = marker
        self.where = where
        self.timeout_s = timeout_s
        self.renew_every_s = renew_every_s
        self.holder = f"pid {os.getpid()} on {socket.gethostname()} ({_node_ip()})"
        self._renewing: dict[str, tuple[str, threading.Event]] = {}
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="head store")

    def describe(self) -> str:
        return f"head store on node {self.where}"

    def _call(self, method: str, *args: Any) -> Any:
        """``actor.method(*args)``, waited for on the client's own thread: a Ray task that waits
        on its main thread lends its CPU to the next task meanwhile, and a node would then run
        two jobs on one CPU until the wait ends."""
        import ray
        from ray.exceptions import GetTimeoutError, RayError

        from thermojax.pipeline.cache.store import PeerStoreError

        def call() -> Any:
            return ray.get(getattr(self.actor, method).remote(*args), timeout=self.timeout_s)

        try:
            return self._thread.submit(call).result(timeout=self.timeout_s + 5.0)
        except (RayError, GetTimeoutError, concurrent.futures.TimeoutError) as err:
            text = str(err).strip().splitlines()[0] if str(err).strip() else "no answer"
            raise PeerStoreError(f"{type(err).__name__}: {text}") from err

    def close(self) -> None:
        """Stop renewing every lease and end the client's thread (the job is over)."""
        for token in list(self._renewing):
            self._stop_renewing(token)
        self._thread.shutdown(wait=False)

    def claim(self, path: Path) -> PeerClaim:
        from thermojax.pipeline.cache.store import PeerClaim

        data, lease, holder, taken_over = self._call("claim", path.name, self.holder)
        if lease is not None:
            self._keep_renewing(path.name, lease)
        return PeerClaim(data=data, lease=lease, holder=holder, taken_over_from=taken_over)

    def _keep_renewing(self, name: str, token: str) -> None:
        stop = threading.Event()
        self._renewing[token] = (name, stop)

        def renew() -> None:
            while not stop.wait(self.renew_every_s):
                with contextlib.suppress(Exception):  # a lost actor: the cache hears of it
                    if not self._call("renew", name, token):
                        return

        threading.Thread(target=renew, name=f"lease {name[:16]}", daemon=True).start()

    def _stop_renewing(self, token: str | None) -> str | None:
        """Stops renewing ``token``'s lease; the entry name it was on (``None``: no lease)."""
        renewing = self._renewing.pop(token, None) if token is not None else None
        if renewing is None:
            return None
        name, stop = renewing
        stop.set()
        return name

    def publish(self, claim: PeerClaim, path: Path) -> None:
        self._stop_renewing(claim.lease)
        shares_folder = (path.parent / self.marker).exists()
        data = None if shares_folder or not path.exists() else path.read_bytes()
        self._call("publish", path.name, claim.lease, data)

    def release(self, claim: PeerClaim) -> None:
        name = self._stop_renewing(claim.lease)
        if name is not None:
            self._call("release", name, claim.lease)
