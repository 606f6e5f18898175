"""Opening a user's Hugging Face checkpoint folder, checking it whole, reading it one tensor at a time.

:func:`open_checkpoint` validates a folder (``config.json`` plus ``model.safetensors`` or
``model.safetensors.index.json`` and its shards) without reading any weight: every safetensors
header is parsed here, byte by byte, so that a bad file ends in one line naming the file and the
tensor (:class:`CheckpointError`) instead of a library's traceback, and the tensors are compared
with the shapes ``config.json`` implies (:func:`~thermojax.models.hf.layouts.expected_shapes`).
A 15 GB checkpoint opens in milliseconds.

Reading is streamed: :meth:`SafetensorsFolder.iter_tensors` reads each tensor straight from the
file into one freshly allocated array (``readinto``, no memory map, no intermediate copy), so the
process holds about one tensor at a time, never the model, and its resident size says so. (The
``safetensors`` library's own lazy reader memory-maps each shard; the pages it touches count
towards the process's resident size until the shard is closed, which for a 5 GB shard read
whole is the whole shard. The bytes read are the same: the tests compare the two.)

Example:
    >>> import tempfile, pathlib
    >>> from thermojax.models.hf.synthetic import write_dream_like
    >>> folder = write_dream_like(pathlib.Path(tempfile.mkdtemp()) / "tiny", scale=112, layers=1)
    >>> checkpoint = open_checkpoint(folder)
    >>> checkpoint.architecture, len(checkpoint.tensors), checkpoint.shards
    ('Dream', 15, ('model.safetensors',))
    >>> info, weight = next(checkpoint.iter_tensors())
    >>> info.name, weight.dtype, weight.shape == info.shape
    ('model.embed_tokens.weight', dtype(bfloat16), True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from thermojax.errors import UserInputError
from thermojax.models.hf.layouts import (
    CONFIG_FILE,
    DTYPES,
    FLOAT_DTYPES,
    INDEX_FILE,
    SINGLE_FILE,
    expected_shapes,
)

__all__ = ["CheckpointError", "SafetensorsFolder", "TensorInfo", "open_checkpoint"]

_MAX_HEADER_BYTES = 100_000_000
"""The largest header ``safetensors`` itself accepts."""
_FINITE_CHUNK = 1 << 20
"""Elements per pass of the NaN/Inf count: its temporaries stay a few MB for any tensor."""
# (unsigned view, exponent mask, mantissa mask): all exponent bits set = Inf (mantissa 0) or NaN.
_FLOAT_BITS = {
    "F32": (np.uint32, 0x7F80_0000, 0x007F_FFFF),
    "F16": (np.uint16, 0x7C00, 0x03FF),
    "BF16": (np.uint16, 0x7F80, 0x007F),
}


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
class _Shard:
    """What :func:`open_checkpoint` saw of a shard; reading checks the file still matches."""

    size: int
    header: bytes  # the 8-byte length and the JSON header, as on disk
    tensors: dict[str, tuple[TensorInfo, int]]  # name -> (info, absolute data offset)


def _architecture(config: dict) -> str | None:
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type:
        return model_type
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    return None


def _nonfinite_counts(array: np.ndarray, dtype: str) -> tuple[int, int]:
    """``(NaN count, Inf count)`` of ``array``, from its bits, a chunk at a time."""
    unsigned, exponent, mantissa = _FLOAT_BITS[dtype]
    bits = array.reshape(-1).view(unsigned)
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


class SafetensorsFolder:
    """A validated Hugging Face checkpoint folder; made by :func:`open_checkpoint`.

    Attributes:
        path: the folder.
        config: ``config.json``, parsed.
        config_text: ``config.json``'s exact text.
        tensors: every tensor's :class:`TensorInfo`, ordered by shard, then by offset in it.
        shards: the safetensors files, relative to ``path``, in order.
        total_bytes: the tensors' total size.

    Example:
        >>> import tempfile, pathlib
        >>> from thermojax.models.hf.synthetic import write_dream_like
        >>> folder = write_dream_like(pathlib.Path(tempfile.mkdtemp()) / "m", scale=112, layers=1)
        >>> checkpoint = open_checkpoint(folder)
        >>> checkpoint.read("model.norm.weight").shape
        (28,)
    """

    def __init__(
        self, path: Path, config: dict, config_bytes: bytes, shards: dict[str, _Shard]
    ) -> None:
        self.path = path
        self.config = config
        self.config_text = config_bytes.decode("utf-8")
        self._config_bytes = config_bytes
        self._shards = shards
        self._offsets = {
            name: offset for shard in shards.values() for name, (_, offset) in shard.tensors.items()
        }
        self.tensors: dict[str, TensorInfo] = {
            name: info for shard in shards.values() for name, (info, _) in shard.tensors.items()
        }
        self.shards: tuple[str, ...] = tuple(shards)
        self.total_bytes: int = sum(info.nbytes for info in self.tensors.values())
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return (
            f"SafetensorsFolder({str(self.path)!r}: {self.architecture}, {len(self.tensors)} "
            f"tensors in {len(self.shards)} file(s), {self.total_bytes / 1e6:,.1f} MB)"
        )

    @property
    def architecture(self) -> str | None:
        """``config.json``'s ``model_type``, else the first of its ``architectures``, else None."""
        return _architecture(self.config)

    def fingerprint(self) -> str:
        """A sha256 hex digest of the checkpoint as opened, cheap to compute for any size.

        It covers ``config.json``'s bytes and, per shard, its name, its size and its raw
        header (names, dtypes, shapes, offsets, metadata); not the weights' bytes. Two
        checkpoints with the same fingerprint have the same config and the same tensor layout
        in files of the same sizes; an edit of the weights in place is not seen.

        Example:
            >>> import tempfile, pathlib
            >>> from thermojax.models.hf.synthetic import write_dream_like
            >>> f = write_dream_like(pathlib.Path(tempfile.mkdtemp()) / "m", scale=112, layers=1)
            >>> open_checkpoint(f).fingerprint() == open_checkpoint(f).fingerprint()
            True
        """
        if self._fingerprint is None:
            digest = hashlib.sha256(b"thermojax.models.hf fingerprint v1\0")

            def field(data: bytes) -> None:
                digest.update(len(data).to_bytes(8, "little"))
                digest.update(data)

            field(CONFIG_FILE.encode())
            field(self._config_bytes)
            for file, shard in self._shards.items():
                field(file.encode())
                field(str(shard.size).encode())
                field(shard.header)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def read(self, name: str, *, check_finite: bool = True) -> np.ndarray:
        """One tensor, as stored: dtype float32, float16 or ``ml_dtypes.bfloat16``, its shape.

        Args:
            name: the tensor's name (a key of :attr:`tensors`).
            check_finite: count NaN and Inf values (a fast pass over the bits) and refuse them.

        Returns:
            A new, writable, C-contiguous array.

        Raises:
            KeyError: no tensor ``name`` in the checkpoint.
            CheckpointError: NaN or Inf values (with ``check_finite``, giving the counts), or a
                shard changed on disk since :func:`open_checkpoint`.

        Example:
            >>> import tempfile, pathlib
            >>> from thermojax.models.hf.synthetic import write_dream_like
            >>> f = write_dream_like(pathlib.Path(tempfile.mkdtemp()) / "m", scale=112, layers=1)
            >>> open_checkpoint(f).read("lm_head.weight").dtype
            dtype(bfloat16)
        """
        info = self._info(name)
        with self._open_shard(info.file) as handle:
            return self._read_from(handle, info, check_finite)

    def iter_tensors(
        self, names: Iterable[str] | None = None, *, check_finite: bool = True
    ) -> Iterator[tuple[TensorInfo, np.ndarray]]:
        """``(info, array)`` for each tensor (of ``names``, if given), in file order.

        Shard by shard, opening each once, reading one tensor at a time: the generator drops
        its array before reading the next, so memory holds the tensor the caller is using plus
        the one being read (a ``for`` loop keeps its variable until the next assignment).

        Args:
            names: the tensors wanted, in any order (each is yielded once, in file order);
                ``None`` for all.
            check_finite: as in :meth:`read`.

        Raises:
            KeyError: a name not in the checkpoint (before anything is read).
            CheckpointError: as in :meth:`read`, when the tensor at fault is reached.

        Example:
            >>> import tempfile, pathlib
            >>> from thermojax.models.hf.synthetic import write_dream_like
            >>> f = write_dream_like(pathlib.Path(tempfile.mkdtemp()) / "m", scale=112, layers=1)
            >>> checkpoint = open_checkpoint(f)
            >>> [info.name for info, _ in checkpoint.iter_tensors(
            ...     ["lm_head.weight", "model.norm.weight"])]
            ['model.norm.weight', 'lm_head.weight']
        """
        if names is None:
            wanted = list(self.tensors.values())
        else:
            chosen = {self._info(name).name for name in names}
            wanted = [info for name, info in self.tensors.items() if name in chosen]
        return self._stream(wanted, check_finite)

    # ------------------------------------------------------------------------- reading

    def _stream(
        self, wanted: list[TensorInfo], check_finite: bool
    ) -> Iterator[tuple[TensorInfo, np.ndarray]]:
        for file, infos in itertools.groupby(wanted, key=lambda info: info.file):
            with self._open_shard(file) as handle:
                for info in infos:
                    array = self._read_from(handle, info, check_finite)
                    yield info, array
                    del array

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor {name!r} in the checkpoint") from None

    def _open_shard(self, file: str) -> BinaryIO:
        """The shard, opened unbuffered, after checking it is still the file that was opened."""
        shard = self._shards[file]
        changed = CheckpointError(
            file, "changed on disk since the checkpoint was opened (open it again)"
        )
        try:
            handle = open(self.path / file, "rb", buffering=0)  # noqa: SIM115 (returned open)
        except OSError as err:
            raise CheckpointError(file, f"cannot be read ({err.strerror})") from err
        try:
            if os.fstat(handle.fileno()).st_size != shard.size or (
                handle.read(len(shard.header)) != shard.header
            ):
                raise changed
        except BaseException:
            handle.close()
            raise
        return handle

    def _read_from(self, handle: BinaryIO, info: TensorInfo, check_finite: bool) -> np.ndarray:
        array = np.empty(info.shape, DTYPES[info.dtype])
        target = memoryview(array.reshape(-1).view(np.uint8))
        handle.seek(self._offsets[info.name])
        done = 0
        while done < info.nbytes:
            count = handle.readinto(target[done:])
            if not count:
                raise CheckpointError(
                    info.file, "changed on disk since the checkpoint was opened", info.name
                )
            done += count
        if check_finite:
            nan, inf = _nonfinite_counts(array, info.dtype)
            if nan or inf:
                counts = [f"{nan} NaN"] * bool(nan) + [f"{inf} Inf"] * bool(inf)
                noun = "value" if nan + inf == 1 else "values"
                raise CheckpointError(info.file, f"{' and '.join(counts)} {noun}", info.name)
        return array


