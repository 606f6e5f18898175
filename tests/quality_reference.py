"""Every quality figure of a run recomputed in float64 numpy from samples and classifier outputs.

Shared by the unit tests (a toy model whose classifier is plain numpy), the digits model's tests
and the end-to-end test (``samples.npz`` and ``baseline_metrics.json`` of the real command). The
Frechet distance here takes the matrix square root with ``scipy.linalg.sqrtm`` (Schur), not the
symmetric eigendecompositions of :mod:`thermojax.core.sample_metrics`, and class coverage counts
class by class, so neither shares code or method with what it checks.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Sequence

import numpy as np
import scipy.linalg

COVERAGE_THRESHOLD = 0.8
"""README, Default model: a class counts when a sample gets it with probability >= 0.8."""


def frechet(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^1/2)``, float64, via ``scipy.linalg.sqrtm``."""
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a = (a - mu_a).T @ (a - mu_a) / (len(a) - 1)
    cov_b = (b - mu_b).T @ (b - mu_b) / (len(b) - 1)
    with warnings.catch_warnings():
        # Singular covariances (fewer samples than features, duplicated features) are cases
        # the tests ask about on purpose; sqrtm's result is still the square root there.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        cross = scipy.linalg.sqrtm(cov_a @ cov_b)
    value = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(cross)
    return float(max(np.real(value), 0.0))


def coverage_and_confidence(probabilities: np.ndarray) -> tuple[float, float]:
    """Fraction of classes some sample gets with probability >= 0.8; mean top probability."""
    p = np.asarray(probabilities, np.float64)
    covered = 0
    for c in range(p.shape[1]):
        assigned = p[np.argmax(p, axis=1) == c, c]
        covered += bool(np.any(assigned >= COVERAGE_THRESHOLD))
    return covered / p.shape[1], float(np.mean(np.max(p, axis=1)))


@dataclasses.dataclass(frozen=True)
class SampleFigures:
    """The figures of one sample set judged by a reference (real data + classifier)."""

    frechet: float
    class_coverage: float
    classifier_confidence: float


def judge(reference, pixels: np.ndarray) -> SampleFigures:
    """Frechet distance to all real data, coverage and confidence of pixel-space samples."""
    coverage, confidence = coverage_and_confidence(reference.probabilities(pixels))
    distance = frechet(reference.features(pixels), reference.features(reference.real_pixels()))
    return SampleFigures(distance, coverage, confidence)


def drift_figures(
    trajectory_fp32: np.ndarray, trajectory_quantized: np.ndarray, edges: Sequence[int]
) -> dict[str, object]:
    """Drift per timestep ``[T]``, per group (a loop over the groups) and its mean."""
    f = np.asarray(trajectory_fp32, np.float64)
    q = np.asarray(trajectory_quantized, np.float64)
    per_step = np.array([np.mean((q[t] - f[t]) ** 2) for t in range(len(f))])
    per_group = [per_step[a:b].mean() for a, b in itertools.pairwise(edges)]
    return {
        "drift_per_timestep": per_step,
        "drift_per_group": np.array(per_group),
        "drift_mean": float(per_step.mean()),
    }


def sample_figures(reference, fp32_x0: np.ndarray, quantized_x0: np.ndarray) -> dict[str, float]:
    """The final-sample figures of a run: MSE, Frechet, coverage, confidence (fp32 and quantized)."""
    fp32, quantized = judge(reference, fp32_x0), judge(reference, quantized_x0)
    diff = np.asarray(quantized_x0, np.float64) - np.asarray(fp32_x0, np.float64)
    return {
        "final_mse": float(np.mean(diff**2)),
        "frechet_fp32": fp32.frechet,
        "frechet_quantized": quantized.frechet,
        "class_coverage_fp32": fp32.class_coverage,
        "class_coverage_quantized": quantized.class_coverage,
        "classifier_confidence_fp32": fp32.classifier_confidence,
        "classifier_confidence_quantized": quantized.classifier_confidence,
    }


def assert_sample_figures(got: dict, expected: dict[str, float], *, frechet_rtol: float) -> None:
    """Coverage exactly, confidence and MSE to float64 round-off, Frechet to ``frechet_rtol``."""
    for name in ("class_coverage_fp32", "class_coverage_quantized"):
        assert got[name] == expected[name], (name, got[name], expected[name])
    for name in ("classifier_confidence_fp32", "classifier_confidence_quantized", "final_mse"):
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-12, atol=0, err_msg=name)
    for name in ("frechet_fp32", "frechet_quantized"):
        np.testing.assert_allclose(got[name], expected[name], rtol=frechet_rtol, err_msg=name)


class ToyReference:
    """A ``QualityReference`` in plain numpy: a fixed random two-layer classifier on 2x3 pixels.

    Equality and hash by identity are enough here: no toy model is a JAX pytree.
    """

    num_classes = 4

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.hidden = rng.normal(size=(6, 5))
        self.logits = 4.0 * rng.normal(size=(5, self.num_classes))
        self._real = rng.uniform(0.0, 16.0, size=(40, 2, 3))

    def real_pixels(self) -> np.ndarray:
        return self._real

    def features(self, pixels: np.ndarray) -> np.ndarray:
        flat = np.asarray(pixels, np.float64).reshape(len(pixels), -1) / 16.0
        return np.tanh(flat @ self.hidden)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        z = self.features(pixels) @ self.logits
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class ToyModel:
    """The attributes of a ``DiffusionModel`` that quality evaluation reads."""

    reference: ToyReference | None
    num_timesteps: int = 12
    data_shape: tuple[int, ...] = (2, 3)
