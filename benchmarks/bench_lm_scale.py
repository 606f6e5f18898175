"""The whole baseline command on a full-size synthetic Dream-7B / LLaDA-8B checkpoint: time per
denoising step, calibration cost and peak memory.

    python benchmarks/bench_lm_scale.py --write /tmp/dream7b                   # full size, 15.2 GB
    python benchmarks/bench_lm_scale.py --write /tmp/llada8b --layout llada    # 16.0 GB
    python benchmarks/bench_lm_scale.py --checkpoint DIR [--bits 4 2] [--device gpu]
    python benchmarks/bench_lm_scale.py --write /tmp/small --scale 8 --layers 2   # a quick look
    python benchmarks/bench_lm_scale.py --checkpoint DIR --set sampling.top_p=1.0  # more overrides

Runs, for each of ``--bits`` and each in a fresh process, with a fresh ``THERMOJAX_CACHE_DIR``
(no stage cache, no compiled program reused)::

    python -m thermojax.baseline model.path=DIR model.run=diffusion bit_width=B
        num_time_groups=4 sampling.num_samples=2 sampling.length=128 sampling.steps=16
        calibration.samples=2 calibration.samples_per_step=64 wandb.mode=disabled

The child process is that command's own ``main`` with three programs timed around it (each
call waited for with ``block_until_ready``; XLA compile time, from JAX's monitoring events,
subtracted): the sampler scan (``sampling._sample_program``) in the ``sample fp32`` stage (the
reference: unquantized weights, as ``model.dtype`` loads them, float32 matmuls) and in the
``sample quantized`` stage (packed weights, 8-bit activations), the calibration scan
(``calibrate._calibration_program``: the sampler with packed weights, recording statistics)
and the quality bounds (``text._bound_program``, which the ``sample quantized`` stage runs
after sampling: 16 network passes per bound, two generative bounds, and for a folder with a
tokenizer the held-out bound on 32 windows twice, so that stage's wall time is not the quantized
sampler's). The fp32 bounds also give the time of one network pass alone over the same N x L
tokens: what a denoising step costs beyond it is the sampler's own work (the top-p threshold
search and the draw over the vocabulary, which weigh most at small scale;
``--set sampling.top_p=1.0`` leaves out the first).
Peak RSS is the process's ``VmHWM``, reset (``/proc/self/clear_refs``) at each stage's start,
so each stage's peak is its own; the overall peak is the largest of them and of what ran
between stages (start-up, writing the outputs).

Targets (issue 24): peak RSS <= 1.15 x the checkpoint's size at bf16 + 1 GB; quantized time
per step <= 1.5 x the reference's. The FLOPs per denoising step are counted from the config so
that a time on another machine can be judged: 2 x (parameters of the linear layers: q, k, v,
o, gate, up, down of every block and the output head) x N x L tokens (every position runs at
every step), plus attention's two matmuls, 4 x layers x N x L^2 x heads x head_dim; the
embedding lookup, norms, rotary, softmax, SiLU, biases and the sampler's own work are not
counted.

``--device`` sets ``JAX_PLATFORMS`` for the child (``cpu`` by default; ``gpu`` is ``cuda``);
on an accelerator the device's peak memory is reported too, where JAX gives it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PLATFORMS = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
"""JAX's monitoring events whose durations make up a program's compile time."""
GB = 1e9


# ---------------------------------------------------------------------------- the child


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class _PeakMemory:
    """The process's peak RSS, per stretch: :meth:`restart` returns the peak since the last
    one and resets the kernel's high-water mark (where ``/proc/self/clear_refs`` allows)."""

    def __init__(self) -> None:
        self.overall_kib = 0
        self.resettable = True

    def restart(self) -> int:
        peak = _status_kib("VmHWM")
        self.overall_kib = max(self.overall_kib, peak)
        if self.resettable:
            try:
                with open("/proc/self/clear_refs", "w") as handle:
                    handle.write("5")
            except OSError:
                self.resettable = False
        return peak


