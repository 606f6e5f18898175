"""Loading a Dream / Qwen2 Hugging Face checkpoint folder into a :class:`DreamLM`.

The folder is opened and checked whole by :func:`thermojax.models.hf.open_checkpoint` (headers,
shards, the Qwen2 tensor layout ``config.json`` implies) before any weight is read; then the
tensors stream in one at a time, each converted and moved to the device before the next is
read, so host memory holds about one tensor beyond the model.

A run that holds the full-precision model and its quantized copy one after the other
(``model.residency=apart``) loads the network without its linear layers
(``load_dream(..., linear=False)``), reads each of them from the file when it is quantized
(:class:`CheckpointLinears`), and completes the network with them (:func:`with_linears`) once
the quantized copy is gone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import jax.numpy as jnp
import numpy as np

from thermojax.models.dream.config import DreamConfig
from thermojax.models.dream.network import DreamLM, linear_layer_names
from thermojax.models.hf.headers import CheckpointError
from thermojax.models.hf.layouts import CONFIG_FILE
from thermojax.models.hf.reader import open_checkpoint

__all__ = ["CheckpointLinears", "linear_tensor_names", "load_dream", "with_linears"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def load_dream(
    path: str | os.PathLike[str],
    *,
    dtype: str | None = "float32",
    check_finite: bool = True,
    linear: bool = True,
) -> DreamLM:
    """Load a Dream (or any Qwen2-layout) or LLaDA checkpoint folder as a :class:`DreamLM`.

    Args:
        path: a folder with ``config.json`` and ``model.safetensors`` (or an index and its
            shards), as Hugging Face saves them.
        dtype: ``"float32"`` (default) upcasts every tensor on load; ``"bfloat16"`` /
            ``"float16"`` store them so (half the memory; the forward pass still computes in
            float32); ``None`` keeps each tensor's stored dtype.
        check_finite: refuse tensors with NaN or Inf values (a fast pass over the bits).
        linear: ``False`` leaves the linear layers (:func:`linear_tensor_names`) out: a network
            that every call must give all of them (packed or dense; :meth:`DreamLM.forward`
            ``weights``), until :func:`with_linears` completes it.

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
    left_out = () if linear else linear_tensor_names(config)
    names = [name for name in checkpoint.tensors if name not in left_out]
    params = {}
    for info, array in checkpoint.iter_tensors(names, check_finite=check_finite):
        params[info.name] = jnp.asarray(array if target is None else np.asarray(array, target))
    if linear:
        return DreamLM.create(config, params, dtype=None)
    # Without its linear layers the network is not one create() accepts: the checkpoint's
    # headers were checked against the config whole, so every tensor is there and of its shape.
    return DreamLM(params=params, config=config)


def linear_tensor_names(config: DreamConfig) -> tuple[str, ...]:
    """The tensors that hold the linear layers' weights: every layer's but a tied head's (the
    embedding, which the network also reads as such)."""
    names = linear_layer_names(config.num_hidden_layers, config.layout)
    return names[:-1] if config.tie_word_embeddings else names


class CheckpointLinears(Mapping[str, jnp.ndarray]):
    """Each linear layer's ``[out, in]`` weight (keyed by the layer's name, a tied head by its
    own name too) read from the checkpoint when it is looked up, converted to ``dtype`` as
    :func:`load_dream` converts it: the same arrays, one at a time.

    Compared and hashed by identity: a static field of a model (a jitted program's argument).
    """

    def __init__(self, path: str | os.PathLike[str], *, dtype: str | None) -> None:
        if dtype is not None and dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or None, got {dtype!r}")
        self._checkpoint = open_checkpoint(path)
        self._config = DreamConfig.from_hf(self._checkpoint.config)
        self._target = None if dtype is None else _DTYPES[dtype]
        self._names = linear_layer_names(self._config.num_hidden_layers, self._config.layout)

    def __getitem__(self, name: str) -> jnp.ndarray:
        if name not in self._names:
            raise KeyError(name)
        layout = self._config.layout
        stored = layout.embed if name == layout.head and self._config.tie_word_embeddings else name
        array = self._checkpoint.read(stored)
        return jnp.asarray(array if self._target is None else np.asarray(array, self._target))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    __eq__ = object.__eq__
    __hash__ = object.__hash__


def with_linears(lm: DreamLM, linears: Mapping[str, jnp.ndarray]) -> DreamLM:
    """``lm`` (loaded with ``linear=False``) completed with the linear layers' tensors, checked
    as :meth:`DreamLM.create` checks a whole model; its other tensors are shared, not copied."""
    wanted = linear_tensor_names(lm.config)
    return DreamLM.create(
        lm.config, {**lm.params, **{name: linears[name] for name in wanted}}, dtype=None
    )
