"""Cost of the beyond-the-baseline kernels, each against a plain numpy/Python version in the same run.

1. Phase 3 transition optimization for all layers of the default model (its own calibration
   activation samples, ``K = 64`` per layer and timestep, ``T = 1000``) at ``G = 4, 8, 16`` and per
   timestep: jitted wall time, iterations to converge per layer, and the same fixed number of steps
   in numpy (the same loss, straight-through gradients, global-norm clipping and Adam written out by
   hand, a Python loop over layers and steps). ``--synthetic`` uses random activations of ``L = 8``
   layers instead of the model.
2. Phase 2 smoothing of ``64 layers x 1000 timesteps x 16 groups`` (each method) and the group-level
   variant, against numpy loops over boundaries.
3. Adaptive segmentation (DP, ``jump="bound"``) of ``64 x 1000`` statistics into 16 groups against
   the same algorithm in numpy, and the exact-jump DP at its size limit.

Jitted figures are the best of ``--repeats`` runs after one warm-up call (compile time is shown
apart). Usage::

    python benchmarks/bench_phases.py [--repeats 3] [--steps 200] [--synthetic]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import numpy as np

from thermojax.core.adaptive import adaptive_edges, segmentation_objective
from thermojax.core.smoothing import smooth_boundaries, smooth_groups
from thermojax.core.timegroups import group_activation_params, uniform_edges
from thermojax.core.transition import optimize_transitions


def best_time(fn, repeats: int, number: int = 1) -> tuple[float, float, object]:
    """(first-call seconds, best mean seconds over ``number`` later calls, result)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - start
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            out = jax.block_until_ready(fn())
        runs.append((time.perf_counter() - start) / number)
    return first, min(runs), out


def numpy_time(fn, repeats: int, number: int = 1) -> tuple[float, object]:
    """(best mean seconds over ``number`` calls, result)."""
    runs, out = [], None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        for _ in range(number):
            out = fn()
        runs.append((time.perf_counter() - start) / number)
    return min(runs), out


# ----------------------------------------------------------------------------- numpy references


def numpy_optimize(x, scales, zero_points, edges, *, bits, markov_weight, lr, steps, clip):
    """Phase 3 in numpy: one layer at a time, fixed step count (markov term only)."""
    qmax = 2**bits - 1
    starts = edges[:-1]
    num_params = scales.shape[1]
    b1, b2, eps = 0.9, 0.999, 1e-8
    losses = []
    for layer in range(x.shape[0]):
        xs = x[layer].astype(np.float32)
        log_s = np.log(scales[layer]).astype(np.float32)
        zps = np.clip(np.round(zero_points[layer]), 0, qmax).astype(np.float32)
        m = [np.zeros_like(log_s), np.zeros_like(zps)]
        v = [np.zeros_like(log_s), np.zeros_like(zps)]
        sizes = np.diff(edges)
        mse0 = None
        best, first = np.inf, None
        for step in range(1, steps + 1):
            s = np.exp(log_s)
            zr = np.clip(np.round(zps), 0, qmax)
            s_t = np.repeat(s, sizes)[:, None]
            z_t = np.repeat(zr, sizes)[:, None]
            u = xs / s_t
            r = np.round(u)
            c = r + z_t
            inside = (c >= 0) & (c <= qmax)
            q = np.clip(c, 0, qmax)
            approx = (q - z_t) * s_t
            err = xs - approx
            mse = np.mean(err**2)
            if mse0 is None:
                mse0 = mse + 1e-12 * np.mean(xs**2) + 1e-30
            d_log, d_z = np.diff(log_s), np.diff(zr) / qmax
            markov = np.mean(d_log**2 + d_z**2) if num_params > 1 else 0.0
            loss = mse / mse0 + markov_weight * markov
            first = loss if first is None else first
            best = min(best, loss)
            dapprox = -2 * err / (err.size * mse0)
            ds = np.where(inside, r - u, q - z_t)
            dz = np.where(inside, 0.0, -s_t)
            g_log = np.add.reduceat((dapprox * ds).sum(axis=1), starts) * s
            g_z = np.add.reduceat((dapprox * dz).sum(axis=1), starts)
            g_z = g_z * ((np.round(zps) >= 0) & (np.round(zps) <= qmax))
            if num_params > 1:
                k = 2 * markov_weight / (num_params - 1)
                g_log += k * (np.concatenate([[0], d_log]) - np.concatenate([d_log, [0]]))
                g_z += (k / qmax) * (np.concatenate([[0], d_z]) - np.concatenate([d_z, [0]]))
            norm = np.sqrt(np.sum(g_log**2) + np.sum(g_z**2))
            factor = clip / max(norm, clip)
            for i, (p, g) in enumerate(((log_s, g_log * factor), (zps, g_z * factor))):
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g**2
                p -= lr * (m[i] / (1 - b1**step)) / (np.sqrt(v[i] / (1 - b2**step)) + eps)
        losses.append((first, best))
    return np.array(losses).T