def child(figures_path: Path, overrides: list[str]) -> None:
    """Run the baseline command in this process with its programs and stages measured; write
    the figures to ``figures_path`` however the command ends."""
    import jax
    import numpy as np
    from jax import monitoring

    from thermojax.pipeline.measure import calibrate, sampling
    from thermojax.pipeline.quality import text
    from thermojax.pipeline.run import stages as stages_module

    compile_s = [0.0]

    def on_duration(event: str, duration: float, **_: Any) -> None:
        if event in COMPILE_EVENTS:
            compile_s[0] += duration

    monitoring.register_event_duration_secs_listener(on_duration)
    memory = _PeakMemory()
    memory.restart()
    current = ["start-up"]
    figures: dict[str, Any] = {"programs": [], "stages": {}}

    def timed(module: Any, attribute: str, program: str) -> None:
        original = getattr(module, attribute)

        def measured(*args: Any, **kwargs: Any) -> Any:
            compiled, start = compile_s[0], time.perf_counter()
            out = jax.block_until_ready(original(*args, **kwargs))
            wall = time.perf_counter() - start
            call = {"program": program, "stage": current[0], "wall_s": wall}
            call["compile_s"] = compile_s[0] - compiled
            if program == "quality bound":  # fp32 network passes over these many tokens
                call["fp32_tokens"] = int(np.size(args[4])) * text.NUM_MASK_RATIOS
                call["fp32_tokens"] *= args[1] is None
            figures["programs"].append(call)
            return out

        setattr(module, attribute, measured)

    timed(sampling, "_sample_program", "sampler")
    timed(calibrate, "_calibration_program", "calibration")
    timed(text, "_bound_program", "quality bound")
    run_stage = stages_module.Stages.__call__

    @contextlib.contextmanager
    def measured_stage(self: Any, name: str) -> Any:
        memory.restart()
        current[0], compiled = name, compile_s[0]
        with run_stage(self, name):
            yield
        peak = memory.restart()
        figures["stages"][name] = {
            "peak_rss_bytes": 1024 * peak if memory.resettable else None,
            "compile_s": compile_s[0] - compiled,
        }
        current[0] = "between stages"

    stages_module.Stages.__call__ = measured_stage
    sys.argv = ["thermojax.baseline", *overrides]
    status: Any = 0
    try:
        from thermojax.cli.baseline import main

        main()
    except SystemExit as end:
        status = end.code
    finally:
        memory.restart()
        figures["exit"] = status
        figures["peak_rss_bytes"] = 1024 * memory.overall_kib
        figures["per_stage_rss"] = memory.resettable
        device = jax.devices()[0]
        figures["device"] = f"{device.platform} {device.device_kind}"
        stats = device.memory_stats() if device.platform != "cpu" else None
        figures["device_peak_bytes"] = (stats or {}).get("peak_bytes_in_use")
        figures_path.write_text(json.dumps(figures))


# ---------------------------------------------------------------------------- the parent


def machine() -> str:
    """The CPU model, cores and memory, in words."""
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    total = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
    return f"{model}, {os.cpu_count()} cores, {total / 2**30:.1f} GiB memory"


def model_figures(folder: Path, *, num_samples: int, length: int) -> dict[str, Any]:
    """Parameters, their bf16 size and the FLOPs of one denoising step (module doc)."""
    import math

    from thermojax.models.dream.config import DreamConfig
    from thermojax.models.dream.network import linear_layer_names

    config = DreamConfig.from_hf(json.loads((folder / "config.json").read_text("utf-8")))
    shapes = config.tensor_shapes()
    parameters = sum(math.prod(shape) for shape in shapes.values())
    linear = 0
    for name in linear_layer_names(config.num_hidden_layers, config.layout):
        tied = name == config.layout.head and config.tie_word_embeddings
        linear += math.prod(shapes[config.layout.embed if tied else name])
    tokens = num_samples * length
    attention_width = config.num_attention_heads * config.head_dim
    attention = 4 * config.num_hidden_layers * num_samples * length**2 * attention_width
    return {
        "config": config,
        "parameters": parameters,
        "bf16_bytes": 2 * parameters,
        "linear_parameters": linear,
        "attention_width": attention_width,
        "flops_linear": 2 * linear * tokens,
        "flops_attention": attention,
    }


def _poll_peak_rss(process: subprocess.Popen) -> int:
    """Wait for ``process``; the largest ``VmRSS`` seen every 0.2 s (a lower bound, kept in
    case the child dies before it writes its own figures)."""
    peak = 0
    while process.poll() is None:
        with (
            contextlib.suppress(OSError, ValueError),
            open(f"/proc/{process.pid}/status") as status,
        ):
            for line in status:
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        time.sleep(0.2)
    return peak


