"""Train the shipped byte-level masked-diffusion LM on the pydoc corpus, and evaluate it.

The network, the objective and the optimizer steps are
:mod:`thermojax.models.dream.objective`'s; this module checks the settings, runs the steps,
evaluates and samples the result, and writes it.

The output is a Hugging Face folder, published atomically (written in full under a temporary
name beside it, then renamed): ``config.json`` (Dream's keys), ``model.safetensors`` (float32
when the folder stays under 10 MB, else bf16) and ``training.json`` (tokenizer, corpus sha256
and split, settings, loss curve, held-out NLL bound, samples, the command).

Usage::

    python -m thermojax.models.train_bytes_lm --out /tmp/lm             # the shipped recipe
    python -m thermojax.models.train_bytes_lm --ship                    # rewrite the shipped one
    python -m thermojax.models.train_bytes_lm --out /tmp/lm --steps 20 --hidden-size 32 \\
        --layers 1 --eval-windows 4                                     # smoke run
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax

from thermojax.core.text_metrics import perplexity
from thermojax.errors import OneLineArgumentParser, UserInputError, command_boundary
from thermojax.files import atomic_folder, atomic_write_text, check_writable_folder
from thermojax.models.dream import corpus
from thermojax.models.dream.checkpoint import load_dream
from thermojax.models.dream.network import DreamLM
from thermojax.models.dream.objective import (
    ArchConfig,
    TrainConfig,
    dream_config,
    heldout_nll_bound,
    hf_config,
    init_model,
    optimizer_for,
    sample_texts,
    train_steps,
)
from thermojax.models.hf.layouts import CONFIG_FILE, SINGLE_FILE
from thermojax.models.hf.writer import write_safetensors

__all__ = [
    "FORMAT",
    "MAX_FLOAT32_BYTES",
    "SAMPLE_SETTINGS",
    "TRAINING_FILE",
    "check_settings",
    "load_bytes_lm",
    "main",
    "train",
]

FORMAT = "thermojax-bytes-mdlm"
FORMAT_VERSION = 1
TRAINING_FILE = "training.json"
"""thermojax's metadata beside ``config.json`` and ``model.safetensors``."""
MAX_FLOAT32_BYTES = 10_000_000
"""The tensors are stored float32 when the folder stays under this size, else bf16."""
MAX_STEPS = 2**31 - 1
"""The most training or unmasking steps: optax and the samplers count steps in int32."""
MAX_BATCH = 65_536
"""The most windows one step trains on (``--batch-size``), mask ratios one evaluation draws
(``--eval-mask-ratios``) or samples it writes (``--sample-count``): each is held at once."""
MAX_PARAMETERS = 2**30
"""The largest network: training holds weights, gradients and two Adam moments in float32, 16
bytes a parameter (17 GB here)."""
COMMAND = "python -m thermojax.models.train_bytes_lm"
SAMPLE_SETTINGS = (("confidence", 0.0, None), ("random", 0.8, 0.95))
"""The samples ``training.json`` keeps: ``(unmasking, temperature, top_p)``: Dream's confidence
order with argmax tokens, and a random order drawing from the nucleus at temperature 0.8."""


def load_bytes_lm(folder: str | os.PathLike[str] = corpus.SHIPPED_LM) -> tuple[DreamLM, dict]:
    """The model of a folder this module wrote (default: the shipped one) and its
    ``training.json``; a ``UserWarning`` if this Python's corpus differs from the recorded one."""
    folder = Path(folder)
    model = load_dream(folder)
    metadata = json.loads((folder / TRAINING_FILE).read_text())
    reason = corpus.corpus_mismatch(metadata["corpus"]["sha256"])
    if reason:
        warnings.warn(reason, UserWarning, stacklevel=2)
    return model, metadata


# ---------------------------------------------------------------- checks and output


