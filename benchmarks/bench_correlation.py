"""Which figure predicts quality? Spearman's rank correlation of candidate figures with the
digits DDPM's sample quality, within each (weight bits, activation bits) cell, with percentile
bootstrap 95% intervals (issue 26).

Not a test: runs the pipeline in-process over a grid of configurations, appends one record per
run to ``--records`` (a JSON-lines file, so the sweep can run in chunks: a configuration already
there is not run again), then prints a markdown table and writes it to ``--json``. Run from the
repository root (the README's table: 240 runs, about 13 min on a 2-core VM shared with other jobs):

    THERMOJAX_CACHE_DIR=$(mktemp -d) nice -n 10 .venv/bin/python benchmarks/bench_correlation.py \\
        --records corr.jsonl --json corr.json

In chunks (``--bits 2``, then ``--bits 4 8``, each with ``--no-table``), then the table alone
from the records with ``--run none``.

The grid (``--bits`` x ``--act-bits`` x ``--groups`` x ``--methods`` x ``--samplers`` x
``--seeds``; by default 3 x 2 x 5 x 2 x 2 x 2 = 240 runs, 40 per cell): weights {2, 4, 8} bits,
activations {4, 8} bits, {1, 2, 4, 8, 16} uniform time groups, ``quant.method`` {minmax,
mse_clip}, the ancestral sampler (1000 steps) and DDIM 50 steps, seeds {0, 1}; 64 samples,
calibration ``quick`` (16 samples, 16 values per step), the chain budget on 16-sample chains.
The stage cache lives in a temporary folder (``THERMOJAX_CACHE_DIR`` unless set), so runs that
differ only in their time groups share a calibration.

Quality: the Frechet ratio ``frechet_quantized / frechet_fp32`` (the digits' graded figure) and
the final-sample MSE to fp32's. Figures of a run (``L`` layers, ``G`` groups, ``B = G - 1``
boundaries), each with the direction in which it says "worse":

- ``budget_total`` (up): the chain budget's total, the fully quantized chain's final-state MSE
  against fp32's from the same noise (16 chains).
- ``budget_group_sum`` (up): ``sum_g per_group[g]``, the errors injected group by group.
- ``boundary_cost`` (up): ``sum_b |per_boundary[b]|``, what the chain budget measures the jumps
  to change (0 with one group).
- ``weighted_jump`` (up): ``sum_b jump_b * (s_b + s_{b+1}) / 2``, where ``jump_b`` is the mean
  over layers of the relative scale jump ``|s[b+1] - s[b]| / s[b]`` at boundary ``b`` and
  ``s_g = per_group[g] / steps_per_group[g]`` the group's error per sampler step (0 with one
  group).
- ``act_error`` (up): the mean over layers of the relative activation quantization error
  ``mean((fq(x) - x)^2) / mean(x^2)`` of the calibration's sampled layer inputs ``x`` at every
  calibration step, fake-quantized with the run's parameters of the step's time group.
- ``smoothness`` (down): the Markov smoothness score (ArrowQuant V2's).
- ``weight_cosine`` (down): the model's weight cosine similarity.
- ``weight_sqnr`` (down): the mean SQNR (dB) over the quantized weight tensors.

Each correlation is reported **oriented**: multiplied by -1 for a "down" figure, so +1 means
the figure orders the configurations exactly as their quality does, whatever its direction.
The interval: 2000 bootstrap resamples of the cell's configurations (``--bootstrap-seed``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FIGURES = {
    "budget_total": 1,
    "budget_group_sum": 1,
    "boundary_cost": 1,
    "weighted_jump": 1,
    "act_error": 1,
    "smoothness": -1,
    "weight_cosine": -1,
    "weight_sqnr": -1,
}
"""Each figure and its direction: +1 where a larger value says worse samples, -1 better."""
CANDIDATES = ("budget_total", "budget_group_sum", "boundary_cost", "weighted_jump")
"""The chain-budget candidates; the other figures are the baselines."""
QUALITIES = {"frechet_ratio": "Frechet / fp32", "final_mse": "final MSE"}
SAMPLERS = {"ddpm": {"sampler": "ddpm"}, "ddim50": {"sampler": "ddim", "steps": 50}}
TARGET = 0.8
"""The within-bit-width rank correlation a candidate must reach to be adopted (issue 26)."""


def _settings(point: dict[str, Any], samples: int, chain_samples: int) -> dict[str, Any]:
    return {
        "bit_width": point["bits"],
        "act_bits": point["act_bits"],
        "num_time_groups": point["groups"],
        "seed": point["seed"],
        "quant": {"method": point["method"]},
        "calibration": {"samples": 16, "samples_per_step": 16},
        "sampling": {"num_samples": samples, **SAMPLERS[point["sampler"]]},
        "thermo": {"chain_budget": {"enabled": True, "samples": chain_samples}},
        "wandb": {"mode": "disabled"},
    }


def _act_error(model: Any, config: Any, result: Any) -> float:
    """``act_error`` of the module docstring, from the run's cached calibration."""
    import jax.numpy as jnp

    from thermojax.core.quant import fake_quantize_activations
    from thermojax.pipeline.cache.stages import StageCache
    from thermojax.pipeline.weights.quantize import quantize_weights

    qweights, _ = quantize_weights(
        model, bits=config.bit_width, group_size=config.group_size, quant=config.quant
    )
    stats = StageCache(model, config.to_dict(), qweights).calibration()  # a cache hit
    edges = np.array([a for a, _ in result.time_groups] + [result.num_timesteps])
    steps = np.arange(stats.act_min.shape[1]) if stats.timesteps is None else stats.timesteps
    group = np.searchsorted(edges, np.asarray(steps), side="right") - 1  # [S]
    scales = np.array([layer.scales for layer in result.layers], np.float32)[:, group]
    zeros = np.array([layer.zero_points for layer in result.layers], np.float32)[:, group]
    x = jnp.asarray(stats.act_samples, jnp.float32)  # [L, S, K]
    q = fake_quantize_activations(
        x, jnp.asarray(scales)[..., None], jnp.asarray(zeros)[..., None], bits=config.act_bits
    )
    x64, q64 = np.asarray(x, np.float64), np.asarray(q, np.float64)
    per_layer = np.mean((q64 - x64) ** 2, axis=(1, 2)) / np.maximum(
        np.mean(x64**2, axis=(1, 2)), 1e-30
    )
    return float(np.mean(per_layer))


