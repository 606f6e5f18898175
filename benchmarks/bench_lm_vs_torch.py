"""One forward pass of a ~340M-parameter bidirectional Qwen2 network: thermojax (JAX) against
Hugging Face transformers + torch, on CPU, float32, in one run.

torch and transformers are optional: they live in a side virtual environment whose python runs
the torch half (``--torch-python``); thermojax never imports them::

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 transformers==5.23.0 safetensors numpy
    python benchmarks/bench_lm_vs_torch.py --torch-python /tmp/torchvenv/bin/python

What runs:

- the checkpoint: a Qwen2 config (hidden 1024, 24 layers, MLP 2816, 16 query / 4 key-value
  heads of 64, vocabulary 32768, untied head: 338M parameters), random float32 weights (unit-
  variance outputs per linear layer, as ``tools/make_qwen2_fixture.py`` draws them), written
  once by transformers' ``save_pretrained`` into ``--work`` and reused;
- the same int32 tokens ``[batch, length]`` (default 2 x 256) through both: thermojax's
  ``DreamLM.logits`` (bidirectional, float32 parameters, ``matmul_precision="highest"``: true
  float32) jitted with the model as an argument; transformers' ``Qwen2ForCausalLM`` in float32
  with its default attention (``sdpa``) and a 4-D all-zeros additive mask ``[B, 1, L, L]``,
  which transformers passes through as it is, so attention is bidirectional too, under
  ``torch.inference_mode()`` with ``use_cache=False``;
- each half warms up (thermojax: compiles), then times ``--repeats`` calls; the median is
  reported as tokens per second, with the ratio and the two logits' agreement.

Threads: for each of ``--threads`` (default 1 and all cores) both processes are pinned
(``sched_setaffinity``) to the same cores; torch also gets ``torch.set_num_threads``. XLA's CPU
thread pool takes every core the process may run on, so the pinning is what holds it there.
The 1-minute load average before and after each pair is printed: torch's OpenMP threads wait
for each other at the end of every operation, so on a machine whose cores other jobs share a
multi-threaded torch run slows down far more than XLA's work-sharing pool (measured here).

The target (issue 24): thermojax at least as fast as transformers + torch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CONFIG = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "intermediate_size": 2816,
    "vocab_size": 32768,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
MASK_TOKEN_ID = CONFIG["vocab_size"] - 1
SEED = 0


def _pin(threads: int) -> list[int]:
    """Pin this process to its first ``threads`` allowed cores (before any thread pool starts)."""
    cores = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cores)
    return cores


def _timed(call: Any, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------- torch half


def torch_write(folder: Path) -> None:
    """Write the checkpoint (float32, transformers' own files)."""
    import torch
    import transformers

    rng = np.random.default_rng(SEED)
    config = transformers.Qwen2Config(**CONFIG)
    config.mask_token_id = MASK_TOKEN_ID
    model = transformers.Qwen2ForCausalLM(config).float().eval()
    state = {}
    for name, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if name.endswith("norm.weight"):
            values = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif name.endswith(".bias"):
            values = 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif name == "model.embed_tokens.weight":
            values = rng.standard_normal(shape, dtype=np.float32)
        else:  # a linear weight [out, in]: unit-variance outputs for unit-variance inputs
            values = rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[1]))
        state[name] = torch.from_numpy(values)
    model.load_state_dict(state, strict=True)
    model.save_pretrained(folder)


def torch_run(task: dict[str, Any]) -> dict[str, Any]:
    """Time transformers' forward pass on the task's tokens; save its logits."""
    cores = _pin(task["threads"])
    import torch
    import transformers

    torch.set_num_threads(len(cores))
    model = transformers.AutoModelForCausalLM.from_pretrained(task["folder"], dtype=torch.float32)
    model.eval()
    tokens = torch.from_numpy(np.load(task["tokens"]).astype(np.int64))
    batch, length = tokens.shape
    mask = torch.zeros(batch, 1, length, length, dtype=torch.float32)  # bidirectional

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return model(input_ids=tokens, attention_mask=mask, use_cache=False).logits

    start = time.perf_counter()
    logits = forward()
    first = time.perf_counter() - start
    for _ in range(task["warmup"] - 1):
        forward()
    np.save(task["logits"], logits.float().numpy())
    return {
        "first_s": first,
        "times_s": _timed(forward, task["repeats"]),
        "threads": torch.get_num_threads(),
        "cores": cores,
        "attention": model.config._attn_implementation,
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}",
    }


# ---------------------------------------------------------------------------- thermojax half