def _check_int(name: str, value: object, *, low: int, high: int | None = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")


def _check_float(name: str, value: object, *, low: float, high: float, open_low: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        raise ValueError(
            f"{name} must be a number in {'(' if open_low else '['}{low}, {high}], got {value!r}"
        )


def _check_parameter_count(arch: ArchConfig) -> None:
    """An upper bound of the network's parameters (q, k, v, o as square, the MLP, embedding and
    head) against :data:`MAX_PARAMETERS`, before any per-layer structure is built."""
    sizes = (arch.hidden_size, arch.intermediate_size, arch.num_hidden_layers)
    if not all(isinstance(v, int) and v > 0 for v in sizes):
        return  # DreamConfig names the bad size
    hidden, intermediate, layers = sizes
    parameters = layers * (4 * hidden * hidden + 3 * hidden * intermediate)
    parameters += 2 * corpus.VOCAB_SIZE * hidden
    if parameters > MAX_PARAMETERS:
        raise ValueError(
            f"hidden_size={hidden}, intermediate_size={intermediate}, num_hidden_layers={layers}: "
            f"about {parameters:.3g} parameters, at most {MAX_PARAMETERS:.3g} (training holds "
            "16 bytes of each)"
        )


def check_settings(
    out: Path, cfg: TrainConfig, arch: ArchConfig, *, force: bool, ship: bool
) -> None:
    """Every check that can fail before training; ``ValueError`` with one line naming the value.

    ``out`` may be the shipped folder only with ``ship``; an existing folder must be empty
    unless ``force``, and the folder it is published in must take new files.
    """
    train_size = corpus.train_and_heldout()[0].size
    heldout_size = corpus.train_and_heldout()[1].size
    max_len = min(train_size, heldout_size)
    for name in ("steps", "batch_size", "steps_per_call", "eval_mask_ratios", "sample_steps"):
        _check_int(name, getattr(cfg, name), low=1)
    _check_int("seq_len", cfg.seq_len, low=2, high=max_len)
    _check_int("warmup_steps", cfg.warmup_steps, low=0)
    _check_int("sample_count", cfg.sample_count, low=0)
    for name in ("seed", "eval_seed", "sample_seed"):
        _check_int(name, getattr(cfg, name), low=0, high=2**32 - 1)
    _check_int("eval_windows", cfg.eval_windows, low=1, high=heldout_size - cfg.seq_len + 1)
    _check_float("learning_rate", cfg.learning_rate, low=0.0, high=1.0, open_low=True)
    _check_float(
        "min_learning_rate_ratio", cfg.min_learning_rate_ratio, low=0.0, high=1.0, open_low=False
    )
    _check_float("weight_decay", cfg.weight_decay, low=0.0, high=1.0, open_low=False)
    _check_float("clip_norm", cfg.clip_norm, low=0.0, high=math.inf, open_low=True)
    _check_float("eps", cfg.eps, low=0.0, high=1.0, open_low=True)
    for name, low, high in (  # int32 step counts; what one step or evaluation holds at once
        ("steps", 1, MAX_STEPS),
        ("warmup_steps", 0, MAX_STEPS),
        ("sample_steps", 1, MAX_STEPS),
        ("batch_size", 1, MAX_BATCH),
        ("eval_mask_ratios", 1, MAX_BATCH),
        ("sample_count", 0, MAX_BATCH),
    ):
        _check_int(name, getattr(cfg, name), low=low, high=high)
    _check_parameter_count(arch)
    dream_config(arch, seq_len=cfg.seq_len)  # the shape checks, with DreamConfig's messages
    out = Path(out)
    shipped = out.resolve() == corpus.SHIPPED_LM.resolve()
    if shipped and not ship:
        raise ValueError(f"{out} is the shipped checkpoint: pass --ship to rewrite it")
    if ship and not shipped:
        raise ValueError(f"--ship writes only the shipped folder {corpus.SHIPPED_LM}, not {out}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (force or ship):
        raise ValueError(f"{out} is not empty: choose a new folder or pass --force to replace it")
    # The folder is published by a rename from a sibling: its parent must take new files now,
    # not after the training (a UserInputError, a ValueError).
    check_writable_folder(out.parent if out.parent != out else out, what="--out", create=False)


def _storage_dtype(model: DreamLM) -> str:
    return "F32" if 4 * model.num_parameters() + 100_000 < MAX_FLOAT32_BYTES else "BF16"


def _write_folder(folder: Path, model: DreamLM, config: dict, metadata: dict) -> None:
    dtype = _storage_dtype(model)
    numpy_dtype = np.float32 if dtype == "F32" else ml_dtypes.bfloat16
    params = jax.device_get(model.params)
    entries = [(name, dtype, shape) for name, shape in model.config.tensor_shapes().items()]
    write_safetensors(
        folder / SINGLE_FILE,
        entries,
        lambda name: np.asarray(params[name], np.float32).astype(numpy_dtype),
        metadata={"format": "pt"},
    )
    text = {CONFIG_FILE: config, TRAINING_FILE: metadata}
    for name, content in text.items():
        bad = _non_finite(content)
        if bad:  # strict JSON: a diverged training is refused, not written as NaN
            raise UserInputError(f"training diverged: {name} would hold {bad}; nothing written")
        text_out = json.dumps(content, indent=2, ensure_ascii=False, allow_nan=False)
        atomic_write_text(folder / name, text_out + "\n")


def _non_finite(value: Any, where: str = "") -> str | None:
    """The first non-finite float in a JSON-ready value, as ``key.path=nan``; ``None`` if none."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where or 'a value'}={value}"
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list | tuple)
        else ()
    )
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


# ---------------------------------------------------------------- training


def train(
    out: str | os.PathLike[str],
    cfg: TrainConfig | None = None,
    arch: ArchConfig | None = None,
    *,
    force: bool = False,
    ship: bool = False,
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train, evaluate and sample the model, then publish the folder ``out``.

    Returns:
        The metadata written to ``training.json``.

    Raises:
        ValueError: a bad setting or output folder (:func:`check_settings`), before any work.
    """
    out = Path(out)
    cfg = cfg or TrainConfig()
    arch = arch or ArchConfig()
    check_settings(out, cfg, arch, force=force, ship=ship)
    started = time.perf_counter()
    config = dream_config(arch, seq_len=cfg.seq_len)
    train_ids, heldout_ids = corpus.train_and_heldout()
    init_key, train_key = jax.random.split(jax.random.key(cfg.seed))
    model = init_model(config, init_key)
    log(
        f"{model!r}: {model.num_parameters():,} parameters; {train_ids.size:,} train bytes, "
        f"{heldout_ids.size:,} held out"
    )
    opt_state = optimizer_for(cfg).init(model)
    stream = jnp.asarray(train_ids)
    per_call = min(cfg.steps_per_call, cfg.steps)
    curve, done, call = [], 0, 0
    while done < cfg.steps:
        num_steps = min(per_call, cfg.steps - done)
        model, opt_state, losses = train_steps(
            model,
            opt_state,
            stream,
            jax.random.fold_in(train_key, call),
            cfg=cfg,
            num_steps=num_steps,
        )
        done += num_steps
        call += 1
        curve.append({"step": done, "loss": round(float(jnp.mean(losses)), 6)})
        elapsed = time.perf_counter() - started
        log(f"step {done:>6}/{cfg.steps}: loss {curve[-1]['loss']:.4f} ({elapsed:.0f} s)")
    train_seconds = time.perf_counter() - started

    nll = heldout_nll_bound(
        model,
        length=cfg.seq_len,
        count=cfg.eval_windows,
        num_mask_ratios=cfg.eval_mask_ratios,
        seed=cfg.eval_seed,
    )
    log(f"held-out NLL bound: {nll:.4f} nats/byte (perplexity {float(perplexity(nll)):.3f})")
    samples = []
    for unmasking, temperature, top_p in SAMPLE_SETTINGS if cfg.sample_count else ():
        texts = sample_texts(
            model,
            num_samples=cfg.sample_count,
            length=cfg.seq_len,
            num_steps=cfg.sample_steps,
            unmasking=unmasking,
            temperature=temperature,
            top_p=top_p,
            seed=cfg.sample_seed,
        )
        setting = {"unmasking": unmasking, "temperature": temperature, "top_p": top_p}
        samples.append({**setting, "texts": texts})
        for text in texts:
            log(f"sample ({unmasking}, temperature {temperature}): {text!r}")

    dtype = _storage_dtype(model)
    torch_dtype = {"F32": "float32", "BF16": "bfloat16"}[dtype]
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tokenizer": {
            "type": "bytes",
            "vocab_size": corpus.VOCAB_SIZE,
            "byte_ids": [0, corpus.NUM_BYTES - 1],
            "mask_token_id": corpus.MASK_ID,
            "eos_token_id": corpus.EOS_ID,
            "mask_placeholder": corpus.MASK_PLACEHOLDER,
        },
        "corpus": {
            "source": "pydoc_data.topics.topics",
            "python": sys.version.split()[0],
            "sha256": corpus.corpus_sha256(),
            "bytes": len(corpus.corpus_bytes()),
            "split_rule": corpus.SPLIT_RULE,
            "heldout_topics": list(corpus.heldout_topics()),
            "train_tokens": int(train_ids.size),
            "heldout_tokens": int(heldout_ids.size),
        },
        "architecture": dataclasses.asdict(arch),
        "parameters": model.num_parameters(),
        "storage_dtype": torch_dtype,
        "training": {
            **dataclasses.asdict(cfg),
            "objective": "MDLM/Dream: masked cross entropy / t, per token, Dream's logit shift",
            "optimizer": "AdamW + warmup-cosine, global-norm clipping",
            "final_train_loss": curve[-1]["loss"],
            "loss_curve": curve,
        },
        "heldout": {
            "windows": cfg.eval_windows,
            "length": cfg.seq_len,
            "num_mask_ratios": cfg.eval_mask_ratios,
            "key": f"jax.random.key({cfg.eval_seed})",
            "seed": cfg.eval_seed,
            "nll_bound_nats_per_byte": nll,
            "perplexity": float(perplexity(nll)),
        },
        "sampling": {
            "num_steps": cfg.sample_steps,
            "length": cfg.seq_len,
            "key": f"jax.random.key({cfg.sample_seed})",
            "samples": samples,
        },
        "command": command or COMMAND,
        "environment": {  # bit-for-bit reproduction needs the same versions (and CPU kind)
            "python": sys.version.split()[0],
            "jax": jax.__version__,
            "optax": optax.__version__,
            "numpy": np.__version__,
            "backend": jax.default_backend(),
        },
    }
    config_json = hf_config(arch, seq_len=cfg.seq_len, torch_dtype=torch_dtype)
    with atomic_folder(out, replace=True) as folder:  # --force was checked before training
        _write_folder(folder, model, config_json, metadata)
    log(
        f"wrote {out} ({torch_dtype}) in {time.perf_counter() - started:.0f} s "
        f"(training {train_seconds:.0f} s)"
    )
    return metadata


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point; a bad argument ends in one ``error:`` line and exit 2, Ctrl-C
    in one line and exit 130 (:func:`thermojax.errors.command_boundary`)."""
    command_boundary(lambda: _main(argv), name="thermojax.models.train_bytes_lm")


def _main(argv: Sequence[str] | None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, arch = TrainConfig(), ArchConfig()
    parser = OneLineArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="a new folder to write (default: ./pydoc_mdlm)"
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    parser.add_argument(
        "--ship", action="store_true", help=f"rewrite the package's shipped {corpus.SHIPPED_LM}"
    )
    flags = {
        "--steps": ("steps", int),
        "--batch-size": ("batch_size", int),
        "--seq-len": ("seq_len", int),
        "--learning-rate": ("learning_rate", float),
        "--warmup-steps": ("warmup_steps", int),
        "--weight-decay": ("weight_decay", float),
        "--seed": ("seed", int),
        "--eval-windows": ("eval_windows", int),
        "--eval-mask-ratios": ("eval_mask_ratios", int),
        "--sample-count": ("sample_count", int),
        "--sample-steps": ("sample_steps", int),
    }
    arch_flags = {
        "--hidden-size": ("hidden_size", int),
        "--layers": ("num_hidden_layers", int),
        "--intermediate-size": ("intermediate_size", int),
        "--heads": ("num_attention_heads", int),
        "--kv-heads": ("num_key_value_heads", int),
    }
    for table, defaults in ((flags, cfg), (arch_flags, arch)):
        for flag, (field, kind) in table.items():
            parser.add_argument(
                flag, dest=field, type=kind, default=getattr(defaults, field), help=f"{field}"
            )
    args = parser.parse_args(argv)
    if args.ship and args.out is not None:
        parser.error("--ship and --out are exclusive (--ship writes the shipped folder)")
    out = corpus.SHIPPED_LM if args.ship else (args.out or Path("pydoc_mdlm"))
    cfg = dataclasses.replace(cfg, **{f: getattr(args, f) for f, _ in flags.values()})
    arch = dataclasses.replace(arch, **{f: getattr(args, f) for f, _ in arch_flags.values()})
    try:
        check_settings(out, cfg, arch, force=args.force, ship=args.ship)
    except ValueError as err:
        parser.error(str(err).splitlines()[0])
    train(
        out,
        cfg,
        arch,
        force=args.force,
        ship=args.ship,
        command=shlex.join([*COMMAND.split(), *argv]),
    )


if __name__ == "__main__":
    main()
