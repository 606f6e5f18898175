"""Wall time of a sweep on a one-node Ray cluster against a two-node one, same machine, same CPUs
per node (target for the ``full`` preset: two nodes <= 0.6x the one-node time).

Each side is a real cluster made by ``tools/netns_cluster.py`` (a ``ray start`` per node, each
in a network namespace of its own, ``--num-cpus 1`` each; needs root), started before the clock
starts (a cluster outlives many sweeps) and stopped after. One CPU means one core: the head and
the driver are pinned to core 0, the worker node to core 1 (``--num-cpus`` alone only limits how
many jobs a node runs at once, while each JAX job uses every core it can see). What is timed is the user's command,
run in the head's namespace against the head's address::

    python -m thermojax.baseline -m sweep=NAME hydra.launcher.address=HEAD:6379

each side cold (its own fresh stage cache and JAX compilation cache, shared by its nodes). It
also counts the jobs each node ran and the calibrations computed (a shared cache: one per bit
width, whichever node ran them). The one-node side runs first; ``--repeats N`` alternates the
order after that, and the figure is the ratio of the medians.

Usage::

    sudo python benchmarks/bench_cluster.py [--preset full] [--repeats 1] [--wandb disabled]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from netns_cluster import NamespaceCluster, stop_session  # tools/ is a folder of scripts

TARGET_RATIO = 0.6


def _one_sweep(workers: int, preset: str, wandb: str) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="tjxb", dir="/tmp"))  # Ray's socket paths are short
    try:
        with NamespaceCluster(root, workers=workers, num_cpus=1, pin_cores=True) as cluster:
            env = dict(cluster.env("driver"), THERMOJAX_CACHE_DIR=str(root / "cache"))
            command = [
                sys.executable, "-m", "thermojax.baseline", "-m", f"sweep={preset}",
                f"wandb.mode={wandb}", f"hydra.sweep.dir={root / 'sweep'}",
                f"hydra.launcher.address={cluster.address}",
            ]  # fmt: skip
            start = time.perf_counter()
            proc = cluster.start_driver(command, env)
            _, stderr = proc.communicate()
            seconds = time.perf_counter() - start
            stop_session(proc.pid)
            if proc.returncode != 0:
                print(stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{workers + 1}-node sweep failed with exit {proc.returncode}")
            reports = [
                json.loads(path.read_text())
                for path in (root / "sweep").glob("*/baseline_metrics.json")
            ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    # The launcher logs "[k/N] #i ... done (S s into the sweep)": the last S is the jobs' span, the
    # rest of the wall time is the driver's own (start-up, planning, joining, the comparison).
    spans = [float(m) for m in re.findall(r"done \((\d+\.\d+) s into the sweep\)", stderr)]
    return {
        "nodes": workers + 1,
        "seconds": seconds,
        "jobs_s": max(spans, default=float("nan")),
        "configs": len(reports),
        "jobs_per_node": dict(Counter(r["environment"]["ray_node_ip"] for r in reports)),
        "calibrations_computed": sum(r["cache"]["calibration"] == "miss" for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="full", help="sweep preset (conf/sweep/NAME.yaml)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each side")
    parser.add_argument("--wandb", default="disabled", choices=["offline", "disabled"])
    args = parser.parse_args()
    if args.repeats < 1:
        raise SystemExit(f"error: --repeats {args.repeats}: must be at least 1")
    if os.geteuid() != 0:
        raise SystemExit("error: the benchmark makes network namespaces; run it as root")

    runs: dict[int, list[dict[str, object]]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        order = (0, 1) if repeat % 2 == 0 else (1, 0)
        for workers in order:
            run = _one_sweep(workers, args.preset, args.wandb)
            runs[workers + 1].append(run)
            print(
                f"  {run['nodes']} node(s): {run['seconds']:.1f} s ({run['jobs_s']:.1f} s from the "
                f"first job submitted to the last done), {run['configs']} configs, "
                f"jobs per node {run['jobs_per_node']}, "
                f"calibrations computed {run['calibrations_computed']}",
                flush=True,
            )
    median = {nodes: statistics.median(r["seconds"] for r in runs[nodes]) for nodes in runs}
    ratio = median[2] / median[1]
    print(f"{'cluster':<30} {'configs':>8} {'wall s':>8} {'x one node':>11}")
    for nodes, label in ((1, "1 node x 1 CPU"), (2, "2 nodes x 1 CPU")):
        configs = runs[nodes][0]["configs"]
        print(f"{label:<30} {configs:>8} {median[nodes]:>8.1f} {median[nodes] / median[1]:>11.2f}")
    verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
    print(f"two nodes / one node = {ratio:.2f} (target <= {TARGET_RATIO}: {verdict})")
    jobs = {nodes: statistics.median(r["jobs_s"] for r in runs[nodes]) for nodes in runs}
    print(f"  the jobs alone (first submitted to last done): {jobs[2] / jobs[1]:.2f}")
    print(json.dumps({"preset": args.preset, "repeats": args.repeats, "one_node_s": median[1],
                      "two_nodes_s": median[2], "ratio": ratio, "jobs_ratio": jobs[2] / jobs[1],
                      "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}))  # fmt: skip


if __name__ == "__main__":
    main()
