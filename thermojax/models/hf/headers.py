"""What a Hugging Face checkpoint folder's files say, parsed and checked without reading a weight:
``config.json``, ``model.safetensors.index.json`` and each safetensors header, byte by byte.

A bad file ends in one line naming the file and the tensor (:class:`CheckpointError`) instead of
a library's traceback; :func:`check_layout` compares the tensors with the shapes ``config.json``
implies (:func:`~thermojax.models.hf.layouts.expected_shapes`).
:func:`~thermojax.models.hf.reader.open_checkpoint` puts these checks together.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from thermojax.errors import UserInputError
from thermojax.models.hf.layouts import (
    CONFIG_FILE,
    DTYPES,
    FLOAT_DTYPES,
    INDEX_FILE,
    expected_shapes,
)

__all__ = [
    "CheckpointError",
    "Shard",
    "TensorInfo",
    "architecture",
    "check_layout",
    "index_weight_map",
    "load_json",
    "nonfinite_counts",
    "nonfinite_problem",
    "read_shard",
]

_MAX_HEADER_BYTES = 100_000_000
"""The largest header ``safetensors`` itself accepts."""


class CheckpointError(UserInputError):
    """A checkpoint folder that cannot be used as it is, in one line naming the file and tensor.

    ``str(error)`` is ``"<file>: <tensor>: <problem>"`` (``"<file>: <problem>"`` when no one
    tensor is at fault), ``file`` relative to the checkpoint folder, e.g.
    ``"model-00002-of-00004.safetensors: model.layers.3.mlp.up_proj.weight: 12 NaN values"``.

    Attributes:
        file: the file at fault, relative to the checkpoint folder (the folder itself when it
            does not exist).
        problem: what is wrong.
        tensor: the tensor at fault, or ``None``.

    Example:
        >>> str(CheckpointError("model.safetensors", "3 Inf values", "lm_head.weight"))
        'model.safetensors: lm_head.weight: 3 Inf values'
    """

    def __init__(self, file: str, problem: str, tensor: str | None = None):
        self.file, self.problem, self.tensor = file, problem, tensor
        super().__init__(f"{file}: {tensor}: {problem}" if tensor else f"{file}: {problem}")

    def __reduce__(self):  # picklable across processes (Ray workers) despite the signature
        return type(self), (self.file, self.problem, self.tensor)


_FINITE_CHUNK = 1 << 20
"""Elements per pass of the NaN/Inf count: its temporaries stay a few MB for any tensor."""
# (unsigned view, exponent mask, mantissa mask): all exponent bits set = Inf (mantissa 0) or NaN.
_FLOAT_BITS = {
    np.dtype(np.float64): (np.uint64, 0x7FF0_0000_0000_0000, 0x000F_FFFF_FFFF_FFFF),
    np.dtype(np.float32): (np.uint32, 0x7F80_0000, 0x007F_FFFF),
    np.dtype(np.float16): (np.uint16, 0x7C00, 0x03FF),
    DTYPES["BF16"]: (np.uint16, 0x7F80, 0x007F),
}


def nonfinite_counts(array: np.ndarray) -> tuple[int, int]:
    """``(NaN count, Inf count)`` of a float64/32/16 or bfloat16 array (any other dtype has
    none), from its bits, a chunk at a time: no temporary the size of the array, so a mapped
    multi-GB tensor is checked in a few MB.

    Example:
        >>> nonfinite_counts(np.array([1.0, np.nan, -np.inf, np.inf], np.float32))
        (1, 2)
    """
    layout = _FLOAT_BITS.get(array.dtype)
    if layout is None:
        return 0, 0
    unsigned, exponent, mantissa = layout
    bits = np.ascontiguousarray(array).reshape(-1).view(unsigned)
    scratch = np.empty(min(bits.size, _FINITE_CHUNK), unsigned)
    nan = inf = 0
    for start in range(0, bits.size, _FINITE_CHUNK):
        chunk = bits[start : start + _FINITE_CHUNK]
        exponents = np.bitwise_and(chunk, exponent, out=scratch[: chunk.size])
        if exponents.max() == exponent:  # a fast reduction; count only the rare bad chunk
            special = exponents == exponent
            chunk_nan = int(np.count_nonzero(special & ((chunk & mantissa) != 0)))
            nan += chunk_nan
            inf += int(np.count_nonzero(special)) - chunk_nan
    return nan, inf


def nonfinite_problem(array: np.ndarray) -> str | None:
    """``"2 NaN and 1 Inf values"``, or ``None`` when every value is finite.

    Example:
        >>> nonfinite_problem(np.array([np.nan, 1.0], np.float32))
        '1 NaN value'
    """
    nan, inf = nonfinite_counts(array)
    if not nan and not inf:
        return None
    counts = [f"{nan} NaN"] * bool(nan) + [f"{inf} Inf"] * bool(inf)
    return f"{' and '.join(counts)} {'value' if nan + inf == 1 else 'values'}"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives and what it is, from its shard's header.

    Attributes:
        name: the Hugging Face name, e.g. ``"model.layers.0.mlp.up_proj.weight"``.
        file: its shard, relative to the checkpoint folder, e.g. ``"model.safetensors"``.
        dtype: the safetensors dtype code: ``"F32"``, ``"F16"`` or ``"BF16"``.
        shape: as stored (``[out_features, in_features]`` for a linear layer's weight).
        nbytes: its size in the file.

    Example:
        >>> TensorInfo("w", "model.safetensors", "BF16", (4, 8), 64).numel
        32
    """

    name: str
    file: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def numel(self) -> int:
        """The number of elements, ``prod(shape)``."""
        return math.prod(self.shape)


