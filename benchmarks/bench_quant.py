"""Throughput of the quantization kernel and the Markov metrics against same-run baselines.

Not a test: prints tables. Run from the repository root:

    .venv/bin/python benchmarks/bench_quant.py            # 32Mi elements, group 128
    .venv/bin/python benchmarks/bench_quant.py --elements 67108864 --repeats 20

Quantize: jitted ``thermojax.quantize`` (fp32 in, packed codes out) against two references of the
same array: a read-only pass (a jitted ``jnp.max`` of the whole array: one read, no output, the
fastest XLA reads it) and ``np.copyto`` (reads and writes it). Throughput is GB/s of fp32 input.
Beside the kernel: its two passes alone (the per-group min/max reduce, and the codes from given
ranges), the one-pass form (``lax.map`` over blocks of rows, each block's range and codes computed
while it sits in cache; equal codes, checked) and a plain numpy implementation of the same
algorithm. Runs are interleaved (each callable once per round) and the best of N is kept, so all
figures see the same machine state; quote the ratios, the absolute numbers move with whatever else
the machine runs.

Markov metrics: one jitted ``markov_metrics`` call over 10,000 layers x 64 groups x 16 thresholds
vs a Python loop over thresholds and layers (numpy per chain, as ArrowQuant V2's validator did).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from thermojax import markov_metrics, quantize
from thermojax.core.quant import _codes, _group_params, _pack, _quantize_grouped


def numpy_quantize(x: np.ndarray, bits: int, group_size: int):
    """The same algorithm and packed layout in plain (vectorized) numpy, float32."""
    qmax = 2**bits - 1
    xg = x.reshape(*x.shape[:-1], -1, group_size)
    lo = np.minimum(xg.min(axis=-1), 0.0)
    hi = np.maximum(xg.max(axis=-1), 0.0)
    scale = (hi - lo) / np.float32(qmax)
    scale = np.where(scale > 0, scale, np.float32(1.0))
    zero_point = np.clip(np.round(-lo / scale), 0, qmax)
    codes = np.clip(np.round(xg / scale[..., None]) + zero_point[..., None], 0, qmax)
    codes = codes.astype(np.uint8)
    per_byte = 8 // bits
    lane = group_size // per_byte
    packed = codes[..., :lane].copy()
    for k in range(1, per_byte):
        packed |= codes[..., k * lane : (k + 1) * lane] << np.uint8(k * bits)
    return packed.reshape(*x.shape[:-1], -1), scale, zero_point.astype(np.uint8)


@jax.jit
def read_only(x: jax.Array) -> jax.Array:
    """One read of ``x``, nothing written: the fastest pass XLA makes over it."""
    return jnp.max(x)


@partial(jax.jit, static_argnames=("group_size",))
def range_pass(x: jax.Array, *, group_size: int):
    """The kernel's first pass alone: each group's scale and zero point (one min/max reduce)."""
    xg = x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)
    _, inv_scale, zero_point = _group_params(xg, 1, False)
    return inv_scale, zero_point


@partial(jax.jit, static_argnames=("bits", "group_size"))
def codes_pass(x: jax.Array, inv_scale, zero_point, *, bits: int, group_size: int):
    """The kernel's second pass alone: packed codes from given per-group ranges."""
    xg = x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)
    return _pack(_codes(xg, inv_scale, zero_point, (1 << bits) - 1), bits)


