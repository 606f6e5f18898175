"""The masked-diffusion sampler's nucleus (top-p) filter: bisection against the sort it replaced.

``nucleus_filter`` (``thermojax/models/nucleus.py``) finds the nucleus's cut by bisecting
over the float32 bit patterns of the probabilities (30 masked sums over the vocabulary); until
it did, it sorted the whole vocabulary at every position of every step (``sort`` below, the
old code verbatim). Both run jitted on the same ``[rows, vocab]`` float32 logits (normal, times
``--scale``: a peaked, LM-like softmax), after a warm-up call; per row of the table: the median
time per call over ``--repeats`` rounds (each round runs every variant once, so that load from
other processes hits them alike), the softmax alone as the floor both pay, the ratio, and how
many rows' kept sets differ (rounding at the cut: see ``nucleus_filter``'s docstring).

Usage::

    python benchmarks/bench_nucleus.py [--rows 256] [--vocab 19000 152064] [--top-p 0.95]

Quote ratios: absolute times move with whatever else the machine runs. Dream 7B's vocabulary
is 152,064; 19,000 is about the small-scale synthetic checkpoints'.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.models.nucleus import nucleus_filter as _nucleus


def nucleus_sort(logits: jax.Array, top_p: float) -> jax.Array:
    """The sort-based filter ``nucleus_filter`` replaced (the baseline)."""
    probs = jax.nn.softmax(logits, axis=-1)
    descending = -jnp.sort(-probs, axis=-1)
    mass_before = jnp.cumsum(descending, axis=-1) - descending
    smallest_kept = jnp.min(
        jnp.where(mass_before < top_p, descending, jnp.inf), axis=-1, keepdims=True
    )
    return jnp.where(probs >= smallest_kept, logits, -jnp.inf)


def median_seconds(programs: dict, logits: jax.Array, repeats: int) -> dict[str, float]:
    for program in programs.values():
        program(logits).block_until_ready()  # compile and warm up
    times: dict[str, list[float]] = {name: [] for name in programs}
    for _ in range(repeats):
        for name, program in programs.items():
            start = time.perf_counter()
            program(logits).block_until_ready()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="positions per call (N x L)")
    parser.add_argument("--vocab", type=int, nargs="+", default=[19000, 152064])
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--scale", type=float, default=3.0, help="logits ~ scale x N(0, 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    top_p = args.top_p
    programs = {
        "softmax": jax.jit(lambda x: jax.nn.softmax(x, axis=-1)),
        "sort": jax.jit(lambda x: nucleus_sort(x, top_p)),
        "bisection": jax.jit(lambda x: _nucleus(x, top_p)),
    }
    print(
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {platform.machine()}; "
        f"rows={args.rows}, top_p={top_p}, logits ~ {args.scale} x N(0, 1), "
        f"median of {args.repeats}\n"
    )
    print("| vocab | softmax ms | sort ms | bisection ms | sort / bisection | rows differing |")
    print("|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(args.seed)
    for vocab in args.vocab:
        logits = jnp.asarray(args.scale * rng.standard_normal((args.rows, vocab), np.float32))
        seconds = median_seconds(programs, logits, args.repeats)
        kept_sort = np.isfinite(np.asarray(programs["sort"](logits)))
        kept_new = np.isfinite(np.asarray(programs["bisection"](logits)))
        differing = int(np.any(kept_sort != kept_new, axis=-1).sum())
        ms = {name: 1e3 * s for name, s in seconds.items()}
        print(
            f"| {vocab:,} | {ms['softmax']:.1f} | {ms['sort']:.1f} | {ms['bisection']:.1f} "
            f"| {seconds['sort'] / seconds['bisection']:.1f}x | {differing} / {args.rows} |"
        )


if __name__ == "__main__":
    main()
