"""Reloading a quantized checkpoint that thermojax exported (:mod:`thermojax.pipeline.checkpoint.layout`
describes the folder), bit for bit and without re-quantizing, one shard at a time.

Example:
    >>> loaded = load_quantized("outputs/dream-int4")  # doctest: +SKIP
    >>> sorted(loaded.qtensors)[:1], loaded.activations is not None  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from mmap import ACCESS_READ
from mmap import mmap as memory_map
from pathlib import Path
from typing import Any

import jax
import numpy as np

from thermojax.core.quant import WEIGHT_BITS, QTensor
from thermojax.files import UnreadableJSON, read_json_file
from thermojax.models.hf import CheckpointError
from thermojax.models.hf.layouts import DTYPES
from thermojax.pipeline.checkpoint.compressed_tensors import (
    COMPRESSED_TENSORS,
    SIDECAR_DIR,
    ct_stored_entries,
    from_compressed_tensors,
)
from thermojax.pipeline.checkpoint.layout import (
    FORMAT,
    FORMAT_VERSION,
    ORBAX_DIR,
    QUANTIZATION_FILE,
    stored_entries,
)
from thermojax.pipeline.checkpoint.validate import (
    check_activation_entry,
    check_activations,
    check_figures,
    check_groups,
    check_kept,
)
from thermojax.pipeline.measure.sampling import ActParams

__all__ = ["QuantizedCheckpoint", "load_quantized", "restore_orbax_copy"]


@dataclasses.dataclass(frozen=True)
class QuantizedCheckpoint:
    """A reloaded quantized checkpoint.

    Attributes:
        path: its folder.
        config: the model's configuration (``config.json``, or the digits ``model.json``).
        qtensors: every quantized tensor (digits: every layer) as a :class:`QTensor` with
            numpy leaves, exactly as exported: read-only views of the memory-mapped shards
            (``load_quantized(mmap=True)``, the default) or arrays of their own.
        tensors: every kept tensor (biases, norms, embeddings ...) at its stored dtype, mapped
            or read like ``qtensors``.
        quantization: ``quantization.json``, parsed.
        activations: the activation parameters, or ``None``.
    """

    path: Path
    config: dict[str, Any]
    qtensors: dict[str, QTensor]
    tensors: dict[str, np.ndarray]
    quantization: dict[str, Any]
    activations: ActParams | None


# ----------------------------------------------------------------------------- reading


def _plain_file(name: object, what: str, tensor: str | None = None) -> str:
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise CheckpointError(QUANTIZATION_FILE, f"{what} {name!r} is not a file name", tensor)
    return name


def _read_json(folder: Path, file: str, *, strict: bool = False) -> Any:
    """``file`` parsed (:func:`thermojax.files.read_json_file`: a regular file, of a sane size
    and nesting); ``strict``: no NaN or Infinity (what thermojax writes: the map)."""
    try:
        return read_json_file(folder / file, strict=strict)
    except FileNotFoundError:
        raise CheckpointError(file, f"not found in {folder}") from None
    except OSError as err:
        raise CheckpointError(file, f"cannot be read ({err.strerror})") from err
    except UnreadableJSON as err:
        raise CheckpointError(file, err.problem) from None


def _shape(value: object, what: str, tensor: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise CheckpointError(QUANTIZATION_FILE, f"{what} {value!r} is not a shape", tensor)
    return tuple(value)


def _expected_stored(
    name: str, entry: Any, export_format: str | None = None
) -> tuple[dict[str, tuple], dict[str, Any] | None]:
    """The stored tensors ``entry`` must list in the layout ``export_format`` (``None``:
    thermojax's own), and the QTensor metadata (``None``: kept)."""
    if not isinstance(entry, dict):
        raise CheckpointError(QUANTIZATION_FILE, "tensor entry is not an object", name)
    missing = {"file", "shape", "dtype", "bits", "stored"} - set(entry)
    if missing:
        raise CheckpointError(QUANTIZATION_FILE, f"tensor entry lacks {sorted(missing)}", name)
    shape = _shape(entry["shape"], "shape", name)
    bits = entry["bits"]
    if bits is None:
        if entry["dtype"] not in DTYPES:
            raise CheckpointError(QUANTIZATION_FILE, f"unknown dtype {entry['dtype']!r}", name)
        return {"values": (name, entry["dtype"], shape)}, None
    group_size = entry.get("group_size")
    symmetric = entry.get("symmetric", False)
    if (
        isinstance(bits, bool)
        or bits not in WEIGHT_BITS
        or isinstance(group_size, bool)
        or not isinstance(group_size, int)
        or group_size < 1
        or not shape
        or shape[-1] % group_size
        or group_size % (8 // bits)
        or not isinstance(symmetric, bool)
    ):
        raise CheckpointError(
            QUANTIZATION_FILE,
            f"bits {bits!r}, group_size {group_size!r} cannot quantize shape {list(shape)}",
            name,
        )
    meta = {"shape": shape, "bits": bits, "group_size": group_size, "symmetric": symmetric}
    if export_format == COMPRESSED_TENSORS:
        try:
            return ct_stored_entries(name, shape, bits, group_size), meta
        except ValueError as err:
            raise CheckpointError(QUANTIZATION_FILE, str(err), name) from None
    return stored_entries(name, shape, bits, group_size), meta


def _check_document(document: Any) -> None:
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise CheckpointError(QUANTIZATION_FILE, f"not a {FORMAT} map (format {found!r})")
    if document.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            QUANTIZATION_FILE,
            f"format_version {document.get('format_version')!r}; this thermojax reads "
            f"{FORMAT_VERSION}",
        )
    for key, kind in (("tensors", dict), ("shards", list), ("config_file", str)):
        if not isinstance(document.get(key), kind):
            raise CheckpointError(QUANTIZATION_FILE, f"{key!r} is missing or not a {kind.__name__}")
    if document.get("export_format", COMPRESSED_TENSORS) != COMPRESSED_TENSORS:
        raise CheckpointError(
            QUANTIZATION_FILE,
            f"export_format {document['export_format']!r}; this thermojax reads "
            f"{COMPRESSED_TENSORS!r} (or thermojax's own layout, without the field)",
        )


def _open_safetensors(folder: Path, file: str):
    from safetensors import safe_open

    if not (folder / file).is_file():
        raise CheckpointError(file, f"not found in {folder} ({QUANTIZATION_FILE} lists it)")
    try:
        return safe_open(str(folder / file), framework="np")
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(file, f"not a readable safetensors file ({err})") from err


def _mapped_tensors(folder: Path, file: str) -> dict[str, np.ndarray]:
    """Read-only views of every tensor of a safetensors file, over one memory map of the file.

    Nothing is read until a view is used; the map lives as long as any view does. The header
    has been validated by ``safetensors`` (:func:`_open_safetensors`) before this is called.
    """
    with open(folder / file, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        mapped = memory_map(handle.fileno(), 0, access=ACCESS_READ)
    header.pop("__metadata__", None)
    views = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = np.dtype(DTYPES[entry["dtype"]])
        views[name] = np.frombuffer(
            mapped, dtype, count=(end - begin) // dtype.itemsize, offset=8 + length + begin
        ).reshape(entry["shape"])
    return views


def _read_stored(
    handle: Any,
    file: str,
    expected: tuple[str, str, tuple[int, ...]],
    mapped: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """The stored tensor ``expected`` names, checked against its dtype and shape: its view in
    ``mapped`` when given, else read from ``handle`` into memory."""
    name, dtype, shape = expected
    stored = handle.get_slice(name)
    if stored.get_dtype() != dtype:
        raise CheckpointError(
            file, f"dtype {stored.get_dtype()}, but {QUANTIZATION_FILE} says {dtype}", name
        )
    if tuple(stored.get_shape()) != shape:
        raise CheckpointError(
            file,
            f"shape {list(stored.get_shape())}, but {QUANTIZATION_FILE} says {list(shape)}",
            name,
        )
    return handle.get_tensor(name) if mapped is None else mapped[name]


def _read_activations(folder: Path, entry: Any) -> ActParams:
    if not isinstance(entry, dict) or not {"file", "bits", "num_layers", "num_params"} <= set(
        entry
    ):
        raise CheckpointError(QUANTIZATION_FILE, "'activations' entry is malformed")
    file = entry["file"]  # beside the shards, or in a compressed-tensors export's sidecar folder
    if not (isinstance(file, str) and file.startswith(f"{SIDECAR_DIR}/")):
        file = _plain_file(file, "activations file")
    else:
        _plain_file(file.removeprefix(f"{SIDECAR_DIR}/"), "activations file")
    bits, num_layers, num_params = check_activation_entry(entry)
    expected = {
        "edges": ("edges", "I32", (num_params + 1,)),
        "scales": ("scales", "F32", (num_layers, num_params)),
        "zero_points": ("zero_points", "F32", (num_layers, num_params)),
    }
    with _open_safetensors(folder, file) as handle:
        keys = set(handle.keys())
        arrays = {}
        for role, stored in expected.items():
            if stored[0] not in keys:
                raise CheckpointError(file, "missing", stored[0])
            arrays[role] = _read_stored(handle, file, stored)
    check_activations(file, arrays, bits, entry.get("num_timesteps"))
    return ActParams(bits=bits, **arrays)


def load_quantized(path: str | os.PathLike[str], *, mmap: bool = True) -> QuantizedCheckpoint:
    """Reload an exported quantized checkpoint (either kind), bit for bit, without requantizing.

    Every tensor ``quantization.json`` lists is found in its shard and checked against the map:
    present, of the listed dtype and shape, the packed layout consistent with the tensor's
    shape, bits and group size, every scale positive and finite and every zero point in range,
    every kept tensor finite; the activation parameters' edges, scales and zero points, and
    the map's measured figures, are checked too
    (:mod:`~thermojax.pipeline.checkpoint.validate`). Orbax is not needed. A compressed-tensors
    export (``export_format``) gives the same QTensors, its codes and zero points re-laid from
    the int32 words into arrays of their own (the scales and kept tensors are mapped).

    By default the tensors are read-only views of the memory-mapped shards: reloading reads
    the headers, scales and zero points, and the codes are paged in from the page cache when
    they are used, with no copy in process memory (a 7B model's codes are gigabytes). With
    ``mmap=False`` every tensor is read into memory of its own, one shard open at a time.

    Args:
        path: the exported folder.
        mmap: map the shards (default) or read them.

    Returns:
        The :class:`QuantizedCheckpoint`.

    Raises:
        CheckpointError: (a UserInputError) a missing or unreadable file, a malformed
            ``quantization.json``, a tensor missing, unlisted, or of another dtype or shape
            than the map says, a value out of range (NaN, Inf, a scale <= 0, a zero point
            beyond the bits); one line naming the file and the tensor.
    """
    folder = Path(path)
    if not folder.is_dir():
        problem = "not a folder" if folder.exists() else "no such folder"
        raise CheckpointError(str(folder), f"{problem} (a quantized checkpoint is a folder)")
    document = _read_json(folder, QUANTIZATION_FILE, strict=True)
    _check_document(document)
    config = _read_json(folder, _plain_file(document["config_file"], "config_file"))
    if not isinstance(config, dict):
        raise CheckpointError(document["config_file"], "not a JSON object")

    export_format = document.get("export_format")
    by_file: dict[str, list[tuple[str, dict[str, tuple], dict[str, Any] | None]]] = {}
    for name, entry in document["tensors"].items():
        stored, meta = _expected_stored(name, entry, export_format)
        listed = entry["stored"]
        if (
            not isinstance(listed, dict)
            or {
                role: (e.get("name"), e.get("dtype"), tuple(e.get("shape") or ()))
                for role, e in listed.items()
                if isinstance(e, dict)
            }
            != stored
        ):
            raise CheckpointError(
                QUANTIZATION_FILE,
                f"stored tensors {listed!r} disagree with the tensor's shape, dtype, bits and "
                "group size",
                name,
            )
        file = _plain_file(entry["file"], "file", name)
        if file not in document["shards"]:
            raise CheckpointError(QUANTIZATION_FILE, f"file {file!r} is not among 'shards'", name)
        by_file.setdefault(file, []).append((name, stored, meta))
    check_figures(document)

    qtensors: dict[str, QTensor] = {}
    tensors: dict[str, np.ndarray] = {}
    for file in document["shards"]:
        members = by_file.get(_plain_file(file, "shard"), [])
        with _open_safetensors(folder, file) as handle:
            mapped = _mapped_tensors(folder, file) if mmap else None
            keys = set(handle.keys())
            wanted = {
                stored_name for _, stored, _ in members for stored_name, _, _ in stored.values()
            }
            unlisted = sorted(keys - wanted)
            if unlisted:
                raise CheckpointError(file, f"not listed in {QUANTIZATION_FILE}", unlisted[0])
            for name, stored, meta in members:
                for stored_name, _, _ in stored.values():
                    if stored_name not in keys:
                        raise CheckpointError(
                            file, f"missing ({QUANTIZATION_FILE} lists it for {name})", stored_name
                        )
                arrays = {
                    role: _read_stored(handle, file, entry, mapped)
                    for role, entry in stored.items()
                }
                if meta is None:
                    check_kept(file, name, arrays["values"])
                    tensors[name] = arrays["values"]
                    continue
                if export_format == COMPRESSED_TENSORS:
                    try:
                        qtensor = from_compressed_tensors(arrays, **meta)
                    except ValueError as err:
                        raise CheckpointError(file, str(err), stored["shape"][0]) from None
                else:
                    qtensor = QTensor(**arrays, **meta)
                check_groups(file, name, qtensor, zero_name=stored["zero_point"][0])
                qtensors[name] = qtensor
    activations = None
    if document.get("activations") is not None:
        activations = _read_activations(folder, document["activations"])
    return QuantizedCheckpoint(folder, config, qtensors, tensors, document, activations)


def restore_orbax_copy(path: str | os.PathLike[str]) -> dict[str, QTensor]:
    """The Orbax copy of an export's quantized tensors (``orbax/<shard>/part-NNN``), as
    ``{NAME: QTensor}``.

    The QTensors' static metadata comes from ``quantization.json``; the leaves are numpy.

    Raises:
        CheckpointError: no Orbax copy, or a malformed ``quantization.json``.
    """
    import orbax.checkpoint as ocp

    folder = Path(path)
    document = _read_json(folder, QUANTIZATION_FILE)
    _check_document(document)
    if document.get("orbax") is None or not (folder / ORBAX_DIR).is_dir():
        raise CheckpointError(ORBAX_DIR, f"not found in {folder} (exported without orbax)")
    targets: dict[str, dict[str, QTensor]] = {}
    for name, entry in document["tensors"].items():
        stored, meta = _expected_stored(name, entry, document.get("export_format"))
        if meta is None:
            continue
        leaves = {
            role: jax.ShapeDtypeStruct(shape, DTYPES[dtype])
            for role, (_, dtype, shape) in stored.items()
        }
        item = entry.get("orbax")
        if not isinstance(item, str) or not item.startswith(ORBAX_DIR + "/") or ".." in item:
            raise CheckpointError(QUANTIZATION_FILE, f"orbax item {item!r} is not in orbax/", name)
        targets.setdefault(item, {})[name] = QTensor(**leaves, **meta)
    restored: dict[str, QTensor] = {}
    checkpointer = ocp.StandardCheckpointer()
    try:
        for item, target in targets.items():  # parts of at most 256 MiB (orbax_copy._plan_orbax)
            part = checkpointer.restore(folder / item, target)
            restored.update(jax.tree.map(np.asarray, part))
    finally:
        checkpointer.close()
    return restored