def _figures(model: Any, config: Any, result: Any) -> dict[str, float]:
    chain = result.chain
    per_group = np.asarray(chain.per_group, np.float64)
    steps = np.asarray(chain.steps_per_group, np.float64)
    per_step = np.divide(per_group, steps, out=np.zeros_like(per_group), where=steps > 0)
    jumps = np.array([layer.scale_jumps for layer in result.layers], np.float64)
    jump = jumps.reshape(len(result.layers), -1).mean(axis=0)  # [B]
    weighted = float(np.sum(np.abs(jump) * (per_step[:-1] + per_step[1:]) / 2))
    sqnr = [t.sqnr_db for t in result.weights.tensors if t.sqnr_db is not None]
    q = result.quality
    return {
        "budget_total": float(chain.total),
        "budget_group_sum": float(per_group.sum()),
        "boundary_cost": float(np.sum(np.abs(chain.per_boundary))),
        "weighted_jump": weighted,
        "act_error": _act_error(model, config, result),
        "smoothness": float(result.smoothness_score),
        "weight_cosine": float(result.cosine_similarity),
        "weight_sqnr": float(np.mean(sqnr)) if sqnr else math.nan,
        "frechet_ratio": float(q.frechet_quantized / q.frechet_fp32),
        "final_mse": float(q.final_mse),
        "frechet_quantized": float(q.frechet_quantized),
        "frechet_fp32": float(q.frechet_fp32),
    }


def _key(point: dict[str, Any]) -> str:
    return json.dumps({k: point[k] for k in sorted(point)}, sort_keys=True)


def run_grid(points: list[dict[str, Any]], records: Path, samples: int, chain: int) -> None:
    """Run every point not in ``records`` yet, appending one JSON line per run."""
    from thermojax.cli.config import to_config
    from thermojax.models import load_model
    from thermojax.pipeline.run.runner import run

    done = {_key(r["point"]) for r in _read(records)}
    todo = [p for p in points if _key(p) not in done]
    print(f"# {len(points) - len(todo)} of {len(points)} runs already in {records}", flush=True)
    model = load_model()
    for i, point in enumerate(todo):
        start = time.perf_counter()
        config = to_config(_settings(point, samples, chain))
        result = run(config)
        record = {
            "point": point,
            "figures": _figures(model, config, result),
            "seconds": time.perf_counter() - start,
        }
        with records.open("a") as out:
            out.write(json.dumps(record) + "\n")
        print(
            f"[{i + 1}/{len(todo)}] {point} Frechet ratio "
            f"{record['figures']['frechet_ratio']:.3f} ({record['seconds']:.1f} s)",
            flush=True,
        )


def _read(records: Path) -> list[dict[str, Any]]:
    if not records.exists():
        return []
    return [json.loads(line) for line in records.read_text().splitlines() if line.strip()]