def numpy_smooth(params, edges, window, method):
    """Phase 2 per-timestep schedule in numpy: a loop over boundaries (layers vectorized)."""
    sizes = np.diff(edges)
    out = np.repeat(params, sizes, axis=1)
    num_groups = len(sizes)
    for b in range(1, num_groups):
        left = sizes[b - 1] if b == 1 else sizes[b - 1] // 2
        right = sizes[b] if b == num_groups - 1 else sizes[b] - sizes[b] // 2
        wl, wr = min(window, left), min(window, right)
        t = np.arange(edges[b] - wl, edges[b] + wr)
        u = (t - (edges[b] - wl) + 1) / (wl + wr + 1)
        if method == "cubic":
            u = u * u * (3 - 2 * u)
        elif method == "sigmoid":
            lo, hi = 1 / (1 + np.exp(5.0)), 1 / (1 + np.exp(-5.0))
            u = (1 / (1 + np.exp(-10.0 * (u - 0.5))) - lo) / (hi - lo)
        out[:, t] = (1 - u) * params[:, b - 1 : b] + u * params[:, b : b + 1]
    return out


def numpy_smooth_groups(params, window):
    num_groups = params.shape[1]
    out = np.empty_like(params)
    for g in range(num_groups):
        h = np.arange(max(0, g - window), min(num_groups, g + window + 1))
        w = 1 - np.abs(h - g) / (window + 1)
        out[:, g] = params[:, h] @ (w / w.sum())
    return out


def numpy_adaptive(stat_min, stat_max, num_groups, *, bits, lam):
    """The ``jump="bound"``, ``cost="range"`` DP in numpy (loop over ends, then over groups)."""
    qmax = 2**bits - 1
    low, high = np.minimum(stat_min, 0), np.maximum(stat_max, 0)
    num_layers, num_timesteps = low.shape
    ranges = high - low
    widest = np.maximum(ranges.max(axis=1, keepdims=True), 1e-30)

    def params(lo, hi):
        scale = np.maximum(hi - lo, 1e-6 * widest) / qmax
        return np.log(scale), np.clip(np.round(-lo / scale), 0, qmax)

    def dist(a, b):
        return np.abs(a[0] - b[0]) + np.abs(a[1] - b[1]) / qmax

    step = params(low, high)
    jump = lam / (num_groups - 1)
    gap = np.concatenate(
        [[0], dist((step[0][:, :-1], step[1][:, :-1]), (step[0][:, 1:], step[1][:, 1:])).mean(0)]
    )
    prefix = np.concatenate([np.zeros((num_layers, 1)), np.cumsum(ranges, axis=1)], axis=1)
    table = np.full((num_timesteps + 1, num_timesteps + 1), np.inf)
    group_low = np.full(low.shape, np.inf)
    group_high = np.full(low.shape, -np.inf)
    for t in range(num_timesteps):
        n = t + 1
        group_low[:, :n] = np.minimum(group_low[:, :n], low[:, t : t + 1])
        group_high[:, :n] = np.maximum(group_high[:, :n], high[:, t : t + 1])
        lo, hi = group_low[:, :n], group_high[:, :n]
        within = ((n - np.arange(n)) * (hi - lo) - (prefix[:, n : n + 1] - prefix[:, :n])) / (
            widest * num_timesteps
        )
        seg = params(lo, hi)
        entry = dist((step[0][:, :n], step[1][:, :n]), seg)
        entry[:, 0] = 0
        exit_ = (
            dist(seg, (step[0][:, t : t + 1], step[1][:, t : t + 1])) if n < num_timesteps else 0
        )
        table[:n, n] = (within + jump * (entry + exit_)).mean(0) + jump * gap[:n]
    best = np.full(num_timesteps + 1, np.inf)
    best[0] = 0
    choices = []
    for _ in range(num_groups):
        candidates = best[:, None] + table
        choices.append(candidates.argmin(axis=0))
        best = candidates.min(axis=0)
    edges = [num_timesteps]
    for choice in reversed(choices):
        edges.append(choice[edges[-1]])
    return np.array(edges[::-1], np.int32)


