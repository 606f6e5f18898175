"""A small digits classifier, trained on the real digits, that judges generated samples.

Its penultimate layer is the feature space of the Frechet distance; its softmax gives the class
coverage and confidence of a batch of samples.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from thermojax.models.base import Array
from thermojax.models.digits.ddpm import digits_to_model_space

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


@functools.partial(jax.jit, static_argnames="config")
def _classify(params: Mapping[str, Any], x: Array, *, config: ClassifierConfig):
    """``(logits, features)``: one compiled program per classifier architecture and batch
    shape, shared by every loaded reference."""
    return DigitsClassifier(config).apply({"params": params}, x)


def _params_fingerprint(config: ClassifierConfig, params: Mapping[str, Any]) -> str:
    """SHA-256 of the classifier's config and every parameter (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())
    for path, leaf in sorted(
        (jax.tree_util.keystr(path), leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    ):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{path}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


class DigitsReference:
    """Real digits plus the trained classifier (implements ``QualityReference``).

    It is static metadata of a model pytree, so it is hashable and compares by content: two
    references are equal when their classifier configs and parameters are (a fingerprint,
    computed once here), so two loads of one checkpoint give models of equal tree structure.
    Treat it as immutable.
    """

    def __init__(self, config: ClassifierConfig, params: Mapping[str, Any]) -> None:
        self.config = config
        self.num_classes = config.num_classes
        self.params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), dict(params))
        self.fingerprint = _params_fingerprint(config, self.params)
        self._real: np.ndarray | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DigitsReference):
            return NotImplemented
        return self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"DigitsReference({self.config}, fingerprint={self.fingerprint[:12]})"

    def real_pixels(self) -> np.ndarray:
        """All 1797 real digits, ``[M, 8, 8]`` in 0..16 (read-only)."""
        if self._real is None:
            real = load_real_digits()[0]
            real.setflags(write=False)
            self._real = real
        return self._real

    def _run(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = jnp.asarray(digits_to_model_space(pixels))
        logits, features = _classify(self.params, x, config=self.config)
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
