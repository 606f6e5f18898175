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
  step sees as many ``[MASK]`` tokens as the sequence has (:func:`timesteps_for_masks`); with
  dynamic activations (``ActParams.mode``), each token by its own range, as the sampler does.

Figures that need what the model lacks (held-out text without a reference) are ``None``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.core.quant import QTensor, fake_quantize_per_token
from thermojax.core.text_metrics import bound_batch_size, masked_diffusion_nll_bound, perplexity
from thermojax.models.dream.network import shift_logits
from thermojax.pipeline.measure.sampling import ActParams, Samples, quantize_input
from thermojax.pipeline.quality.drift import group_drift
from thermojax.pipeline.quality.grading import (
    Graded,
    GradedRatio,
    finite,
    grade,
    graded,
    ratio,
    times,
)
from thermojax.pipeline.quality.kind import (
    DriftText,
    FigureLabel,
    Headline,
    QualityKind,
    SampleQuality,
    register_quality_kind,
)
from thermojax.pipeline.weights.quantize import WeightReport, sampler_weights

__all__ = ["NUM_MASK_RATIOS", "TEXT", "TEXT_PREVIEW", "TextQuality", "evaluate_text_quality"]

NUM_MASK_RATIOS = 16
"""Stratified mask ratios (network passes) per perplexity bound."""

