"""A sweep over a real two-node Ray cluster on this machine: a head and a worker node, each a
``ray start`` of its own (own temp folder and home, one CPU), in a network namespace the test
makes, joined by a veth pair with addresses the test chose (``tools/netns_cluster.py`` says why
namespaces; needs root, skipped with the reason otherwise).

The driver (``python -m thermojax.baseline -m sweep=smoke``) runs in the head's namespace and
joins the head's address. Every process the test starts is in a session of its own, stopped by
PID and checked gone; the namespaces are deleted and checked gone. The tests that keep both
nodes up share one cluster (module-scoped); the test that kills a node has one of its own.
"""

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from netns_cluster import (  # tools/ is a folder of scripts, not a package
    GCS_PORT,
    HEAD_IP,
    WORKER_IP,
    NamespaceCluster,
    NamespacesUnavailable,
    session_pids,
    stop_session,
)

pytestmark = pytest.mark.slow

SMOKE_JOBS = 8
SMOKE_CALIBRATIONS = 2  # one per bit width


@contextlib.contextmanager
def _two_nodes():
    root = Path(tempfile.mkdtemp(prefix="tjxc", dir="/tmp"))  # Ray's socket paths are short
    made = NamespaceCluster(root, workers=1)
    try:
        try:
            made.start()
        except NamespacesUnavailable as err:
            pytest.skip(f"cannot make a network namespace here (needs root): {err}")
        yield made
    finally:
        made.stop()  # raises if a process or a namespace is left
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def own_cluster():
    """A cluster of the test's own, for a test that kills one of its nodes."""
    with _two_nodes() as made:
        yield made


@pytest.fixture(scope="module")
def cluster():
    """One cluster shared by the tests that keep both nodes up (a node start is the slow part
    of a cluster test). Each test gives its sweep a folder and a cache folder of its own; only
    the last one uses the nodes' default cache folders. Both namespaces carry the same names in
    every cluster of this process, so the test with a cluster of its own runs first, before
    this one starts. At the end every node is still up, then stopped and checked gone."""
    with _two_nodes() as made:
        yield made
        for node in ("head", "worker"):  # none of the sharing tests took a node down
            assert session_pids(made.sessions[node]), f"the {node} node is gone"
        killed = made.stop()
        assert killed and not made.pids()


def _start_sweep(cluster: NamespaceCluster, args: list[str], cache: Path | None):
    """``python -m thermojax.baseline -m ARGS`` in the head's namespace, joining the head (with
    ``cache`` as the driver's THERMOJAX_CACHE_DIR, or none: each node's own default)."""
    env = cluster.env("driver")
    if cache is not None:
        env["THERMOJAX_CACHE_DIR"] = str(cache)
    command = [sys.executable, "-m", "thermojax.baseline", "-m", *args]
    return cluster.start_driver([*command, f"hydra.launcher.address={cluster.address}"], env)


def _finish(proc) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=600)
    finally:
        # The driver's session ends with it: nothing of it may outlive the sweep.
        leaked = stop_session(proc.pid)
    assert not leaked, f"processes outlived the driver: {leaked}"
    return proc.returncode, err


def _reports(sweep_dir: Path) -> dict[str, dict]:
    return {
        path.parent.name: json.loads(path.read_text())
        for path in sweep_dir.glob("*/baseline_metrics.json")
    }


def _running_a_job(sid: int) -> bool:
    for pid in session_pids(sid):
        with contextlib.suppress(psutil.Error):
            if " ".join(psutil.Process(pid).cmdline()).startswith("ray::run_job_in_worker"):
                return True
    return False


def _report_mtime(sweep_dir: Path, name: str) -> int:
    return (sweep_dir / name / "baseline_metrics.json").stat().st_mtime_ns