def jax_run(task: dict[str, Any]) -> dict[str, Any]:
    """Time thermojax's forward pass on the task's tokens; compare with torch's logits."""
    cores = _pin(task["threads"])
    import jax

    from thermojax.models.dream.checkpoint import load_dream

    model = load_dream(task["folder"], dtype="float32")
    tokens = jax.numpy.asarray(np.load(task["tokens"]))
    forward = jax.jit(lambda m, t: m.logits(t))
    start = time.perf_counter()
    compiled = forward.lower(model, tokens).compile()
    compile_s = time.perf_counter() - start
    for _ in range(task["warmup"]):
        logits = jax.block_until_ready(compiled(model, tokens))
    times = _timed(lambda: jax.block_until_ready(compiled(model, tokens)), task["repeats"])
    ours = np.asarray(logits, np.float64)
    theirs = np.load(task["logits"]).astype(np.float64)
    difference = np.abs(ours - theirs)
    return {
        "compile_s": compile_s,
        "times_s": times,
        "cores": cores,
        "parameters": model.num_parameters(),
        "precision": model.matmul_precision,
        "versions": f"jax {jax.__version__}",
        "max_abs_diff": float(difference.max()),
        "max_abs_logit": float(np.abs(theirs).max()),
        "relative_rms": float(np.sqrt(np.mean(difference**2) / np.mean(theirs**2))),
    }


# ---------------------------------------------------------------------------- the run


def _worker(python: str, mode: str, task: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [python, __file__, "--worker", mode, json.dumps(task)],
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"the {mode} half failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    """Write the checkpoint once, run both halves, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch-python", help="a python with torch and transformers (see doc)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=sorted({1, len(os.sched_getaffinity(0))}),
        help="core counts to compare at (default: 1 and all)",
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-lm-torch")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        mode, task = args.worker[0], json.loads(args.worker[1])
        if mode == "write":
            torch_write(Path(task["folder"]))
            print(json.dumps({}))
        else:
            print(json.dumps((torch_run if mode == "torch" else jax_run)(task)))
        return

    python = args.torch_python or sys.executable
    probe = subprocess.run(
        [python, "-c", "import torch, transformers"], check=False, capture_output=True
    )
    if probe.returncode != 0:
        sys.exit(
            f"{python} lacks torch or transformers (an optional benchmark dependency): make a side "
            "venv (python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 "
            "transformers==5.23.0 safetensors numpy) and pass --torch-python "
            "/tmp/torchvenv/bin/python"
        )
    folder = args.work / "qwen2-338m-f32"
    if not (folder / "config.json").is_file():
        args.work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        _worker(python, "write", {"folder": str(folder)})
        print(f"wrote {folder} in {time.perf_counter() - start:.0f} s")
    tokens = args.work / "tokens.npy"
    rng = np.random.default_rng(SEED)
    np.save(tokens, rng.integers(3, CONFIG["vocab_size"], (args.batch, args.length), np.int32))
    rows = []
    for threads in args.threads:
        task = {
            "folder": str(folder),
            "tokens": str(tokens),
            "logits": str(args.work / f"torch_logits_{threads}.npy"),
            "threads": threads,
            "warmup": args.warmup,
            "repeats": args.repeats,
        }
        load = os.getloadavg()[0]
        torch_figures = _worker(python, "torch", task)
        jax_figures = _worker(sys.executable, "jax", task)
        rows.append((threads, load, os.getloadavg()[0], torch_figures, jax_figures))

    tokens_per_call = args.batch * args.length
    print(
        f"CPU: {_cpu()}, {os.cpu_count()} cores; each half pinned to the same cores (torch "
        "also set_num_threads; XLA's pool takes every core it may run on)"
    )
    jax_any = rows[0][4]
    print(
        f"model: Qwen2, {jax_any['parameters'] / 1e6:.0f}M parameters, float32, bidirectional; "
        f"batch {args.batch} x {args.length} tokens; median of {args.repeats} calls after "
        f"{args.warmup} warm-up; {rows[0][3]['versions']}; {jax_any['versions']}"
    )
    print(
        f"\n{'cores':>5} {'':<34} {'median s':>9} {'min s':>7} {'tokens/s':>9} {'vs torch':>9} "
        f"{'load':>9}"
    )
    for threads, before, after, torch_figures, jax_figures in rows:
        torch_s = statistics.median(torch_figures["times_s"])
        for name, figures in (
            (f"transformers + torch ({torch_figures['attention']})", torch_figures),
            (f"thermojax ({jax_figures['precision']} precision)", jax_figures),
        ):
            median = statistics.median(figures["times_s"])
            print(
                f"{threads:>5} {name:<34} {median:>9.3f} {min(figures['times_s']):>7.3f} "
                f"{tokens_per_call / median:>9.0f} {torch_s / median:>8.2f}x "
                f"{before:>4.1f}-{after:<4.1f}"
            )
    print("load: the 1-minute load average before and after the pair (other jobs on the machine)")
    for threads, _, _, torch_figures, jax_figures in rows:
        print(
            f"{threads} cores: thermojax compile {jax_figures['compile_s']:.1f} s, torch first "
            f"call {torch_figures['first_s']:.2f} s; logits max |diff| "
            f"{jax_figures['max_abs_diff']:.2e} (max |logit| {jax_figures['max_abs_logit']:.1f}), "
            f"relative RMS {jax_figures['relative_rms']:.1e}"
        )
    print("target (issue 24): thermojax at least as fast (vs torch >= 1.00x)")


if __name__ == "__main__":
    main()