# ----------------------------------------------------------------------------- opening


def _load_json(folder: Path, file: str) -> tuple[object, bytes]:
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


def _read_shard(folder: Path, file: str) -> _Shard:
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
    return _Shard(
        size=size,
        header=prefix + text,
        tensors={name: (info, data_start + begin) for begin, _, name, info in entries},
    )


def _weight_map(folder: Path) -> dict[str, str]:
    """``model.safetensors.index.json``'s ``weight_map``, checked to name plain files."""
    index, _ = _load_json(folder, INDEX_FILE)
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


def _check_layout(config: dict, tensors: dict[str, TensorInfo], listing: str) -> None:
    try:
        expected = expected_shapes(config)
    except ValueError as err:
        raise CheckpointError(CONFIG_FILE, str(err)) from err
    if expected is None:
        return
    kind = _architecture(config)
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


def open_checkpoint(path: str | os.PathLike[str]) -> SafetensorsFolder:
    """Open and validate a Hugging Face checkpoint folder, reading no weights.

    The folder holds ``config.json`` and either ``model.safetensors`` or
    ``model.safetensors.index.json`` with the shards it names (``model.safetensors`` wins
    when both are present, as in ``transformers``). Checked: ``config.json`` is a JSON object;
    the index has a ``weight_map`` of plain file names that all exist; each shard's header
    (8-byte length within the file, UTF-8 JSON, no duplicate names, dtype F32/F16/BF16, byte
    size = ``prod(shape) * itemsize``, tensors back to back from offset 0 to the end of the
    file: no gap, no overlap, no truncation, nothing after); the index and the shards list
    the same tensors in the same places; for a known architecture (Qwen2, Dream) the tensors
    are exactly those ``config.json`` implies, with its shapes.

    Args:
        path: the checkpoint folder.

    Returns:
        The validated :class:`SafetensorsFolder`.

    Raises:
        CheckpointError: the first problem found, as ``"<file>: <tensor>: <problem>"``.

    Example:
        >>> import tempfile
        >>> open_checkpoint(tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        thermojax.models.hf.reader.CheckpointError: config.json: not found in ...
    """
    folder = Path(path)
    if not folder.exists():
        raise CheckpointError(str(folder), "no such checkpoint folder")
    if not folder.is_dir():
        raise CheckpointError(
            str(folder), "not a folder (a checkpoint is a folder with config.json)"
        )
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(CONFIG_FILE, f"not found in {folder}")
    config, config_bytes = _load_json(folder, CONFIG_FILE)
    if not isinstance(config, dict):
        raise CheckpointError(CONFIG_FILE, "not a JSON object")

    if (folder / SINGLE_FILE).is_file():
        listing, weight_map = SINGLE_FILE, None
        files = [SINGLE_FILE]
    elif (folder / INDEX_FILE).is_file():
        listing, weight_map = INDEX_FILE, _weight_map(folder)
        files = sorted(set(weight_map.values()))
        for file in files:
            if not (folder / file).is_file():
                first = next(name for name, value in weight_map.items() if value == file)
                count = sum(value == file for value in weight_map.values())
                raise CheckpointError(
                    file, f"not found ({INDEX_FILE} maps {count} tensor(s) to it)", first
                )
    else:
        raise CheckpointError(SINGLE_FILE, f"not found in {folder} (nor {INDEX_FILE})")

    shards = {file: _read_shard(folder, file) for file in files}
    if weight_map is not None:
        for name, file in weight_map.items():
            if name not in shards[file].tensors:
                raise CheckpointError(file, f"listed in {INDEX_FILE} but not in the shard", name)
        for file, shard in shards.items():
            for name in shard.tensors:
                if weight_map.get(name) != file:
                    elsewhere = f" (it maps it to {weight_map[name]})" if name in weight_map else ""
                    raise CheckpointError(
                        file, f"in the shard but not in {INDEX_FILE}{elsewhere}", name
                    )
    elif not shards[SINGLE_FILE].tensors:
        raise CheckpointError(SINGLE_FILE, "holds no tensors")

    tensors = {name: info for shard in shards.values() for name, (info, _) in shard.tensors.items()}
    _check_layout(config, tensors, listing)
    return SafetensorsFolder(folder, config, config_bytes, shards)