def run_one(folder: Path, bits: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One baseline run at ``bits`` in a fresh process; its result JSON and measured figures."""
    cache, out = work / f"cache-w{bits}", work / f"run-w{bits}"
    for stale in (cache, out):
        shutil.rmtree(stale, ignore_errors=True)
    figures_path = work / f"figures-w{bits}.json"
    figures_path.unlink(missing_ok=True)
    overrides = [
        f"model.path={folder}",
        "model.run=diffusion",
        f"bit_width={bits}",
        f"num_time_groups={args.groups}",
        f"sampling.num_samples={args.samples}",
        f"sampling.length={args.length}",
        f"sampling.steps={args.steps}",
        f"calibration.samples={args.samples}",
        f"calibration.samples_per_step={args.samples_per_step}",
        "wandb.mode=disabled",
        *args.set,
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, "THERMOJAX_CACHE_DIR": str(cache), "JAX_PLATFORMS": PLATFORMS[args.device]}
    command = [sys.executable, __file__, "--child", str(figures_path), "--", *overrides]
    print(f"W{bits}: python -m thermojax.baseline {' '.join(overrides[:-1])}", flush=True)
    start = time.perf_counter()
    with open(work / f"child-w{bits}.log", "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        polled = _poll_peak_rss(process)
    wall = time.perf_counter() - start
    figures = json.loads(figures_path.read_text()) if figures_path.is_file() else {}
    result_path = out / "baseline_metrics.json"
    if process.returncode != 0 or not result_path.is_file():
        tail = (work / f"child-w{bits}.log").read_text(errors="replace").strip().splitlines()[-5:]
        print(f"W{bits}: the run failed (exit {process.returncode}, peak RSS seen "
              f"{polled / GB:.2f} GB):\n  " + "\n  ".join(tail))  # fmt: skip
        return {}
    result = json.loads(result_path.read_text())
    return {"result": result, "figures": figures, "wall_s": wall, "polled_rss": polled}


def _execution(figures: dict[str, Any], program: str, stage: str) -> tuple[float, float]:
    """``(run seconds without compile, compile seconds)`` of ``program``'s calls in ``stage``."""
    calls = [p for p in figures["programs"] if p["program"] == program and p["stage"] == stage]
    compile_s = sum(p["compile_s"] for p in calls)
    return sum(p["wall_s"] for p in calls) - compile_s, compile_s


def print_tables(runs: dict[int, dict[str, Any]], model: dict[str, Any], args: argparse.Namespace):
    budget = 1.15 * model["bf16_bytes"] + 1 * GB
    print(
        f"\n{'W':>3} {'ref s/step':>11} {'quant s/step':>13} {'quant/ref':>10} "
        f"{'calib/ref pass':>15} {'compile s':>10} {'peak RSS GB':>12} {'RSS/budget':>11} "
        f"{'total s':>8}"
    )
    for bits, run in runs.items():
        if not run:
            print(f"{bits:>3} failed")
            continue
        figures, timings = run["figures"], run["result"]["timings_s"]
        steps = run["result"]["sampler"]["steps"]
        ref, ref_compile = _execution(figures, "sampler", "sample fp32")
        quant, quant_compile = _execution(figures, "sampler", "sample quantized")
        calib, calib_compile = _execution(figures, "calibration", "calibrate")
        peak = figures["peak_rss_bytes"]
        print(
            f"{bits:>3} {ref / steps:>11.3f} {quant / steps:>13.3f} {quant / ref:>9.2f}x "
            f"{calib / ref:>14.2f}x {ref_compile + quant_compile + calib_compile:>10.1f} "
            f"{peak / GB:>12.2f} {peak / budget:>10.2f}x {timings['total']:>8.1f}"
        )
    print(
        f"targets: quant/ref <= 1.5x; peak RSS <= 1.15 x {model['bf16_bytes'] / GB:.2f} GB (bf16) "
        f"+ 1 GB = {budget / GB:.2f} GB. s/step: the scan's run time (compile excluded) / "
        f"{args.steps} steps; calib/ref pass: the calibration scan / the reference sampling scan; "
        "compile s: the three scans' XLA compile time"
    )
    print(
        f"\n{'stage':<24}" + "".join(f"{f'W{b} s':>9} {'compile':>8} {'RSS GB':>7}" for b in runs)
    )
    names = next((list(r["result"]["timings_s"]) for r in runs.values() if r), [])
    for name in names:
        row = f"{name:<24}"
        for run in runs.values():
            if not run:
                row += f"{'-':>9} {'-':>8} {'-':>7}"
                continue
            stage = run["figures"]["stages"].get(name, {})
            peak = (
                stage.get("peak_rss_bytes") if name != "total" else run["figures"]["peak_rss_bytes"]
            )
            compiled = stage.get("compile_s")
            row += f"{run['result']['timings_s'][name]:>9.2f} "
            row += f"{'-' if compiled is None else f'{compiled:.2f}':>8} "
            row += f"{'-' if peak is None else f'{peak / GB:.2f}':>7}"
        print(row)
    for bits, run in runs.items():
        if not run:
            continue
        bounds, _ = _execution(run["figures"], "quality bound", "sample quantized")
        calls = [p for p in run["figures"]["programs"] if p.get("fp32_tokens")]
        tokens = sum(p["fp32_tokens"] for p in calls)
        seconds = sum(p["wall_s"] - p["compile_s"] for p in calls)
        extra = run["figures"].get("device_peak_bytes")
        device = f"; device peak {extra / GB:.2f} GB" if extra else ""
        print(
            f"W{bits}: of 'sample quantized', {bounds:.2f} s are the quality bounds (run time); "
            f"process wall {run['wall_s']:.1f} s{device}"
        )
        if tokens:
            per_pass = seconds / tokens * args.samples * args.length
            print(
                f"W{bits}: one fp32 network pass over N x L tokens, alone (the quality bounds' "
                f"{tokens // (args.samples * args.length)} passes): {per_pass:.3f} s; the rest of "
                "a reference step is the sampler's own work"
            )


def main() -> None:
    """Write or reuse the checkpoint, run each bit width, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--checkpoint", type=Path, help="an existing Dream or LLaDA folder")
    where.add_argument("--write", type=Path, help="write a synthetic checkpoint here first")
    parser.add_argument("--layout", choices=("dream", "llada"), default="dream")
    parser.add_argument("--scale", type=int, default=1, help="width divisor (1: full size)")
    parser.add_argument("--layers", type=int, help="layer count (default the layout's)")
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--device", choices=sorted(PLATFORMS), default="cpu")
    parser.add_argument("--samples", type=int, default=2, help="sampling and calibration N")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--samples-per-step", type=int, default=64)
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="KEY=VALUE", help="more overrides for every run"
    )
    parser.add_argument("--work", type=Path, help="folder for the runs' outputs and caches")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.overrides)
        return
    if args.checkpoint is None and args.write is None:
        parser.error("give --checkpoint DIR or --write DIR")

    folder = args.checkpoint
    if args.write is not None:
        folder = args.write
        if not (folder / "config.json").is_file():
            from thermojax.errors import UserInputError
            from thermojax.models.hf import write_dream_like, write_llada_like

            write = write_llada_like if args.layout == "llada" else write_dream_like
            start = time.perf_counter()
            try:  # the writer refuses a checkpoint the disk has no room for
                write(folder, scale=args.scale, layers=args.layers)
            except UserInputError as err:
                sys.exit(f"error: {err}")
            print(f"wrote {folder} in {time.perf_counter() - start:.0f} s")
        else:
            print(f"reusing {folder} (it has a config.json; --scale, --layers, --layout ignored)")
    model = model_figures(folder, num_samples=args.samples, length=args.length)
    config = model["config"]
    flops = model["flops_linear"] + model["flops_attention"]
    print(f"machine: {machine()}; JAX_PLATFORMS={PLATFORMS[args.device]}")
    print(
        f"model: {folder} ({config.layout.name} layout): {model['parameters'] / 1e9:.3f}B parameters ({model['bf16_bytes'] / GB:.2f} GB at "
        f"bf16), {config.num_hidden_layers} layers, hidden {config.hidden_size}, heads "
        f"{config.num_attention_heads}/{config.num_key_value_heads} x {config.head_dim}, "
        f"vocab {config.vocab_size}"
    )
    print(
        f"FLOPs per denoising step (N={args.samples} x L={args.length}): {flops / 1e9:.1f} GFLOP "
        f"= 2 x {model['linear_parameters'] / 1e6:.1f}M linear-layer parameters x "
        f"{args.samples * args.length} tokens ({model['flops_linear'] / 1e9:.1f}) + attention "
        f"4 x {config.num_hidden_layers} layers x {args.samples} x {args.length}^2 x "
        f"{model['attention_width']} ({model['flops_attention'] / 1e9:.2f}); embedding, norms, "
        "rotary, softmax, SiLU, biases not counted"
    )
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-lm-scale-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    runs = {bits: run_one(folder, bits, args, work) for bits in args.bits}
    print_tables(runs, model, args)
    for bits, run in runs.items():
        if run:
            steps = run["result"]["sampler"]["steps"]
            ref, _ = _execution(run["figures"], "sampler", "sample fp32")
            print(f"W{bits}: reference {flops * steps / ref / 1e9:.1f} GFLOP/s")
    print(f"outputs and logs: {work}")


if __name__ == "__main__":
    main()