# ----------------------------------------------------------------------------- sections


def activation_data(synthetic: bool, bits: int):
    if synthetic:
        rng = np.random.default_rng(0)
        amp = np.exp(np.linspace(0, 2, 1000))[None, :, None] * rng.uniform(0.5, 2, (8, 1, 1))
        samples = ((rng.normal(size=(8, 1000, 64)) + 0.3) * amp).astype(np.float32)
        return "synthetic", samples, samples.min(axis=2), samples.max(axis=2)
    from thermojax.models import load_model
    from thermojax.pipeline.measure.calibrate import calibrate

    model = load_model()
    stats = calibrate(model, bit_width=bits, num_samples=64, samples_per_step=64)
    return f"{model.name} (weights INT{bits})", stats.act_samples, stats.act_min, stats.act_max


def bench_transition(args) -> None:
    source, samples, act_min, act_max = activation_data(args.synthetic, args.weight_bits)
    num_layers, num_timesteps, num_samples = samples.shape
    print(
        f"\n## Phase 3 transition optimization: {source}, L={num_layers}, T={num_timesteps}, "
        f"K={num_samples}, act_bits={args.act_bits}, markov_weight={args.markov_weight}"
    )
    print(
        f"{'S':>6} | {'jax first s':>11} | {f'jax {args.steps} steps s':>15} | "
        f"{f'numpy {args.steps} steps s':>17} | {'speed-up':>8} | "
        f"{'to converge s':>13} | {'best jax/np':>11} | start | iterations per layer"
    )
    for groups in (*args.groups, num_timesteps):
        edges = uniform_edges(num_timesteps, groups)
        scales, zps = group_activation_params(act_min, act_max, edges, bits=args.act_bits)
        scales, zps = np.asarray(scales), np.asarray(zps)
        common = {
            "bits": args.act_bits,
            "markov_weight": args.markov_weight,
            "learning_rate": args.learning_rate,
            "grad_clip": 1.0,
        }
        run_jax = functools.partial(optimize_transitions, samples, scales, zps, edges, **common)
        first, run, result = best_time(
            functools.partial(run_jax, max_iterations=args.steps, convergence_threshold=0.0),
            args.repeats,
        )
        np_s, np_loss = numpy_time(
            functools.partial(
                numpy_optimize,
                samples,
                scales,
                zps,
                edges,
                bits=args.act_bits,
                markov_weight=args.markov_weight,
                lr=args.learning_rate,
                steps=args.steps,
                clip=1.0,
            ),
            1,
        )
        start_gap = np.max(np.abs(np.asarray(result.initial_loss) - np_loss[0]) / np_loss[0])
        best = f"{float(np.mean(result.final_loss)):.3f}/{float(np.mean(np_loss[1])):.3f}"
        free = functools.partial(
            run_jax,
            max_iterations=args.max_iterations,
            convergence_threshold=args.threshold,
            patience=args.patience,
        )
        _, converge_s, converged = best_time(free, args.repeats)
        its = ", ".join(
            f"{int(i)}{'' if c else '*'}"
            for i, c in zip(np.asarray(converged.iterations), np.asarray(converged.converged))
        )
        label = "T" if groups == num_timesteps else str(groups)
        print(
            f"{label:>6} | {first:11.3f} | {run:15.3f} | {np_s:17.3f} | {np_s / run:7.1f}x | "
            f"{converge_s:13.3f} | {best:>11} | {start_gap:.0e} | {its}"
        )
    print(
        f"best jax/np: mean best loss over the fixed steps (1.0 = starting error; STE trajectories "
        f"diverge, so only similar, not equal); start: max relative gap of the starting losses.\n"
        f"to converge: best loss gained < {args.threshold} over {args.patience} steps "
        f"(* = stopped at max_iterations={args.max_iterations})"
    )


