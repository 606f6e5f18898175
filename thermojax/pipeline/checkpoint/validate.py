"""What an exported folder's numbers must be, checked when
:func:`~thermojax.pipeline.checkpoint.reload.load_quantized` reads them, not only when a run uses
them: every problem is one :class:`~thermojax.models.hf.CheckpointError` line naming the file and
the tensor (or field).

- weight groups (:func:`check_groups`): scales positive and finite (a subnormal scale is legal:
  it reconstructs tiny values, never NaN), zero points within the codes' range, and the fixed
  zero point of a symmetric tensor; kept tensors (:func:`check_kept`) finite;
- activation parameters (:func:`check_activation_entry`, :func:`check_activations`): bits,
  counts and layer names as the map says; edges rising from 0 to T; scales positive and finite;
  zero points integers in ``[0, 2**bits - 1]``;
- the measured figures in ``quantization.json`` (:func:`check_figures`), which a report of the
  export shows as they are: finite numbers (or null where nothing was measured), byte counts
  non-negative integers.

The packed codes need no check: every byte of a 2-, 4- or 8-bit code array decodes to codes
within ``[0, 2**bits - 1]``.

Example:
    >>> check_figures({"bits": 4, "group_size": 64, "report": {}, "tensors": {}})
    Traceback (most recent call last):
    ...
    thermojax.models.hf.headers.CheckpointError: quantization.json: report.total_source_bytes: None is not a non-negative integer
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from thermojax.core.quant import ACT_BITS_RANGE, WEIGHT_BITS, QTensor
from thermojax.models.hf import CheckpointError
from thermojax.models.hf.headers import nonfinite_problem
from thermojax.pipeline.checkpoint.layout import QUANTIZATION_FILE, STORED_SUFFIXES

__all__ = [
    "check_activation_entry",
    "check_activations",
    "check_figures",
    "check_groups",
    "check_kept",
]

_TENSOR_FIGURES = ("cosine", "sqnr_db", "outlier_share")
_BYTES = ("source_bytes", "quantized_bytes")
_TOTAL_COUNTS = ("total_source_bytes", "total_quantized_bytes", "fp32_bytes")
_TOTAL_FIGURES = ("compression_vs_source", "compression_vs_fp32", "seconds", "bytes_per_second")
_BLOCK_COUNTS = ("tensors", "quantized_tensors", "source_bytes", "quantized_bytes")


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: object, *, optional: bool = False) -> bool:
    if value is None:
        return optional
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _first(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_groups(file: str, name: str, qtensor: QTensor, *, zero_name: str | None = None) -> None:
    """Scales positive and finite, zero points within the codes' range (a symmetric tensor's
    at ``2**(bits-1)``): cheap, one value per group, and catches a corrupted group that the
    shapes cannot. ``zero_name``: the stored zero points' name (``NAME.qzero`` by default)."""
    zero_name = zero_name or name + STORED_SUFFIXES["zero_point"]
    scale, zero = np.asarray(qtensor.scale), np.asarray(qtensor.zero_point)
    bad = ~(np.isfinite(scale) & (scale > 0))
    if bad.any():
        where = _first(bad)
        raise CheckpointError(
            file,
            f"has scales that are not positive finite numbers ({int(bad.sum())} of "
            f"{scale.size}; group {list(where)}: {float(scale[where]):g})",
            name,
        )
    if not zero.size:
        return
    if qtensor.symmetric:
        half = (qtensor.qmax + 1) // 2
        if np.any(zero != half):
            raise CheckpointError(
                file,
                f"has zero points other than {half}, but the tensor is symmetric",
                zero_name,
            )
    elif int(zero.max()) > qtensor.qmax:
        raise CheckpointError(
            file,
            f"has zero points above {qtensor.qmax} (the largest {qtensor.bits}-bit code): "
            f"{int(zero.max())}",
            zero_name,
        )


def check_kept(file: str, name: str, array: np.ndarray) -> None:
    """A kept tensor (a bias, a norm, an embedding) holds finite values: a chunked pass over
    its bits (a mapped tensor is paged in once, never copied)."""
    problem = nonfinite_problem(array)
    if problem is not None:
        raise CheckpointError(file, problem, name)


def check_activation_entry(entry: dict[str, Any]) -> tuple[int, int, int]:
    """``quantization.json``'s ``activations`` entry: ``(bits, num_layers, num_params)``, each
    an integer in range, and ``layer_names`` null or one string per layer."""
    lo, hi = ACT_BITS_RANGE
    bits, num_layers, num_params = entry["bits"], entry["num_layers"], entry["num_params"]
    if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= hi:
        raise CheckpointError(
            QUANTIZATION_FILE, f"activations.bits {bits!r} is not an integer in [{lo}, {hi}]"
        )
    for key, value in (("num_layers", num_layers), ("num_params", num_params)):
        if not _count(value) or value < 1:
            raise CheckpointError(
                QUANTIZATION_FILE, f"activations.{key} {value!r} is not a positive integer"
            )
    names = entry.get("layer_names")
    if names is not None and (
        not isinstance(names, list)
        or len(names) != num_layers
        or not all(isinstance(n, str) for n in names)
    ):
        raise CheckpointError(
            QUANTIZATION_FILE,
            f"activations.layer_names is not a list of {num_layers} names (num_layers)",
        )
    timesteps = entry.get("num_timesteps")
    if timesteps is not None and (not _count(timesteps) or timesteps < num_params):
        raise CheckpointError(
            QUANTIZATION_FILE,
            f"activations.num_timesteps {timesteps!r} is not an integer >= num_params {num_params}",
        )
    return bits, num_layers, num_params


