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

import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from thermojax.models.hf.headers import (
    CheckpointError,
    Shard,
    TensorInfo,
    architecture,
    check_layout,
    index_weight_map,
    load_json,
    nonfinite_problem,
    read_shard,
)
from thermojax.models.hf.layouts import CONFIG_FILE, DTYPES, INDEX_FILE, SINGLE_FILE

__all__ = ["SafetensorsFolder", "open_checkpoint"]


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
        self, path: Path, config: dict, config_bytes: bytes, shards: dict[str, Shard]
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
        return architecture(self.config)

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
        if check_finite and (problem := nonfinite_problem(array)) is not None:
            raise CheckpointError(info.file, problem, info.name)
        return array


def open_checkpoint(path: str | os.PathLike[str]) -> SafetensorsFolder:
    """Open and validate a Hugging Face checkpoint folder, reading no weights.

    The folder holds ``config.json`` and either ``model.safetensors`` or
    ``model.safetensors.index.json`` with the shards it names (``model.safetensors`` wins
    when both are present, as in ``transformers``). Checked: ``config.json`` is a JSON object;
    the index has a ``weight_map`` of plain file names that all exist; each shard's header
    (8-byte length within the file, UTF-8 JSON, no duplicate names, dtype F32/F16/BF16, byte
    size = ``prod(shape) * itemsize``, tensors back to back from offset 0 to the end of the
    file: no gap, no overlap, no truncation, nothing after); the index and the shards list
    the same tensors in the same places; for a known architecture (Qwen2, Dream, LLaDA) the
    tensors are exactly those ``config.json`` implies, with its shapes (a config of more than
    :data:`~thermojax.models.hf.layouts.MAX_LAYERS` layers is refused before they are listed).

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
        thermojax.models.hf.headers.CheckpointError: config.json: not found in ...
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
    config, config_bytes = load_json(folder, CONFIG_FILE)
    if not isinstance(config, dict):
        raise CheckpointError(CONFIG_FILE, "not a JSON object")

    if (folder / SINGLE_FILE).is_file():
        listing, weight_map = SINGLE_FILE, None
        files = [SINGLE_FILE]
    elif (folder / INDEX_FILE).is_file():
        listing, weight_map = INDEX_FILE, index_weight_map(folder)
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

    shards = {file: read_shard(folder, file) for file in files}
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
    check_layout(config, tensors, listing)
    return SafetensorsFolder(folder, config, config_bytes, shards)
