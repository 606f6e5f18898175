"""The diffusers UNet family: a ``UNet2DModel`` folder (``config.json`` whose ``_class_name`` is
``UNet2DModel`` beside ``scheduler/scheduler_config.json``) or a diffusers pipeline folder
(``unet/`` and ``scheduler/``), run as :class:`~thermojax.models.unet.diffusion.UNetDiffusion`.

Its samples are images (the digits DDPM's quality kind): Frechet distance and class coverage
where the folder names a reference (``thermojax.json``: the shipped digits UNet), NaN otherwise.
It samples with ``ddpm`` (every timestep, diffusers' ``DDPMScheduler.step``) or ``ddim``. Every
conv and linear layer is quantized, a conv kernel per output channel in groups along
``in * kh * kw``, so ``group_size`` must divide each layer's width (the one-line error names the
layers it does not). It has no quantized-checkpoint format, no rotations and no chain budget
(each refused in one line by :class:`~thermojax.pipeline.families.base.DiffusionFamily`).

Example:
    >>> from thermojax.pipeline.settings import BaselineConfig
    >>> UNET.recognises(BaselineConfig())  # the shipped digits DDPM is not a UNet folder
    False
"""

from __future__ import annotations

import logging

from thermojax.errors import UserInputError
from thermojax.models.unet.diffusion import is_unet_folder, load_unet_diffusion
from thermojax.pipeline.families.base import (
    DiffusionFamily,
    LoadedModel,
    check_model,
    register_family,
)
from thermojax.pipeline.quality.image import IMAGE
from thermojax.pipeline.settings import BaselineConfig

__all__ = ["UNET", "UNetFamily"]

log = logging.getLogger(__name__)


class UNetFamily(DiffusionFamily):
    """A diffusers ``UNet2DModel`` (module doc)."""

    name = "diffusers-unet"
    description = "a diffusers UNet2DModel"
    quality = IMAGE
    sampling_options = ("sampler", "steps", "eta")
    default_sampler = "ddpm"
    weights_format = "diffusers"

    def recognises(self, config: BaselineConfig) -> bool:
        return config.model.run != "weight-only" and is_unet_folder(config.model.path)

    def load(self, config: BaselineConfig) -> LoadedModel:
        try:
            model = load_unet_diffusion(config.model.path)
        except UserInputError as exc:
            raise UserInputError(f"model.path={config.model.path!r}: {exc}") from None
        check_model(config, model)
        log.info(
            "model %s: diffusers UNet2DModel, T=%d, %d quantizable layers, %s parameters",
            model.name,
            model.num_timesteps,
            len(model.layer_names),
            f"{model.num_parameters():,}",
        )
        return LoadedModel(model)


UNET = register_family(UNetFamily())
"""The diffusers UNet family."""
