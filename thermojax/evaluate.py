"""Weight quantization of a model, quantized sampling from the fp32 noise, and quality metrics."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from thermojax.models.base import DiffusionModel

__all__ = [
    "ActParams",
    "Quality",
    "Samples",
    "WeightReport",
    "evaluate_quality",
    "quantize_weights",
    "sample",
]


@dataclasses.dataclass(frozen=True)
class ActParams:
    """Activation fake-quantization parameters for each layer and each time group.

    Attributes:
        scales: float32 ``[L, S]`` (> 0).
        zero_points: float32 ``[L, S]``, integer values in ``[0, 2**bits - 1]``.
        edges: int32 ``[S + 1]`` time-group edges (``arange(T + 1)`` for a per-timestep schedule).
        bits: activation bit width.
    """

    scales: np.ndarray
    zero_points: np.ndarray
    edges: np.ndarray
    bits: int


@dataclasses.dataclass(frozen=True)
class WeightReport:
    """How much the quantized weights differ from fp32 and how much smaller they are."""

    layer_names: tuple[str, ...]
    layer_cosine: np.ndarray
    layer_sqnr_db: np.ndarray
    fp32_bytes: int
    quantized_bytes: int
    model_cosine: float
    compression_ratio: float
    model_size_mb: float


@dataclasses.dataclass(frozen=True)
class Samples:
    """Samples and the sampler trajectory.

    Attributes:
        x0: ``[N, 8, 8]`` final samples in pixel range 0..16.
        trajectory: ``[T, N, 64]`` model-space state after the step at each timestep t.
    """

    x0: np.ndarray
    trajectory: np.ndarray


@dataclasses.dataclass(frozen=True)
class Quality:
    """Quality of quantized sampling compared with fp32 sampling from the same noise."""

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists and floats)."""
        raise NotImplementedError


def quantize_weights(model: DiffusionModel, *, bits: int, group_size: int = 64):
    """Quantize every quantizable weight; returns ``(dict name -> QTensor, WeightReport)``."""
    raise NotImplementedError


def sample(
    model: DiffusionModel,
    *,
    weights=None,
    act_params: ActParams | None = None,
    num_samples: int = 64,
    seed: int = 0,
) -> Samples:
    """Sample with fp32 (``weights=None``) or quantized weights; same seed, same noise."""
    raise NotImplementedError


def evaluate_quality(
    model: DiffusionModel, fp32: Samples, quantized: Samples, edges, weight_report: WeightReport
) -> Quality:
    """Drift, final MSE, Frechet distances, class coverage and weight cosine."""
    raise NotImplementedError