TEXT_PREVIEW = 4
"""Samples shown as text, fp32 beside quantized."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextQuality(SampleQuality):
    """Quantized sampling of a masked-diffusion LM against fp32 sampling (module doc).

    Attributes:
        drift_per_timestep: ``[T]``: fraction of positions differing after each step.
        token_agreement: fraction of generated positions with the same final token.
        generative_perplexity_fp32, generative_perplexity_quantized: the fp32 model's
            perplexity bound of the fp32 / quantized samples, per token.
        heldout_perplexity_fp32, heldout_perplexity_quantized: the fp32 / quantized model's
            perplexity bound on held-out text, per token; ``None`` without held-out text.
        sample_text_fp32, sample_text_quantized: the first samples decoded (``None`` without
            a decoder).
    """

    kind: ClassVar[str] = "text"
    token_agreement: float = math.nan
    generative_perplexity_fp32: float = math.nan
    generative_perplexity_quantized: float = math.nan
    heldout_perplexity_fp32: float | None = None
    heldout_perplexity_quantized: float | None = None
    sample_text_fp32: tuple[str, ...] | None = None
    sample_text_quantized: tuple[str, ...] | None = None


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


@partial(jax.jit, static_argnames=("bits", "batch_size", "act_mode", "channel_groups"))
def _bound_program(
    model: Any,
    weights: dict[str, QTensor | jax.Array] | None,
    per_step_scales: jax.Array | None,
    per_step_zero_points: jax.Array | None,
    tokens: jax.Array,
    scored: jax.Array,
    key: jax.Array,
    *,
    bits: int,
    batch_size: int,
    act_mode: str = "static",
    channel_groups: int = 1,
) -> jax.Array:
    """The masked-diffusion bound (nats per token) of ``tokens`` under the model with
    ``weights`` (packed QTensors, dequantized layer by layer inside each network pass, or
    ``[in, out]`` arrays; ``None``: fp32) and per-timestep activation parameters
    (``act_mode="dynamic"``: none, each token quantized by its own range at ``bits``)."""
    stored = None if weights is None else model.network_weights(weights)
    mask_id = model.options.mask_token_id

    def logits_fn(batch: jax.Array) -> jax.Array:
        hook = None
        if act_mode == "dynamic":

            def hook(layer: int, x: jax.Array) -> jax.Array:
                return fake_quantize_per_token(x, bits=bits)

        elif per_step_scales is not None:
            t = timesteps_for_masks(model, jnp.sum(batch == mask_id, axis=1))
            num_layers = len(model.layer_names)
            masked = batch == mask_id  # mask-aware parameters: their own rows

            def hook(layer: int, x: jax.Array) -> jax.Array:
                return quantize_input(
                    x,
                    per_step_scales,
                    per_step_zero_points,
                    layer,
                    t,
                    bits=bits,
                    num_layers=num_layers,
                    channel_groups=channel_groups,
                    kinds=masked,
                )

        logits, _ = model.lm.forward(stored, batch, act_hook=hook)
        return shift_logits(logits, model.lm.logit_shift)

    _, mean = masked_diffusion_nll_bound(
        logits_fn,
        tokens,
        key=key,
        num_mask_ratios=NUM_MASK_RATIOS,
        mask_token_id=mask_id,
        positions=scored,
        batch_size=batch_size,  # a 150k-token vocabulary's logits, a few sequences at a time
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
    act_mode = "static" if act_params is None else act_params.mode
    if act_params is not None:
        bits = int(act_params.bits)
    if act_params is not None and act_mode == "static":
        group = np.searchsorted(act_params.edges, np.arange(model.num_timesteps), side="right") - 1
        scales = jnp.asarray(np.asarray(act_params.scales, np.float32)[:, group])
        zero_points = jnp.asarray(np.asarray(act_params.zero_points, np.float32)[:, group])
    nll = _bound_program(
        model,
        sampler_weights(model, weights),
        scales,
        zero_points,
        jnp.asarray(tokens, jnp.int32),
        jnp.asarray(scored),
        jax.random.PRNGKey(seed),
        bits=bits,
        batch_size=bound_batch_size(tokens.shape[1], model.lm.vocab_size),
        act_mode=act_mode,
        channel_groups=1 if act_params is None else int(act_params.channel_groups),
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
    drift, drift_per_group, drift_mean = group_drift(
        np.mean(traj_f != traj_q, axis=(1, 2), dtype=np.float64), edges
    )
    tokens_f, tokens_q = np.asarray(fp32.x0), np.asarray(quantized.x0)
    generated = slice(len(model.prompt), None)
    agreement = float(np.mean(tokens_f[:, generated] == tokens_q[:, generated]))
    heldout_f = None
    if model.reference is not None:
        heldout = np.asarray(model.reference.heldout_tokens(), np.int32)
        heldout_f = float(perplexity(_bound(model, heldout, seed=seed, skip_prompt=False)))
    heldout_q = None
    if qweights is not None:
        heldout_q = quantized_text_figures(model, qweights, act_params, seed)[
            "heldout_perplexity_quantized"
        ]
    return TextQuality(
        drift_per_timestep=drift,
        drift_per_group=drift_per_group,
        drift_mean=drift_mean,
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


def quantized_text_figures(
    model: Any, qweights: Mapping[str, QTensor], act_params: ActParams | None, seed: int
) -> dict[str, float | None]:
    """The figure that needs the quantized model: its held-out perplexity bound (``None``
    without held-out text)."""
    if model.reference is None:
        return {"heldout_perplexity_quantized": None}
    heldout = np.asarray(model.reference.heldout_tokens(), np.int32)
    nll = _bound(
        model, heldout, seed=seed, weights=qweights, act_params=act_params, skip_prompt=False
    )
    return {"heldout_perplexity_quantized": float(perplexity(nll))}


def grade_text_quality(quality: TextQuality, b: Any) -> list[Graded]:
    """Held-out (else generative) perplexity ratio and token agreement against fp32's
    (limits: :class:`~thermojax.pipeline.settings.InterpretationConfig`)."""
    found = []
    good, poor = b.good_max_perplexity_ratio, b.poor_above_perplexity_ratio
    heldout = [quality.figure(f"heldout_perplexity_{k}") for k in ("fp32", "quantized")]
    generative = [quality.figure(f"generative_perplexity_{k}") for k in ("fp32", "quantized")]
    if finite(*heldout):
        r = ratio(heldout[1], heldout[0])
        found.append(
            graded(
                grade(r, good, poor),
                f"held-out perplexity {times(r)} fp32",
                f"held-out perplexity bound <= {good:g}x fp32's (poor above {poor:g}x)",
                f"{times(r)} ({heldout[1]:.2f} vs {heldout[0]:.2f})",
            )
        )
    elif finite(*generative):
        r = ratio(generative[1], generative[0])
        change = max(r, 1 / r) if r > 0 else math.inf  # lower is a change too
        found.append(
            graded(
                grade(change, good, poor),
                f"generative perplexity {times(r)} fp32",
                f"generative perplexity within {good:g}x of fp32's either way (poor beyond "
                f"{poor:g}x; no held-out text)",
                f"{times(r)} ({generative[1]:.2f} vs {generative[0]:.2f})",
            )
        )
    agreement = quality.figure("token_agreement")
    if finite(agreement):
        good, poor = b.good_min_token_agreement, b.poor_below_token_agreement
        found.append(
            graded(
                grade(agreement, good, poor, higher_is_better=True),
                f"token agreement {agreement:.0%}",
                f"token agreement with fp32 >= {good:.0%} (poor below {poor:.0%})",
                f"{agreement:.1%}",
            )
        )
    return found


def text_graded_ratio(quality: TextQuality) -> GradedRatio | None:
    """The perplexity ratio quantized / fp32 that :func:`grade_text_quality` grades first:
    the held-out bound's, else the generative perplexity's (``None`` without either)."""
    for name, label in (("heldout", "held-out bound / fp32"), ("generative", "gen. ppl / fp32")):
        fp32, quantized = (quality.figure(f"{name}_perplexity_{k}") for k in ("fp32", "quantized"))
        if finite(fp32, quantized):
            return GradedRatio(label, ratio(quantized, fp32))
    return None


def _summary(q: TextQuality) -> str:
    heldout = q.heldout_perplexity_fp32
    return (
        f"token agreement {q.token_agreement:.3f}, generative perplexity "
        f"{q.generative_perplexity_fp32:.2f} (fp32) / {q.generative_perplexity_quantized:.2f}"
        + (
            f", held-out perplexity {heldout:.2f} / {q.heldout_perplexity_quantized:.2f}"
            if heldout is not None
            else ""
        )
    )


def _log_summary(q: TextQuality) -> str:
    return (
        f"drift mean {q.drift_mean:.4f}, token agreement {q.token_agreement:.4f}, generative "
        f"perplexity fp32 {q.generative_perplexity_fp32:.3f} / quantized "
        f"{q.generative_perplexity_quantized:.3f}, held-out perplexity fp32 "
        f"{q.heldout_perplexity_fp32} / quantized {q.heldout_perplexity_quantized}"
    )


_PERPLEXITY = FigureLabel("generative perplexity", False, 3, 2)
_HELDOUT = FigureLabel("held-out perplexity bound", False, 3, 2)

TEXT = register_quality_kind(
    QualityKind(
        name="text",
        type=TextQuality,
        evaluate=evaluate_text_quality,
        quantized_figures=quantized_text_figures,
        figures=(
            "drift_mean",
            "token_agreement",
            "generative_perplexity_fp32",
            "generative_perplexity_quantized",
            "heldout_perplexity_fp32",
            "heldout_perplexity_quantized",
        ),
        compared=(
            "drift_mean",
            "token_agreement",
            "generative_perplexity_quantized",
            "heldout_perplexity_quantized",
        ),
        fp32_reference=("generative_perplexity_fp32", "heldout_perplexity_fp32"),
        labels={
            "drift_mean": FigureLabel("trajectory drift (mean)", False, 5, 4),
            "token_agreement": FigureLabel("token agreement", True, 4, 1, percent=True),
            "generative_perplexity_quantized": _PERPLEXITY,
            "generative_perplexity_fp32": _PERPLEXITY,
            "heldout_perplexity_quantized": _HELDOUT,
            "heldout_perplexity_fp32": _HELDOUT,
        },
        comparison_labels={
            "drift_mean": "Trajectory drift (mean)",
            "token_agreement": "Token agreement with fp32",
            "generative_perplexity_quantized": "Generative perplexity (fp32 model)",
            "heldout_perplexity_quantized": "Held-out perplexity bound",
        },
        headline=(
            Headline("token_agreement", "agreement", "agreement", False),
            Headline(
                "heldout_perplexity_quantized",
                "held-out ppl",
                "held-out ppl",
                True,
                instead=Headline("generative_perplexity_quantized", "gen. ppl", "gen. ppl", True),
            ),
        ),
        grade=grade_text_quality,
        graded_ratio=text_graded_ratio,
        summary=_summary,
        log_summary=_log_summary,
        summary_columns=(
            "drift_mean",
            "token_agreement",
            "generative_perplexity_quantized",
            "heldout_perplexity_quantized",
        ),
        correlated=(
            "drift_mean",
            "token_agreement",
            "generative_perplexity_quantized",
            "heldout_perplexity_quantized",
        ),
        sweep_headline=(
            ("heldout_perplexity_quantized", "held-out perplexity (quantized)"),
            ("generative_perplexity_quantized", "generative perplexity (quantized)"),
        ),
        drift=DriftText(
            measure="fraction of positions whose token differs",
            title="Token disagreement, quantized vs fp32 (same seed)",
            x_label="timestep t (the sampler runs T-1, all masked, down to 0)",
            y_label="disagreement",
            log_y=False,
        ),
        # Measured on the shipped LM: Phase 3's sample-MSE objective clips its heavy-tailed
        # activations and raises the held-out bound at every markov weight, 0 included.
        advise_phase3=False,
    )
)
"""Token sequences: a masked-diffusion LM's."""
