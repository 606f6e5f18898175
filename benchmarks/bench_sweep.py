"""Wall time of a sweep against one baseline run, side by side, both as a user runs them.

Runs, in this order and each in fresh cache folders (cold: no stage cache, no JAX compilation
cache), the single run ``python -m thermojax.baseline bit_width=2 num_time_groups=4``
and the multirun ``python -m thermojax.baseline -m sweep=NAME`` on the Ray launcher (embedded
Ray, started and stopped inside the timed command). The figure of merit is sweep / single
(the target for the 36-configuration ``full`` preset: at most 6x on a 2-core machine).
It also counts, per cached stage (calibration, fp32 samples, quantized quality), how many jobs
computed the entry and how many found it in the cache.

Usage::

    python benchmarks/bench_sweep.py [--sweep full] [--wandb offline|disabled] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, proc.returncode, proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="full", help="sweep preset (conf/sweep/NAME.yaml)")
    parser.add_argument("--wandb", default="offline", choices=["offline", "disabled"])
    parser.add_argument("--keep", help="keep the outputs in this folder")
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="tjxb", dir="/tmp"))
    baseline = [sys.executable, "-m", "thermojax.baseline"]
    rows = []
    for label, extra, cache in (
        ("single run", ["bit_width=2", "num_time_groups=4", f"hydra.run.dir={work}/single"], "c1"),
        (
            f"sweep={args.sweep}",
            ["-m", f"sweep={args.sweep}", f"hydra.sweep.dir={work}/sweep"],
            "c2",
        ),
    ):
        # Short cache paths: the embedded Ray keeps its sockets under the cache folder.
        env = dict(os.environ, THERMOJAX_CACHE_DIR=str(work / cache), WANDB_SILENT="true")
        env.pop("RAY_ADDRESS", None)
        seconds, code, stderr = _timed([*baseline, *extra, f"wandb.mode={args.wandb}"], env)
        if code != 0:
            print(stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{label} failed with exit status {code}")
        rows.append((label, seconds))
    reports = list((work / "sweep").glob("*/baseline_metrics.json"))
    single = rows[0][1]
    print(f"{'command':<24} {'configs':>8} {'wall s':>8} {'x single':>9} {'s/config':>9}")
    for (label, seconds), configs in zip(rows, (1, len(reports)), strict=True):
        print(
            f"{label:<24} {configs:>8} {seconds:>8.1f} {seconds / single:>9.2f} "
            f"{seconds / max(configs, 1):>9.1f}"
        )
    # What the shared cache saved: per entry, how many jobs computed it and how many hit it.
    computed: dict[str, list[int]] = {}
    for path in reports:
        for entry, status in json.loads(path.read_text()).get("cache", {}).items():
            computed.setdefault(entry, [0, 0])[status == "hit"] += 1
    for entry, (misses, hits) in sorted(computed.items()):
        print(f"  cache {entry:<14} computed {misses:>3}, hit {hits:>3}")
    print(json.dumps({"single_s": single, "sweep_s": rows[1][1], "configs": len(reports),
                      "ratio": rows[1][1] / single, "cpus": os.cpu_count(),
                      "load_avg_1m": os.getloadavg()[0]}))  # fmt: skip
    if not args.keep:
        print(f"(outputs in {work}; pass --keep DIR to choose where)")


if __name__ == "__main__":
    main()
