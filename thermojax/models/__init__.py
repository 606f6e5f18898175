"""Models thermojax quantizes: ``load_model()`` gives the shipped digits DDPM, ``load_model(DIR)``
a digits folder or a Qwen2 / Dream or LLaDA masked-diffusion LM; any Hugging Face checkpoint
opens with :func:`thermojax.models.hf.open_checkpoint` (:func:`checkpoint_format` says which a
folder is)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from thermojax.errors import UserInputError
from thermojax.models.base import (
    SAMPLERS,
    ActHook,
    DiffusionModel,
    QualityReference,
    SamplerSpec,
    run_sampler,
)
from thermojax.models.digits.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from thermojax.models.digits.ddpm import DigitsDDPM

if TYPE_CHECKING:
    from thermojax.models.dream import DreamLM

__all__ = [
    "DREAM_ARCHITECTURES",
    "SAMPLERS",
    "SHIPPED_CHECKPOINT",
    "ActHook",
    "DiffusionModel",
    "DigitsDDPM",
    "QualityReference",
    "SamplerSpec",
    "checkpoint_format",
    "load_model",
    "run_sampler",
    "shipped_path",
]


DREAM_ARCHITECTURES = ("qwen2", "Dream", "llada")
"""``config.json`` architectures (``model_type``, else the first ``architectures``) that
:func:`load_model` opens as a :class:`~thermojax.models.dream.DreamLM`."""


def shipped_path(name: str) -> Path:
    """The folder of a model shipped with thermojax: ``"digits"``, ``"pydoc-mdlm"`` or
    ``"digits-unet"`` (a diffusers UNet2DModel folder).

    Raises:
        UserInputError: another name.
    """
    from thermojax.models.dream.corpus import SHIPPED_LM
    from thermojax.models.unet.train import SHIPPED_UNET

    folders = {"digits": SHIPPED_CHECKPOINT, "pydoc-mdlm": SHIPPED_LM, "digits-unet": SHIPPED_UNET}
    if name not in folders:
        raise UserInputError(f"model.shipped={name!r}: must be one of {', '.join(folders)}")
    return Path(folders[name])


def load_model(path: str | os.PathLike[str] | None = None) -> DiffusionModel | DreamLM:
    """Load a model thermojax can run; ``None`` loads the digits DDPM shipped in the package
    (:func:`shipped_path` names the others).

    A digits DDPM folder (``model.json``) gives a :class:`DigitsDDPM`; a Hugging Face folder of
    a Qwen2 / Dream or LLaDA architecture (``config.json`` + safetensors, sharded or not, any
    float dtype) gives a masked-diffusion :class:`~thermojax.models.dream.DreamLM` with float32
    parameters under their Hugging Face names.

    Raises:
        thermojax.errors.UserInputError: ``path`` does not exist, is not a checkpoint of a
            model thermojax can run (a Hugging Face folder of another architecture is measured
            weight-only by the baseline command instead), or is corrupt (one line naming the
            file and tensor).
    """
    if checkpoint_format(path) == "safetensors":
        from thermojax.models.dream import load_dream
        from thermojax.models.hf import open_checkpoint

        architecture = open_checkpoint(path).architecture
        if architecture not in DREAM_ARCHITECTURES:
            raise UserInputError(
                f"{path}: a {architecture!r} checkpoint; thermojax runs digits DDPMs and "
                f"{'/'.join(DREAM_ARCHITECTURES)} masked-diffusion LMs (the baseline command "
                "measures any architecture weight-only)"
            )
        return load_dream(path)
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
