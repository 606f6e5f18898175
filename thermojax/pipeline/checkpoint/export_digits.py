"""The export of the digits DDPM's quantized weights as a quantized checkpoint
(:mod:`~thermojax.pipeline.checkpoint.layout` describes the folder)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from thermojax.core.quant import QTensor, storage_bytes
from thermojax.files import atomic_file, atomic_write_text
from thermojax.models.hf import write_safetensors
from thermojax.models.hf.layouts import SINGLE_FILE
from thermojax.pipeline.checkpoint.activations import checked_codes, write_activations
from thermojax.pipeline.checkpoint.document import quantization_json, tensor_entry
from thermojax.pipeline.checkpoint.folder import check_target, stage_and_publish
from thermojax.pipeline.checkpoint.layout import (
    DIGITS_CLASSIFIER,
    DIGITS_CONFIG,
    DIGITS_FORMAT,
    FORMAT,
    QUANTIZATION_FILE,
    STORED_SUFFIXES,
    stored_entries,
)
from thermojax.pipeline.checkpoint.orbax_copy import write_orbax
from thermojax.pipeline.measure.sampling import ActParams
from thermojax.pipeline.weights.section import TensorRow
from thermojax.pipeline.weights.stream import TensorSums, block_name, build_report, measure_qtensor

__all__ = ["export_digits"]


def _digits_spec(model: Any, bits: int, group_size: int) -> dict[str, Any]:
    """The digits ``model.json`` of ``model`` (as ``save_checkpoint`` writes it), plus where its
    quantized weights are described."""
    reference = model.reference
    return {
        **model.metadata,
        "denoiser": dataclasses.asdict(model.config),
        "schedule": dataclasses.asdict(model.schedule),
        "classifier": None if reference is None else dataclasses.asdict(reference.config),
        "quantization": {
            "format": FORMAT,
            "file": QUANTIZATION_FILE,
            "bits": int(bits),
            "group_size": int(group_size),
        },
    }


def _write_classifier(folder: Path, model: Any) -> None:
    """The digits checkpoint's ``classifier.safetensors``, as its writer writes it (same bytes)."""
    from flax import traverse_util
    from safetensors.numpy import save_file

    flat = traverse_util.flatten_dict(dict(model.reference.params), sep="/")
    arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()}
    with atomic_file(folder / DIGITS_CLASSIFIER) as tmp:
        save_file(arrays, str(tmp), metadata={"format": DIGITS_FORMAT})


