"""Loading a Dream / Qwen2 Hugging Face checkpoint folder into a :class:`DreamLM`.

The folder is opened and checked whole by :func:`thermojax.models.hf.open_checkpoint` (headers,
shards, the Qwen2 tensor layout ``config.json`` implies) before any weight is read; then the
tensors stream in one at a time, each converted and moved to the device before the next is
read, so host memory holds about one tensor beyond the model.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from thermojax.models.dream.config import DreamConfig
from thermojax.models.dream.network import DreamLM
from thermojax.models.hf.headers import CheckpointError
from thermojax.models.hf.layouts import CONFIG_FILE
from thermojax.models.hf.reader import open_checkpoint

__all__ = ["load_dream"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def load_dream(
    path: str | os.PathLike[str], *, dtype: str | None = "float32", check_finite: bool = True
) -> DreamLM:
    """Load a Dream (or any Qwen2-layout) or LLaDA checkpoint folder as a :class:`DreamLM`.

    Args:
        path: a folder with ``config.json`` and ``model.safetensors`` (or an index and its
            shards), as Hugging Face saves them.
        dtype: ``"float32"`` (default) upcasts every tensor on load; ``"bfloat16"`` /
            ``"float16"`` store them so (half the memory; the forward pass still computes in
            float32); ``None`` keeps each tensor's stored dtype.
        check_finite: refuse tensors with NaN or Inf values (a fast pass over the bits).

    Returns:
        The model, its parameters keyed by the checkpoint's tensor names.

    Raises:
        CheckpointError: (a :class:`thermojax.errors.UserInputError`) one line naming the file
            and tensor at fault: a missing or malformed folder, a ``config.json`` that is not a
            Qwen2 / Dream or LLaDA architecture this model implements (naming the key and value), a
            tensor missing, unexpected or of the wrong shape, NaN / Inf values.
        ValueError: an unknown ``dtype``.

    Example:
        >>> import tempfile, pathlib
        >>> from thermojax.models.hf import write_dream_like
        >>> folder = write_dream_like(pathlib.Path(tempfile.mkdtemp()) / "m", scale=112, layers=1)
        >>> model = load_dream(folder)
        >>> model.logits(jnp.zeros((1, 5), jnp.int32)).shape
        (1, 5, 1344)
    """
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or None, got {dtype!r}")
    checkpoint = open_checkpoint(path)
    try:
        config = DreamConfig.from_hf(checkpoint.config)
    except ValueError as err:
        raise CheckpointError(CONFIG_FILE, str(err)) from err
    # open_checkpoint has compared every tensor with the layout config.json implies (the one
    # config.tensor_shapes() gives), so the names and shapes are right; create() re-checks.
    target = None if dtype is None else _DTYPES[dtype]
    params = {}
    for info, array in checkpoint.iter_tensors(check_finite=check_finite):
        params[info.name] = jnp.asarray(array if target is None else np.asarray(array, target))
    return DreamLM.create(config, params, dtype=None)
