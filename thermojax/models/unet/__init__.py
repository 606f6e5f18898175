"""diffusers' ``UNet2DModel`` (pixel-space DDPM / DDIM image models) in pure JAX.

- :class:`UNet2DConfig`: the architecture, parsed and checked from ``config.json``.
- :func:`apply`: ``(params, config, sample [N, C, H, W], timesteps) -> [N, C, H, W]``; params a
  flat dict keyed by diffusers' tensor names, in diffusers' layout.
- :func:`load_unet`: a diffusers model or pipeline folder -> :class:`DiffusersUNet`.
- :class:`SchedulerConfig`, :func:`betas`, :func:`alphas_cumprod`, :func:`inference_timesteps`,
  :func:`ddim_alphas`, :func:`ddim_step`: DDPM / DDIM schedules as diffusers computes them;
  :func:`ddim_sample`: the deterministic DDIM loop.
- :func:`write_ddpm_cifar10_like` (``thermojax.models.unet.synthetic``): a random folder with
  ``google/ddpm-cifar10-32``'s exact layout.
"""

from thermojax.models.unet.config import UNet2DConfig
from thermojax.models.unet.loading import DiffusersUNet, load_scheduler, load_unet
from thermojax.models.unet.network import apply, timestep_embedding
from thermojax.models.unet.sampling import ddim_sample
from thermojax.models.unet.scheduler import (
    SchedulerConfig,
    alphas_cumprod,
    betas,
    ddim_alphas,
    ddim_step,
    inference_timesteps,
)

__all__ = [
    "DiffusersUNet",
    "SchedulerConfig",
    "UNet2DConfig",
    "alphas_cumprod",
    "apply",
    "betas",
    "ddim_alphas",
    "ddim_sample",
    "ddim_step",
    "inference_timesteps",
    "load_scheduler",
    "load_unet",
    "timestep_embedding",
]