# First in the module: its cluster is gone before the shared one starts (the same namespace
# names), and a node it kills takes no other test's cluster down.
def test_worker_node_killed_mid_sweep_costs_only_its_jobs(own_cluster, tmp_path):
    cluster = own_cluster
    cache = cluster.root / "cache"
    sweep_dir = tmp_path / "sweep"
    proc = _start_sweep(
        cluster, ["sweep=smoke", "wandb.mode=disabled", f"hydra.sweep.dir={sweep_dir}"], cache
    )
    # Kill the worker node (its raylet, object store, agents and the job it runs) while it runs
    # a job (Ray titles a worker process after the task it executes), after a report of its own
    # landed, with jobs left for the head: besides the job the worker runs, at least one more
    # (the worker's job may land its report between this look and the kill).
    deadline = time.monotonic() + 300

    def ready() -> bool:
        reports = _reports(sweep_dir)
        return (
            len(reports) <= SMOKE_JOBS - 2
            and any(r["environment"]["ray_node_ip"] == WORKER_IP for r in reports.values())
            and _running_a_job(cluster.sessions["worker"])
        )

    while not ready():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if time.monotonic() > deadline:
            pytest.fail("the worker node never ran a second job")
        time.sleep(0.1)
    # What had landed when the kill was sent (the head goes on running jobs while the worker's
    # processes die, so a look after the kill may find the sweep finished).
    before = _reports(sweep_dir)
    mtimes = {name: _report_mtime(sweep_dir, name) for name in before}
    killed = stop_session(cluster.sessions["worker"])
    assert killed
    assert len(before) < SMOKE_JOBS

    code, err = _finish(proc)
    assert code == 0, err[-3000:]
    runs = _reports(sweep_dir)
    assert len(runs) == SMOKE_JOBS
    assert not list(sweep_dir.glob("*/failure.json"))

    def node(name: str, reports: dict[str, dict]) -> str:
        return reports[name]["environment"]["ray_node_ip"]

    rewritten = {name for name in runs if _report_mtime(sweep_dir, name) != mtimes.get(name)}
    # The head's jobs finished before the kill stand, not re-run.
    assert not {name for name in before if node(name, before) == HEAD_IP} & rewritten
    # The worker node (one CPU) had at most one job in flight at the look: its report may have
    # landed already (the worker writes it before its task returns) and be copied back or
    # re-run on the head after, or it may have finished on the worker after the look, its
    # report copied back. Every other worker job finished before the look stands; every job
    # not there at the look ran on the head.
    in_flight = (set(before) & rewritten) | {n for n in rewritten if node(n, runs) == WORKER_IP}
    assert len(in_flight) <= 1, in_flight
    assert set(runs) - set(before) <= rewritten
    # The job the worker was running was lost with it, and retried on the head: no failure
    # record, every report there.