def check_activations(
    file: str, arrays: dict[str, np.ndarray], bits: int, num_timesteps: int | None
) -> None:
    """Edges rising strictly from 0 (to ``num_timesteps`` when the map gives it), scales
    positive and finite, zero points integers in ``[0, 2**bits - 1]``; the first bad value is
    named with its layer and group."""
    edges = np.asarray(arrays["edges"], np.int64)
    if edges[0] != 0 or np.any(np.diff(edges) < 1):
        raise CheckpointError(file, f"do not rise strictly from 0: {edges.tolist()}", "edges")
    if num_timesteps is not None and edges[-1] != num_timesteps:
        raise CheckpointError(
            file,
            f"end at {int(edges[-1])}, but {QUANTIZATION_FILE} says num_timesteps {num_timesteps}",
            "edges",
        )
    scales = np.asarray(arrays["scales"])
    bad = ~(np.isfinite(scales) & (scales > 0))
    if bad.any():
        layer, group = _first(bad)
        raise CheckpointError(
            file,
            f"{int(bad.sum())} of {scales.size} values are not positive finite numbers (layer "
            f"{layer}, group {group}: {float(scales[layer, group]):g})",
            "scales",
        )
    zero = np.asarray(arrays["zero_points"])
    qmax = (1 << bits) - 1
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(zero) & (zero >= 0) & (zero <= qmax) & (zero == np.round(zero)))
    if bad.any():
        layer, group = _first(bad)
        raise CheckpointError(
            file,
            f"{int(bad.sum())} values are not integers in [0, {qmax}] ({bits}-bit activations; "
            f"layer {layer}, group {group}: {float(zero[layer, group]):g})",
            "zero_points",
        )


def _figure(where: str, value: object, *, count: bool = False, optional: bool = False) -> None:
    if count and not _count(value):
        raise CheckpointError(
            QUANTIZATION_FILE, f"{where}: {value!r} is not a non-negative integer"
        )
    if not count and not _number(value, optional=optional):
        kind = "a finite number or null" if optional else "a finite number"
        raise CheckpointError(QUANTIZATION_FILE, f"{where}: {value!r} is not {kind}")


def check_figures(document: dict[str, Any]) -> None:
    """The export's ``bits``, ``group_size`` and ``source``, and the measured figures a report
    of the export shows as they are: each tensor's ``report`` and the checkpoint's ``report``
    (totals and blocks)."""
    bits, group_size = document.get("bits"), document.get("group_size")
    if isinstance(bits, bool) or bits not in WEIGHT_BITS:
        raise CheckpointError(QUANTIZATION_FILE, f"bits: {bits!r} is not one of {WEIGHT_BITS}")
    if not _count(group_size) or group_size < 1:
        raise CheckpointError(
            QUANTIZATION_FILE, f"group_size: {group_size!r} is not a positive integer"
        )
    if not isinstance(document.get("source", {}), dict):
        raise CheckpointError(QUANTIZATION_FILE, f"source: {document['source']!r} is not an object")
    report = document.get("report")
    if not isinstance(report, dict):
        raise CheckpointError(QUANTIZATION_FILE, f"report: {report!r} is not an object")
    for key in _TOTAL_COUNTS:
        _figure(f"report.{key}", report.get(key), count=True)
    for key in _TOTAL_FIGURES:
        _figure(f"report.{key}", report.get(key))
    _figure("report.model_cosine", report.get("model_cosine"), optional=True)
    blocks = report.get("blocks")
    if not isinstance(blocks, list):
        raise CheckpointError(QUANTIZATION_FILE, f"report.blocks: {blocks!r} is not a list")
    for index, block in enumerate(blocks):
        fields = {"name", *_BLOCK_COUNTS, "cosine", "min_cosine"}
        if (
            not isinstance(block, dict)
            or set(block) != fields
            or not isinstance(block["name"], str)
        ):
            raise CheckpointError(
                QUANTIZATION_FILE,
                f"report.blocks[{index}] is not an object of {', '.join(sorted(fields))}",
            )
        for key in _BLOCK_COUNTS:
            _figure(f"report.blocks[{index}].{key}", block[key], count=True)
        for key in ("cosine", "min_cosine"):
            _figure(f"report.blocks[{index}].{key}", block[key], optional=True)
    for name, entry in document["tensors"].items():
        figures = entry.get("report")
        if not isinstance(figures, dict):
            raise CheckpointError(QUANTIZATION_FILE, f"report {figures!r} is not an object", name)
        for key in _TENSOR_FIGURES:
            _figure(f"{name}: report.{key}", figures.get(key), optional=True)
        for key in _BYTES:
            _figure(f"{name}: report.{key}", figures.get(key), count=True)
        for key in ("dtype", "rule"):
            value = entry.get(key)
            if value is not None and not isinstance(value, str):
                raise CheckpointError(QUANTIZATION_FILE, f"{key} {value!r} is not a string", name)
