"""A real Ray cluster of one or two nodes on this machine, each node in a network namespace of its
own (for ``tests/cli/test_cluster.py`` and ``benchmarks/bench_cluster.py``; needs root).

Why namespaces: Ray 2.60 refuses a second node on 127.0.0.1 unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``, and then rewrites every node's address to the machine's
routable one and binds all interfaces. Inside a namespace the only interfaces are its loopback
and its end of a veth pair with an address chosen here, so every address Ray binds or dials is
one this module made, and nothing of the cluster is on the machine's own network.

Each node is a ``ray start`` (own temp folder and home, ``--num-cpus 1`` by default) in a session
of its own; :meth:`NamespaceCluster.stop` kills every process of those sessions by PID (never
``ray stop``, which would stop every Ray on the machine) and deletes the namespaces.

Example:
    >>> with NamespaceCluster(Path("/tmp/tjxc"), workers=1) as cluster:  # doctest: +SKIP
    ...     proc = cluster.run_driver([sys.executable, "-m", "thermojax.baseline", "-m", ...])
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

HEAD_IP, WORKER_IP = "10.231.7.1", "10.231.7.2"
GCS_PORT = 6379  # the namespaces are private: nothing else can hold the port there
BIN = Path(sys.executable).parent


class NamespacesUnavailable(RuntimeError):
    """``ip netns add`` failed here (not root, no ``ip``, a container without the capability)."""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["ip", *args], check=False, capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError as err:
        raise NamespacesUnavailable(f"no `ip` command: {err}") from None


def session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` (one this module started), by /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry)) == sid:
                    found.append(int(entry))
    return found


def stop_session(sid: int, timeout_s: float = 15.0) -> list[int]:
    """Kill every process of session ``sid``; returns the PIDs it found (and waits them gone)."""
    found = session_pids(sid)
    for pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    deadline = time.monotonic() + timeout_s
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


class NamespaceCluster:
    """A head (and, with ``workers=1``, a worker node), each in a namespace; see the module doc.

    Args:
        root: a short folder (Ray's socket paths must stay short) for the nodes' temp folders
            and homes.
        workers: 0 or 1 worker nodes beside the head (the two namespaces and their veth pair
            are made either way, so the head's address is the same in both shapes).
        num_cpus: CPUs each node offers.
        pin_cores: run the head (and the driver) on core 0 and the worker node on core 1 only.
            Ray's ``--num-cpus`` only limits how many jobs a node runs at once; a JAX job uses
            every core it can see, so without pinning two 1-CPU nodes on one machine share the
            same cores as one.
    """

    def __init__(
        self, root: Path, *, workers: int = 1, num_cpus: int = 1, pin_cores: bool = False
    ) -> None:
        if workers not in (0, 1):
            raise ValueError(f"workers={workers}: 0 or 1 (a veth pair joins two namespaces)")
        tag = f"{os.getpid() % 100000}"
        self.root = root
        self.workers = workers
        self.num_cpus = num_cpus
        self.cores = {"head": 0, "worker": 1} if pin_cores else {}
        self.head_ns, self.worker_ns = f"tjx{tag}h", f"tjx{tag}w"
        self.address = f"{HEAD_IP}:{GCS_PORT}"
        self.token = secrets.token_hex(32)
        self.sessions: dict[str, int] = {}
        self._drivers: list[subprocess.Popen[str]] = []
        self._made: list[str] = []

    @property
    def namespaces(self) -> list[str]:
        return [self.head_ns, self.worker_ns]

    def _make_network(self) -> None:
        for namespace in self.namespaces:
            made = _ip("netns", "add", namespace)
            if made.returncode != 0:
                raise NamespacesUnavailable(made.stderr.strip() or f"exit {made.returncode}")
            self._made.append(namespace)
        # IPv4 only, set before any interface is up: no link-local IPv6 address nobody chose.
        steps: list[tuple[str, ...]] = [
            ("netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{scope}.disable_ipv6=1")
            for ns in self.namespaces
            for scope in ("all", "default", "lo")
        ]
        steps += [("-n", ns, "link", "set", "lo", "up") for ns in self.namespaces]
        # One veth pair also for a one-node cluster (its far end unused): the head's address is
        # then on an ordinary interface, not loopback, in both shapes of cluster.
        head_if, worker_if = f"{self.head_ns}v", f"{self.worker_ns}v"
        steps += [
            ("link", "add", head_if, "type", "veth", "peer", "name", worker_if),
            ("link", "set", head_if, "netns", self.head_ns),
            ("link", "set", worker_if, "netns", self.worker_ns),
            ("-n", self.head_ns, "addr", "add", f"{HEAD_IP}/30", "dev", head_if),
            ("-n", self.worker_ns, "addr", "add", f"{WORKER_IP}/30", "dev", worker_if),
            ("-n", self.head_ns, "link", "set", head_if, "up"),
            ("-n", self.worker_ns, "link", "set", worker_if, "up"),
        ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                raise RuntimeError(f"ip {' '.join(step)}: {done.stderr.strip()}")

    def env(self, name: str) -> dict[str, str]:
        """The environment of a node (or of a driver, ``name``): its own home, the token."""
        home = self.root / f"home-{name}"
        home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for variable in ("RAY_ADDRESS", "THERMOJAX_CACHE_DIR", "WANDB_MODE", "WANDB_DIR"):
            env.pop(variable, None)
        env.update(
            HOME=str(home),  # no ~/.ray/auth_token in the real home; a default cache of its own
            PATH=f"{BIN}{os.pathsep}{env['PATH']}",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            WANDB_SILENT="true",
        )
        return env

    def _start_node(self, name: str, namespace: str, ip: str, *, head: bool) -> None:
        role = ["--head", f"--port={GCS_PORT}", "--include-dashboard=false"]
        command = [
            "ip", "netns", "exec", namespace, *self._pinned(name), str(BIN / "ray"), "start",
            *(role if head else [f"--address={self.address}"]),
            f"--node-ip-address={ip}", f"--num-cpus={self.num_cpus}",
            "--object-store-memory=80000000", f"--temp-dir={self.root / name}",
            "--disable-usage-stats",
        ]  # fmt: skip
        starter = subprocess.Popen(
            command,
            env=self.env(name),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.sessions[name] = starter.pid
        out, _ = starter.communicate(timeout=120)
        if starter.returncode != 0:
            raise RuntimeError(f"ray start of the {name} node failed:\n{out}")

    def _pinned(self, name: str) -> list[str]:
        """The command prefix that keeps a process (and its children) on the node's core."""
        return ["taskset", "-c", str(self.cores[name])] if name in self.cores else []

    def start(self) -> Self:
        """Make the namespaces and start the nodes (the head first)."""
        self._make_network()
        self._start_node("head", self.head_ns, HEAD_IP, head=True)
        if self.workers:
            self._start_node("worker", self.worker_ns, WORKER_IP, head=False)
        return self

    def start_driver(self, command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        """``command`` in the head's namespace, in a session of its own (stopped with the rest)."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.head_ns, *self._pinned("head"), *command],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.sessions[f"driver-{proc.pid}"] = proc.pid
        self._drivers.append(proc)
        return proc

    def addresses(self, namespace: str) -> set[str]:
        """Every address on the interfaces of ``namespace``."""
        shown = _ip("-n", namespace, "-o", "addr", "show")
        return {line.split()[3].split("/")[0] for line in shown.stdout.splitlines()}

    def pids(self) -> list[int]:
        """Every process of every session started here."""
        return [pid for sid in self.sessions.values() for pid in session_pids(sid)]

    def stop(self) -> list[int]:
        """Kill every process started here, by session, and delete the namespaces; returns the
        PIDs it had to kill. Raises if a process survives or a namespace stays."""
        killed = [pid for sid in self.sessions.values() for pid in stop_session(sid)]
        for driver in self._drivers:  # a killed driver nobody waited for stays a zombie
            with contextlib.suppress(subprocess.TimeoutExpired):
                driver.wait(timeout=15)
        survivors = self.pids()
        for namespace in self._made:
            _ip("netns", "del", namespace)
        listed = _ip("netns", "list").stdout.split()
        left = [namespace for namespace in self._made if namespace in listed]
        if survivors or left:
            raise RuntimeError(f"left behind: processes {survivors}, namespaces {left}")
        return killed

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