def test_smoke_sweep_spreads_over_two_nodes_sharing_one_cache_folder(cluster, tmp_path):
    # The nodes share nothing but the folder the driver names: the launcher hands its
    # THERMOJAX_CACHE_DIR to every job, whatever node it lands on.
    cache = cluster.root / "cache-shared-folder"  # a cold one: the cluster is shared
    sweep_dir = tmp_path / "sweep"
    proc = _start_sweep(
        cluster, ["sweep=smoke", "wandb.mode=disabled", f"hydra.sweep.dir={sweep_dir}"], cache
    )
    code, err = _finish(proc)
    assert code == 0, err[-3000:]
    assert f"joined the Ray cluster at {cluster.address}" in err

    runs = _reports(sweep_dir)
    assert len(runs) == SMOKE_JOBS
    nodes = {
        (r["environment"]["ray_node_ip"], r["environment"]["ray_node_id"]) for r in runs.values()
    }
    # Each report names its node; the jobs ran on both, each node under one id.
    assert {ip for ip, _ in nodes} == {HEAD_IP, WORKER_IP}, nodes
    assert len(nodes) == 2
    # The worker node's outputs were copied back whole into the driver's sweep folder.
    for name, run in runs.items():
        assert (sweep_dir / name / "samples.npz").is_file()
        assert (sweep_dir / name / "baseline_metrics.html").is_file()
        assert run["environment"]["hostname"]

    # One cache for the cluster: each calibration computed once, by whichever node came first
    # (with a cache per node, the worker node's first job of a bit width would compute its own).
    cache_states = [r["cache"] for r in runs.values()]
    assert sum(c["calibration"] == "miss" for c in cache_states) == SMOKE_CALIBRATIONS
    assert sum(c["fp32_samples"] == "miss" for c in cache_states) == 1
    entries = sorted(p.name for p in (cache / "entries").glob("*.npz"))
    assert len(entries) == SMOKE_CALIBRATIONS + 1 + 4, entries  # + fp32 samples, 4 qualities
    assert not list((cache / "entries").glob(".*.tmp"))
    # Neither node's own default cache was used (only the module's last test uses them).
    for node in ("head", "worker"):
        assert not (cluster.root / f"home-{node}" / ".cache" / "thermojax").exists()

    # Every address the cluster has is one the test made; nothing of it is on the host network.
    assert cluster.addresses(cluster.head_ns) <= {"127.0.0.1", "::1", HEAD_IP}
    assert cluster.addresses(cluster.worker_ns) <= {"127.0.0.1", "::1", WORKER_IP}
    for namespace, own in ((cluster.head_ns, HEAD_IP), (cluster.worker_ns, WORKER_IP)):
        listening = _listening(namespace)
        assert listening, namespace
        assert {ip for ip, _ in listening} <= {"*", "0.0.0.0", "127.0.0.1", own}, listening
    # The head's GCS is among them, on the head's address (or all of its two interfaces).
    assert {(ip, GCS_PORT) for ip in ("*", "0.0.0.0", HEAD_IP)} & _listening(cluster.head_ns)
    ray_pids = set(cluster.pids())
    assert ray_pids
    on_host = [
        conn
        for conn in psutil.net_connections(kind="inet")
        if conn.pid in ray_pids and conn.status == psutil.CONN_LISTEN
    ]
    assert not on_host, on_host


def test_driver_killed_mid_sweep_stops_its_jobs_on_every_node_and_resumes(cluster, tmp_path):
    cache = cluster.root / "cache-driver-killed"  # a cold one: the cluster is shared
    sweep_dir = tmp_path / "sweep"
    args = ["sweep=smoke", "wandb.mode=disabled", f"hydra.sweep.dir={sweep_dir}"]
    proc = _start_sweep(cluster, args, cache)
    nodes = (cluster.sessions["head"], cluster.sessions["worker"])
    deadline = time.monotonic() + 300
    while not all(_running_a_job(sid) for sid in nodes):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if time.monotonic() > deadline:
            pytest.fail("the two nodes never ran a job at the same time")
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    # No node goes on computing for a driver that is gone; the cluster itself stays up.
    deadline = time.monotonic() + 20
    while any(_running_a_job(sid) for sid in nodes):
        if time.monotonic() > deadline:
            pytest.fail("a job outlived its killed driver")
        time.sleep(0.1)
    assert not stop_session(proc.pid)
    done = len(_reports(sweep_dir))
    assert done < SMOKE_JOBS

    code, err = _finish(_start_sweep(cluster, args, cache))
    assert code == 0, err[-3000:]
    assert f"({SMOKE_JOBS - done} to run, {done} already complete)" in err
    assert len(_reports(sweep_dir)) == SMOKE_JOBS


def _entries(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.glob("entries/*.npz")}