@partial(jax.jit, static_argnames=("bits", "group_size", "rows"))
def one_pass_blocked(x: jax.Array, *, bits: int, group_size: int, rows: int):
    """The kernel's algorithm one block of ``rows`` rows at a time (``lax.map``): each block's range
    and codes are computed while the block is in cache, so main memory sees one read of ``x``."""
    qmax = (1 << bits) - 1

    def block(xb):
        xg = xb.reshape(rows, xb.shape[-1] // group_size, group_size)
        scale, inv_scale, zero_point = _group_params(xg, qmax, False)
        packed = _pack(_codes(xg, inv_scale, zero_point, qmax), bits)
        return packed, scale, zero_point.astype(jnp.uint8)

    packed, scale, zero_point = lax.map(block, x.reshape(-1, rows, x.shape[-1]))
    n = x.shape[0]
    return packed.reshape(n, *packed.shape[2:]), scale.reshape(n, -1), zero_point.reshape(n, -1)


def best_of(fns: dict[str, Callable[[], object]], repeats: dict[str, int]) -> dict[str, float]:
    """Interleave the callables round-robin; return each one's best wall time in seconds."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rnd in range(max(repeats.values())):
        for name, fn in fns.items():
            if rnd >= repeats[name]:
                continue
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: min(ts) for name, ts in times.items()}


def passes_over_input(bits: int, shape: tuple[int, ...], group_size: int) -> tuple[int, int]:
    """(fusions in the compiled kernel, fusions that read the fp32 input) from the optimized HLO."""
    spec = jax.ShapeDtypeStruct(shape, jnp.float32)
    text = (
        _quantize_grouped.lower(spec, bits=bits, group_size=group_size, symmetric=False)
        .compile()
        .as_text()
    )
    entry = text[text.index("ENTRY") :]
    param = re.search(r"%(\S+) = f32\[[\d,]+\]\{[\d,]+\} parameter\(0\)", entry).group(1)
    fusions = [line for line in entry.splitlines() if " fusion(" in line]
    reading = [line for line in fusions if re.search(rf"fusion\([^)]*%{re.escape(param)}\b", line)]
    return len(fusions), len(reading)


def bench_quantize(num_elements: int, group_size: int, repeats: int, block_rows: int) -> None:
    row = 4096
    shape = (num_elements // row, row)
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal(shape, dtype=np.float32)
    x = jnp.asarray(x_np)
    dst = np.empty_like(x_np)
    gb = x_np.nbytes / 1e9
    inv_scale, zero_point = range_pass(x, group_size=group_size)

    fns: dict[str, Callable[[], object]] = {
        "read-only": lambda: read_only(x),
        "np.copyto": lambda: np.copyto(dst, x_np),
        "range pass": lambda: range_pass(x, group_size=group_size),
    }
    reps = dict.fromkeys(fns, repeats)
    for bits in (2, 4, 8):
        fns[f"jax int{bits}"] = lambda b=bits: quantize(x, bits=b, group_size=group_size).codes
        fns[f"codes int{bits}"] = lambda b=bits: codes_pass(
            x, inv_scale, zero_point, bits=b, group_size=group_size
        )
        fns[f"one-pass int{bits}"] = lambda b=bits: one_pass_blocked(
            x, bits=b, group_size=group_size, rows=block_rows
        )[0]
        fns[f"numpy int{bits}"] = lambda b=bits: numpy_quantize(x_np, b, group_size)[0]
        reps.update({f"jax int{bits}": repeats, f"codes int{bits}": repeats})
        reps[f"one-pass int{bits}"] = max(2, repeats // 5)
        reps[f"numpy int{bits}"] = max(2, repeats // 5)
    for fn in fns.values():  # warm-up: compile, fault in output pages
        jax.block_until_ready(fn())
    for bits in (2, 4, 8):
        kernel = _quantize_grouped(x, bits=bits, group_size=group_size, symmetric=False)
        blocked = one_pass_blocked(x, bits=bits, group_size=group_size, rows=block_rows)
        packed = kernel[0].reshape(blocked[0].shape)
        for ours, theirs in zip((packed, *kernel[1:]), blocked, strict=True):
            np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    # The numpy reference must agree with the kernel (ties may differ by one code).
    for bits in (2, 4):
        ours = np.asarray(quantize(x[:64], bits=bits, group_size=group_size).codes)
        theirs = numpy_quantize(x_np[:64], bits, group_size)[0]
        assert np.mean(ours != theirs) < 1e-3, f"numpy reference disagrees at int{bits}"

    best = best_of(fns, reps)
    print(
        f"\nQuantize: {num_elements:,} fp32 elements ({x_np.nbytes / 2**20:.0f} MiB) as {shape}, "
        f"group {group_size}; best of {repeats} interleaved runs (one-pass and numpy: "
        f"{reps['numpy int2']}); one-pass blocks of {block_rows} rows"
    )
    print(
        f"{'kernel':<15} {'best ms':>9} {'GB/s':>8} {'vs read':>8} {'vs copyto':>10} "
        f"{'vs numpy':>9}  fusions"
    )

    def line(name: str, extra: str = "") -> None:
        t = best[name]
        print(
            f"{name:<15} {t * 1e3:9.2f} {gb / t:8.2f} {best['read-only'] / t:8.2f} "
            f"{best['np.copyto'] / t:10.2f} {extra}"
        )

    line("read-only")
    line("np.copyto")
    line("range pass")
    for bits in (2, 4, 8):
        n_fusions, n_reads = passes_over_input(bits, shape, group_size)
        speedup = best[f"numpy int{bits}"] / best[f"jax int{bits}"]
        line(f"jax int{bits}", f"{speedup:9.1f}  {n_fusions} ({n_reads} read x)")
        line(f"codes int{bits}")
        line(f"one-pass int{bits}")
    for bits in (2, 4, 8):
        line(f"numpy int{bits}", f"{1.0:9.1f}")


def markov_loop(scales: np.ndarray, zero_points: np.ndarray, qmax: float, thresholds) -> list:
    """The unvectorized baseline: per threshold, per layer, numpy over one chain's boundaries."""
    out = []
    for threshold in thresholds:
        per_layer = []
        for s, z in zip(scales, zero_points, strict=True):
            scale_jumps = np.abs(np.diff(s)) / s[:-1]
            zp_jumps = np.abs(np.diff(z)) / qmax
            total = scale_jumps + zp_jumps
            boundary = 1.0 - np.minimum(1.0, total / 2.0)
            smooth = 1.0 - min(1.0, float(total.sum()) / (2 * (len(s) - 1)))
            violated = scale_jumps > threshold
            severity = np.where(scale_jumps > 0.5, 3, np.where(scale_jumps > 0.3, 2, 1)) * violated
            per_layer.append((boundary, smooth, violated, severity))
        out.append(per_layer)
    return out


def bench_markov(num_layers: int, num_groups: int, num_thresholds: int, repeats: int) -> None:
    rng = np.random.default_rng(1)
    scales = np.exp(rng.normal(-3.0, 0.3, (num_layers, num_groups))).astype(np.float32)
    zero_points = rng.integers(100, 156, (num_layers, num_groups)).astype(np.float32)
    thresholds = np.linspace(0.05, 0.8, num_thresholds).astype(np.float32)
    s, z, t = jnp.asarray(scales), jnp.asarray(zero_points), jnp.asarray(thresholds)

    def vectorized():
        return markov_metrics(s, z, qmax=255.0, threshold=t)

    jax.block_until_ready(vectorized())
    best_vec = best_of({"jax": vectorized}, {"jax": repeats})["jax"]
    start = time.perf_counter()
    loop = markov_loop(scales, zero_points, 255.0, thresholds)
    t_loop = time.perf_counter() - start

    m = vectorized()
    k, layer = num_thresholds // 2, num_layers // 3
    np.testing.assert_array_equal(np.asarray(m.severity[k, layer]), loop[k][layer][3])
    np.testing.assert_allclose(float(m.smoothness_score[layer]), loop[k][layer][1], rtol=1e-5)

    print(
        f"\nMarkov metrics: {num_layers:,} layers x {num_groups} groups x {num_thresholds} "
        f"thresholds (vectorized: best of {repeats}; loop: one run)"
    )
    print(f"{'implementation':<26} {'ms':>10} {'speed-up':>9}")
    print(f"{'python loop (numpy/chain)':<26} {t_loop * 1e3:10.1f} {'1':>9}")
    print(f"{'jitted markov_metrics':<26} {best_vec * 1e3:10.2f} {t_loop / best_vec:9.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=32 * 2**20, help="fp32 elements (32Mi)")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15, help="best-of-N for jitted kernels")
    parser.add_argument("--block-rows", type=int, default=64, help="rows per one-pass block")
    parser.add_argument("--layers", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--thresholds", type=int, default=16)
    args = parser.parse_args()
    if args.elements % 4096 or 4096 % args.group_size:
        parser.error("--elements must be a multiple of 4096 and --group-size divide 4096")
    if args.block_rows < 1 or (args.elements // 4096) % args.block_rows:
        parser.error(f"--block-rows {args.block_rows} must divide the {args.elements // 4096} rows")

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"thermojax bench_quant: jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"numpy {np.__version__}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"load average {load[0]:.1f}"
    )
    bench_quantize(args.elements, args.group_size, args.repeats, args.block_rows)
    bench_markov(args.layers, args.groups, args.thresholds, args.repeats)


if __name__ == "__main__":
    main()
