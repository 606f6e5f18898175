"""Models thermojax quantizes: ``load_model()`` gives the shipped digits DDPM; users' Hugging Face
checkpoints open with :func:`thermojax.models.hf.open_checkpoint` (:func:`checkpoint_format` says
which a folder is)."""

from __future__ import annotations

import os
from pathlib import Path

from thermojax.models.base import ActHook, DiffusionModel, QualityReference, run_sampler
from thermojax.models.digits.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from thermojax.models.digits.ddpm import DigitsDDPM

__all__ = [
    "SHIPPED_CHECKPOINT",
    "ActHook",
    "DiffusionModel",
    "DigitsDDPM",
    "QualityReference",
    "checkpoint_format",
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


def checkpoint_format(path: str | os.PathLike[str] | None) -> str:
    """``"digits"`` for the shipped model or a digits DDPM folder (``model.json``),
    ``"safetensors"`` for a Hugging Face-style folder (``config.json`` + safetensors),
    ``"quantized"`` for a quantized checkpoint thermojax exported (``quantization.json``).

    Looks at file names only; the loaders check the contents. A path that is neither is called
    ``"digits"``, whose loader then names what is missing.
    """
    if path is None:
        return "digits"
    folder = Path(path).expanduser()
    if folder.is_dir() and (folder / "quantization.json").is_file():
        return "quantized"
    if (
        folder.is_dir()
        and not (folder / "model.json").is_file()
        and (folder / "config.json").is_file()
    ):
        return "safetensors"
    return "digits"
