"""Quantize, export and reload a 7.6B-parameter checkpoint, streamed: speed, memory and size.

    python benchmarks/bench_checkpoint.py                        # full-size synthetic Dream 7B
    python benchmarks/bench_checkpoint.py --scale 4              # a quick look
    python benchmarks/bench_checkpoint.py --checkpoint DIR       # an existing HF folder

Writes (or reuses, with ``--checkpoint``) a synthetic checkpoint with Dream 7B's exact layout
(``thermojax.models.hf.write_dream_like``: bf16, ~5 GB shards, per-channel outliers), then, each
in a fresh process so that its peak RSS is its own:

- **read**: every tensor streamed once, NaN/Inf check off: the baseline, how fast this machine
  reads the checkpoint (warm page cache);
- **quantize**: weight-only quantization and measurement of every tensor at each bit width
  (default rules: linear weights quantized, embeddings, norms and ``lm_head`` kept), warm and
  cold (the shards' pages dropped first with ``posix_fadvise(DONTNEED)``);
- **export**: the same, writing the quantized checkpoint (with its Orbax copy, then without);
- **reload**: ``load_quantized(mmap=False)`` of the export, every tensor read into memory:
  right after the export (its pages partly evicted: a 15 GB source and its export do not fit
  in 24 GB), then again (warm); then the default ``load_quantized()``, which maps the shards
  (headers, scales and zero points read and checked), alone and followed by paging in every
  4 KiB page of every tensor, as a first use of the whole model would.

GB/s are checkpoint bytes (as stored) per second; for reload, exported bytes per second. The
export's size is checked against the honest formula (codes + one fp32 scale and one uint8 zero
point per group + kept tensors as stored). Targets: quantize >= 1 GB/s warm end to end, peak RSS
below 2x the largest tensor at fp32 + 1 GB, reload >= 2 GB/s. Finally the size table of the
checkpoint's layout at each bit width and group size, by the same formula.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _drop_page_cache(folder: Path) -> None:
    for file in folder.glob("*.safetensors"):
        with open(file, "rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors") if "orbax" not in p.parts)


def worker(task: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this process; returns its figures."""
    from thermojax.models.hf import open_checkpoint
    from thermojax.pipeline.weights.rules import DEFAULT_RULES

    source = Path(task["checkpoint"])
    if task.get("cold"):
        _drop_page_cache(source)
    start = time.perf_counter()
    out: dict[str, Any] = {}
    if task["kind"] == "read":
        checkpoint = open_checkpoint(source)
        total = 0
        for info, array in checkpoint.iter_tensors(check_finite=False):
            total += array.nbytes
        out["bytes"] = total
    elif task["kind"] == "quantize":
        from thermojax.pipeline.weights.stream import quantize_checkpoint

        checkpoint = open_checkpoint(source)
        report = quantize_checkpoint(
            checkpoint, list(DEFAULT_RULES), bits=task["bits"], group_size=task["group_size"]
        )
        out.update(bytes=checkpoint.total_bytes, quantized_bytes=report.total_quantized_bytes)
        out["model_cosine"] = report.model_cosine
    elif task["kind"] == "export":
        from thermojax.pipeline.checkpoint.export import export_checkpoint

        checkpoint = open_checkpoint(source)
        target = Path(task["out"])
        _, report = export_checkpoint(
            checkpoint,
            target,
            list(DEFAULT_RULES),
            bits=task["bits"],
            group_size=task["group_size"],
            orbax=task.get("orbax", True),
        )
        out.update(
            bytes=checkpoint.total_bytes,
            quantized_bytes=report.total_quantized_bytes,
            written_bytes=_folder_bytes(target),
        )
    elif task["kind"] == "reload":
        from thermojax.pipeline.checkpoint.reload import load_quantized

        loaded = load_quantized(task["out"], mmap=task["mmap"])
        out["bytes"] = _folder_bytes(Path(task["out"]))
        out["tensors"] = len(loaded.qtensors) + len(loaded.tensors)
        if task.get("touch"):  # page in every 4 KiB page of every tensor, as a first use would
            arrays = [*loaded.tensors.values()]
            arrays += [leaf for q in loaded.qtensors.values() for leaf in (q.codes, q.scale)]
            arrays += [q.zero_point for q in loaded.qtensors.values()]
            out["touched"] = sum(int(a.reshape(-1).view(np.uint8)[::4096].sum()) for a in arrays)
    out["seconds"] = time.perf_counter() - start
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


