"""A random diffusers pipeline folder with ``google/ddpm-cifar10-32``'s exact layout, for testing
without the real weights.

``google/ddpm-cifar10-32`` is Ho et al.'s CIFAR-10 DDPM converted to diffusers: a
``UNet2DModel`` of 35,746,307 parameters (328 tensors, float32, 143 MB) and a ``DDPMScheduler``.
Its ``unet/config.json`` (as diffusers saves it after loading the Hub file): ``sample_size`` 32,
3 in / out channels, ``block_out_channels`` (128, 256, 256, 256), ``layers_per_block`` 2,
``down_block_types`` (Down, AttnDown, Down, Down) ``Block2D``, ``up_block_types`` (Up, Up,
AttnUp, Up), ``attention_head_dim`` null (one head per attention block), ``norm_num_groups``
32, ``norm_eps`` 1e-6, ``downsample_padding`` 0 (the original's asymmetric pad), ``flip_sin_to_cos``
false, ``freq_shift`` 1, ``act_fn`` silu, ``mid_block_scale_factor`` 1, ``dropout`` 0.0 (the
original trained with 0.1; dropout does not change inference and the Hub file predates the
key). Its ``scheduler/scheduler_config.json``: linear betas 1e-4 .. 0.02 over 1000 steps,
``clip_sample`` true, ``variance_type`` ``fixed_large``.

:func:`write_ddpm_cifar10_like` writes the same files (``model_index.json``, ``unet/``,
``scheduler/``) with random weights: conv / linear weights ``z / sqrt(fan_in)``, norm weights
``1 + 0.1 z``, biases ``0.1 z`` from a seeded numpy generator, one tensor at a time, atomically.

Command line::

    python -m thermojax.models.unet.synthetic OUT [--seed S] [--dtype F32|BF16]

Example:
    >>> import tempfile, pathlib
    >>> config = UNet2DConfig.from_dict(CIFAR10_UNET_CONFIG)
    >>> config.num_parameters(), len(config.tensor_shapes())
    (35746307, 328)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

from thermojax.files import atomic_write_text
from thermojax.models.hf.writer import write_safetensors
from thermojax.models.unet.config import UNet2DConfig
from thermojax.models.unet.loading import CONFIG_FILE, SCHEDULER_FILE, WEIGHTS_FILE

__all__ = ["CIFAR10_SCHEDULER_CONFIG", "CIFAR10_UNET_CONFIG", "write_ddpm_cifar10_like"]

CIFAR10_UNET_CONFIG = {
    "_class_name": "UNet2DModel",
    "_diffusers_version": "0.0.4",
    "act_fn": "silu",
    "add_attention": True,
    "attention_head_dim": None,
    "attn_norm_num_groups": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "class_embed_type": None,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "downsample_type": "conv",
    "dropout": 0.0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "num_train_timesteps": None,
    "out_channels": 3,
    "resnet_time_scale_shift": "default",
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "upsample_type": "conv",
}
CIFAR10_SCHEDULER_CONFIG = {
    "_class_name": "DDPMScheduler",
    "_diffusers_version": "0.1.1",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "trained_betas": None,
    "variance_type": "fixed_large",
}
_MODEL_INDEX = {
    "_class_name": "DDPMPipeline",
    "_diffusers_version": "0.1.1",
    "scheduler": ["diffusers", "DDPMScheduler"],
    "unet": ["diffusers", "UNet2DModel"],
}
_DTYPES = {"F32": np.float32, "BF16": ml_dtypes.bfloat16}


def _random_tensor(
    name: str, shape: tuple[int, ...], rng: np.random.Generator, dtype: type
) -> np.ndarray:
    if "norm" in name and name.endswith(".weight"):
        values = 1.0 + 0.1 * rng.standard_normal(shape, np.float32)
    elif name.endswith(".bias"):
        values = 0.1 * rng.standard_normal(shape, np.float32)
    else:
        values = rng.standard_normal(shape, np.float32) / np.float32(np.sqrt(np.prod(shape[1:])))
    return values.astype(dtype)


def write_ddpm_cifar10_like(
    path: str | os.PathLike[str], *, seed: int = 0, dtype: str = "F32"
) -> Path:
    """Write a random pipeline folder with ``google/ddpm-cifar10-32``'s layout at ``path``.

    Args:
        path: the folder (created; existing files of the same names are replaced).
        seed: the weights' seed: the same seed, the same bytes.
        dtype: ``"F32"`` (the Hub file's, 143 MB) or ``"BF16"`` (half).

    Returns:
        ``path``.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    folder = Path(path)
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    shapes = UNet2DConfig.from_dict(CIFAR10_UNET_CONFIG).tensor_shapes()
    rng = np.random.default_rng(seed)
    write_safetensors(
        folder / "unet" / WEIGHTS_FILE,
        [(name, dtype, shape) for name, shape in shapes.items()],
        lambda name: _random_tensor(name, shapes[name], rng, _DTYPES[dtype]),
        metadata={"format": "pt"},
    )
    for file, content in (
        (folder / "unet" / CONFIG_FILE, CIFAR10_UNET_CONFIG),
        (folder / "scheduler" / SCHEDULER_FILE, CIFAR10_SCHEDULER_CONFIG),
        (folder / "model_index.json", _MODEL_INDEX),
    ):
        atomic_write_text(file, json.dumps(content, indent=2, sort_keys=True) + "\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="F32")
    args = parser.parse_args(argv)
    folder = write_ddpm_cifar10_like(args.out, seed=args.seed, dtype=args.dtype)
    print(f"wrote {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
