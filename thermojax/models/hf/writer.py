"""Writing safetensors checkpoints one tensor at a time, Hugging Face style.

:func:`write_safetensors` computes the header from the tensors' names, dtypes and shapes, then
asks for each tensor's values in turn and streams its bytes to disk, so a checkpoint much larger
than memory (a 15 GB 7B model) is written holding one tensor. :func:`plan_shards` splits a
model into ~5 GB shards the way ``transformers`` does and :func:`write_index` writes the
``model.safetensors.index.json`` that maps every tensor to its shard. Every file is published
atomically (:func:`thermojax.files.atomic_file`): a reader never sees half a shard.

The file format: an 8-byte little-endian header length ``N``, ``N`` bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
padded with spaces to a multiple of 8 bytes), then the tensors' little-endian C-order bytes,
back to back, at the offsets the header gives (relative to the end of the header).

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> from safetensors import safe_open
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.safetensors"
    >>> tensors = {"w": np.eye(2, dtype=np.float32), "codes": np.arange(4, dtype=np.uint8)}
    >>> entries = [(name, {"float32": "F32", "uint8": "U8"}[str(a.dtype)], a.shape)
    ...            for name, a in tensors.items()]
    >>> _ = write_safetensors(path, entries, tensors.__getitem__, metadata={"format": "pt"})
    >>> with safe_open(path, framework="np") as f:
    ...     f.get_tensor("codes").tolist(), f.metadata()
    ([0, 1, 2, 3], {'format': 'pt'})
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from thermojax.files import atomic_file, atomic_write_text
from thermojax.models.hf.layouts import DTYPES, INDEX_FILE

__all__ = ["SizedTensor", "plan_shards", "write_index", "write_safetensors"]

_ALIGNMENT = 8
"""The header is padded so the tensor data starts 8-byte aligned, as ``safetensors`` does."""


class SizedTensor(Protocol):
    """Anything with a tensor ``name`` and its size in bytes, ``nbytes`` (a ``TensorInfo``)."""

    name: str
    nbytes: int


def _entry_nbytes(name: str, dtype: str, shape: tuple[int, ...]) -> int:
    if dtype not in DTYPES:
        raise ValueError(f"{name}: dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if any(isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 0 for d in shape):
        raise ValueError(f"{name}: shape must be non-negative integers, got {shape!r}")
    return math.prod(shape) * DTYPES[dtype].itemsize


def _header(
    entries: Sequence[tuple[str, str, tuple[int, ...]]], metadata: dict[str, str] | None
) -> bytes:
    """The padded header, its 8-byte length prefix included."""
    header: dict[str, object] = {}
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError(f"metadata must map str to str, got {metadata!r}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype, shape in entries:
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(
                f"tensor names must be non-empty strings (not __metadata__), got {name!r}"
            )
        if name in header:
            raise ValueError(f"{name}: listed twice")
        nbytes = _entry_nbytes(name, dtype, tuple(shape))
        header[name] = {
            "dtype": dtype,
            "shape": [int(d) for d in shape],
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % _ALIGNMENT)
    return struct.pack("<Q", len(text)) + text


def _as_bytes(name: str, dtype: str, shape: tuple[int, ...], array: object) -> np.ndarray:
    """``array``'s bytes as a flat uint8 view, little-endian and C-ordered (copying only if not)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name}: produce returned {type(array).__name__}, not a numpy array")
    expected = DTYPES[dtype]
    if array.dtype.newbyteorder("=") != expected.newbyteorder("="):
        raise ValueError(f"{name}: declared {dtype} ({expected}), produced {array.dtype}")
    if array.shape != tuple(shape):
        raise ValueError(f"{name}: declared shape {list(shape)}, produced {list(array.shape)}")
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    array = np.ascontiguousarray(array)
    return array.reshape(-1).view(np.uint8)


