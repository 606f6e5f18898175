"""The export of a masked-diffusion LM's quantized weights (a Qwen2 / Dream or LLaDA folder
thermojax runs) as a quantized checkpoint in its source's Hugging Face layout
(:mod:`~thermojax.pipeline.checkpoint.layout`).

What is written is what the run sampled: its own codes for every linear layer (whichever
``quant.method`` and ``quant.keep_bits`` made them, ``lm_head`` included), not a re-quantization
by ``weights.rules``; every other tensor (embeddings, norms, biases) is copied from the source at
its stored dtype. The shards, their names and the tensors' order are the source's; a linear layer
that is not a tensor of its own there (``lm_head`` tied to the embedding) goes into the last
shard. ``quantization.json``'s ``source`` records the family (``masked-diffusion-lm``: a run of
the folder samples it), the source's path (and ``shipped`` name), its checkpoint fingerprint,
the network's :func:`~thermojax.pipeline.cache.stages.network_fingerprint`, and the settings
that made the codes.

``export_format="compressed-tensors"`` stores the same codes, scales and zero points in
compressed-tensors' ``pack-quantized`` layout
(:mod:`~thermojax.pipeline.checkpoint.compressed_tensors`) for serving stacks: ``config.json``
gains its ``quantization_config`` (and a head tied to the embedding in the source is untied,
since the folder holds the head's own codes), the activation parameters go into
``thermojax/activations.safetensors`` and no Orbax copy is written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from thermojax.core.quant import QTensor, storage_bytes
from thermojax.errors import UserInputError
from thermojax.files import atomic_write_bytes, atomic_write_text
from thermojax.models.hf import open_checkpoint, write_index, write_safetensors
from thermojax.models.hf.layouts import DTYPES, SINGLE_FILE
from thermojax.pipeline.checkpoint.activations import checked_codes, write_activations
from thermojax.pipeline.checkpoint.compressed_tensors import (
    COMPRESSED_TENSORS,
    SIDECAR_DIR,
    ct_stored_entries,
    served_config,
    to_compressed_tensors,
    warn_unserved,
)
from thermojax.pipeline.checkpoint.document import quantization_json, tensor_entry
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
from thermojax.pipeline.weights.section import TensorRow
from thermojax.pipeline.weights.stream import TensorSums, block_name, build_report, measure_qtensor

__all__ = ["export_masked_lm"]

_KEPT = TensorSums(0.0, 0.0, 0.0, 0, 0)
_TIE_KEYS = {"qwen2": "tie_word_embeddings", "llada": "weight_tying"}
"""The ``config.json`` key that ties the head to the embedding, by tensor layout name."""


def export_masked_lm(
    model: Any,
    out_dir: str | os.PathLike[str],
    qweights: Mapping[str, QTensor],
    *,
    source_path: str | os.PathLike[str],
    bits: int,
    group_size: int,
    activations: ActParams | None = None,
    source: Mapping[str, Any] | None = None,
    orbax: bool = True,
    export_format: str = "thermojax",
) -> Path:
    """Write a masked-diffusion LM's quantized weights as a quantized checkpoint (module doc).

    Args:
        model: the :class:`~thermojax.models.dream.diffusion.MaskedDiffusionLM` the run sampled.
        out_dir: the folder to create; it must not exist or be empty.
        qweights: layer name (the weight's Hugging Face name) -> QTensor of the weight
            ``[out, in]`` as stored, as the run quantized it.
        source_path: the Hugging Face folder ``model`` was loaded from.
        bits: the run's bit width (a layer may hold other bits: ``quant.keep_bits``).
        group_size: the run's group size.
        activations: the run's activation parameters (``[L, S]`` for the model's layers), or
            ``None``.
        source: extra JSON-ready provenance for ``source`` (the settings that made the codes).
        orbax: also save the QTensors as Orbax checkpoints (``orbax/``; thermojax's layout
            only).
        export_format: ``thermojax`` (its own layout) or ``compressed-tensors``.

    Returns:
        ``out_dir``.

    Raises:
        UserInputError: ``out_dir`` is not empty, bad activation parameters, or a quantized
            tensor's stored name that a source tensor already has.
        ValueError: ``qweights`` that do not match the model's layers (a bug of the caller).
    """
    from thermojax.pipeline.cache.stages import network_fingerprint

    out_dir = Path(out_dir)
    check_target(out_dir)
    served = export_format == COMPRESSED_TENSORS
    entries_of = ct_stored_entries if served else stored_entries
    checkpoint = open_checkpoint(source_path)
    names = tuple(model.layer_names)
    # [out, in] as stored, by layer name (read from the file one at a time, for a model whose
    # linear layers stay there: model.residency=apart).
    weights = model.linear_source or model.lm.quantizable_weights()
    act_arrays, act_entry = checked_codes(
        qweights,
        {name: tuple(np.shape(weights[name])) for name in names},
        group_size=group_size,
        what="the stored weight",
        activations=activations,
        num_timesteps=model.num_timesteps,
    )
    provenance = {
        "family": model.family,
        "model": model.name,
        "num_parameters": int(model.num_parameters()),
        "path": str(Path(source_path).expanduser().resolve()),
        "fingerprint": checkpoint.fingerprint(),
        "network_fingerprint": network_fingerprint(model.lm, linears=model.linear_source),
    } | dict(source or {})
    json.dumps(provenance)  # a TypeError now, not after the whole export

    # Each shard's tensors in the source's order; a linear layer without a tensor of its own
    # (lm_head tied to the embedding) after the last shard's.
    layout: dict[str, list[tuple[str, dict[str, tuple]]]] = {f: [] for f in checkpoint.shards}
    for info in checkpoint.tensors.values():
        if info.name in qweights:
            q = qweights[info.name]
            stored = entries_of(info.name, q.shape, q.bits, q.group_size)
        else:
            stored = {"values": (info.name, info.dtype, tuple(info.shape))}
        layout[info.file].append((info.name, stored))
    for name in names:
        if name not in checkpoint.tensors:
            q = qweights[name]
            layout[checkpoint.shards[-1]].append(
                (name, entries_of(name, q.shape, q.bits, q.group_size))
            )
    owner: dict[str, tuple[str, str]] = {}
    for members in layout.values():
        for name, stored in members:
            for role, (entry_name, _, _) in stored.items():
                if entry_name in owner:
                    raise UserInputError(
                        f"{entry_name}: the quantized tensors of {owner[entry_name][0]} would "
                        f"overwrite this tensor of {checkpoint.path}"
                    )
                owner[entry_name] = (name, role)

    rows: list[TensorRow] = []
    sums: list[TensorSums] = []
    tensors_json: dict[str, dict[str, Any]] = {}
    for file, members in layout.items():
        for name, stored in members:
            info = checkpoint.tensors.get(name)
            if name in qweights:
                q = jax.tree.map(np.asarray, qweights[name])
                tensor_sums = measure_qtensor(np.asarray(weights[name], np.float32), q)
                kept = "" if q.bits == bits else " (quant.keep_bits)"
                row = TensorRow(
                    name=name,
                    shape=q.shape,
                    dtype=info.dtype if info is not None else "F32",
                    rule=(
                        f"masked-diffusion LM: every linear layer's weight, {q.bits} bits{kept}, "
                        f"group {q.group_size}"
                    ),
                    bits=q.bits,
                    group_size=q.group_size,
                    cosine=tensor_sums.cosine,
                    sqnr_db=tensor_sums.sqnr_db,
                    outlier_share=tensor_sums.outlier_share,
                    source_bytes=info.nbytes if info is not None else 0,  # a tied weight's bytes
                    quantized_bytes=storage_bytes(q),  # are the embedding's
                    block=block_name(name),
                )
            else:
                tensor_sums = _KEPT
                row = TensorRow(
                    name, tuple(info.shape), info.dtype, None, None, None, None, None, None,
                    info.nbytes, info.nbytes, block_name(name),
                )  # fmt: skip
            rows.append(row)
            sums.append(tensor_sums)
            tensors_json[name] = tensor_entry(row, file, stored)
    report = build_report(rows, sums, 0.0)
    companions = companion_files(Path(checkpoint.path))
    with_orbax = orbax and not served
    if served:
        head_tied = names[-1] not in checkpoint.tensors
        config_text = served_config(
            checkpoint.config_text,
            {name: (qweights[name].bits, qweights[name].group_size) for name in names},
            tie_key=_TIE_KEYS[model.lm.config.layout.name] if head_tied else None,
        )
        if act_entry is not None:
            act_entry = {**act_entry, "file": f"{SIDECAR_DIR}/{act_entry['file']}"}
        warn_unserved(q.bits for q in qweights.values())
    converted: dict[str, dict[str, np.ndarray]] = {}

    def produce(entry_name: str) -> np.ndarray:
        tensor, role = owner[entry_name]
        if role == "values":
            return checkpoint.read(tensor, check_finite=False)  # checked when the model loaded
        if not served:
            return np.asarray(getattr(qweights[tensor], role))
        if tensor not in converted:  # one tensor's arrays at a time
            converted.clear()
            converted[tensor] = to_compressed_tensors(jax.tree.map(np.asarray, qweights[tensor]))
        return converted[tensor][role]

    def write(folder: Path) -> None:
        if served:
            atomic_write_text(folder / HF_CONFIG, config_text)
        else:
            atomic_write_bytes(folder / HF_CONFIG, checkpoint.config_text.encode("utf-8"))
        for file in companions:
            shutil.copyfile(Path(checkpoint.path) / file, folder / file)
        weight_map: dict[str, str] = {}
        for file, members in layout.items():
            entries = [entry for _, stored in members for entry in stored.values()]
            write_safetensors(folder / file, entries, produce, metadata={"format": FORMAT})
            weight_map |= {entry[0]: file for entry in entries}
        if tuple(checkpoint.shards) != (SINGLE_FILE,):
            stored_bytes = sum(
                math.prod(shape) * DTYPES[dtype].itemsize
                for members in layout.values()
                for _, stored in members
                for _, dtype, shape in stored.values()
            )
            write_index(folder, weight_map, stored_bytes)
        converted.clear()
        if act_arrays is not None:
            sidecar = folder / SIDECAR_DIR if served else folder
            sidecar.mkdir(exist_ok=True)
            write_activations(sidecar, act_arrays)
        if with_orbax:
            write_orbax(folder, tensors_json)
        document = quantization_json(
            model_format=HF_FORMAT,
            config_file=HF_CONFIG,
            source=provenance,
            bits=bits,
            group_size=group_size,
            rules=None,
            shards=list(checkpoint.shards),
            copied=companions,
            tensors=tensors_json,
            report=report,
            activations=act_entry,
            orbax=with_orbax,
            export_format=export_format if served else None,
        )
        atomic_write_text(folder / QUANTIZATION_FILE, document)

    stage_and_publish(out_dir, write)
    return out_dir
