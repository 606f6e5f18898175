"""Weight quantization of a model's quantizable layers, with how far each layer moved.

Example:
    >>> from thermojax.models import load_model
    >>> from thermojax.pipeline.weights.quantize import quantize_weights
    >>> qweights, report = quantize_weights(load_model(), bits=4)
    >>> report.compression_ratio > 6
    True
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.core.quant import (
    WEIGHT_BITS,
    QTensor,
    cosine_similarity,
    dequantize,
    quantize,
    sqnr_db,
    storage_bytes,
)
from thermojax.core.weight_quant import GptqOptions, HqqOptions, MseClipOptions, quantize_weight
from thermojax.errors import value_errors_as_user_input
from thermojax.models.base import DiffusionModel, LayerWeight
from thermojax.pipeline.settings import QuantConfig
from thermojax.pipeline.weights.section import BlockRow, TensorRow, WeightsSection
from thermojax.pipeline.weights.stream import OUTLIER_SIGMAS

__all__ = [
    "WEIGHT_BITS",
    "WeightReport",
    "dense_weights",
    "layer_bits",
    "measure_weights",
    "method_options",
    "model_weights_section",
    "outlier_share",
    "quantize_weights",
    "sampler_weights",
]


@dataclasses.dataclass(frozen=True)
class WeightReport:
    """How much the quantized weights differ from fp32 and how much smaller the model is.

    Attributes:
        layer_names: the L quantizable layers.
        layer_cosine: float64 ``[L]`` cosine similarity of each dequantized weight with fp32.
        layer_sqnr_db: float64 ``[L]`` signal-to-quantization-noise ratio per layer, dB.
        fp32_bytes: every network parameter at float32.
        quantized_bytes: packed codes + scales + zero points of the quantized weights, plus the
            parameters that stay float32 (biases).
        model_cosine: cosine similarity over all quantizable weights together.
        compression_ratio: ``fp32_bytes / quantized_bytes``.
        model_size_mb: ``quantized_bytes / 1e6``.
    """

    layer_names: tuple[str, ...]
    layer_cosine: np.ndarray
    layer_sqnr_db: np.ndarray
    fp32_bytes: int
    quantized_bytes: int
    model_cosine: float
    compression_ratio: float
    model_size_mb: float


def _check_weight_options(model: DiffusionModel, bits: int, group_size: int) -> None:
    """What the core's per-array checks cannot say: which of the model's layers a ``group_size``
    does not fit. ``bits`` and ``group_size`` are checked first because they are turned into
    the jit's static ints (``int(4.5)`` would pass); the core checks the rest (whole codes per
    byte). Raises ``ValueError``, as the core does."""
    if isinstance(bits, bool) or bits not in WEIGHT_BITS:
        raise ValueError(f"weight bit_width must be one of {WEIGHT_BITS}, got {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int | np.integer):
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")  # noqa: TRY004
    if group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size}")
    bad = [
        f"{name} ({width})"
        for name, width in zip(model.layer_names, model.layer_input_widths, strict=True)
        if width % group_size
    ]
    if bad:
        raise ValueError(
            f"group_size {group_size} does not divide the input width of layer(s) {', '.join(bad)}"
        )


@partial(jax.jit, static_argnames=("bits", "group_size"))
def _quantize_program(
    kernels: tuple[jax.Array, ...], *, bits: int, group_size: int
) -> tuple[QTensor, ...]:
    """Every layer's transposed kernel quantized, in one compiled program.

    One program instead of a few eager ops per layer: a fresh process (a sweep worker) pays one
    compilation, which the persistent compilation cache then serves. Layers go in as a tuple
    (not a dict, whose keys a jit would sort) so the outputs keep the model's layer order.
    """
    return tuple(quantize(w.T, bits=bits, group_size=group_size) for w in kernels)


STREAM_BYTES = 1 << 30
"""Quantizable weights past this many float32 bytes are quantized and measured one layer at a
time (a 7B model's are 30 GB: one program over all of them holds them all at once); below it,
one program for all, which a fresh process compiles once."""


def _streams(model: DiffusionModel) -> bool:
    """Whether ``model``'s layers are quantized and measured one at a time (:data:`STREAM_BYTES`),
    from the layers' shapes alone (so the same model always takes the same path)."""
    weights = model.quantizable_weights()  # shapes traced, not computed: no copy is made
    sizes = [jax.eval_shape(lambda n=n: weights[n]).size for n in model.layer_names]
    return 4 * sum(sizes) > STREAM_BYTES


@partial(jax.jit, static_argnames=("bits", "group_size"))
def _quantize_layer(kernel: jax.Array, *, bits: int, group_size: int) -> QTensor:
    """One layer's transposed kernel quantized (:data:`STREAM_BYTES`)."""
    return quantize(kernel.T, bits=bits, group_size=group_size)


@jax.jit
def _compare_layer(kernel: jax.Array, qweight: QTensor) -> tuple[jax.Array, ...]:
    """One layer's ``(cosine, SQNR dB, <w, d>, |w|^2, |d|^2)`` against its dequantized weight
    (the last three summed over layers give the model's cosine)."""
    w = kernel.astype(jnp.float32)
    d = dequantize(qweight).T
    sums = (jnp.vdot(w, d), jnp.vdot(w, w), jnp.vdot(d, d))
    return (cosine_similarity(w, d), sqnr_db(w, d), *sums)


@jax.jit
def _compare_program(
    kernels: tuple[jax.Array, ...], qweights: tuple[QTensor, ...]
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(cosine [L], SQNR dB [L], model cosine)`` of the dequantized weights against fp32.

    A program of its own, so that weights quantized here and weights reloaded from an export
    (:func:`measure_weights`) are measured by the same compiled code, to the last bit."""
    deq = tuple(dequantize(q).T for q in qweights)
    cos = jnp.stack([cosine_similarity(w, d) for w, d in zip(kernels, deq, strict=True)])
    sqnr = jnp.stack([sqnr_db(w, d) for w, d in zip(kernels, deq, strict=True)])
    flat_fp32 = jnp.concatenate([w.reshape(-1) for w in kernels])
    flat_deq = jnp.concatenate([d.reshape(-1) for d in deq])
    return cos, sqnr, cosine_similarity(flat_fp32, flat_deq)


def layer_bits(
    layer_names: Sequence[str], bits: int, keep_bits: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Each layer's weight bits: the first ``keep_bits`` pattern (``fnmatch``, in order) that
    matches its name, else ``bits``.

    Raises:
        ValueError: a pattern that matches none of the layers (naming them).
    """
    keep = dict(keep_bits or {})
    unused = [p for p in keep if not any(fnmatch.fnmatchcase(n, p) for n in layer_names)]
    if unused:
        raise ValueError(
            f"quant.keep_bits.{unused[0]}: matches none of the layers {', '.join(layer_names)}"
        )
    return {
        name: next((b for p, b in keep.items() if fnmatch.fnmatchcase(name, p)), bits)
        for name in layer_names
    }


def method_options(quant: QuantConfig) -> MseClipOptions | HqqOptions | GptqOptions | None:
    """The core's options object of ``quant.method`` from the run's settings."""
    if quant.method == "mse_clip":
        return MseClipOptions(grid_size=quant.clip_grid, min_shrink=quant.clip_min_shrink)
    if quant.method == "hqq":
        return HqqOptions(iters=quant.hqq_iters)
    if quant.method == "gptq":
        return GptqOptions(damp=quant.damp, block_size=quant.block_size, act_order=quant.act_order)
    return None


def quantize_weights(
    model: DiffusionModel,
    *,
    bits: int,
    group_size: int = 64,
    quant: QuantConfig | None = None,
    hessians: Mapping[str, Any] | None = None,
) -> tuple[dict[str, QTensor], WeightReport]:
    """Quantize every quantizable weight per group along its input dimension.

    A Dense kernel ``[in, out]`` is stored as ``quantize(kernel.T)`` (``[out, in]``, groups of
    ``group_size`` input channels), by ``quant.method``
    (:func:`thermojax.core.weight_quant.quantize_weight`) at ``bits`` or the layer's
    ``quant.keep_bits``.

    Args:
        model: the model.
        bits: weight bit width, 2, 4 or 8.
        group_size: input channels per quantization group; must divide every layer's input width.
        quant: the method and its options; ``None``: round to nearest on each group's range
            (``minmax``) at ``bits`` everywhere.
        hessians: ``gptq`` only: layer name -> ``[in, in]`` Hessian of its inputs
            (:func:`thermojax.pipeline.measure.hessians.gptq_hessians`).

    Returns:
        ``(layer name -> QTensor of the transposed kernel, WeightReport)``.

    Raises:
        UserInputError: unsupported ``bits``, a ``group_size`` that does not divide a layer
            width or hold whole bytes of codes (the core's check, as a user error), or a
            ``keep_bits`` pattern that matches no layer.
    """
    quant = quant if quant is not None else QuantConfig()
    weights = model.quantizable_weights()
    names = tuple(model.layer_names)
    fp32 = () if _streams(model) else tuple(weights[name] for name in names)
    # The options are user input: this stage's ValueErrors (the core quantizer's argument checks
    # included) become UserInputErrors here, once.
    with value_errors_as_user_input():
        _check_weight_options(model, bits, group_size)
        per_layer = layer_bits(names, int(bits), quant.keep_bits)
        if quant.method == "minmax" and _streams(model):
            # Each layer waits for its quantization before the next is looked up: dispatched
            # ahead, the layers a model reads from its file (model.residency=apart) would queue
            # at full precision behind the quantizer.
            quantized = tuple(
                jax.block_until_ready(
                    _quantize_layer(weights[name], bits=per_layer[name], group_size=int(group_size))
                )
                for name in names
            )
        elif quant.method == "minmax" and set(per_layer.values()) == {int(bits)}:
            quantized = _quantize_program(fp32, bits=int(bits), group_size=int(group_size))
        else:
            if quant.method == "gptq" and (hessians is None or set(names) - set(hessians)):
                raise ValueError("quant.method='gptq' needs a Hessian for every layer")
            options = method_options(quant)
            quantized = tuple(
                quantize_weight(
                    w.T,
                    method=quant.method,
                    bits=per_layer[name],
                    group_size=int(group_size),
                    hessian=None if hessians is None else jnp.asarray(hessians[name]),
                    options=options,
                )
                for name, w in zip(names, fp32, strict=True)
            )
    qweights = dict(zip(names, quantized, strict=True))
    return qweights, measure_weights(model, qweights)


def measure_weights(model: DiffusionModel, qweights: Mapping[str, QTensor]) -> WeightReport:
    """How far ``qweights`` (layer name -> QTensor of the transposed kernel, as
    :func:`quantize_weights` makes them or an export holds them) are from the model's fp32
    weights, and the model's quantized size."""
    weights = model.quantizable_weights()
    ordered = tuple(qweights[name] for name in model.layer_names)
    if _streams(model):
        measured = np.asarray(
            [
                [float(v) for v in _compare_layer(weights[name], q)]
                for name, q in zip(model.layer_names, ordered, strict=True)
            ],
            np.float64,
        )
        cos, sqnr = measured[:, 0], measured[:, 1]
        dot, fp32_sq, deq_sq = measured[:, 2:].sum(axis=0)
        # cosine_similarity's convention: two zero arrays are alike, one is not like anything.
        if fp32_sq > 0 and deq_sq > 0:
            model_cos = dot / np.sqrt(fp32_sq * deq_sq)
        else:
            model_cos = 1.0 if fp32_sq == deq_sq == 0 else 0.0
    else:
        fp32 = tuple(weights[name] for name in model.layer_names)
        cos, sqnr, model_cos = _compare_program(fp32, ordered)
        cos, sqnr = np.asarray(cos, np.float64), np.asarray(sqnr, np.float64)
    total = 4 * int(model.num_parameters())
    quantized_params = sum(int(np.prod(q.shape)) for q in ordered)
    quantized_bytes = sum(storage_bytes(q) for q in ordered) + (total - 4 * quantized_params)
    return WeightReport(
        layer_names=tuple(model.layer_names),
        layer_cosine=cos,
        layer_sqnr_db=sqnr,
        fp32_bytes=total,
        quantized_bytes=int(quantized_bytes),
        model_cosine=float(model_cos),
        compression_ratio=total / max(int(quantized_bytes), 1),
        model_size_mb=quantized_bytes / 1e6,
    )


def dense_weights(
    model: DiffusionModel, weights: Mapping[str, QTensor | jax.Array] | None
) -> dict[str, jax.Array]:
    """Per-layer ``[in, out]`` float32 weights: fp32 for ``None``, dequantized for QTensors.

    Every layer dense at once, outside any jit: for what needs the dense weights themselves
    (GPTQ's injected error). Sampling and calibration take :func:`sampler_weights` instead.
    """
    if weights is None:
        return dict(model.quantizable_weights())
    return {
        n: dequantize(w).T if isinstance(w, QTensor) else jnp.asarray(w)
        for n, w in sampler_weights(model, weights).items()
    }


def sampler_weights(
    model: DiffusionModel, weights: Mapping[str, QTensor | jax.Array] | None
) -> dict[str, LayerWeight] | None:
    """The per-layer weights a jitted sampler takes, one per layer in ``model.layer_names``
    order: QTensors as they are (packed: the model dequantizes each inside its step,
    :func:`thermojax.models.base.dense`), arrays as ``[in, out]`` arrays; ``None`` (the
    model's own weights, read inside the program, so no copy of them is made) for ``None``.

    Raises:
        ValueError: a layer of the model missing from ``weights``.
    """
    if weights is None:
        return None
    missing = [n for n in model.layer_names if n not in weights]
    if missing:
        raise ValueError(f"weights lack layer(s) {missing}; expected {list(model.layer_names)}")
    return {
        n: weights[n] if isinstance(weights[n], QTensor) else jnp.asarray(weights[n])
        for n in model.layer_names
    }


def outlier_share(weight: np.ndarray, *, sigmas: float = OUTLIER_SIGMAS) -> float:
    """Share of a 2-D weight's values more than ``sigmas`` row standard deviations from their
    row's mean: :mod:`thermojax.pipeline.weights.stream`'s definition, in float64 numpy for the
    small tensors of a model thermojax runs (no extra compiled program per layer shape)."""
    w = np.asarray(weight, np.float64)
    mean = w.mean(axis=1, keepdims=True)
    std = w.std(axis=1, keepdims=True)
    return float(np.mean(np.abs(w - mean) > sigmas * std))


def model_weights_section(
    model: DiffusionModel,
    qweights: Mapping[str, QTensor],
    report: WeightReport,
    *,
    seconds: float,
    source_format: str,
) -> WeightsSection:
    """The result's ``weights`` section for a model thermojax runs: each quantizable layer's
    kernel (quantized, ``[out, in]`` as stored) and every other parameter (kept, float32).

    ``seconds`` is the weight quantization's wall time; ``source_format`` the format of the
    model's checkpoint (its family's)."""

    kernels = model.quantizable_weights()
    params = getattr(model, "params", None) or {}
    if params and not any(isinstance(v, Mapping) for v in params.values()):
        return _flat_weights_section(
            model, qweights, report, seconds=seconds, source_format=source_format
        )
    rows, blocks = [], []
    for i, name in enumerate(model.layer_names):
        q = qweights[name]
        text = f"the model's quantizable layers: {q.bits} bits, group {q.group_size}"
        kernel = np.asarray(kernels[name], np.float32).T
        layer_rows = [
            TensorRow(
                name=f"{name}.kernel",
                shape=tuple(int(d) for d in kernel.shape),
                dtype="F32",
                rule=text,
                bits=q.bits,
                group_size=q.group_size,
                cosine=float(report.layer_cosine[i]),
                sqnr_db=float(report.layer_sqnr_db[i]),
                outlier_share=outlier_share(kernel),
                source_bytes=4 * kernel.size,
                quantized_bytes=int(storage_bytes(q)),
                block=name,
            )
        ]
        for leaf, value in sorted(params.get(name, {}).items()):
            if leaf == "kernel":
                continue
            size = int(np.size(value))
            layer_rows.append(
                TensorRow(
                    name=f"{name}.{leaf}",
                    shape=tuple(int(d) for d in np.shape(value)),
                    dtype="F32",
                    rule=None,
                    bits=None,
                    group_size=None,
                    cosine=None,
                    sqnr_db=None,
                    outlier_share=None,
                    source_bytes=4 * size,
                    quantized_bytes=4 * size,
                    block=name,
                )
            )
        rows += layer_rows
        blocks.append(
            BlockRow(
                name=name,
                tensors=len(layer_rows),
                quantized_tensors=1,
                source_bytes=sum(r.source_bytes for r in layer_rows),
                quantized_bytes=sum(r.quantized_bytes for r in layer_rows),
                cosine=float(report.layer_cosine[i]),
                min_cosine=float(report.layer_cosine[i]),
            )
        )
    return _section(rows, blocks, report, seconds, source_format, model)


def _section(
    rows: list[TensorRow],
    blocks: list[BlockRow],
    report: WeightReport,
    seconds: float,
    source_format: str,
    model: DiffusionModel,
) -> WeightsSection:
    """The section's totals over ``rows``."""
    source = sum(r.source_bytes for r in rows)
    quantized = sum(r.quantized_bytes for r in rows)
    return WeightsSection(
        tensors=tuple(rows),
        blocks=tuple(blocks),
        total_source_bytes=source,
        total_quantized_bytes=quantized,
        fp32_bytes=int(report.fp32_bytes),
        compression_vs_source=source / max(quantized, 1),
        compression_vs_fp32=float(report.compression_ratio),
        model_cosine=float(report.model_cosine),
        seconds=float(seconds),
        bytes_per_second=source / seconds if seconds > 0 else 0.0,
        source={"format": source_format, "architecture": type(model).__name__},
    )


def _flat_weights_section(
    model: DiffusionModel,
    qweights: Mapping[str, QTensor],
    report: WeightReport,
    *,
    seconds: float,
    source_format: str,
) -> WeightsSection:
    """:func:`model_weights_section` of a model whose ``params`` are flat, named as in its
    checkpoint (a masked-diffusion LM: ``model.layers.3.mlp.up_proj.weight``): one row per
    tensor in checkpoint order, blocks by name (``model.layers.3``)."""
    from thermojax.pipeline.weights.stream import block_name  # the checkpoint run's blocks

    kernels = model.quantizable_weights()
    layer = {name: i for i, name in enumerate(model.layer_names)}
    shapes = {name: np.shape(value) for name, value in model.params.items()}
    if getattr(model, "linear_source", None) is not None:  # its linear layers still in the file
        shapes = model.lm.config.tensor_shapes()  # the order a whole network's params have
    rows = []
    for name, shape in shapes.items():
        shape, size = tuple(int(d) for d in shape), math.prod(int(d) for d in shape)
        kept = dict.fromkeys(("rule", "bits", "group_size", "cosine", "sqnr_db", "outlier_share"))
        quantized_bytes = 4 * size
        if name in layer:
            q, i = qweights[name], layer[name]
            kept = {
                "rule": f"the model's quantizable layers: {q.bits} bits, group {q.group_size}",
                "bits": q.bits,
                "group_size": q.group_size,
                "cosine": float(report.layer_cosine[i]),
                "sqnr_db": float(report.layer_sqnr_db[i]),
                "outlier_share": outlier_share(np.asarray(kernels[name], np.float32).T),
            }
            quantized_bytes = int(storage_bytes(q))
        rows.append(
            TensorRow(
                name=name,
                shape=shape,
                dtype="F32",
                source_bytes=4 * size,
                quantized_bytes=quantized_bytes,
                block=block_name(name),
                **kept,
            )
        )
    blocks = []
    for block in dict.fromkeys(row.block for row in rows):
        members = [row for row in rows if row.block == block]
        cosines = [row.cosine for row in members if row.cosine is not None]
        indices = [layer[row.name] for row in members if row.name in layer]
        blocks.append(
            BlockRow(
                name=block,
                tensors=len(members),
                quantized_tensors=len(cosines),
                source_bytes=sum(r.source_bytes for r in members),
                quantized_bytes=sum(r.quantized_bytes for r in members),
                cosine=_block_cosine(kernels, qweights, [model.layer_names[i] for i in indices]),
                min_cosine=min(cosines) if cosines else None,
            )
        )
    return _section(rows, blocks, report, seconds, source_format, model)


def _block_cosine(
    kernels: Mapping[str, jax.Array], qweights: Mapping[str, QTensor], names: list[str]
) -> float | None:
    """Cosine over a block's quantized weights together (``None`` without any)."""
    if not names:
        return None
    dot = norm_a = norm_b = 0.0
    for name in names:
        a = np.asarray(kernels[name], np.float64).T
        b = np.asarray(dequantize(qweights[name]), np.float64)
        dot, norm_a, norm_b = dot + np.sum(a * b), norm_a + np.sum(a * a), norm_b + np.sum(b * b)
    return float(dot / np.sqrt(norm_a * norm_b)) if norm_a > 0 and norm_b > 0 else 0.0
