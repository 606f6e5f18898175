"""Train the shipped byte-level masked-diffusion LM on the pydoc corpus, and evaluate it.

A small Dream-format network (Qwen2 blocks, bidirectional attention, :data:`~thermojax.models.
dream.corpus.MASK_ID` as ``[MASK]``) learns the masked-diffusion objective of MDLM / LLaDA /
Dream on the bytes of CPython's documentation (:mod:`thermojax.models.dream.corpus`):

- a batch is ``B`` windows of ``L`` tokens drawn at uniformly random offsets of the train stream;
- each window draws a mask ratio ``t`` in ``(eps, 1]`` and masks each position independently
  with probability ``t`` (:func:`corrupt`; the ratios of one batch are stratified, ``t_b`` in
  the ``b``-th of ``B`` equal strata in random order, so every ``t_b ~ U(eps, 1]`` and the batch
  covers the range evenly);
- the loss (:func:`masked_diffusion_loss`) is the cross entropy of the masked tokens, each
  weighted by ``1 / t`` of its window, summed and divided by ``B * L``: the per-token ELBO whose
  expectation :func:`~thermojax.core.text_metrics.masked_diffusion_nll_bound` estimates. The
  predictions are Dream's: :meth:`~thermojax.models.dream.network.DreamLM.token_logits`,
  shifted by one position, so the network is a Dream checkpoint and Dream's sampler and code
  paths apply to it unchanged; ``[MASK]``'s logit is removed (the model never predicts it).

Optax AdamW (weight decay on the 2-D weights only), linear warmup then cosine decay, global-norm
clipping; the steps run 100 at a time in one jitted ``lax.scan`` that takes the model pytree as
an argument. Seeded and deterministic on a given machine: the same flags write the same bytes.

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
import functools
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

from thermojax.core.text_metrics import masked_diffusion_nll_bound, perplexity
from thermojax.errors import OneLineArgumentParser, UserInputError, command_boundary
from thermojax.files import atomic_folder, atomic_write_text
from thermojax.models import masked_diffusion
from thermojax.models.dream import corpus
from thermojax.models.dream.checkpoint import load_dream
from thermojax.models.dream.config import DreamConfig
from thermojax.models.dream.network import DreamLM
from thermojax.models.hf.layouts import CONFIG_FILE, SINGLE_FILE
from thermojax.models.hf.writer import write_safetensors

__all__ = [
    "FORMAT",
    "MAX_FLOAT32_BYTES",
    "SAMPLE_SETTINGS",
    "TRAINING_FILE",
    "ArchConfig",
    "TrainConfig",
    "check_settings",
    "corrupt",
    "dream_config",
    "heldout_nll_bound",
    "hf_config",
    "init_model",
    "load_bytes_lm",
    "main",
    "masked_diffusion_loss",
    "sample_texts",
    "train",
]

Array = jax.Array

FORMAT = "thermojax-bytes-mdlm"
FORMAT_VERSION = 1
TRAINING_FILE = "training.json"
"""thermojax's metadata beside ``config.json`` and ``model.safetensors``."""
MAX_FLOAT32_BYTES = 10_000_000
"""The tensors are stored float32 when the folder stays under this size, else bf16."""
COMMAND = "python -m thermojax.models.train_bytes_lm"
_INIT_STD = 0.02
SAMPLE_SETTINGS = (("confidence", 0.0, None), ("random", 0.8, 0.95))
"""The samples ``training.json`` keeps: ``(unmasking, temperature, top_p)``: Dream's confidence
order with argmax tokens, and a random order drawing from the nucleus at temperature 0.8."""


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    """The network's shape (``config.json``'s keys); ``head_dim = hidden_size / heads``."""

    hidden_size: int = 128
    num_hidden_layers: int = 3
    intermediate_size: int = 512
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    rope_theta: float = 10_000.0
    rms_norm_eps: float = 1e-6


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training, evaluation and sampling settings (written into ``training.json``)."""

    steps: int = 3_000
    batch_size: int = 16
    seq_len: int = 128
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    min_learning_rate_ratio: float = 0.05
    weight_decay: float = 0.05
    clip_norm: float = 1.0
    eps: float = 1e-3
    steps_per_call: int = 100
    seed: int = 0
    eval_windows: int = 64
    eval_mask_ratios: int = 16
    eval_seed: int = 0
    sample_steps: int = 64
    sample_count: int = 3
    sample_seed: int = 0


# ---------------------------------------------------------------- the network


def dream_config(arch: ArchConfig, *, seq_len: int) -> DreamConfig:
    """The :class:`DreamConfig` of ``arch`` with the byte vocabulary (``ValueError`` if bad)."""
    return DreamConfig.from_hf(hf_config(arch, seq_len=seq_len))


def hf_config(arch: ArchConfig, *, seq_len: int, torch_dtype: str = "float32") -> dict[str, Any]:
    """``config.json``: Dream's keys and values for this network and the byte tokenizer."""
    return {
        "architectures": ["DreamModel"],
        "model_type": "Dream",
        "hidden_act": "silu",
        "hidden_size": arch.hidden_size,
        "num_hidden_layers": arch.num_hidden_layers,
        "intermediate_size": arch.intermediate_size,
        "num_attention_heads": arch.num_attention_heads,
        "num_key_value_heads": arch.num_key_value_heads,
        "vocab_size": corpus.VOCAB_SIZE,
        "rms_norm_eps": arch.rms_norm_eps,
        "rope_theta": arch.rope_theta,
        "rope_scaling": None,
        "max_position_embeddings": seq_len,
        "tie_word_embeddings": False,
        "use_sliding_window": False,
        "sliding_window": None,
        "attention_dropout": 0.0,
        "mask_token_id": corpus.MASK_ID,
        "bos_token_id": corpus.EOS_ID,
        "eos_token_id": corpus.EOS_ID,
        "pad_token_id": corpus.EOS_ID,
        "torch_dtype": torch_dtype,
        "use_cache": False,
    }


