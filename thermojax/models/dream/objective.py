"""What the byte-level masked-diffusion LM trainer (:mod:`thermojax.models.dream.train`)
computes: the network, the objective, the optimizer steps, the held-out bound and the samples.

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
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from thermojax.core.text_metrics import masked_diffusion_nll_bound
from thermojax.models import masked_diffusion
from thermojax.models.dream import corpus
from thermojax.models.dream.config import DreamConfig
from thermojax.models.dream.network import DreamLM

__all__ = [
    "ArchConfig",
    "TrainConfig",
    "corrupt",
    "dream_config",
    "heldout_nll_bound",
    "hf_config",
    "init_model",
    "masked_diffusion_loss",
    "optimizer_for",
    "sample_texts",
    "train_steps",
]

Array = jax.Array

_INIT_STD = 0.02


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


def optimizer_for(cfg: TrainConfig) -> optax.GradientTransformation:
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
def train_steps(model, opt_state, stream, key, *, cfg: TrainConfig, num_steps: int):
    """``num_steps`` optimizer steps in one scan; returns ``(model, opt_state, losses)``."""
    optimizer = optimizer_for(cfg)

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