def correlation_table(rows: list[dict[str, Any]], *, seed: int, resamples: int) -> dict[str, Any]:
    """Oriented Spearman correlation and bootstrap interval of every figure with every quality,
    within each (weight bits, activation bits) cell."""
    from thermojax.pipeline.results.correlation import rank_correlation

    cells: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault(f"W{r['point']['bits']}A{r['point']['act_bits']}", []).append(r)
    table: dict[str, Any] = {}
    for cell in sorted(cells, key=lambda c: tuple(int(v) for v in c[1:].split("A"))):
        found = cells[cell]
        table[cell] = {"n": len(found), "figures": {}}
        for (figure, direction), quality in itertools.product(FIGURES.items(), QUALITIES):
            x = np.array([r["figures"][figure] for r in found], np.float64)
            y = np.array([r["figures"][quality] for r in found], np.float64)
            keep = np.isfinite(x) & np.isfinite(y)
            rng = np.random.default_rng([seed, len(table), len(table[cell]["figures"])])
            rho, low, high, n = rank_correlation(x[keep], y[keep], rng=rng, resamples=resamples)
            oriented = (direction * rho, *sorted((direction * low, direction * high)))
            entry = table[cell]["figures"].setdefault(figure, {})
            entry[quality] = {"rho": oriented[0], "low": oriented[1], "high": oriented[2], "n": n}
    return table


def _cellfmt(entry: dict[str, float]) -> str:
    if not math.isfinite(entry["rho"]):
        return "n/a (constant)"
    return f"{entry['rho']:+.2f} [{entry['low']:+.2f}, {entry['high']:+.2f}]"


def print_table(table: dict[str, Any]) -> None:
    cells = list(table)
    for quality, label in QUALITIES.items():
        print(f"\n### Oriented Spearman rho with {label}, bootstrap 95% interval\n")
        print("| figure | " + " | ".join(f"{c} (n={table[c]['n']})" for c in cells) + " |")
        print("|---|" + "---|" * len(cells))
        for figure in FIGURES:
            kind = "candidate" if figure in CANDIDATES else "baseline"
            cols = [_cellfmt(table[c]["figures"][figure][quality]) for c in cells]
            print(f"| {figure} ({kind}) | " + " | ".join(cols) + " |")
    print()
    for figure in CANDIDATES:
        reached = [
            c for c in cells if table[c]["figures"][figure]["frechet_ratio"]["rho"] >= TARGET
        ]
        every = len(reached) == len(cells)
        print(
            f"- {figure}: oriented rho >= {TARGET} with the Frechet ratio in "
            f"{len(reached)} of {len(cells)} cells{' (every cell)' if every else ''}"
            + (f": {', '.join(reached)}" if reached and not every else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, required=True, help="JSON lines, appended")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--act-bits", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--methods", nargs="+", default=["minmax", "mse_clip"])
    parser.add_argument("--samplers", nargs="+", choices=sorted(SAMPLERS), default=list(SAMPLERS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--chain-samples", type=int, default=16)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--bootstrap-seed", type=int, default=0)
    parser.add_argument("--run", choices=["grid", "none"], default="grid")
    parser.add_argument("--no-table", action="store_true", help="only run the grid")
    args = parser.parse_args()
    os.environ.setdefault("THERMOJAX_CACHE_DIR", tempfile.mkdtemp(prefix="bench-correlation-"))
    points = [
        dict(zip(("bits", "act_bits", "groups", "method", "sampler", "seed"), values, strict=True))
        for values in itertools.product(
            args.bits, args.act_bits, args.groups, args.methods, args.samplers, args.seeds
        )
    ]
    start = time.perf_counter()
    if args.run == "grid":
        run_grid(points, args.records, args.samples, args.chain_samples)
        print(f"# grid: {time.perf_counter() - start:.0f} s", flush=True)
    if args.no_table:
        return
    rows = _read(args.records)
    table = correlation_table(rows, seed=args.bootstrap_seed, resamples=args.resamples)
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs; {len(rows)} runs from {args.records}; "
        f"{args.resamples} bootstrap resamples, seed {args.bootstrap_seed}"
    )
    print_table(table)
    if args.json is not None:
        seconds = [r["seconds"] for r in rows]
        args.json.write_text(
            json.dumps(
                {
                    "table": table,
                    "directions": FIGURES,
                    "candidates": CANDIDATES,
                    "target": TARGET,
                    "runs": len(rows),
                    "run_seconds_total": float(np.sum(seconds)),
                    "settings": {k: str(v) for k, v in vars(args).items()},
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