def export_digits(
    model: Any,
    out_dir: str | os.PathLike[str],
    qweights: Mapping[str, QTensor],
    *,
    bits: int,
    group_size: int,
    activations: ActParams | None = None,
    source_path: str | os.PathLike[str] | None = None,
    settings: Mapping[str, Any] | None = None,
    orbax: bool = True,
) -> Path:
    """Write the digits DDPM's quantized weights as a quantized checkpoint (module doc).

    ``quantization.json``'s ``source`` records the full-precision checkpoint (its path, ``null``
    for the shipped one, and :func:`~thermojax.pipeline.cache.stages.model_fingerprint`): a
    baseline run from the export samples the exported codes against that model's fp32 samples.

    Args:
        model: the digits model (:func:`thermojax.models.load_model`).
        out_dir: the folder to create; it must not exist or be empty.
        qweights: layer name -> QTensor of the transposed kernel, as
            :func:`~thermojax.pipeline.weights.quantize.quantize_weights` returns them.
        bits: the run's bit width (a layer may hold other bits: ``quant.keep_bits``).
        group_size: their group size.
        activations: the run's activation parameters (:class:`ActParams`, ``[L, S]`` for the
            model's layers), or ``None``.
        source_path: the folder ``model`` was loaded from, ``None`` for the shipped model.
        settings: JSON-ready settings that made the codes, recorded in ``source`` (the run's
            ``quant`` section, which a run of the export reports again).
        orbax: also save the QTensors as an Orbax checkpoint (``orbax/``).

    Returns:
        ``out_dir``.

    Raises:
        UserInputError: ``out_dir`` is not empty, or bad activation parameters.
        ValueError: ``qweights`` do not match the model's layers (a bug of the caller).
    """
    out_dir = Path(out_dir)
    check_target(out_dir)
    names = tuple(model.layer_names)
    kernels = model.quantizable_weights()
    act_arrays, act_entry = checked_codes(
        qweights,
        {name: tuple(np.shape(kernels[name]))[::-1] for name in names},
        group_size=group_size,
        what="the transposed kernel",
        activations=activations,
        num_timesteps=model.num_timesteps,
    )

    from thermojax.pipeline.cache.stages import model_fingerprint

    source = {
        "model": model.name,
        "num_parameters": int(model.num_parameters()),
        "path": None if source_path is None else str(Path(source_path).expanduser().resolve()),
        "fingerprint": model_fingerprint(model),
    } | dict(settings or {})
    json.dumps(source)  # a TypeError now, not after the whole export
    reports, sums, arrays, tensors_json, entries = [], [], {}, {}, []
    for name in names:
        q = jax.tree.map(np.asarray, qweights[name])
        weight = np.asarray(kernels[name], np.float32).T
        tensor_sums = measure_qtensor(weight, q)
        source_name = f"{name}/kernel"
        kept = "" if q.bits == bits else " (quant.keep_bits)"
        report = TensorRow(
            name=name,
            shape=q.shape,
            dtype="F32",
            rule=f"digits: every layer's kernel, {q.bits} bits{kept}, group {group_size}",
            bits=q.bits,
            group_size=group_size,
            cosine=tensor_sums.cosine,
            sqnr_db=tensor_sums.sqnr_db,
            outlier_share=tensor_sums.outlier_share,
            source_bytes=4 * weight.size,
            quantized_bytes=storage_bytes(q),
            block=block_name(name),
        )
        stored = stored_entries(name, q.shape, q.bits, group_size)
        arrays |= {stored[role][0]: getattr(q, role) for role in STORED_SUFFIXES}
        bias_name = f"{name}/bias"
        bias = np.ascontiguousarray(np.asarray(model.params[name]["bias"], np.float32))
        bias_report = TensorRow(
            bias_name, bias.shape, "F32", None, None, None, None, None, None, bias.nbytes,
            bias.nbytes, block_name(bias_name),
        )  # fmt: skip
        arrays[bias_name] = bias
        bias_stored = {"values": (bias_name, "F32", bias.shape)}
        entries += [*stored.values(), *bias_stored.values()]
        tensors_json[name] = tensor_entry(report, SINGLE_FILE, stored) | {
            "source_name": source_name,
            "source_shape": list(weight.shape[::-1]),
        }
        tensors_json[bias_name] = tensor_entry(bias_report, SINGLE_FILE, bias_stored)
        reports += [report, bias_report]
        sums += [tensor_sums, TensorSums(0.0, 0.0, 0.0, 0, 0)]
    report = build_report(reports, sums, 0.0)

    def write(folder: Path) -> None:
        spec = _digits_spec(model, bits, group_size)
        text = json.dumps(spec, indent=2, sort_keys=True) + "\n"
        atomic_write_text(folder / DIGITS_CONFIG, text)
        if model.reference is not None:
            _write_classifier(folder, model)
        write_safetensors(
            folder / SINGLE_FILE, entries, arrays.__getitem__, metadata={"format": FORMAT}
        )
        if act_arrays is not None:
            write_activations(folder, act_arrays)
        if orbax:
            write_orbax(folder, tensors_json)
        document = quantization_json(
            model_format=DIGITS_FORMAT,
            config_file=DIGITS_CONFIG,
            source=source,
            bits=bits,
            group_size=group_size,
            rules=None,
            shards=[SINGLE_FILE],
            copied=[],
            tensors=tensors_json,
            report=report,
            activations=act_entry,
            orbax=orbax,
        )
        atomic_write_text(folder / QUANTIZATION_FILE, document)

    stage_and_publish(out_dir, write)
    return out_dir
