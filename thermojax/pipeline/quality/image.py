"""How quantized samples differ from fp32 samples of the same noise, and from the real data.

Example:
    >>> from thermojax.models import load_model
    >>> from thermojax.pipeline.quality.image import evaluate_quality
    >>> from thermojax.pipeline.measure.sampling import sample
    >>> from thermojax.pipeline.weights.quantize import quantize_weights
    >>> model = load_model()
    >>> qweights, report = quantize_weights(model, bits=4)
    >>> fp32, quant = sample(model, num_samples=8), sample(model, weights=qweights, num_samples=8)
    >>> quality = evaluate_quality(model, fp32, quant, [0, 500, 1000], report)
    >>> quality.drift_per_group.shape
    (2,)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from thermojax.core.quant import QTensor
from thermojax.core.sample_metrics import frechet_distance
from thermojax.core.timegroups import step_edges
from thermojax.errors import value_errors_as_user_input
from thermojax.models.base import DiffusionModel, sample_quality
from thermojax.pipeline.measure.sampling import ActParams, Samples
from thermojax.pipeline.quality.text import TextQuality, evaluate_text_quality
from thermojax.pipeline.results.codec import fields_as_plain_data
from thermojax.pipeline.weights.quantize import WeightReport

__all__ = ["Quality", "evaluate_quality"]


@dataclasses.dataclass(frozen=True)
class Quality:
    """Quantized sampling compared with fp32 sampling from the same noise, and with real data.

    Attributes:
        drift_per_timestep: float64 ``[T]``, mean squared difference of the model-space states
            after the step at each timestep.
        drift_per_group: float64 ``[G]``, ``drift_per_timestep`` averaged over each time group.
        drift_mean: mean of ``drift_per_timestep``.
        final_mse: mean squared difference of the final samples in pixel units (0..16).
        frechet_fp32, frechet_quantized: Frechet distance to the real digits in the classifier's
            feature space.
        class_coverage_fp32, class_coverage_quantized: fraction of the classes assigned to at
            least one sample with probability >= ``CONFIDENCE_THRESHOLD``.
        classifier_confidence_fp32, classifier_confidence_quantized: mean top-class probability.
        layer_cosine: layer name -> weight cosine similarity.
        model_cosine: weight cosine over all quantizable weights.
        frechet_real_subset: Frechet distance of N real digits (fixed seed) to all real digits,
            the value a perfect generator would get with the same N (small-sample bias).
        num_samples: N.
    """

    drift_per_timestep: np.ndarray
    drift_per_group: np.ndarray
    drift_mean: float
    final_mse: float
    frechet_fp32: float
    frechet_quantized: float
    class_coverage_fp32: float
    class_coverage_quantized: float
    classifier_confidence_fp32: float
    classifier_confidence_quantized: float
    layer_cosine: dict[str, float]
    model_cosine: float = float("nan")
    frechet_real_subset: float = float("nan")
    num_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: arrays become lists of floats, numbers plain floats/ints."""
        return fields_as_plain_data(self)


def _real_subset_frechet(model: DiffusionModel, num_samples: int) -> float:
    ref = model.reference
    if ref is None or num_samples < 2:
        return float("nan")
    real = ref.real_pixels()
    idx = np.random.default_rng(0).choice(
        len(real), size=min(num_samples, len(real)), replace=False
    )
    return frechet_distance(ref.features(real[idx]), ref.features(real))


def chain_timesteps(model: DiffusionModel, fp32: Samples, quantized: Samples) -> np.ndarray:
    """The timesteps both sample sets ran (the same sampler is required), ``[S]``."""
    steps_f, steps_q = np.asarray(fp32.timesteps), np.asarray(quantized.timesteps)
    if steps_f.shape != steps_q.shape or np.any(steps_f != steps_q):
        raise ValueError(
            f"fp32 and quantized samples ran different steps ({len(steps_f)} and {len(steps_q)}); "
            "compare samples from one sampler"
        )
    if len(steps_f) and steps_f[-1] >= model.num_timesteps:
        raise ValueError(f"sample timesteps must be < T={model.num_timesteps}")
    if fp32.sampler is None and len(steps_f) != model.num_timesteps:
        raise ValueError(
            f"trajectories of {len(steps_f)} steps from the model's own sampler must both be "
            f"[T={model.num_timesteps}, N, D]"
        )
    return steps_f


