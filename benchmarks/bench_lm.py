"""Wall time of fp32 sampling, calibration and quantized sampling of a masked-diffusion LM.

The shipped byte-level LM (``model=pydoc-mdlm``) by default, or ``--checkpoint DIR`` (a
Dream-format folder). Each program is one jitted ``lax.scan`` over the T unmasking steps, the
model a pytree argument; compile time (``lower().compile()``) is reported apart from run time
(best of ``--repeats`` interleaved runs). fp32 sampling of the same N sequences is the
baseline: calibration / fp32 sampling should stay <= 2x, as for the DDPM
(``benchmarks/bench_model.py``), and fp32 sampling is also given in generated tokens per second.

Usage::

    python benchmarks/bench_lm.py [--samples 64] [--steps T] [--length L] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import _best_runs, _compile

from thermojax.core.timegroups import group_activation_params, uniform_edges
from thermojax.models import shipped_path
from thermojax.models.dream.loading import load_masked_diffusion
from thermojax.pipeline.measure.calibrate import _calibration_program, calibrate
from thermojax.pipeline.measure.sampling import _sample_program
from thermojax.pipeline.weights.quantize import quantize_weights, sampler_weights


def main() -> None:
    """Print the timing table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="a Dream-format folder")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--steps", type=int, help="unmasking steps T (default: the model's)")
    parser.add_argument("--length", type=int, help="sequence length L (default: the model's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=64)
    args = parser.parse_args()

    folder = args.checkpoint or shipped_path("pydoc-mdlm")
    model = load_masked_diffusion(folder, steps=args.steps, length=args.length)
    n, key = args.samples, jax.random.PRNGKey(0)
    fp32 = sampler_weights(model, None)  # the model's own, as sample() runs it
    qweights, _ = quantize_weights(model, bits=args.bits, group_size=args.group_size)
    quant = sampler_weights(model, qweights)  # packed, as the pipeline runs them
    stats = calibrate(
        model, bit_width=args.bits, group_size=args.group_size, num_samples=2, samples_per_step=4,
        qweights=qweights,
    )  # fmt: skip
    groups = min(4, model.num_timesteps)
    edges = uniform_edges(model.num_timesteps, groups)
    scales, zero_points = group_activation_params(stats.act_min, stats.act_max, edges, bits=8)
    edges = jax.numpy.asarray(edges)

    programs = {
        "fp32 sampling": _compile(
            _sample_program, model, fp32, None, None, None, key, num_samples=n, bits=0,
            sampler=None,
        ),
        f"calibration (W{args.bits}, stats + K=64 samples)": _compile(
            _calibration_program, model, quant, key, num_samples=n, samples_per_step=64,
            sampler=None,
        ),
        f"quantized sampling (W{args.bits}A8, {groups} groups)": _compile(
            _sample_program, model, quant, scales, zero_points, edges, key, num_samples=n, bits=8,
            sampler=None,
        ),
    }  # fmt: skip
    runs = _best_runs(programs, args.repeats)
    rows = {name: (programs[name][0], runs[name]) for name in programs}
    base = rows["fp32 sampling"][1]
    print(
        f"{model.name}: {model.num_parameters()} parameters, L={model.length}, "
        f"T={model.num_timesteps} steps, N={n}, {jax.devices()[0].platform}"
    )
    print(f"{'program':<44} {'compile s':>10} {'run s':>8} {'run / fp32':>11}")
    for name, (compile_s, run_s) in rows.items():
        print(f"{name:<44} {compile_s:>10.2f} {run_s:>8.3f} {run_s / base:>10.2f}x")
    calib = next(v for k, v in rows.items() if k.startswith("calibration"))[1]
    print(f"calibration / fp32 sampling: {calib / base:.2f}x (target <= 2x)")
    generated = n * (model.length - len(model.prompt))
    print(
        f"fp32 sampling: {generated / base:.0f} generated tokens/s "
        f"({1e3 * base / model.num_timesteps:.1f} ms per step for {n} sequences)"
    )


if __name__ == "__main__":
    main()
