"""Model families behind one seam (:mod:`thermojax.pipeline.families.base`), and the built-in
ones, registered in the order :func:`recognise` asks them: the digits DDPM (also the fallback),
diffusers UNets, the masked-diffusion LM, checkpoints measured weight-only."""

from thermojax.pipeline.families.base import (
    DiffusionFamily,
    LoadedModel,
    ModelFamily,
    families,
    family_of,
    recognise,
    register_family,
)
from thermojax.pipeline.families.digits import DIGITS
from thermojax.pipeline.families.unet import UNET

# isort: split
# Registered after the UNet family, which claims the config.json folders that are UNets.
from thermojax.pipeline.families.masked_lm import MASKED_LM
from thermojax.pipeline.families.weight_only import WEIGHT_ONLY

__all__ = [
    "DIGITS",
    "MASKED_LM",
    "UNET",
    "WEIGHT_ONLY",
    "DiffusionFamily",
    "LoadedModel",
    "ModelFamily",
    "families",
    "family_of",
    "recognise",
    "register_family",
]