def init_model(config: DreamConfig, key: Array) -> DreamLM:
    """A freshly initialized network: weights ``N(0, 0.02)`` (the residual outputs, ``o_proj``
    and ``down_proj``, scaled by ``1 / sqrt(2 * layers)`` as in GPT-2), norms 1, biases 0."""
    residual_std = _INIT_STD / math.sqrt(2 * config.num_hidden_layers)
    params = {}
    for index, (name, shape) in enumerate(config.tensor_shapes().items()):
        if name.endswith("norm.weight"):
            params[name] = jnp.ones(shape, jnp.float32)
        elif name.endswith(".bias"):
            params[name] = jnp.zeros(shape, jnp.float32)
        else:
            std = (
                residual_std if name.endswith(("o_proj.weight", "down_proj.weight")) else _INIT_STD
            )
            params[name] = std * jax.random.normal(jax.random.fold_in(key, index), shape)
    return DreamLM.create(config, params)


# ---------------------------------------------------------------- the objective


def corrupt(tokens: Array, key: Array, *, eps: float) -> tuple[Array, Array]:
    """Draw the forward process: ``(masked [B, L] bool, ratio [B] float32)``.

    ``ratio[b] = eps + (1 - eps) * u_b`` with ``u_b`` uniform in the ``b``-th of ``B`` strata
    of ``[0, 1)`` (strata permuted at random), and each position of window ``b`` masked
    independently with probability ``ratio[b]``.
    """
    batch = tokens.shape[0]
    stratum_key, offset_key, mask_key = jax.random.split(key, 3)
    strata = jax.random.permutation(stratum_key, batch).astype(jnp.float32)
    u = (strata + jax.random.uniform(offset_key, (batch,))) / batch
    ratio = eps + (1.0 - eps) * u
    masked = jax.random.uniform(mask_key, tokens.shape) < ratio[:, None]
    return masked, ratio


