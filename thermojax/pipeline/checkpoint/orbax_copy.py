"""The optional Orbax copy of an export's quantized tensors (``orbax/``), saved in bounded parts
from the shards just written; reloading never needs it."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thermojax.core.quant import QTensor
from thermojax.models.hf.layouts import DTYPES
from thermojax.pipeline.checkpoint.layout import ORBAX_DIR, STORED_SUFFIXES

__all__ = ["ORBAX_PART_BYTES", "orbax_item", "write_orbax"]


def _memmap_file(path: Path) -> dict[str, np.ndarray]:
    """Read-only memory maps of a safetensors file's tensors (no copy into process memory)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return {
        name: np.memmap(
            path,
            DTYPES[entry["dtype"]],
            "r",
            offset=8 + length + entry["data_offsets"][0],
            shape=tuple(entry["shape"]),
        )
        for name, entry in header.items()
        if math.prod(entry["shape"])  # numpy cannot map zero bytes
    }


ORBAX_PART_BYTES = 256 * 2**20
"""The most stored bytes one Orbax checkpoint of an export holds (a larger tensor goes alone)."""


def orbax_item(file: str, part: int = 0) -> str:
    """One Orbax checkpoint of an export: part ``part`` of shard ``file``'s quantized tensors,
    ``orbax/<shard name stem>/part-<part>``."""
    return f"{ORBAX_DIR}/{Path(file).stem}/part-{part:03d}"


def _stored_bytes(entry: Mapping[str, Any]) -> int:
    return sum(
        math.prod(stored["shape"]) * DTYPES[stored["dtype"]].itemsize
        for stored in entry["stored"].values()
    )


def _plan_orbax(tensors: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Assign each quantized tensor to an Orbax checkpoint (its entry's ``"orbax"``): in
    order, shard by shard, at most :data:`ORBAX_PART_BYTES` per checkpoint. Returns item ->
    tensor names."""
    parts: dict[str, list[str]] = {}
    current: dict[str, tuple[int, int]] = {}  # shard -> (part, bytes in it)
    for name, entry in tensors.items():
        if entry["bits"] is None:
            continue
        size = _stored_bytes(entry)
        part, used = current.get(entry["file"], (0, 0))
        if used and used + size > ORBAX_PART_BYTES:
            part, used = part + 1, 0
        current[entry["file"]] = (part, used + size)
        entry["orbax"] = orbax_item(entry["file"], part)
        parts.setdefault(entry["orbax"], []).append(name)
    return parts


def write_orbax(folder: Path, tensors: dict[str, dict[str, Any]]) -> None:
    """Save ``{NAME: QTensor}`` with Orbax in parts of at most :data:`ORBAX_PART_BYTES`
    (:func:`_plan_orbax`, which records each tensor's part in its entry).

    Orbax saves a pytree at once and holds about two copies of it while it does (measured: a
    1 GiB tree of memory-mapped leaves peaked at 2 GiB over the process), so a single
    checkpoint of a 7B model would hold the quantized model twice in memory; parts bound that
    to ~0.5 GiB. The leaves are memory maps of the shard just written. Compression is off:
    packed codes hardly compress, and zstd halved the save speed. Each save writes into a
    temporary folder of Orbax's own and renames it when done.
    """
    import orbax.checkpoint as ocp  # only here: Orbax is heavy, and reloading never needs it

    parts = _plan_orbax(tensors)
    handler = ocp.PyTreeCheckpointHandler(save_concurrent_gb=1, use_compression=False)
    checkpointer = ocp.Checkpointer(handler)  # synchronous: the export waits for it anyway
    maps: dict[str, dict[str, np.ndarray]] = {}
    try:
        for item, names in parts.items():
            file = tensors[names[0]]["file"]
            if file not in maps:
                maps = {file: _memmap_file(folder / file)}  # the last shard's maps dropped
            tree = {}
            for name in names:
                entry = tensors[name]
                stored = {
                    role: maps[file][entry["stored"][role]["name"]] for role in STORED_SUFFIXES
                }
                tree[name] = QTensor(
                    **stored,
                    shape=tuple(entry["shape"]),
                    bits=entry["bits"],
                    group_size=entry["group_size"],
                    symmetric=entry["symmetric"],
                )
            checkpointer.save(folder / item, args=ocp.args.PyTreeSave(tree))
            del tree
    finally:
        checkpointer.close()
