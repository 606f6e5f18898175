"""Packed low-bit execution and the bf16 reference against dequantize-first and float32.

Two masked-diffusion LMs: the shipped one (``model=pydoc-mdlm``, stored float32) and a
synthetic Dream folder (``write_dream_like(scale=4, layers=4)``: 126M parameters, stored bf16 as
Dream is; few short sequences, so that the weights rather than a step's activations are the
memory, as for Dream 7B). Four ways to run each one's sampler, each one jitted ``lax.scan``
(``_sample_program``, what ``sample()`` runs):

- ``float32 reference``: parameters at float32, the model's own weights;
- ``bf16 reference``: parameters at bfloat16 (``model.dtype=bfloat16``), upcast where used;
- ``W4 dequantize-first``: parameters as stored, every layer's W4 weight dequantized to a float32
  array before the program and passed in (what sampling did before packed execution): the
  baseline of the packed row;
- ``W4 packed``: the same QTensors passed packed, each layer dequantized inside the step.

Per row: milliseconds per sampler step (best of ``--repeats`` rounds in one process, each round
running every row once, so that load from other processes hits the rows alike; compilation
excluded), the bytes held across the run (the model's parameters plus the weights argument),
the compiled program's temporaries (XLA's ``memory_analysis``), their sum (the run's memory at
its peak), and the peak RSS of a fresh process that compiles and runs the row alone (reset after
loading and quantizing; Linux). Quote ratios: absolute times move with whatever else the
machine runs.

Usage::

    python benchmarks/bench_packed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("float32 reference", "bf16 reference", "W4 dequantize-first", "W4 packed")
BASELINES = {
    "bf16 reference": "float32 reference",
    "W4 dequantize-first": "float32 reference",
    "W4 packed": "W4 dequantize-first",
}
"""Each row's ratio is to this row of the same model."""


def _leaf_bytes(tree) -> int:
    import jax

    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def _peak_rss_since_reset() -> int:
    """The process's peak RSS (``VmHWM``) since :func:`_reset_peak_rss`, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> None:
    """Start the peak RSS afresh (Linux: ``5`` to ``/proc/self/clear_refs``), so that it
    measures the sampler, not the loading and quantizing before it."""
    Path("/proc/self/clear_refs").write_text("5")


def _prepared(folder: str, variant: str, shape: dict[str, int]):
    """``(model, weights, compiled sampler)`` of one row."""
    import gc

    import jax

    from thermojax.core.quant import quantize
    from thermojax.models.dream.loading import load_masked_diffusion
    from thermojax.pipeline.measure.sampling import _sample_program
    from thermojax.pipeline.weights.quantize import dense_weights

    dtype = {"float32 reference": "float32", "bf16 reference": "bfloat16"}.get(variant)
    model = load_masked_diffusion(folder, dtype=dtype, steps=shape["steps"], length=shape["length"])
    weights = None
    if variant.startswith("W4"):
        # Layer by layer (quantize_weights' report would dequantize them all at once).
        kernels = model.quantizable_weights()
        qweights = {n: quantize(w.T, bits=4, group_size=64) for n, w in kernels.items()}
        weights = dense_weights(model, qweights) if "dequantize" in variant else qweights
        del kernels, qweights
    gc.collect()
    lowered = _sample_program.lower(
        model, weights, None, None, None, jax.random.PRNGKey(0),
        num_samples=shape["samples"], bits=0, sampler=None,
    )  # fmt: skip
    return model, weights, lowered


def _memory(folder: str, variant: str, shape: dict[str, int]) -> dict:
    """One row's memory, in this (fresh) process: compiled and run once after the peak RSS is
    reset, so that the peak is the sampler's."""
    import jax

    model, weights, lowered = _prepared(folder, variant, shape)
    _reset_peak_rss()
    compiled = lowered.compile()
    jax.block_until_ready(compiled(model, weights, None, None, None, jax.random.PRNGKey(0)))
    analysis = compiled.memory_analysis()
    held = _leaf_bytes(model) + _leaf_bytes(weights)
    return {
        "held": held,
        "temp": analysis.temp_size_in_bytes,
        "peak": held + analysis.temp_size_in_bytes + analysis.output_size_in_bytes,
        "rss": _peak_rss_since_reset(),
        "parameters": model.num_parameters(),
    }


def _times(folder: Path, shape: dict[str, int], repeats: int) -> dict[str, float]:
    """Milliseconds per sampler step of every row, in this process: the best of ``repeats``
    rounds that interleave the rows, so that load from other processes hits them alike."""
    import jax

    runs = {}
    for variant in VARIANTS:
        model, weights, lowered = _prepared(str(folder), variant, shape)
        runs[variant] = (
            lowered.compile(),
            (model, weights, None, None, None, jax.random.PRNGKey(0)),
        )
    best = dict.fromkeys(VARIANTS, float("inf"))
    for _ in range(repeats):
        for variant, (compiled, arguments) in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(*arguments))
            best[variant] = min(best[variant], time.perf_counter() - start)
    return {variant: 1e3 * seconds / shape["steps"] for variant, seconds in best.items()}


def _run_child(folder: Path, variant: str, shape: dict[str, int]) -> dict:
    command = [
        sys.executable, __file__, "--child", "--folder", str(folder), "--variant", variant,
        *(f"--{k}={v}" for k, v in shape.items()),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Print one table per model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        shape = {"samples": args.samples, "steps": args.steps, "length": args.length}
        print(json.dumps(_memory(args.folder, args.variant, shape)))
        return

    from thermojax.models import shipped_path
    from thermojax.models.hf import write_dream_like

    with tempfile.TemporaryDirectory() as tmp:
        models = {
            "shipped LM (pydoc-mdlm, F32)": (
                shipped_path("pydoc-mdlm"),
                {"samples": 32, "steps": 16, "length": 128},
            ),
            "synthetic Dream (scale 4, 4 layers, BF16)": (
                write_dream_like(Path(tmp) / "dream", scale=4, layers=4),
                {"samples": 2, "steps": 4, "length": 32},
            ),
        }
        for label, (folder, shape) in models.items():
            rows = {variant: _run_child(folder, variant, shape) for variant in VARIANTS}
            for variant, ms in _times(folder, shape, args.repeats).items():
                rows[variant]["ms_per_step"] = ms
            parameters = rows[VARIANTS[0]]["parameters"]
            print(
                f"\n{label}: {parameters / 1e6:.1f}M parameters, N={shape['samples']}, "
                f"L={shape['length']}, T={shape['steps']} steps, W4 group 64, XLA:CPU"
            )
            print(
                f"| {'run':<20} | ms/step | held MB | XLA temp MB | peak MB | peak RSS MB | "
                "ratio (time, peak, RSS) |"
            )
            print("|---|---|---|---|---|---|---|")
            for variant, row in rows.items():
                base = rows.get(BASELINES.get(variant, ""))
                ratio = (
                    f"{row['ms_per_step'] / base['ms_per_step']:.2f}x, "
                    f"{row['peak'] / base['peak']:.2f}x, {row['rss'] / base['rss']:.2f}x "
                    f"of {BASELINES[variant]}"
                    if base
                    else "baseline"
                )
                print(
                    f"| {variant:<20} | {row['ms_per_step']:7.1f} | {row['held'] / 1e6:7.1f} | "
                    f"{row['temp'] / 1e6:11.1f} | {row['peak'] / 1e6:7.1f} | "
                    f"{row['rss'] / 2**20:11.0f} | {ratio} |"
                )


if __name__ == "__main__":
    main()
