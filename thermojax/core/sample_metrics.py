"""Distribution metrics of generated samples: Frechet distance and class coverage (float64 numpy).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(500, 4)), rng.normal(size=(500, 4))
    >>> frechet_distance(a, a)
    0.0
    >>> class_coverage(np.eye(3)[[0, 1, 1]])
    (0.6666666666666666, 1.0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["CONFIDENCE_THRESHOLD", "class_coverage", "frechet_distance"]

CONFIDENCE_THRESHOLD = 0.8
"""A class is covered when at least one sample is assigned to it with at least this probability."""


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root via ``eigh`` (negative round-off eigenvalues clipped to 0)."""
    vals, vecs = np.linalg.eigh((a + a.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``[N, F]`` (float64).

    ``|mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a^1/2 C_b C_a^1/2)^1/2)``; the last trace
    equals ``tr((C_a C_b)^1/2)`` and uses only symmetric eigendecompositions.
    """
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two [N>=2, F] feature sets, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrtm_psd(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_cross = float(np.sum(np.sqrt(np.clip(cross, 0.0, None))))
    value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_cross)
    return max(value, 0.0)


def class_coverage(probabilities: np.ndarray) -> tuple[float, float]:
    """``(coverage, confidence)`` of class probabilities ``[N, C]``.

    Coverage: fraction of the C classes that at least one sample is assigned to with probability
    >= ``CONFIDENCE_THRESHOLD``. Confidence: mean top-class probability.
    """
    p = np.asarray(probabilities, np.float64)
    top = p.max(axis=1)
    confident = np.unique(np.argmax(p, axis=1)[top >= CONFIDENCE_THRESHOLD])
    return len(confident) / p.shape[1], float(top.mean())
