"""A small digits classifier, trained on the real digits, that judges generated samples.

Its penultimate layer is the feature space of the Frechet distance; its softmax gives the class
coverage and confidence of a batch of samples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from thermojax.models.base import Array
from thermojax.models.digits import digits_to_model_space

__all__ = ["ClassifierConfig", "DigitsClassifier", "DigitsReference", "load_real_digits"]


def load_real_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 8x8 digits (shipped with scikit-learn): pixels ``[M, 8, 8]``, labels.

    Reads scikit-learn's data file directly when it can: importing ``sklearn`` (scipy.stats
    included) costs ~2 s, which every baseline run and sweep job would pay for 1797 rows.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    csv = next(
        (p for r in roots if (p := Path(r, "datasets", "data", "digits.csv.gz")).is_file()), None
    )
    if csv is not None:
        table = np.loadtxt(csv, delimiter=",", dtype=np.float32)
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int32)
    from sklearn.datasets import load_digits

    data = load_digits()
    return np.asarray(data.images, np.float32), np.asarray(data.target, np.int32)


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """MLP classifier widths (stored in the checkpoint's JSON)."""

    hidden: int = 128
    features: int = 32
    num_classes: int = 10


class DigitsClassifier(nn.Module):
    """MLP: model-space image ``[N, 64]`` -> ``(logits [N, C], features [N, F])``."""

    config: ClassifierConfig

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, Array]:
        """Logits and penultimate features."""
        h = nn.silu(nn.Dense(self.config.hidden, name="hidden")(x))
        features = nn.silu(nn.Dense(self.config.features, name="features")(h))
        return nn.Dense(self.config.num_classes, name="logits")(features), features


class DigitsReference:
    """Real digits plus the trained classifier (implements ``QualityReference``)."""

    def __init__(self, config: ClassifierConfig, params: Mapping[str, Any]) -> None:
        self.config = config
        self.num_classes = config.num_classes
        self.params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), dict(params))
        module = DigitsClassifier(config)
        self._apply = jax.jit(lambda p, x: module.apply({"params": p}, x))
        self._real: np.ndarray | None = None

    def real_pixels(self) -> np.ndarray:
        """All 1797 real digits, ``[M, 8, 8]`` in 0..16."""
        if self._real is None:
            self._real = load_real_digits()[0]
        return self._real

    def _run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self._apply(self.params, jnp.asarray(digits_to_model_space(pixels)))
        return np.asarray(logits, np.float64), np.asarray(features, np.float64)

    def features(self, pixels: np.ndarray) -> np.ndarray:
        """Penultimate-layer features ``[N, F]`` (float64)."""
        return self._run(pixels)[1]

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Softmax class probabilities ``[N, C]`` (float64)."""
        logits = self._run(pixels)[0]
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)
