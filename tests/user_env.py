"""The environment a thermojax command gets in the end-to-end tests: a user's own HOME and
cache folder, no W&B account or Hydra settings inherited, JAX on the CPU, no colours."""

from __future__ import annotations

import os
from pathlib import Path


def command_env(home: Path, cache: Path, **extra: str) -> dict[str, str]:
    """``os.environ`` without ``WANDB_*`` / ``HYDRA_*``, with ``HOME`` and
    ``THERMOJAX_CACHE_DIR`` set, W&B silent, JAX on the CPU, ``NO_COLOR``; ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.update(
        HOME=str(home),
        THERMOJAX_CACHE_DIR=str(cache),
        WANDB_SILENT="true",
        JAX_PLATFORMS="cpu",
        NO_COLOR="1",
        **extra,
    )
    return env
