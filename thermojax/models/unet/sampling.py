"""Deterministic DDIM sampling (``eta = 0``) with a ``UNet2DModel``: diffusers' ``DDIMPipeline``
loop without its noise draw and image post-processing, as one ``lax.scan`` over the steps.

Example:
    >>> import numpy as np
    >>> from thermojax.models.unet.config import UNet2DConfig
    >>> from thermojax.models.unet.scheduler import SchedulerConfig
    >>> config = UNet2DConfig.from_dict({"block_out_channels": [8, 16], "norm_num_groups": 4,
    ...     "down_block_types": ["DownBlock2D", "DownBlock2D"], "layers_per_block": 1,
    ...     "up_block_types": ["UpBlock2D", "UpBlock2D"]})
    >>> params = {k: np.zeros(s, np.float32) for k, s in config.tensor_shapes().items()}
    >>> path = ddim_sample(params, config, SchedulerConfig(), np.ones((1, 3, 8, 8)), num_steps=3)
    >>> path.shape
    (4, 1, 3, 8, 8)
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from thermojax.models.unet.config import UNet2DConfig
from thermojax.models.unet.network import Params, apply
from thermojax.models.unet.scheduler import SchedulerConfig, ddim_alphas, ddim_step

__all__ = ["ddim_sample"]


def ddim_sample(
    params: Params,
    config: UNet2DConfig,
    scheduler: SchedulerConfig,
    noise: jax.Array,
    *,
    num_steps: int,
    precision: lax.Precision | str | None = None,
) -> jax.Array:
    """The DDIM trajectory from ``noise`` (``x_T``, ``[N, C, H, W]``).

    Returns:
        ``[num_steps + 1, N, C, H, W]`` float32: ``noise`` then the sample after each step
        (the last is the generated sample, in the model's ``[-1, 1]``-ish range).
    """
    timesteps, alpha, alpha_prev = ddim_alphas(scheduler, num_steps)
    clip = scheduler.clip_sample_range if scheduler.clip_sample else None
    schedule = (
        jnp.asarray(timesteps, jnp.int32),
        jnp.asarray(alpha, jnp.float32),
        jnp.asarray(alpha_prev, jnp.float32),
    )
    return _scan(
        params,
        jnp.asarray(noise, jnp.float32),
        schedule,
        config=config,
        prediction_type=scheduler.prediction_type,
        clip=clip,
        precision=precision,
    )


@partial(jax.jit, static_argnames=("config", "prediction_type", "clip", "precision"))
def _scan(params, noise, schedule, *, config, prediction_type, clip, precision):
    def step(x, inputs):
        t, a, a_prev = inputs
        output = apply(params, config, x, t, precision=precision)
        x = ddim_step(output, x, a, a_prev, prediction_type=prediction_type, clip_range=clip)
        return x, x

    _, path = lax.scan(step, noise, schedule)
    return jnp.concatenate([noise[None], path], axis=0)
