"""Samplers on the shipped digits DDPM: DDIM at S steps against the 1000-step ancestral sampler,
and what it costs to apply activation parameters calibrated on another sampler.

Not a test: prints two markdown tables (and ``--json`` writes the numbers). Run from the
repository root:

    .venv/bin/python benchmarks/bench_samplers.py --seeds 3 --samples 256

Every run is the pipeline's own (``thermojax.pipeline.run.runner.run``: weights, per-step
calibration, uniform groups of the model's timesteps, sampling from the same noise, quality),
with its stage cache in a temporary folder so fp32 samples are shared within a sampler.

- Table 1, per sampler: fp32 Frechet distance and class coverage; for W8A8 and W4A8 (minmax
  weights, 4 groups) the quantized Frechet, coverage and trajectory drift (mean squared state
  difference to fp32 over the steps that ran); ``sampling s``: a warm fp32 sampling call
  (``--samples`` samples, best of 3, compilation excluded). Mean +- std over ``--seeds`` seeds.
- Table 2: DDIM-50 sampling with parameters calibrated on DDPM-1000, and DDPM-1000 sampling with
  parameters calibrated on DDIM-50, against calibrating on the sampler that samples, at W8A8
  and W4A8: the paired Frechet difference (mismatched - matched), mean +- std over seeds.

Quote ratios and paired differences: absolute times move with whatever else the machine runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SAMPLERS = {
    "DDPM 1000": {"sampler": "ddpm", "steps": None},
    "DDIM 250": {"sampler": "ddim", "steps": 250},
    "DDIM 100": {"sampler": "ddim", "steps": 100},
    "DDIM 50": {"sampler": "ddim", "steps": 50},
}
MISMATCHES = {
    "DDIM 50, calibrated on DDPM 1000": ("DDIM 50", "DDPM 1000"),
    "DDPM 1000, calibrated on DDIM 50": ("DDPM 1000", "DDIM 50"),
}


def _config(bits: int, seed: int, samples: int, sampling: str, calibration: str) -> Any:
    from thermojax.cli.config import to_config

    cal = SAMPLERS[calibration]
    return to_config(
        {
            "bit_width": bits,
            "act_bits": 8,
            "num_time_groups": 4,
            "seed": seed,
            "sampling": {"num_samples": samples, **SAMPLERS[sampling]},
            "calibration": {"sampler": cal["sampler"], "steps": cal["steps"]},
            "wandb": {"mode": "disabled"},
        }
    )


def _run(bits: int, seed: int, samples: int, sampling: str, calibration: str) -> dict[str, float]:
    from thermojax.pipeline.run.runner import run

    result = run(_config(bits, seed, samples, sampling, calibration))
    q = result.quality
    return {
        "frechet_fp32": q.frechet_fp32,
        "coverage_fp32": q.class_coverage_fp32,
        "frechet": q.frechet_quantized,
        "coverage": q.class_coverage_quantized,
        "drift": q.drift_mean,
    }


def _sampling_seconds(name: str, samples: int) -> float:
    from thermojax.models import SamplerSpec, load_model
    from thermojax.pipeline.measure.sampling import sample

    model = load_model()
    spec = SamplerSpec(name=SAMPLERS[name]["sampler"], steps=SAMPLERS[name]["steps"])
    sample(model, num_samples=samples, seed=0, sampler=spec)  # compile
    times = []
    for _ in range(3):
        start = time.perf_counter()
        sample(model, num_samples=samples, seed=0, sampler=spec)
        times.append(time.perf_counter() - start)
    return min(times)


def _mean_std(values: list[float]) -> str:
    arr = np.asarray(values, np.float64)
    return f"{arr.mean():.2f} +- {arr.std():.2f}" if len(arr) > 1 else f"{arr.mean():.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    if args.seeds < 1 or args.samples < 2:
        parser.error("--seeds must be >= 1 and --samples >= 2")
    os.environ.setdefault("THERMOJAX_CACHE_DIR", tempfile.mkdtemp(prefix="bench-samplers-"))
    seeds = list(range(args.seeds))
    runs: dict[str, Any] = {}
    for name in SAMPLERS:
        for bits in (8, 4):
            runs[f"{name} W{bits}"] = [_run(bits, s, args.samples, name, name) for s in seeds]
    for label, (sampling, calibration) in MISMATCHES.items():
        for bits in (8, 4):
            runs[f"{label} W{bits}"] = [
                _run(bits, s, args.samples, sampling, calibration) for s in seeds
            ]
    seconds = {name: _sampling_seconds(name, args.samples) for name in SAMPLERS}

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"{args.samples} samples, seeds {seeds}, A8, 4 groups, minmax weights\n"
    )
    print(
        "| sampler | fp32 Frechet | fp32 coverage | W8A8 Frechet | W8A8 drift | W4A8 Frechet "
        "| W4A8 coverage | W4A8 drift | sampling s (x DDPM) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    base = seconds["DDPM 1000"]
    for name in SAMPLERS:
        w8, w4 = runs[f"{name} W8"], runs[f"{name} W4"]
        col = lambda rows, key: _mean_std([r[key] for r in rows])
        print(
            f"| {name} | {col(w8, 'frechet_fp32')} | {col(w8, 'coverage_fp32')} | "
            f"{col(w8, 'frechet')} | {_mean_std([r['drift'] * 1e3 for r in w8])}e-3 | "
            f"{col(w4, 'frechet')} | {col(w4, 'coverage')} | "
            f"{_mean_std([r['drift'] * 1e3 for r in w4])}e-3 | "
            f"{seconds[name]:.2f} ({seconds[name] / base:.3f}x) |"
        )
    print("\n| sampling, calibration | bits | Frechet mismatched | Frechet matched | paired diff |")
    print("|---|---|---|---|---|")
    for label, (sampling, _) in MISMATCHES.items():
        for bits in (8, 4):
            mis, own = runs[f"{label} W{bits}"], runs[f"{sampling} W{bits}"]
            diff = [a["frechet"] - b["frechet"] for a, b in zip(mis, own, strict=True)]
            print(
                f"| {label} | W{bits}A8 | {_mean_std([r['frechet'] for r in mis])} | "
                f"{_mean_std([r['frechet'] for r in own])} | {_mean_std(diff)} |"
            )
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs, "sampling_s": seconds}, indent=1))


if __name__ == "__main__":
    main()