def chain_edges(
    model: DiffusionModel, edges: Sequence[int] | np.ndarray, timesteps: np.ndarray
) -> np.ndarray:
    """Model-axis group ``edges`` over the steps a sampler ran (int64 ``[G + 1]``).

    Raises:
        ValueError: edges that are not a partition of the model's T timesteps.
        UserInputError: a group that holds none of the steps.
    """
    edges = np.asarray(edges, np.int64)
    if edges.ndim != 1 or len(edges) < 2 or edges[0] != 0 or edges[-1] != model.num_timesteps:
        raise ValueError(f"edges must run from 0 to T={model.num_timesteps}, got {edges.tolist()}")
    if np.any(np.diff(edges) < 1):
        raise ValueError(f"edges must be strictly increasing, got {edges.tolist()}")
    if len(timesteps) == model.num_timesteps:
        return edges
    with value_errors_as_user_input(f"sampling with {len(timesteps)} steps"):
        return step_edges(edges, timesteps).astype(np.int64)


def evaluate_quality(
    model: DiffusionModel,
    fp32: Samples,
    quantized: Samples,
    edges: Sequence[int] | np.ndarray,
    weight_report: WeightReport,
    *,
    qweights: Mapping[str, QTensor] | None = None,
    act_params: ActParams | None = None,
    seed: int = 0,
) -> Quality | TextQuality:
    """Drift, final MSE, Frechet distances, class coverage and weight cosine; for a
    masked-diffusion LM (``model.family == "text"``) its own figures
    (:func:`~thermojax.pipeline.quality.text.evaluate_text_quality`).

    Args:
        model: the model both sample sets came from.
        fp32: samples with fp32 weights.
        quantized: samples with quantized weights (and activations) from the same seed.
        edges: int ``[G+1]`` time-group edges on the model's T timesteps for
            ``drift_per_group`` (each group's mean over the sampler's steps in it).
        weight_report: from :func:`quantize_weights`.
        qweights, act_params, seed: the quantized model and a seed, for an LM's held-out
            perplexity (unused for images).

    Raises:
        ValueError: the two sample sets or the edges do not match the model, or the two ran
            different samplers.
        UserInputError: a time group that holds none of the sampler's steps.
    """
    if getattr(model, "family", "image") == "text":
        return evaluate_text_quality(
            model,
            fp32,
            quantized,
            edges,
            weight_report,
            qweights=qweights,
            act_params=act_params,
            seed=seed,
        )
    traj_f = np.asarray(fp32.trajectory, np.float64)
    traj_q = np.asarray(quantized.trajectory, np.float64)
    steps = chain_timesteps(model, fp32, quantized)
    if traj_f.shape != traj_q.shape or traj_f.shape[0] != len(steps):
        raise ValueError(
            f"fp32 trajectory {traj_f.shape} and quantized trajectory {traj_q.shape} must both be "
            f"[S={len(steps)}, N, D]"
        )
    edges = chain_edges(model, edges, steps)
    drift = np.mean((traj_q - traj_f) ** 2, axis=(1, 2))
    # Group means via cumulative sums: one vectorized pass however many groups there are.
    csum = np.concatenate([[0.0], np.cumsum(drift)])
    drift_per_group = (csum[edges[1:]] - csum[edges[:-1]]) / np.diff(edges)
    q_f = sample_quality(model, fp32.x0)
    q_q = sample_quality(model, quantized.x0)
    x0_f = np.asarray(fp32.x0, np.float64)
    x0_q = np.asarray(quantized.x0, np.float64)
    return Quality(
        drift_per_timestep=drift,
        drift_per_group=drift_per_group,
        drift_mean=float(drift.mean()),
        final_mse=float(np.mean((x0_q - x0_f) ** 2)),
        frechet_fp32=q_f["frechet"],
        frechet_quantized=q_q["frechet"],
        class_coverage_fp32=q_f["class_coverage"],
        class_coverage_quantized=q_q["class_coverage"],
        classifier_confidence_fp32=q_f["classifier_confidence"],
        classifier_confidence_quantized=q_q["classifier_confidence"],
        layer_cosine={
            n: float(c)
            for n, c in zip(weight_report.layer_names, weight_report.layer_cosine, strict=True)
        },
        model_cosine=float(weight_report.model_cosine),
        frechet_real_subset=_real_subset_frechet(model, len(x0_f)),
        num_samples=len(x0_f),
    )
