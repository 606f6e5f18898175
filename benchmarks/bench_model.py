"""Wall time of calibration, fp32 sampling and quantized sampling on the shipped digits DDPM.

Each is one jitted ``lax.scan`` over the T = 1000 timesteps. Compile time (``lower().compile()``)
is reported apart from run time (best of ``--repeats`` interleaved runs of each compiled program). fp32
sampling on the same N is the baseline: the figure of merit is calibration / fp32 sampling
(target <= 2x).

Usage::

    python benchmarks/bench_model.py [--samples 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import jax

from thermojax.core.timegroups import group_activation_params, uniform_edges
from thermojax.models import load_model
from thermojax.pipeline.measure.calibrate import _calibration_program, calibrate
from thermojax.pipeline.measure.sampling import _sample_program
from thermojax.pipeline.weights.quantize import quantize_weights, sampler_weights


def _compile(fn, *args, **static) -> tuple[float, object, tuple]:
    """``(compile seconds, compiled program, its dynamic arguments)`` of a jitted function.

    The model is a pytree argument like the others (its parameters traced), so it is among the
    arguments the compiled program is called with.
    """
    start = time.perf_counter()
    compiled = fn.lower(*args, **static).compile()
    return time.perf_counter() - start, compiled, args


def _best_runs(programs: dict[str, tuple], repeats: int) -> dict[str, float]:
    """Best wall time of each compiled program; rounds interleave the programs so that load from
    other processes on a shared machine hits them alike."""
    best = dict.fromkeys(programs, float("inf"))
    for _ in range(repeats):
        for name, (_, compiled, dynamic) in programs.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(*dynamic))
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    """Print the timing table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bits", type=int, default=4)
    args = parser.parse_args()

    model = load_model()
    n, key = args.samples, jax.random.PRNGKey(0)
    fp32 = sampler_weights(model, None)  # the model's own, as sample() runs it
    qweights, _ = quantize_weights(model, bits=args.bits)
    quant = sampler_weights(model, qweights)  # packed, as the pipeline runs them
    stats = calibrate(model, bit_width=args.bits, num_samples=8, samples_per_step=4)
    edges = uniform_edges(model.num_timesteps, 10)
    scales, zero_points = group_activation_params(stats.act_min, stats.act_max, edges, bits=8)
    edges = jax.numpy.asarray(edges)

    programs = {
        "fp32 sampling": _compile(
            _sample_program,
            model, fp32, None, None, None, key,
            num_samples=n, bits=0, sampler=None,
        ),
        f"calibration (W{args.bits}, stats + K=64 samples)": _compile(
            _calibration_program,
            model, quant, key,
            num_samples=n, samples_per_step=64, sampler=None,
        ),
        f"quantized sampling (W{args.bits}A8, 10 groups)": _compile(
            _sample_program,
            model, quant, scales, zero_points, edges, key,
            num_samples=n, bits=8, sampler=None,
        ),
    }  # fmt: skip
    runs = _best_runs(programs, args.repeats)
    rows = {name: (programs[name][0], runs[name]) for name in programs}
    base = rows["fp32 sampling"][1]
    print(f"digits DDPM, T={model.num_timesteps}, N={n}, {jax.devices()[0].platform}")
    print(f"{'program':<44} {'compile s':>10} {'run s':>8} {'run / fp32':>11}")
    for name, (compile_s, run_s) in rows.items():
        print(f"{name:<44} {compile_s:>10.2f} {run_s:>8.3f} {run_s / base:>10.2f}x")
    calib = next(v for k, v in rows.items() if k.startswith("calibration"))[1]
    print(f"calibration / fp32 sampling: {calib / base:.2f}x (target <= 2x)")
    per_step_ms = 1e3 * base / model.num_timesteps
    print(f"fp32 sampler: {per_step_ms:.2f} ms per timestep for {n} samples")


if __name__ == "__main__":
    main()