def bench_smoothing(args) -> None:
    rng = np.random.default_rng(0)
    layers, timesteps, groups, window = 64, 1000, 16, 20
    edges = uniform_edges(timesteps, groups)
    scales = rng.uniform(0.01, 1.0, (layers, groups)).astype(np.float32)
    zps = rng.integers(0, 256, (layers, groups)).astype(np.float32)
    print(f"\n## Phase 2 smoothing: L={layers}, T={timesteps}, G={groups}, window={window}")
    print(
        f"{'variant':>22} | {'jax first s':>11} | {'jax s':>9} | {'numpy s':>9} | speed-up | max |diff|"
    )
    for method in ("linear", "cubic", "sigmoid"):
        first, run, (s, _) = best_time(
            lambda m=method: smooth_boundaries(
                scales, zps, edges, num_timesteps=timesteps, method=m, window=window
            ),
            args.repeats,
        )
        np_s, ref = numpy_time(
            lambda m=method: numpy_smooth(scales, edges, window, m), args.repeats
        )
        diff = np.max(np.abs(np.asarray(s) - ref))
        print(
            f"{'boundaries/' + method:>22} | {first:11.4f} | {run:9.5f} | {np_s:9.5f} | "
            f"{np_s / run:7.1f}x | {diff:.1e}"
        )
    first, run, (s, _) = best_time(
        lambda: smooth_groups(scales, zps, window=3), args.repeats, number=50
    )
    np_s, ref = numpy_time(lambda: numpy_smooth_groups(scales, 3), args.repeats, number=50)
    print(
        f"{'groups/linear w=3':>22} | {first:11.4f} | {run:9.5f} | {np_s:9.5f} | "
        f"{np_s / run:7.1f}x | {np.max(np.abs(np.asarray(s) - ref)):.1e}"
    )


def bench_adaptive(args) -> None:
    rng = np.random.default_rng(0)
    layers, timesteps, groups = 64, 1000, 16
    centre = np.cumsum(rng.normal(size=(layers, timesteps)), axis=1)
    stat_min = (centre - rng.uniform(0.5, 2, (layers, timesteps))).astype(np.float32)
    stat_max = (centre + rng.uniform(0.5, 2, (layers, timesteps))).astype(np.float32)
    options = {"bits": 8, "lam": 0.5}
    print(
        f"\n## Adaptive time groups (DP): L={layers}, T={timesteps}, G={groups}, lam=0.5, range cost"
    )
    print(
        f"{'variant':>24} | {'jax first s':>11} | {'jax s':>9} | {'numpy s':>9} | speed-up | objective (uniform)"
    )
    first, run, edges = best_time(
        lambda: adaptive_edges(stat_min, stat_max, groups, **options), args.repeats
    )
    np_s, np_edges = numpy_time(lambda: numpy_adaptive(stat_min, stat_max, groups, **options), 1)
    value = float(segmentation_objective(stat_min, stat_max, edges, **options))
    np_value = float(segmentation_objective(stat_min, stat_max, np_edges, **options))
    uniform = float(
        segmentation_objective(stat_min, stat_max, uniform_edges(timesteps, groups), **options)
    )
    print(
        f"{'bound O(GT^2), T=1000':>24} | {first:11.3f} | {run:9.3f} | {np_s:9.3f} | "
        f"{np_s / run:7.1f}x | {value:.4f} (numpy {np_value:.4f}; uniform {uniform:.4f})"
    )
    short = (stat_min[:, :128], stat_max[:, :128])
    first, run, edges = best_time(
        lambda: adaptive_edges(*short, 8, jump="exact", **options), args.repeats
    )
    value = float(segmentation_objective(*short, edges, jump="exact", **options))
    uniform = float(segmentation_objective(*short, uniform_edges(128, 8), jump="exact", **options))
    print(
        f"{'exact O(GT^3), T=128 G=8':>24} | {first:11.3f} | {run:9.3f} | {'-':>9} | {'-':>8} | "
        f"{value:.4f} (uniform {uniform:.4f})"
    )


def main() -> None:
    """Print the three tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--steps", type=int, default=200, help="fixed steps for the numpy comparison"
    )
    parser.add_argument("--max-iterations", type=int, default=500)
    parser.add_argument("--threshold", type=float, default=1e-4)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--markov-weight", type=float, default=1.0)
    parser.add_argument("--act-bits", type=int, default=8)
    parser.add_argument("--weight-bits", type=int, default=4)
    parser.add_argument("--groups", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--only", choices=["transition", "smoothing", "adaptive"], nargs="*")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    sections = {
        "transition": bench_transition,
        "smoothing": bench_smoothing,
        "adaptive": bench_adaptive,
    }
    for name in args.only or sections:
        sections[name](args)


if __name__ == "__main__":
    main()