def measure(task: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(task)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def size_table(config: dict[str, Any]) -> list[tuple[int, int, float, float]]:
    """``(bits, group, GB with the default rules, GB with every 2-D weight quantized)``; NaN where
    the group size does not divide a width."""
    from thermojax.errors import UserInputError
    from thermojax.models.hf import expected_shapes
    from thermojax.pipeline.weights.rules import DEFAULT_RULES, QuantRule, resolve_rules

    shapes = expected_shapes(config)
    rows = []
    for bits in (2, 4, 8):
        for group in (32, 64, 128, 256):
            sizes = []
            for rules in (list(DEFAULT_RULES), [QuantRule(include=".", exclude=None)]):
                try:
                    resolved = resolve_rules(shapes.items(), rules, bits=bits, group_size=group)
                except UserInputError:  # the group does not divide a width of this layout
                    sizes.append(float("nan"))
                    continue
                total = 0
                for name, shape in shapes.items():
                    numel = math.prod(shape)
                    rule = resolved[name]
                    if rule is None:
                        total += 2 * numel  # bf16 as stored
                    else:
                        total += numel * rule.bits // 8 + (numel // rule.group_size) * 5
                sizes.append(total / 1e9)
            rows.append((bits, group, *sizes))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="an existing checkpoint folder")
    parser.add_argument("--scale", type=int, default=1, help="synthetic width divisor (1: 7.6B)")
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--group-size", type=int, default=64)
    parser.add_argument("--work", type=Path, help="folder for the synthetic checkpoint and exports")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return

    from thermojax.models.hf import open_checkpoint, write_dream_like

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-checkpoint-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    source = args.checkpoint
    if source is None:
        source = work / f"dream-like-scale{args.scale}"
        if not (source / "config.json").is_file():
            t0 = time.perf_counter()
            write_dream_like(source, scale=args.scale)
            print(f"wrote {source} in {time.perf_counter() - t0:.0f} s")
    checkpoint = open_checkpoint(source)
    largest = max(checkpoint.tensors.values(), key=lambda i: i.numel)
    budget_mib = (2 * 4 * largest.numel + 1e9) / 2**20
    print(
        f"checkpoint {source}: {len(checkpoint.tensors)} tensors, {checkpoint.total_bytes / 1e9:.2f} "
        f"GB in {len(checkpoint.shards)} shards; largest {largest.name} {list(largest.shape)}; "
        f"RSS budget {budget_mib:.0f} MiB"
    )
    base = {"checkpoint": str(source), "group_size": args.group_size}
    measure({**base, "kind": "read"})  # warm the page cache
    read = measure({**base, "kind": "read"})
    rows = [("read (baseline)", "-", read, read["bytes"])]
    for bits in args.bits:
        warm = measure({**base, "kind": "quantize", "bits": bits})
        cold = measure({**base, "kind": "quantize", "bits": bits, "cold": True})
        rows += [(f"quantize W{bits}", "warm", warm, warm["bytes"])]
        rows += [(f"quantize W{bits}", "cold", cold, cold["bytes"])]
        out = work / f"export-w{bits}"
        shutil.rmtree(out, ignore_errors=True)
        exported = measure({**base, "kind": "export", "bits": bits, "out": str(out)})
        rows.append((f"export W{bits}", "warm", exported, exported["bytes"]))
        plain = work / f"export-w{bits}-no-orbax"
        shutil.rmtree(plain, ignore_errors=True)
        no_orbax = measure(
            {**base, "kind": "export", "bits": bits, "out": str(plain), "orbax": False}
        )
        rows.append((f"  no Orbax W{bits}", "warm", no_orbax, no_orbax["bytes"]))
        shutil.rmtree(plain, ignore_errors=True)
        reload = {**base, "kind": "reload", "bits": bits, "out": str(out)}
        for label, cache, options in (
            ("reload", "first", {"mmap": False}),  # read into memory, right after the export
            ("reload", "warm", {"mmap": False}),
            ("reload mapped", "warm", {"mmap": True}),  # the default: headers, scales, zeros
            ("+ page in", "warm", {"mmap": True, "touch": True}),  # and every page of it
        ):
            figures = measure({**reload, **options})
            rows.append((f"{label} W{bits}", cache, figures, figures["bytes"]))
        formula = exported["quantized_bytes"]
        print(
            f"W{bits} group {args.group_size}: export {exported['written_bytes'] / 1e9:.3f} GB of "
            f"safetensors, formula {formula / 1e9:.3f} GB "
            f"(files hold {exported['written_bytes'] - formula:+d} bytes: headers and alignment)"
        )
        shutil.rmtree(out, ignore_errors=True)
    print(f"\n{'step':<18}{'cache':<7}{'seconds':>9}{'GB/s':>8}{'x read':>8}{'peak RSS MiB':>14}")
    read_rate = read["bytes"] / read["seconds"]
    for label, cache, figures, nbytes in rows:
        rate = nbytes / figures["seconds"]
        print(
            f"{label:<18}{cache:<7}{figures['seconds']:>9.2f}{rate / 1e9:>8.2f}"
            f"{rate / read_rate:>8.2f}{figures['peak_rss_mib']:>14.0f}"
        )
    print(
        f"\nsizes of this layout (GB; kept tensors at bf16), source {checkpoint.total_bytes / 1e9:.2f} GB"
    )
    print(f"{'bits':>5}{'group':>7}{'default rules':>15}{'all 2-D quantized':>19}")
    for bits, group, default, everything in size_table(checkpoint.config):
        print(f"{bits:>5}{group:>7}{default:>15.3f}{everything:>19.3f}")


if __name__ == "__main__":
    main()
