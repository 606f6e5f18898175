"""Image samples (the digits DDPM's): how quantized samples differ from fp32 samples of the same
noise and from the real data, how those figures are graded and shown.

Example:
    >>> from thermojax.models import load_model
    >>> from thermojax.pipeline.quality.image import evaluate_image_quality
    >>> from thermojax.pipeline.measure.sampling import sample
    >>> from thermojax.pipeline.weights.quantize import quantize_weights
    >>> model = load_model()
    >>> qweights, report = quantize_weights(model, bits=4)
    >>> fp32, quant = sample(model, num_samples=8), sample(model, weights=qweights, num_samples=8)
    >>> quality = evaluate_image_quality(model, fp32, quant, [0, 500, 1000], report)
    >>> quality.kind, len(quality.drift_per_group)
    ('image', 2)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from thermojax.core.quant import QTensor
from thermojax.core.sample_metrics import frechet_distance
from thermojax.models.base import DiffusionModel, sample_quality
from thermojax.pipeline.measure.sampling import ActParams, Samples
from thermojax.pipeline.quality.drift import chain_timesteps, drift_figures
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
from thermojax.pipeline.weights.quantize import WeightReport

__all__ = ["IMAGE", "ImageQuality", "evaluate_image_quality"]

NAN = math.nan


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageQuality(SampleQuality):
    """Quantized sampling compared with fp32 sampling from the same noise, and with real data.

    Attributes:
        drift_per_timestep: mean squared difference of the model-space states after each step.
        final_mse: mean squared difference of the final samples in pixel units (0..16).
        frechet_fp32, frechet_quantized: Frechet distance to the real data in the classifier's
            feature space (NaN for a model without a reference).
        class_coverage_fp32, class_coverage_quantized: fraction of the classes assigned to at
            least one sample with probability >= ``CONFIDENCE_THRESHOLD``.
        classifier_confidence_fp32, classifier_confidence_quantized: mean top-class probability.
        frechet_real_subset: Frechet distance of N real samples (fixed seed) to all real ones,
            the value a perfect generator would get with the same N (small-sample bias).
    """

    kind: ClassVar[str] = "image"
    final_mse: float = NAN
    frechet_fp32: float = NAN
    frechet_quantized: float = NAN
    class_coverage_fp32: float = NAN
    class_coverage_quantized: float = NAN
    classifier_confidence_fp32: float = NAN
    classifier_confidence_quantized: float = NAN
    frechet_real_subset: float = NAN


def _real_subset_frechet(model: DiffusionModel, num_samples: int) -> float:
    ref = model.reference
    if ref is None or num_samples < 2:
        return float("nan")
    real = ref.real_pixels()
    idx = np.random.default_rng(0).choice(
        len(real), size=min(num_samples, len(real)), replace=False
    )
    return frechet_distance(ref.features(real[idx]), ref.features(real))


def evaluate_image_quality(
    model: DiffusionModel,
    fp32: Samples,
    quantized: Samples,
    edges: Sequence[int] | np.ndarray,
    weight_report: WeightReport,
    *,
    qweights: Mapping[str, QTensor] | None = None,
    act_params: ActParams | None = None,
    seed: int = 0,
) -> ImageQuality:
    """Drift, final MSE, Frechet distances, class coverage and weight cosine.

    Args:
        model: the model both sample sets came from.
        fp32: samples with fp32 weights.
        quantized: samples with quantized weights (and activations) from the same seed.
        edges: int ``[G+1]`` time-group edges on the model's T timesteps for
            ``drift_per_group`` (each group's mean over the sampler's steps in it).
        weight_report: from :func:`quantize_weights`.
        qweights, act_params, seed: the quantized model and a seed (unused for images: every
            kind's evaluator takes them).

    Raises:
        ValueError: the two sample sets or the edges do not match the model, or the two ran
            different samplers.
        UserInputError: a time group that holds none of the sampler's steps.
    """
    traj_f = np.asarray(fp32.trajectory, np.float64)
    traj_q = np.asarray(quantized.trajectory, np.float64)
    steps = chain_timesteps(model, fp32, quantized)
    if traj_f.shape != traj_q.shape or traj_f.shape[0] != len(steps):
        raise ValueError(
            f"fp32 trajectory {traj_f.shape} and quantized trajectory {traj_q.shape} must both be "
            f"[S={len(steps)}, N, D]"
        )
    drift = drift_figures(
        model, fp32, quantized, edges, np.mean((traj_q - traj_f) ** 2, axis=(1, 2))
    )
    q_f = sample_quality(model, fp32.x0)
    q_q = sample_quality(model, quantized.x0)
    x0_f = np.asarray(fp32.x0, np.float64)
    x0_q = np.asarray(quantized.x0, np.float64)
    return ImageQuality(
        **drift,
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


def grade_image_quality(quality: ImageQuality, b: Any) -> list[Graded]:
    """Frechet ratio, class coverage lost and final-sample MSE against fp32's
    (limits: :class:`~thermojax.pipeline.settings.InterpretationConfig`)."""
    found = []
    fp32, quantized = quality.frechet_fp32, quality.frechet_quantized
    if finite(fp32, quantized):
        r = ratio(quantized, fp32)
        good, poor = b.good_max_frechet_ratio, b.poor_above_frechet_ratio
        found.append(
            graded(
                grade(r, good, poor),
                f"Frechet {times(r)} fp32",
                f"Frechet distance <= {good:g}x fp32's (poor above {poor:g}x)",
                f"{times(r)} ({quantized:.2f} vs {fp32:.2f})",
            )
        )
    fp32, quantized = quality.class_coverage_fp32, quality.class_coverage_quantized
    if finite(fp32, quantized):
        drop = fp32 - quantized
        good, poor = b.good_max_coverage_drop, b.poor_above_coverage_drop
        found.append(
            graded(
                grade(drop, good, poor),
                f"class coverage {quantized:.0%} vs {fp32:.0%} fp32",
                f"class coverage at most {good:g} below fp32's (poor beyond {poor:g})",
                f"{quantized:.0%} vs {fp32:.0%}",
            )
        )
    if finite(quality.final_mse):
        mse, good, poor = quality.final_mse, b.good_max_final_mse, b.poor_above_final_mse
        found.append(
            graded(
                grade(mse, good, poor),
                f"final MSE {mse:.3g} px^2",
                f"final-sample MSE to fp32's <= {good:g} px^2 (poor above {poor:g})",
                f"{mse:.3g}",
            )
        )
    return found


def image_graded_ratio(quality: ImageQuality) -> GradedRatio | None:
    """The Frechet distance's ratio quantized / fp32, the first figure
    :func:`grade_image_quality` grades (``None`` without both distances)."""
    fp32, quantized = quality.frechet_fp32, quality.frechet_quantized
    return (
        GradedRatio("Frechet / fp32", ratio(quantized, fp32)) if finite(fp32, quantized) else None
    )


_FLOAT64_COMPARISON = 3
"""Float64 arrays the comparison makes of a trajectory's size (two copies and the difference,
which numpy squares in place): each twice the float32 trajectory."""

IMAGE = register_quality_kind(
    QualityKind(
        name="image",
        type=ImageQuality,
        figures=(
            "drift_mean",
            "final_mse",
            "frechet_fp32",
            "frechet_quantized",
            "class_coverage_fp32",
            "class_coverage_quantized",
        ),
        compared=("drift_mean", "final_mse", "frechet_quantized", "class_coverage_quantized"),
        fp32_reference=("frechet_fp32", "class_coverage_fp32"),
        labels={
            "drift_mean": FigureLabel("trajectory drift (mean)", False, 5, 4),
            "final_mse": FigureLabel("final-sample MSE", False, 4, 3),
            "frechet_quantized": FigureLabel("Frechet distance", False, 3, 2),
            "frechet_fp32": FigureLabel("Frechet distance", False, 3, 2),
            "class_coverage_quantized": FigureLabel("class coverage", True, 2, 0, percent=True),
            "class_coverage_fp32": FigureLabel("class coverage", True, 2, 0, percent=True),
        },
        comparison_labels={
            "drift_mean": "Trajectory drift (mean)",
            "final_mse": "Final-sample MSE vs fp32",
            "frechet_quantized": "Frechet distance to real digits",
            "class_coverage_quantized": "Class coverage",
        },
        headline=(
            Headline("final_mse", "final MSE", "MSE", True),
            Headline("frechet_quantized", "Frechet", "Frechet", True),
        ),
        grade=grade_image_quality,
        graded_ratio=image_graded_ratio,
        summary=lambda q: (
            f"final MSE {q.final_mse:.3f}, Frechet {q.frechet_fp32:.2f} (fp32) / "
            f"{q.frechet_quantized:.2f}"
        ),
        log_summary=lambda q: (
            f"drift mean {q.drift_mean:.5f}, final MSE {q.final_mse:.4f}, Frechet fp32 "
            f"{q.frechet_fp32:.3f} / quantized {q.frechet_quantized:.3f}"
        ),
        summary_columns=(
            "drift_mean",
            "final_mse",
            "frechet_fp32",
            "frechet_quantized",
            "class_coverage_quantized",
        ),
        correlated=("drift_mean", "frechet_quantized", "final_mse"),
        sweep_headline=(("frechet_quantized", "Frechet (quantized)"),),
        drift=DriftText(
            measure="mean squared drift of x_t",
            title="Trajectory drift, quantized vs fp32 (same noise)",
        ),
        evaluate=evaluate_image_quality,
        pixel_preview=True,
        comparison_copies=2 * _FLOAT64_COMPARISON,
        reads_untagged=True,
    )
)
"""Image samples: the digits DDPM's (any model with an image :class:`QualityReference`)."""