@dataclasses.dataclass(frozen=True)
class Shard:
    """What :func:`open_checkpoint` saw of a shard; reading checks the file still matches."""

    size: int
    header: bytes  # the 8-byte length and the JSON header, as on disk
    tensors: dict[str, tuple[TensorInfo, int]]  # name -> (info, absolute data offset)


def architecture(config: dict) -> str | None:
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type:
        return model_type
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    return None


def load_json(folder: Path, file: str) -> tuple[object, bytes]:
    try:
        raw = (folder / file).read_bytes()
    except OSError as err:
        raise CheckpointError(file, f"cannot be read ({err.strerror})") from err
    try:
        return json.loads(raw.decode("utf-8")), raw
    except UnicodeDecodeError as err:
        raise CheckpointError(file, f"not UTF-8 text (byte {err.start})") from err
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise CheckpointError(file, f"not valid JSON ({err.msg} at {where})") from err


class _DuplicateKey(Exception):
    pass


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _natural_list(value: object, length: int | None = None) -> bool:
    return (
        isinstance(value, list)
        and (length is None or len(value) == length)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    )


def read_shard(folder: Path, file: str) -> Shard:
    """Parse and check one safetensors file's header against the file's size."""
    try:
        with open(folder / file, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CheckpointError(
                    file, f"only {size} bytes: too short for a safetensors header length"
                )
            (length,) = struct.unpack("<Q", prefix)
            if length > size - 8:
                raise CheckpointError(
                    file, f"header length {length} goes beyond the end of the file ({size} bytes)"
                )
            if length > _MAX_HEADER_BYTES:
                raise CheckpointError(
                    file, f"header length {length} is over safetensors' {_MAX_HEADER_BYTES}"
                )
            text = handle.read(length)
    except OSError as err:
        raise CheckpointError(file, f"cannot be read ({err.strerror})") from err

    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except _DuplicateKey as err:
        raise CheckpointError(file, "listed twice in the header", str(err)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(file, f"corrupt header ({err})") from err
    if not isinstance(header, dict):
        raise CheckpointError(file, "corrupt header (not a JSON object)")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(file, "corrupt header (__metadata__ is not a str -> str map)")

    data_start, data_size = 8 + length, size - 8 - length
    entries: list[tuple[int, int, str, TensorInfo]] = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise CheckpointError(
                file, "corrupt header entry (needs dtype, shape, data_offsets)", name
            )
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                file, f"dtype {dtype} is not supported (only {', '.join(FLOAT_DTYPES)})", name
            )
        if not _natural_list(shape):
            raise CheckpointError(file, f"corrupt header entry (shape {shape!r})", name)
        if not _natural_list(offsets, 2) or offsets[0] > offsets[1]:
            raise CheckpointError(file, f"corrupt header entry (data_offsets {offsets!r})", name)
        begin, end = offsets
        info = TensorInfo(name, file, dtype, tuple(shape), end - begin)
        if info.nbytes != info.numel * DTYPES[dtype].itemsize:
            raise CheckpointError(
                file,
                f"data_offsets {offsets} hold {info.nbytes} bytes but {dtype} {shape} needs "
                f"{info.numel * DTYPES[dtype].itemsize}",
                name,
            )
        entries.append((begin, end, name, info))
    entries.sort(key=lambda entry: entry[:2])

    for begin, end, name, _ in entries:
        if end > data_size:
            raise CheckpointError(
                file,
                f"truncated: the tensor ends at byte {data_start + end} but the file has "
                f"{size} bytes",
                name,
            )
    position, previous = 0, None
    for begin, end, name, _ in entries:
        if begin < position:
            raise CheckpointError(
                file, f"data_offsets [{begin}, {end}] overlap those of {previous}", name
            )
        if begin > position:
            raise CheckpointError(
                file,
                f"{begin - position} unused bytes before the tensor (data_offsets "
                f"[{begin}, {end}])",
                name,
            )
        position, previous = end, name
    if position != data_size:
        raise CheckpointError(
            file, f"{data_size - position} bytes after the last tensor's data", previous
        )
    return Shard(
        size=size,
        header=prefix + text,
        tensors={name: (info, data_start + begin) for begin, _, name, info in entries},
    )


def index_weight_map(folder: Path) -> dict[str, str]:
    """``model.safetensors.index.json``'s ``weight_map``, checked to name plain files."""
    index, _ = load_json(folder, INDEX_FILE)
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise CheckpointError(INDEX_FILE, "has no weight_map object")
    weight_map = index["weight_map"]
    if not weight_map:
        raise CheckpointError(INDEX_FILE, "weight_map is empty")
    for name, file in weight_map.items():
        if not isinstance(file, str) or Path(file).name != file or file in ("", ".", ".."):
            raise CheckpointError(
                INDEX_FILE, f"maps the tensor to {file!r}, not a file name in the folder", name
            )
    return weight_map


def check_layout(config: dict, tensors: dict[str, TensorInfo], listing: str) -> None:
    try:
        expected = expected_shapes(config)
    except ValueError as err:
        raise CheckpointError(CONFIG_FILE, str(err)) from err
    if expected is None:
        return
    kind = architecture(config)
    for name, info in tensors.items():
        if name not in expected:
            raise CheckpointError(
                info.file,
                f"shape {list(info.shape)} found, but config.json ({kind}) implies no such tensor",
                name,
            )
        if info.shape != expected[name]:
            raise CheckpointError(
                info.file,
                f"shape {list(info.shape)} but config.json implies {list(expected[name])}",
                name,
            )
    for name, shape in expected.items():
        if name not in tensors:
            raise CheckpointError(
                listing, f"missing; config.json implies shape {list(shape)}", name
            )
