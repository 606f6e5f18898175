"""How a masked-diffusion LM's quantized samples differ from its fp32 samples of the same seed,
and how well each model predicts held-out text.

- **drift**: at each timestep, the fraction of positions whose token differs between the fp32
  and the quantized sampler after that step (a position still masked in one and revealed in the
  other differs); per group and mean as for the DDPM.
- **token agreement**: the fraction of generated (non-prompt) positions whose final token is the
  same.
- **generative perplexity** (as masked-diffusion LM papers report it): the fp32 model's
  masked-diffusion bound (:func:`~thermojax.core.text_metrics.masked_diffusion_nll_bound`) on
  the fp32 samples and on the quantized samples, as a perplexity per token.
- **held-out perplexity**: the same bound of the fp32 model and of the quantized model (weights
  and activations quantized) on the model's held-out text, an upper bound on its perplexity per
  token (per byte for a byte-level model). The quantized model quantizes each sequence's
  activations with the time group the sampler would use at its mask ratio: the timestep whose
  step sees as many ``[MASK]`` tokens as the sequence has (:func:`timesteps_for_masks`).

Figures that need what the model lacks (held-out text without a reference) are ``None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.core.quant import QTensor, fake_quantize_activations
from thermojax.core.text_metrics import masked_diffusion_nll_bound, perplexity
from thermojax.models.dream.network import shift_logits
from thermojax.pipeline.measure.sampling import ActParams, Samples
from thermojax.pipeline.results.codec import fields_as_plain_data
from thermojax.pipeline.weights.quantize import WeightReport, dense_weights

__all__ = ["NUM_MASK_RATIOS", "TEXT_PREVIEW", "TextQuality", "evaluate_text_quality"]

NUM_MASK_RATIOS = 16
"""Stratified mask ratios (network passes) per perplexity bound."""

TEXT_PREVIEW = 4
"""Samples shown as text, fp32 beside quantized."""


@dataclasses.dataclass(frozen=True)
class TextQuality:
    """Quantized sampling of a masked-diffusion LM against fp32 sampling (module doc).

    Attributes:
        drift_per_timestep: float64 ``[T]``: fraction of positions differing after each step.
        drift_per_group: float64 ``[G]``: its means over the time groups.
        drift_mean: its mean.
        token_agreement: fraction of generated positions with the same final token.
        generative_perplexity_fp32, generative_perplexity_quantized: the fp32 model's
            perplexity bound of the fp32 / quantized samples, per token.
        heldout_perplexity_fp32, heldout_perplexity_quantized: the fp32 / quantized model's
            perplexity bound on held-out text, per token; ``None`` without held-out text.
        sample_text_fp32, sample_text_quantized: the first samples decoded (``None`` without
            a decoder).
        layer_cosine: layer name -> weight cosine similarity; model_cosine: over all weights.
        num_samples: N.
    """

    drift_per_timestep: np.ndarray
    drift_per_group: np.ndarray
    drift_mean: float
    token_agreement: float
    generative_perplexity_fp32: float
    generative_perplexity_quantized: float
    heldout_perplexity_fp32: float | None
    heldout_perplexity_quantized: float | None
    sample_text_fp32: tuple[str, ...] | None
    sample_text_quantized: tuple[str, ...] | None
    layer_cosine: dict[str, float]
    model_cosine: float = float("nan")
    num_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (arrays as lists of floats), marked ``kind: "text"``."""
        return fields_as_plain_data(self) | {"kind": "text"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextQuality:
        """Inverse of :meth:`to_dict` (the stage cache's entries)."""
        values = {k: v for k, v in data.items() if k != "kind"}
        for key in ("drift_per_timestep", "drift_per_group"):
            values[key] = np.asarray(values[key], np.float64)
        for key in ("sample_text_fp32", "sample_text_quantized"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)


def timesteps_for_masks(model: Any, masked: jax.Array) -> jax.Array:
    """The sampler timestep whose step sees ``masked`` ``[MASK]`` tokens (int32, any shape).

    Step ``k`` (timestep ``T - 1 - k``) runs on ``remaining[k] = n - sum(schedule[:k])`` masked
    positions, a non-increasing sequence; a count maps to the last step that still sees at
    least that many, so a fully masked sequence is the first step and one mask the last.
    """
    schedule = np.asarray(model.schedule, np.int64)
    remaining = schedule[::-1].cumsum()[::-1]  # remaining[k] before step k
    # remaining is non-increasing; count the steps that see >= masked masks.
    steps_seen = jnp.sum(jnp.asarray(remaining)[None, :] >= masked.reshape(-1, 1), axis=1)
    step = jnp.clip(steps_seen - 1, 0, model.num_timesteps - 1)
    return (model.num_timesteps - 1 - step).reshape(masked.shape).astype(jnp.int32)


@partial(jax.jit, static_argnames=("bits",))
def _bound_program(
    model: Any,
    weights: dict[str, jax.Array] | None,
    per_step_scales: jax.Array | None,
    per_step_zero_points: jax.Array | None,
    tokens: jax.Array,
    scored: jax.Array,
    key: jax.Array,
    *,
    bits: int,
) -> jax.Array:
    """The masked-diffusion bound (nats per token) of ``tokens`` under the model with
    ``weights`` (``[in, out]``; ``None``: fp32) and per-timestep activation parameters."""
    stored = None if weights is None else {name: w.T for name, w in weights.items()}
    mask_id = model.options.mask_token_id

    def logits_fn(batch: jax.Array) -> jax.Array:
        hook = None
        if per_step_scales is not None:
            t = timesteps_for_masks(model, jnp.sum(batch == mask_id, axis=1))

            def hook(layer: int, x: jax.Array) -> jax.Array:
                scale = per_step_scales[layer, t][:, None, None]
                zero = per_step_zero_points[layer, t][:, None, None]
                return fake_quantize_activations(x, scale, zero, bits=bits)

        logits, _ = model.lm.forward(stored, batch, act_hook=hook)
        return shift_logits(logits)

    _, mean = masked_diffusion_nll_bound(
        logits_fn,
        tokens,
        key=key,
        num_mask_ratios=NUM_MASK_RATIOS,
        mask_token_id=mask_id,
        positions=scored,
    )
    return mean


def _bound(
    model: Any,
    tokens: np.ndarray,
    *,
    seed: int,
    weights: Mapping[str, QTensor] | None = None,
    act_params: ActParams | None = None,
    skip_prompt: bool = True,
) -> float:
    scored = np.ones(tokens.shape, bool)
    if skip_prompt:
        scored[:, : len(model.prompt)] = False
    scales = zero_points = None
    bits = 0
    if act_params is not None:
        group = np.searchsorted(act_params.edges, np.arange(model.num_timesteps), side="right") - 1
        scales = jnp.asarray(np.asarray(act_params.scales, np.float32)[:, group])
        zero_points = jnp.asarray(np.asarray(act_params.zero_points, np.float32)[:, group])
        bits = int(act_params.bits)
    dense = None if weights is None else dense_weights(model, weights)
    nll = _bound_program(
        model,
        dense,
        scales,
        zero_points,
        jnp.asarray(tokens, jnp.int32),
        jnp.asarray(scored),
        jax.random.PRNGKey(seed),
        bits=bits,
    )
    return float(nll)


def _decoded(model: Any, tokens: np.ndarray) -> tuple[str, ...] | None:
    reference = model.reference
    if reference is None:
        return None
    return tuple(reference.decode(row) for row in tokens[:TEXT_PREVIEW])


def evaluate_text_quality(
    model: Any,
    fp32: Samples,
    quantized: Samples,
    edges: Sequence[int] | np.ndarray,
    weight_report: WeightReport,
    *,
    qweights: Mapping[str, QTensor] | None,
    act_params: ActParams | None,
    seed: int = 0,
) -> TextQuality:
    """The figures of the module doc for one pair of sample sets from the same seed.

    Args:
        model: the :class:`~thermojax.models.dream.diffusion.MaskedDiffusionLM`.
        fp32, quantized: samples (tokens ``[N, L]``, trajectories ``[T, N, L]``).
        edges: int ``[G + 1]`` time-group edges for ``drift_per_group``.
        weight_report: the quantized weights' report.
        qweights, act_params: the quantized model, for its held-out bound (``None``: that
            figure is ``None``).
        seed: PRNG seed of the bounds' masks.

    Raises:
        ValueError: sample sets or edges that do not match the model.
    """
    traj_f, traj_q = np.asarray(fp32.trajectory), np.asarray(quantized.trajectory)
    if traj_f.shape != traj_q.shape or traj_f.shape[0] != model.num_timesteps:
        raise ValueError(
            f"fp32 trajectory {traj_f.shape} and quantized trajectory {traj_q.shape} must both be "
            f"[T={model.num_timesteps}, N, L]"
        )
    edges = np.asarray(edges, np.int64)
    if edges.ndim != 1 or len(edges) < 2 or edges[0] != 0 or edges[-1] != model.num_timesteps:
        raise ValueError(f"edges must run from 0 to T={model.num_timesteps}, got {edges.tolist()}")
    drift = np.mean(traj_f != traj_q, axis=(1, 2), dtype=np.float64)
    csum = np.concatenate([[0.0], np.cumsum(drift)])
    drift_per_group = (csum[edges[1:]] - csum[edges[:-1]]) / np.diff(edges)
    tokens_f, tokens_q = np.asarray(fp32.x0), np.asarray(quantized.x0)
    generated = slice(len(model.prompt), None)
    agreement = float(np.mean(tokens_f[:, generated] == tokens_q[:, generated]))
    heldout_f = heldout_q = None
    if model.reference is not None:
        heldout = np.asarray(model.reference.heldout_tokens(), np.int32)
        heldout_f = float(perplexity(_bound(model, heldout, seed=seed, skip_prompt=False)))
        if qweights is not None:
            nll = _bound(
                model,
                heldout,
                seed=seed,
                weights=qweights,
                act_params=act_params,
                skip_prompt=False,
            )
            heldout_q = float(perplexity(nll))
    return TextQuality(
        drift_per_timestep=drift,
        drift_per_group=drift_per_group,
        drift_mean=float(drift.mean()),
        token_agreement=agreement,
        generative_perplexity_fp32=float(perplexity(_bound(model, tokens_f, seed=seed))),
        generative_perplexity_quantized=float(perplexity(_bound(model, tokens_q, seed=seed))),
        heldout_perplexity_fp32=heldout_f,
        heldout_perplexity_quantized=heldout_q,
        sample_text_fp32=_decoded(model, tokens_f),
        sample_text_quantized=_decoded(model, tokens_q),
        layer_cosine={
            n: float(c)
            for n, c in zip(weight_report.layer_names, weight_report.layer_cosine, strict=True)
        },
        model_cosine=float(weight_report.model_cosine),
        num_samples=len(tokens_f),
    )