def masked_diffusion_loss(model: DreamLM, tokens: Array, masked: Array, ratio: Array) -> Array:
    """The MDLM / Dream training loss of ``tokens [B, L]`` masked at ``masked`` with ``ratio``.

    ``sum_{b, i masked} -log p(tokens[b, i] | x_b) / ratio[b] / (B * L)`` where ``x_b`` is row
    ``b`` with the masked positions replaced by ``[MASK]`` and ``p`` the softmax of the model's
    :meth:`~DreamLM.token_logits` (Dream's shift) without ``[MASK]``'s logit. Float32 scalar.
    """
    mask_id = model.mask_token_id
    noisy = jnp.where(masked, mask_id, tokens)
    logits = model.token_logits(noisy)
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 2)
    logits = jnp.where(vocab == mask_id, -jnp.inf, logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
    weighted = jnp.where(masked, nll, 0.0) / ratio[:, None]
    return jnp.sum(weighted) / tokens.size


def _windows(stream: Array, key: Array, *, batch_size: int, seq_len: int) -> Array:
    starts = jax.random.randint(key, (batch_size,), 0, stream.shape[0] - seq_len + 1)
    return stream[starts[:, None] + jnp.arange(seq_len)[None, :]]


def _optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    warmup = min(cfg.warmup_steps, max(cfg.steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        cfg.learning_rate,
        warmup,
        max(cfg.steps, warmup + 1),
        end_value=cfg.learning_rate * cfg.min_learning_rate_ratio,
    )

    def decayed(model: DreamLM) -> DreamLM:
        return jax.tree.map(lambda p: p.ndim >= 2, model)

    return optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(schedule, b1=0.9, b2=0.99, weight_decay=cfg.weight_decay, mask=decayed),
    )


@functools.partial(jax.jit, static_argnames=("cfg", "num_steps"))
def _train_steps(model, opt_state, stream, key, *, cfg: TrainConfig, num_steps: int):
    """``num_steps`` optimizer steps in one scan; returns ``(model, opt_state, losses)``."""
    optimizer = _optimizer(cfg)

    def loss_fn(model: DreamLM, step_key: Array) -> Array:
        window_key, mask_key = jax.random.split(step_key)
        tokens = _windows(stream, window_key, batch_size=cfg.batch_size, seq_len=cfg.seq_len)
        masked, ratio = corrupt(tokens, mask_key, eps=cfg.eps)
        return masked_diffusion_loss(model, tokens, masked, ratio)

    def step(carry, step_key):
        model, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(model, step_key)
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return (optax.apply_updates(model, updates), opt_state), loss

    (model, opt_state), losses = jax.lax.scan(
        step, (model, opt_state), jax.random.split(key, num_steps)
    )
    return model, opt_state, losses


# ---------------------------------------------------------------- evaluation and samples


@functools.partial(jax.jit, static_argnames="num_mask_ratios")
def _nll_bound(model: DreamLM, tokens: Array, key: Array, *, num_mask_ratios: int) -> Array:
    return masked_diffusion_nll_bound(
        model.token_logits,
        tokens,
        key=key,
        num_mask_ratios=num_mask_ratios,
        mask_token_id=model.mask_token_id,
    )[1]


def heldout_nll_bound(
    model: DreamLM,
    *,
    length: int = 128,
    count: int = 64,
    num_mask_ratios: int = 16,
    seed: int = 0,
    recorded_sha256: str | None = None,
) -> float:
    """The masked-diffusion NLL bound, nats per byte, of the fixed held-out windows.

    ``corpus.heldout_batch(length, count)`` scored by :func:`masked_diffusion_nll_bound` with
    the model's ``token_logits`` and ``jax.random.key(seed)``: a fixed number for a given model,
    corpus and machine. With ``recorded_sha256`` (the corpus a recorded number was measured on)
    a different corpus here gives a ``UserWarning`` (:func:`corpus.corpus_mismatch`).
    """
    if recorded_sha256 is not None and (reason := corpus.corpus_mismatch(recorded_sha256)):
        warnings.warn(reason, UserWarning, stacklevel=2)
    tokens = jnp.asarray(corpus.heldout_batch(length, count))
    key = jax.random.key(seed)
    return float(_nll_bound(model, tokens, key, num_mask_ratios=num_mask_ratios))


_SAMPLE_OPTIONS = ("num_samples", "length", "num_steps", "unmasking", "temperature", "top_p")


@functools.partial(jax.jit, static_argnames=_SAMPLE_OPTIONS)
def _sample(model: DreamLM, key: Array, **options: Any) -> Array:
    return masked_diffusion.sample(
        lambda tokens, step: model.token_logits(tokens),
        key=key,
        mask_token_id=model.mask_token_id,
        vocab_size=model.vocab_size,
        **options,
    ).tokens


def sample_texts(
    model: DreamLM,
    *,
    num_samples: int = 3,
    length: int = 128,
    num_steps: int = 64,
    unmasking: str = "confidence",
    temperature: float = 0.0,
    top_p: float | None = None,
    seed: int = 0,
) -> list[str]:
    """Unconditional samples of :func:`masked_diffusion.sample` with ``jax.random.key(seed)``
    (temperature 0: argmax; ``unmasking`` the reveal order), decoded as text."""
    tokens = _sample(
        model,
        jax.random.key(seed),
        num_samples=num_samples,
        length=length,
        num_steps=num_steps,
        unmasking=unmasking,
        temperature=temperature,
        top_p=top_p,
    )
    return [corpus.decode(row) for row in np.asarray(tokens)]


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


def check_settings(
    out: Path, cfg: TrainConfig, arch: ArchConfig, *, force: bool, ship: bool
) -> None:
    """Every check that can fail before training; ``ValueError`` with one line naming the value.

    ``out`` may be the shipped folder only with ``ship``; an existing folder must be empty
    unless ``force``.
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
    opt_state = _optimizer(cfg).init(model)
    stream = jnp.asarray(train_ids)
    per_call = min(cfg.steps_per_call, cfg.steps)
    curve, done, call = [], 0, 0
    while done < cfg.steps:
        num_steps = min(per_call, cfg.steps - done)
        model, opt_state, losses = _train_steps(
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