def test_smoke_sweep_over_two_nodes_with_a_cache_folder_each_computes_each_entry_once(
    cluster, tmp_path
):
    # No shared storage: no THERMOJAX_CACHE_DIR anywhere, so the driver and each node use their
    # own default folder (~/.cache/thermojax, each under a home of its own). The head store on
    # the driver's node hands the entries between them (cache_sharing=auto on a cluster).
    sweep_dir = tmp_path / "sweep"
    proc = _start_sweep(
        cluster, ["sweep=smoke", "wandb.mode=disabled", f"hydra.sweep.dir={sweep_dir}"], None
    )
    code, err = _finish(proc)
    assert code == 0, err[-3000:]
    assert f"stage cache shared through the head store on node {HEAD_IP}" in err

    runs = _reports(sweep_dir)
    assert len(runs) == SMOKE_JOBS
    assert {r["environment"]["ray_node_ip"] for r in runs.values()} == {HEAD_IP, WORKER_IP}
    # Computed once in the cluster, like one shared folder (a cache per node would compute the
    # fp32 samples on both nodes, and a calibration on each node that ran its bit width).
    cache_states = [r["cache"] for r in runs.values()]
    assert sum(c["calibration"] == "miss" for c in cache_states) == SMOKE_CALIBRATIONS
    assert sum(c["fp32_samples"] == "miss" for c in cache_states) == 1
    assert sum(c["quality"] == "miss" for c in cache_states) == 4  # threshold variants share
    assert "head store: " in err and ", 7 received, 7 computed under a lease (0 taken" in err
    # Each job that found an entry the other node computed says where it came from.
    logs = {name: (sweep_dir / name / "baseline_metrics.log").read_text() for name in runs}
    assert any(f"(from the head store on node {HEAD_IP})" in text for text in logs.values())
    # Waiting for the store never lends a job's CPU to another job: each 1-CPU node ran one job
    # at a time (a Ray task blocked on its main thread would let the next one start beside it).
    for node in (HEAD_IP, WORKER_IP):
        spans = sorted(
            _log_span(logs[name])
            for name, r in runs.items()
            if r["environment"]["ray_node_ip"] == node
        )
        overlapping = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
        assert not overlapping, (node, overlapping)

    # The driver's folder holds every entry; each node's holds what its jobs used, the same
    # bytes; nothing half-written, and the driver's marker is gone with the sweep.
    homes = {name: cluster.root / f"home-{name}" / ".cache" / "thermojax" for name in
             ("driver", "head", "worker")}  # fmt: skip
    on_driver = _entries(homes["driver"])
    assert len(on_driver) == SMOKE_CALIBRATIONS + 1 + 4, sorted(on_driver)
    on_nodes = {}
    for node in ("head", "worker"):
        here = _entries(homes[node])
        assert here, node
        assert all(on_driver[name] == data for name, data in here.items()), node
        on_nodes.update(here)
    assert on_nodes.keys() == on_driver.keys()
    for home in homes.values():
        assert not [p.name for p in (home / "entries").iterdir() if p.name.startswith(".")]

    # The store was an actor of the sweep: it ended with the driver; the cluster stays up (the
    # shared cluster's teardown checks both nodes are still up, then stops them, checked gone).
    deadline = time.monotonic() + 30
    while any("HeadStore" in title for title in _titles(cluster)):
        if time.monotonic() > deadline:
            pytest.fail("the head store outlived its sweep")
        time.sleep(0.2)
    assert all(session_pids(cluster.sessions[node]) for node in ("head", "worker"))


def _log_span(text: str) -> tuple[datetime, datetime]:
    """The first and last time stamp of a run log."""
    stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") for line in text.splitlines()
              if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line)]  # fmt: skip
    return stamps[0], stamps[-1]


def _titles(cluster: NamespaceCluster) -> list[str]:
    titles = []
    for pid in cluster.pids():
        with contextlib.suppress(psutil.Error):
            titles.append(" ".join(psutil.Process(pid).cmdline()))
    return titles


def _listening(namespace: str) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket in ``namespace``."""
    shown = subprocess.run(
        ["ip", "netns", "exec", namespace, "ss", "-Htln"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    found = set()
    for line in shown.stdout.splitlines():
        address, _, port = line.split()[3].rpartition(":")
        found.add((address.strip("[]").removeprefix("::ffff:"), int(port)))
    return found
