"""The stage cache's peer store, with the Ray launcher's head store on a real embedded Ray
(127.0.0.1): workers with cache folders of their own compute an entry once between them, and a
worker that dies holding the lease does not block the others.

The Ray side runs in a driver process of its own (``DRIVER``), as a sweep's does, so that this
test process keeps no Ray state or environment.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from thermojax.pipeline.cache.store import cache_key

DRIVER = r"""
import json, logging, os, sys, time
from pathlib import Path

from hydra_plugins.thermojax_ray_launcher._cluster import ray_session
from hydra_plugins.thermojax_ray_launcher._head_store import (
    HeadStoreClient, place_marker, start_head_store,
)
from hydra_plugins.thermojax_ray_launcher.ray_launcher import ThermojaxRayLauncherConf

root, key = Path(sys.argv[1]), sys.argv[2]
head = root / "head" / "entries"


def job(name, die):
    # One job's worker: its own cache folder, the head store as its peer store.
    import ray
    from thermojax.pipeline.cache.store import get_or_compute, set_peer_store

    log = root / f"{name}.log"
    logging.basicConfig(filename=log, level=logging.INFO, format="%(message)s", force=True)
    set_peer_store(HeadStoreClient(actor, marker, "127.0.0.1", renew_every_s=0.2))

    def compute():
        with open(root / "computed", "a") as record:
            record.write(f"{name}\n")
        if die:
            os._exit(1)  # a worker killed mid-computation, holding the lease
        time.sleep(1.0)
        return f"value of {key}"

    value = get_or_compute(
        key, compute, save=lambda v, p: p.write_text(v), load=lambda p: p.read_text(),
        suffix=".txt", cache_dir=root / name, name="calibration",
    )
    return value, log.read_text()


with ray_session(ThermojaxRayLauncherConf(num_cpus=3, temp_dir=str(root / "ray"))):
    import ray

    marker = place_marker(head).name
    actor = start_head_store(head, ray.get_runtime_context().get_node_id(), lease_ttl_s=2.0)
    remote = ray.remote(num_cpus=1, max_retries=0)(job)
    doomed = remote.remote("doomed", True)
    while not (root / "computed").exists():  # it holds the lease before the others ask
        time.sleep(0.05)
    survivors = [remote.remote(name, False) for name in ("a", "b")]
    results = ray.get(survivors)
    try:
        ray.get(doomed)
        doomed_state = "finished"
    except ray.exceptions.RayError as err:
        doomed_state = type(err).__name__
    print(json.dumps({
        "values": [value for value, _ in results],
        "logs": [text for _, text in results],
        "doomed": doomed_state,
        "stats": ray.get(actor.stats.remote()),
    }))
"""


@pytest.fixture
def short_root():
    # Ray's socket paths must stay short: not under pytest's tmp_path.
    with tempfile.TemporaryDirectory(prefix="tjxp", dir="/tmp") as folder:
        yield Path(folder)


@pytest.mark.slow
def test_workers_with_own_folders_compute_once_and_outlive_a_dead_lease_holder(short_root):
    key = cache_key(kind="peer-store-test", n=1)
    driver = subprocess.run(
        [sys.executable, "-c", DRIVER, str(short_root), key],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert driver.returncode == 0, driver.stderr[-3000:]
    found = json.loads(driver.stdout.strip().splitlines()[-1])

    # The dead worker started it, exactly one survivor took the lapsed lease over and computed
    # it, the other was handed the entry.
    computed = (short_root / "computed").read_text().split()
    assert computed[0] == "doomed" and len(computed) == 2, computed
    assert found["doomed"] != "finished"
    assert found["values"] == [f"value of {key}"] * 2
    assert found["stats"]["taken_over"] == 1
    assert found["stats"]["leases"] == 2
    logs = "\n".join(found["logs"])
    assert "stopped renewing its lease on calibration" in logs
    assert "waiting for calibration" in logs and "is computing it (head store on node" in logs
    # Every folder holds the one entry, whole: both workers' own and the driver's.
    for folder in ("a", "b", "head"):
        entry = short_root / folder / "entries" / f"{key}.txt"
        assert entry.read_text() == f"value of {key}", folder
    assert not list(short_root.glob("*/entries/.*.tmp"))
