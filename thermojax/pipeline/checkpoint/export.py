"""The streamed export of a Hugging Face checkpoint: each tensor read, quantized, measured and
written before the next (:mod:`~thermojax.pipeline.checkpoint.layout` describes the folder).

Example:
    >>> import tempfile, pathlib
    >>> from thermojax.models.hf import open_checkpoint, write_dream_like
    >>> from thermojax.pipeline.weights.rules import QuantRule
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> source = open_checkpoint(write_dream_like(root / "m", scale=64, layers=1))
    >>> out, report = export_checkpoint(source, root / "q", [QuantRule()], bits=4,
    ...                                 group_size=8, orbax=False)
    >>> from thermojax.pipeline.checkpoint.reload import load_quantized
    >>> loaded = load_quantized(out)
    >>> loaded.qtensors["model.layers.0.mlp.up_proj.weight"].codes.shape
    (320, 28)
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thermojax.errors import UserInputError
from thermojax.files import atomic_write_bytes, atomic_write_text
from thermojax.models.hf import write_index, write_safetensors
from thermojax.models.hf.layouts import DTYPES, SINGLE_FILE
from thermojax.pipeline.checkpoint.activations import activation_arrays, write_activations
from thermojax.pipeline.checkpoint.compressed_tensors import (
    COMPRESSED_TENSORS,
    SIDECAR_DIR,
    ct_stored_entries,
    served_config,
    to_compressed_tensors,
    warn_unserved,
)
from thermojax.pipeline.checkpoint.document import quantization_json, rules_json, tensor_entry
from thermojax.pipeline.checkpoint.folder import check_target, companion_files, stage_and_publish
from thermojax.pipeline.checkpoint.layout import (
    FORMAT,
    HF_CONFIG,
    HF_FORMAT,
    QUANTIZATION_FILE,
    stored_entries,
)
from thermojax.pipeline.checkpoint.orbax_copy import write_orbax
from thermojax.pipeline.measure.sampling import ActParams
from thermojax.pipeline.weights.rules import QuantRule
from thermojax.pipeline.weights.section import TensorRow
from thermojax.pipeline.weights.stream import CheckpointQuantizer, QuantizedTensor, WeightOnlyReport

__all__ = ["export_checkpoint"]


def export_checkpoint(
    ckpt: Any,
    out_dir: str | os.PathLike[str],
    rules: Sequence[QuantRule],
    *,
    bits: int,
    group_size: int,
    activations: ActParams | None = None,
    layer_names: Sequence[str] | None = None,
    source: Mapping[str, Any] | None = None,
    orbax: bool = True,
    progress: Callable[[TensorRow], None] | None = None,
    export_format: str = "thermojax",
) -> tuple[Path, WeightOnlyReport]:
    """Quantize a Hugging Face checkpoint and write the quantized checkpoint (module doc).

    The source is streamed once: each tensor is read, quantized, measured and written before
    the next is read. Nothing named ``out_dir`` exists until the export is complete.

    Args:
        ckpt: the source (:func:`thermojax.models.hf.open_checkpoint`).
        out_dir: the folder to create; it must not exist or be empty.
        rules: the quantization rules, in order.
        bits: the run's bit width, for rules without one.
        group_size: the run's group size, for rules without one.
        activations: activation parameters to ship with the weights (an :class:`ActParams`,
            or anything with its ``scales``, ``zero_points``, ``edges``, ``bits``), or ``None``.
        layer_names: the names of the activation parameters' L layers, or ``None``.
        source: extra JSON-ready provenance recorded in ``quantization.json`` (the run's
            settings, say), beside the source's fingerprint and path.
        orbax: also save the quantized tensors as an Orbax checkpoint (``orbax/``; thermojax's
            layout only).
        progress: called with each tensor's :class:`TensorRow` once it is quantized, just
            before it is written (a command's progress line).
        export_format: ``thermojax`` (its own layout) or ``compressed-tensors``
            (:mod:`~thermojax.pipeline.checkpoint.compressed_tensors`: ``config.json`` gains its
            ``quantization_config``, each group of quantized layers targeted by name, the
            activation parameters go into ``thermojax/activations.safetensors``, no Orbax copy).

    Returns:
        ``(out_dir, WeightOnlyReport)``.

    Raises:
        UserInputError: ``out_dir`` is not empty; a bad rule, bit width or group size, bad
            activation parameters, or with ``compressed-tensors`` a quantized tensor that is not
            a linear layer's 2-D ``.weight`` (all before anything is read); a CheckpointError from the
            source (NaN/Inf values, a file changed while reading).
    """
    out_dir = Path(out_dir)
    check_target(out_dir)
    served = export_format == COMPRESSED_TENSORS
    quantizer = CheckpointQuantizer(ckpt, rules, bits=bits, group_size=group_size)
    act_arrays = act_entry = None
    if activations is not None:
        try:
            act_arrays, act_entry = activation_arrays(activations, layer_names, None)
        except ValueError as err:
            raise UserInputError(f"activations: {err}") from err
    provenance = {"fingerprint": ckpt.fingerprint(), "path": str(ckpt.path)}
    provenance |= dict(source or {})
    json.dumps(provenance)  # a TypeError now, not after the whole export

    companions = companion_files(Path(ckpt.path))
    # What each shard holds, in the source's order (the order the stream reads them in).
    layout: dict[str, list[tuple[str, str, dict[str, tuple]]]] = {file: [] for file in ckpt.shards}
    owner: dict[str, tuple[str, str]] = {}
    for info in ckpt.tensors.values():
        rule = quantizer.plan[info.name]
        if rule is None:
            stored = {"values": (info.name, info.dtype, tuple(info.shape))}
        elif served:
            try:
                stored = ct_stored_entries(info.name, tuple(info.shape), rule.bits, rule.group_size)
            except ValueError as err:
                raise UserInputError(
                    f"export.format={COMPRESSED_TENSORS}: {err} (a rule quantizes it; keep it "
                    "or export.format=thermojax)"
                ) from None
        else:
            stored = stored_entries(info.name, tuple(info.shape), rule.bits, rule.group_size)
        layout[info.file].append((info.name, info.file, stored))
        for role, (entry_name, _, _) in stored.items():
            if entry_name in owner:
                raise UserInputError(
                    f"{info.file}: {entry_name}: the quantized tensors of "
                    f"{owner[entry_name][0]} would overwrite this tensor; rename or keep it"
                )
            owner[entry_name] = (info.name, role)
    if served:
        layers = {
            name: (rule.bits, rule.group_size)
            for name, rule in quantizer.plan.items()
            if rule is not None
        }
        config_text = served_config(ckpt.config_text, layers, every_linear=False)
        warn_unserved(bits for bits, _ in layers.values())
        if act_entry is not None:
            act_entry = {**act_entry, "file": f"{SIDECAR_DIR}/{act_entry['file']}"}

    def write(folder: Path) -> WeightOnlyReport:
        if served:
            atomic_write_text(folder / HF_CONFIG, config_text)
        else:
            atomic_write_bytes(folder / HF_CONFIG, ckpt.config_text.encode("utf-8"))
        for file in companions:
            shutil.copyfile(Path(ckpt.path) / file, folder / file)
        stream = iter(quantizer)
        current: list[QuantizedTensor | None] = [None]
        converted: dict[str, dict[str, np.ndarray]] = {}  # the current tensor's, when served
        entries_json: dict[str, dict[str, Any]] = {}

        def produce(entry_name: str) -> np.ndarray:
            tensor, role = owner[entry_name]
            item = current[0]
            if item is None or item.info.name != tensor:
                current[0] = item = None  # drop the last tensor before reading the next
                item = next(stream)
                if item.info.name != tensor:  # the stream and the layout disagree: a bug
                    raise RuntimeError(f"expected {tensor}, the stream gave {item.info.name}")
                current[0] = item
                if progress is not None:
                    progress(item.report)
            if role == "values":
                return item.array
            if not served:
                return np.asarray(getattr(item.qtensor, role))
            if tensor not in converted:  # one tensor's arrays at a time
                converted.clear()
                converted[tensor] = to_compressed_tensors(item.qtensor)
            return converted[tensor][role]

        weight_map: dict[str, str] = {}
        for file, members in layout.items():
            entries = [entry for _, _, stored in members for entry in stored.values()]
            write_safetensors(folder / file, entries, produce, metadata={"format": FORMAT})
            for _, _, stored in members:
                weight_map |= {entry[0]: file for entry in stored.values()}
        current[0] = None
        converted.clear()
        if next(stream, None) is not None:  # finishes the pass (and its clock)
            raise RuntimeError("the stream has tensors the layout does not")
        report = quantizer.report()
        reports = {t.name: t for t in report.tensors}
        for members in layout.values():
            for name, file, stored in members:
                entries_json[name] = tensor_entry(reports[name], file, stored)
        if tuple(ckpt.shards) != (SINGLE_FILE,):
            stored_bytes = sum(
                math.prod(shape) * DTYPES[dtype].itemsize
                for members in layout.values()
                for _, _, stored in members
                for _, dtype, shape in stored.values()
            )
            write_index(folder, weight_map, stored_bytes)
        if act_arrays is not None:
            sidecar = folder / SIDECAR_DIR if served else folder
            sidecar.mkdir(exist_ok=True)
            write_activations(sidecar, act_arrays)
        # Orbax refuses an empty tree; a compressed-tensors folder holds its codes once.
        with_orbax = orbax and not served and report.model_cosine is not None
        if with_orbax:
            write_orbax(folder, entries_json)
        text = quantization_json(
            model_format=HF_FORMAT,
            config_file=HF_CONFIG,
            source=provenance,
            bits=bits,
            group_size=group_size,
            rules=rules_json(rules, quantizer),
            shards=list(ckpt.shards),
            copied=companions,
            tensors=entries_json,
            report=report,
            activations=act_entry,
            orbax=with_orbax,
            export_format=export_format if served else None,
        )
        atomic_write_text(folder / QUANTIZATION_FILE, text)
        return report

    return out_dir, stage_and_publish(out_dir, write)
