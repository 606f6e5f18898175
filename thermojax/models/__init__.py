"""Diffusion models that thermojax can quantize; ``load_model()`` gives the shipped digits DDPM."""

from __future__ import annotations

import os

from thermojax.models.base import ActHook, DiffusionModel, QualityReference, run_sampler
from thermojax.models.digits.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from thermojax.models.digits.ddpm import DigitsDDPM

__all__ = [
    "SHIPPED_CHECKPOINT",
    "ActHook",
    "DiffusionModel",
    "DigitsDDPM",
    "QualityReference",
    "load_model",
    "run_sampler",
]


def load_model(path: str | os.PathLike[str] | None = None) -> DiffusionModel:
    """Load a diffusion model checkpoint; ``None`` loads the digits DDPM shipped in the package.

    Raises:
        thermojax.errors.UserInputError: ``path`` does not exist or is not a checkpoint of a
            model thermojax knows (one line naming the path).
    """
    return load_checkpoint(SHIPPED_CHECKPOINT if path is None else path)