def write_safetensors(
    path: str | os.PathLike[str],
    entries: Sequence[tuple[str, str, tuple[int, ...]]],
    produce: Callable[[str], np.ndarray],
    *,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Stream a safetensors file: header first, then each tensor as ``produce(name)`` returns it.

    ``produce`` is called once per entry, in ``entries`` order, and its array is written and
    dropped before the next call, so memory holds one tensor at a time. The file is published
    atomically: a failure (a ``produce`` error, a mismatching array) leaves ``path`` as it was.

    Args:
        path: the file to write.
        entries: ``(name, dtype, shape)`` per tensor, in file order; dtype one of ``F64``,
            ``F32``, ``F16``, ``BF16``, ``I64``, ``I32``, ``I16``, ``I8``, ``U32``, ``U16``,
            ``U8`` (:data:`~thermojax.models.hf.layouts.DTYPES`).
        produce: ``name -> array`` with exactly the declared dtype (``ml_dtypes.bfloat16`` for
            ``BF16``; either byte order) and shape; a non-contiguous or big-endian array is
            copied to little-endian C order for writing.
        metadata: the header's ``__metadata__`` (``str -> str``; Hugging Face writes
            ``{"format": "pt"}``).

    Returns:
        ``path``.

    Raises:
        ValueError: a bad entry (unknown dtype, negative dimension, duplicate name) before
            anything is written, or an array that does not match its entry (naming it).
        TypeError: ``produce`` returned something other than a numpy array.

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "x.safetensors"
        >>> write_safetensors(path, [("x", "I32", (3,))],
        ...                   lambda name: np.arange(3, dtype=np.int32)).stat().st_size
        76
    """
    path = Path(path)
    entries = [(name, dtype, tuple(shape)) for name, dtype, shape in entries]
    header = _header(entries, metadata)
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        handle.write(header)
        for name, dtype, shape in entries:
            data = _as_bytes(name, dtype, shape, produce(name))
            handle.write(data)
            del data  # before the next produce(): one tensor in memory at a time
    return path


def write_index(
    folder: str | os.PathLike[str], weight_map: dict[str, str], total_size: int
) -> Path:
    """Write ``model.safetensors.index.json`` (atomically) into ``folder``.

    The format ``transformers`` writes: ``{"metadata": {"total_size": total_size},
    "weight_map": {tensor: shard file}}``, tensors sorted by name.

    Args:
        folder: the checkpoint folder.
        weight_map: every tensor's shard file name (relative to ``folder``).
        total_size: the tensors' total size in bytes.

    Returns:
        The index file's path.

    Example:
        >>> import tempfile, json
        >>> folder = tempfile.mkdtemp()
        >>> path = write_index(folder, {"b": "model-00002-of-00002.safetensors",
        ...                             "a": "model-00001-of-00002.safetensors"}, 96)
        >>> list(json.loads(path.read_text())["weight_map"])
        ['a', 'b']
    """
    if isinstance(total_size, bool) or not isinstance(total_size, int) or total_size < 0:
        raise ValueError(f"total_size must be a non-negative integer, got {total_size!r}")
    index = {
        "metadata": {"total_size": total_size},
        "weight_map": {name: weight_map[name] for name in sorted(weight_map)},
    }
    return atomic_write_text(Path(folder) / INDEX_FILE, json.dumps(index, indent=2) + "\n")


def plan_shards(infos: Sequence[SizedTensor], max_shard_bytes: int) -> list[list[str]]:
    """Split tensors, in order, into shards of at most ``max_shard_bytes`` each.

    Greedy, like ``transformers``' ``save_pretrained``: a tensor goes into the current shard
    unless that would pass the limit; a tensor larger than the limit gets a shard of its own.
    Shard ``k`` of ``n`` is named ``shard_file_name(k, n)``
    (``model-00001-of-00004.safetensors``; ``model.safetensors`` when ``n == 1``).

    Args:
        infos: objects with ``name`` and ``nbytes`` (``TensorInfo``), in file order.
        max_shard_bytes: the shard size limit (Hugging Face's default is 5 GB, ``5 * 10**9``).

    Returns:
        The tensor names of each shard, in order; ``[]`` for no tensors.

    Example:
        >>> from types import SimpleNamespace as T
        >>> plan_shards([T(name="a", nbytes=6), T(name="b", nbytes=3), T(name="c", nbytes=2)], 8)
        [['a'], ['b', 'c']]
    """
    if (
        isinstance(max_shard_bytes, bool)
        or not isinstance(max_shard_bytes, int)
        or (max_shard_bytes <= 0)
    ):
        raise ValueError(f"max_shard_bytes must be a positive integer, got {max_shard_bytes!r}")
    shards: list[list[str]] = []
    size = 0
    for info in infos:
        if not shards or (shards[-1] and size + info.nbytes > max_shard_bytes):
            shards.append([])
            size = 0
        shards[-1].append(info.name)
        size += info.nbytes
    return shards
