"""Weight-only quantization of any checkpoint, tensor by tensor, with how far each tensor moved.

No forward pass and no model code: a checkpoint's tensors are streamed one at a time (the
reader holds about one tensor), the rules (:mod:`thermojax.pipeline.weights.rules`) pick the 2-D
weights to quantize, and each is quantized per group along its last axis (a Hugging Face linear
weight is ``[out, in]``, so groups run along the input dimension, as the digits model's
transposed kernels do) and measured against its stored values:

- **cosine** similarity and **SQNR** (dB) of the dequantized weight with the stored one;
- **outlier share**: the fraction of the weights that lie more than :data:`OUTLIER_SIGMAS` (6)
  standard deviations from the mean *of their own output row* (the row a group belongs to).
  Per row, not per tensor, because that is what hurts per-group quantization: a group's
  scale stretches to its largest value, so one large weight costs every other weight of its
  group resolution. Large *input* channels (a column of large weights, the usual "per-channel
  outliers" of LLMs) stand out in every row and are counted; a row that is merely larger
  overall is not (its groups get larger scales, at no loss). A Gaussian row has a share of
  about 2e-9, so any share above ~1e-6 means heavy tails. (A row of ``n`` values cannot hold
  a value beyond ``sqrt(n - 1)`` of its standard deviations, so rows under 37 wide show none.)

Each tensor is processed in row blocks of about two million elements by one jitted program (one
compilation per block shape, dtype, bit width and group size; the weights are arguments, never
constants), which reads the stored dtype (bf16, f16, f32) and converts to float32 inside the
program, and returns only the packed codes, the group scales and zero points, and per-row sums.
The blocks keep the program's temporaries in the CPU caches and out of fresh memory pages,
which is what makes a large tensor as fast as a small one. The codes are exactly those of
:func:`thermojax.core.quant.quantize` (the program uses the core's own group, code and packing
steps).

Example:
    >>> import tempfile, pathlib
    >>> from thermojax.models.hf import open_checkpoint, write_dream_like
    >>> folder = write_dream_like(pathlib.Path(tempfile.mkdtemp()) / "m", scale=64, layers=1)
    >>> report = quantize_checkpoint(open_checkpoint(folder), [QuantRule()], bits=4, group_size=8)
    >>> [(block.name, block.quantized_tensors) for block in report.blocks]
    [('other', 0), ('model.layers.0', 7)]
    >>> report.model_cosine > 0.99
    True
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# The core's grouped kernel steps, not quantize() itself: inside one program with the metrics,
# quantize()'s final reshape of the codes fuses into the packing loop and slows it ~2.5x (see
# _quantize_grouped's note); using the same steps keeps the codes bit-identical to quantize().
from thermojax.core.quant import (
    WEIGHT_BITS,
    QTensor,
    _codes,
    _group_params,
    _pack,
    dequantize,
    storage_bytes,
)
from thermojax.pipeline.weights.rules import QuantRule, ResolvedRule, resolve_rules
from thermojax.pipeline.weights.section import BlockRow, TensorRow

__all__ = [
    "OUTLIER_SIGMAS",
    "CheckpointQuantizer",
    "QuantizedTensor",
    "TensorSums",
    "WeightOnlyReport",
    "block_name",
    "build_report",
    "measure_qtensor",
    "quantize_checkpoint",
    "quantize_tensor",
]

OUTLIER_SIGMAS = 6.0
"""A weight is an outlier beyond this many standard deviations from its row's mean."""
_BLOCK_ELEMENTS = 1 << 21
"""Elements per program call: the temporaries of a block stay in the caches (~8 MB of f32)."""
_LANES = 8
"""Partial sums kept side by side in the metric reduction: a float32 SIMD register's worth, so
the reduction vectorizes (a plain per-row sum of several operands runs one add at a time)."""
_FLAT_ROW = 1e-5
"""A row whose variance is under this share of its mean square is flat (no outliers): below it,
float32 sums cannot tell its variance from rounding."""
_ALIAS_ALIGNMENT = 64
"""XLA:CPU aliases (does not copy) host arrays aligned to this many bytes."""
_TINY = float(np.finfo(np.float32).tiny)
_BLOCK_OF = re.compile(r"^(.*?\.\d+)\.")


class TensorSource(Protocol):
    """What :class:`CheckpointQuantizer` needs of a checkpoint (``SafetensorsFolder`` has it)."""

    tensors: dict[str, Any]

    def iter_tensors(self, names=None, *, check_finite: bool = True) -> Iterator[tuple[Any, Any]]:
        """``(info, array)`` per tensor, in file order; ``info`` has name, dtype, shape, nbytes."""
        ...


# ----------------------------------------------------------------------------- the kernel


@partial(jax.jit, static_argnames=("bits", "group_size"))
def _block_program(
    w: jax.Array, outlier_sigmas: jax.Array, *, bits: int, group_size: int
) -> tuple[jax.Array, ...]:
    """One row block ``[rows, n]``: its quantization and its per-row sums.

    Returns ``(packed [rows, groups, group_size // p] uint8, scale [rows, groups] f32,
    zero_point [rows, groups] uint8, sum w^2, sum dequantized^2, sum (w - dequantized)^2,
    outlier count)``, the last four float32 ``[rows]``.
    """
    qmax = (1 << bits) - 1
    x = w.astype(jnp.float32)
    rows, n = x.shape
    xg = x.reshape(rows, n // group_size, group_size)
    scale, inv_scale, zero_point = _group_params(xg, qmax, False)
    codes = _codes(xg, inv_scale, zero_point, qmax)
    packed = _pack(codes, bits)

    # Plain sums (E[x^2] - E[x]^2): they run as fast library reductions, where shifting x
    # first costs half the program. The variance loses precision only for a row whose mean is
    # hundreds of standard deviations from zero, which a weight matrix is not (and such a row
    # is "flat" below).
    signal = jnp.sum(x * x, axis=1)
    mean = jnp.sum(x, axis=1) / n
    variance = signal / n - mean * mean
    # A row flatter than the sums' rounding (a constant row) has no outliers: an infinite
    # threshold, rather than one made of rounding noise that would flag every weight.
    flat = variance <= _FLAT_ROW * (signal / n)
    threshold = jnp.where(flat, jnp.inf, outlier_sigmas * jnp.sqrt(jnp.maximum(variance, 0.0)))

    dequantized = (codes - zero_point[..., None]) * scale[..., None]
    error = xg - dequantized
    outlier = jnp.abs(xg - mean[:, None, None]) > threshold[:, None, None]
    lanes = math.gcd(group_size, _LANES)

    def lane_split(a: jax.Array) -> jax.Array:
        return a.reshape(rows, n // group_size, group_size // lanes, lanes)

    # One variadic reduce over the group axis with the lanes kept: a single loop computes the
    # codes once for all three sums (separate sums would each recompute or materialize them).
    partial_sums = lax.reduce(
        (
            lane_split(dequantized * dequantized),
            lane_split(error * error),
            lane_split(outlier.astype(jnp.float32)),
        ),
        (np.float32(0),) * 3,
        lambda a, b: tuple(p + q for p, q in zip(a, b, strict=True)),
        (2,),
    )
    row_sums = (signal, *(jnp.sum(s, axis=(1, 2)) for s in partial_sums))
    return (packed, scale, zero_point.astype(jnp.uint8), *row_sums)


def _block_rows(rows: int, width: int) -> int:
    """Rows per block: about ``_BLOCK_ELEMENTS`` elements, preferably a divisor of ``rows``
    (one block shape, so one compilation, per tensor shape)."""
    target = max(1, _BLOCK_ELEMENTS // max(width, 1))
    if rows <= target:
        return rows
    for candidate in range(target, max(1, target // 2) - 1, -1):
        if rows % candidate == 0:
            return candidate
    return target


class TensorSums(NamedTuple):
    """Exact (float64) sums over a quantized tensor, from which its figures follow.

    ``signal = sum w^2``, ``quantized = sum dequantized^2``, ``noise = sum (w - dequantized)^2``,
    ``outliers`` counted, ``numel`` elements. Sums of tensors add up to the sums of their union,
    so a block's or the model's cosine is computed exactly, not averaged.
    """

    signal: float
    quantized: float
    noise: float
    outliers: int
    numel: int

    def __add__(self, other: TensorSums) -> TensorSums:  # type: ignore[override]
        return TensorSums(*(a + b for a, b in zip(self, other, strict=True)))

    @property
    def cosine(self) -> float:
        """``<w, d> / (|w| |d|)``, with ``<w, d> = (|w|^2 + |d|^2 - |w - d|^2) / 2``."""
        if self.signal == 0 and self.quantized == 0:
            return 1.0
        norms = math.sqrt(self.signal * self.quantized)
        if norms == 0:
            return 0.0
        dot = (self.signal + self.quantized - self.noise) / 2
        return float(min(1.0, max(-1.0, dot / norms)))

    @property
    def sqnr_db(self) -> float:
        """``10 log10(sum w^2 / sum (w - d)^2)``, both floored at float32 ``tiny`` (as the core)."""
        return 10.0 * math.log10(max(self.signal, _TINY) / max(self.noise, _TINY))

    @property
    def outlier_share(self) -> float:
        """Outliers per element."""
        return self.outliers / self.numel if self.numel else 0.0


_NO_SUMS = TensorSums(0.0, 0.0, 0.0, 0, 0)


def quantize_tensor(
    weight: np.ndarray | jax.Array,
    *,
    bits: int,
    group_size: int,
    outlier_sigmas: float = OUTLIER_SIGMAS,
) -> tuple[QTensor, TensorSums]:
    """Quantize one 2-D weight along its last axis and measure it, a row block at a time.

    Args:
        weight: ``[rows, n]`` float32, float16 or bfloat16 (numpy or JAX); ``n`` a multiple of
            ``group_size``.
        bits: 2, 4 or 8.
        group_size: elements per group, a multiple of ``8 // bits``.
        outlier_sigmas: the outlier threshold in row standard deviations.

    Returns:
        ``(QTensor with numpy leaves, TensorSums)``; the codes equal
        ``quantize(weight, bits=bits, group_size=group_size)``'s.

    Raises:
        ValueError: not 2-D, or options :func:`~thermojax.core.quant.quantize` refuses.
    """
    shape = tuple(np.shape(weight))
    if len(shape) != 2:
        raise ValueError(f"weight must be 2-D [rows, n], got shape {shape}")
    rows, width = shape
    if isinstance(bits, bool) or bits not in WEIGHT_BITS:
        raise ValueError(f"bits must be one of {WEIGHT_BITS}, got bits={bits!r}")
    if rows == 0 or width == 0 or group_size < 1 or width % group_size or group_size % (8 // bits):
        raise ValueError(
            f"cannot quantize shape {shape} with bits={bits}, group_size={group_size} (needs a "
            f"non-empty shape, group_size dividing {width} and a multiple of {8 // bits})"
        )
    codes = np.empty((rows, width * bits // 8), np.uint8)
    scale = np.empty((rows, width // group_size), np.float32)
    zero_point = np.empty((rows, width // group_size), np.uint8)
    sums = np.zeros(4, np.float64)
    sigmas = np.float32(outlier_sigmas)
    step = _block_rows(rows, width)

    def collect(start: int, stop: int, result: tuple[jax.Array, ...], block: jax.Array) -> None:
        packed, block_scale, block_zero, *row_sums = result
        codes[start:stop] = np.asarray(packed).reshape(stop - start, -1)
        scale[start:stop] = block_scale
        zero_point[start:stop] = block_zero
        sums[:] += [np.sum(np.asarray(s), dtype=np.float64) for s in row_sums]
        block.delete()  # its buffer now, not when the garbage collector gets to it

    # Dispatch is asynchronous: block k + 1 is computed while block k's results are copied.
    pending = None
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        block = weight[start:stop]
        if isinstance(block, np.ndarray) and block.ctypes.data % _ALIAS_ALIGNMENT == 0:
            # JAX aliases an aligned numpy input instead of copying it and lets go of it only
            # lazily, on a later call of its own, which would keep a finished tensor alive; it
            # gets a private copy of the block instead. (An unaligned input, which a large
            # tensor read from a file usually is, JAX copies during the call and keeps nothing.)
            block = np.array(block)
        block = jax.device_put(block)
        result = _block_program(block, sigmas, bits=int(bits), group_size=group_size)
        if pending is not None:
            collect(*pending)
        pending = (start, stop, result, block)
    collect(*pending)
    qtensor = QTensor(
        codes=codes,
        scale=scale,
        zero_point=zero_point,
        shape=shape,
        bits=int(bits),
        group_size=int(group_size),
    )
    signal, quantized, noise, outliers = sums
    return qtensor, TensorSums(
        float(signal), float(quantized), float(noise), round(outliers), rows * width
    )


def measure_qtensor(
    weight: np.ndarray | jax.Array, qtensor: QTensor, *, outlier_sigmas: float = OUTLIER_SIGMAS
) -> TensorSums:
    """The sums of a weight and a QTensor quantized elsewhere, in float64 numpy (small tensors:
    the digits model's kernels, from :func:`~thermojax.pipeline.weights.quantize.quantize_weights`).

    Args:
        weight: ``qtensor.shape`` (for the digits kernels: the transposed ``[out, in]`` kernel).
        qtensor: its quantization.
        outlier_sigmas: the outlier threshold, in standard deviations of each row (last axis).
    """
    x = np.asarray(weight, np.float64)
    if x.shape != tuple(qtensor.shape):
        raise ValueError(f"weight shape {x.shape} is not the QTensor's {qtensor.shape}")
    d = np.asarray(dequantize(qtensor), np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    variance = x.var(axis=-1, keepdims=True)
    flat = variance <= _FLAT_ROW * np.mean(x * x, axis=-1, keepdims=True)
    outliers = (np.abs(x - mean) > outlier_sigmas * np.sqrt(variance)) & ~flat
    return TensorSums(
        signal=float(np.sum(x * x)),
        quantized=float(np.sum(d * d)),
        noise=float(np.sum((x - d) ** 2)),
        outliers=int(np.count_nonzero(outliers)),
        numel=x.size,
    )


# ----------------------------------------------------------------------------- reports


@dataclasses.dataclass(frozen=True)
class WeightOnlyReport:
    """A whole checkpoint's weight-only quantization.

    Attributes:
        tensors: per tensor, in checkpoint order (the rows of the result's ``weights``).
        blocks: per block, in order of first appearance.
        total_source_bytes: the checkpoint's tensors as stored.
        total_quantized_bytes: the quantized checkpoint's tensors (quantized + kept).
        fp32_bytes: every tensor at float32.
        compression_vs_source: ``total_source_bytes / total_quantized_bytes``.
        compression_vs_fp32: ``fp32_bytes / total_quantized_bytes``.
        model_cosine: cosine over all quantized weights together; ``None`` if none is.
        seconds: wall time of the pass (reading, quantizing, measuring, and the sink's work).
        bytes_per_second: ``total_source_bytes / seconds``.
    """

    tensors: tuple[TensorRow, ...]
    blocks: tuple[BlockRow, ...]
    total_source_bytes: int
    total_quantized_bytes: int
    fp32_bytes: int
    compression_vs_source: float
    compression_vs_fp32: float
    model_cosine: float | None
    seconds: float
    bytes_per_second: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the report's fields, tensors and blocks as lists of dicts."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name not in ("tensors", "blocks")
        } | {
            "tensors": [dataclasses.asdict(t) | {"shape": list(t.shape)} for t in self.tensors],
            "blocks": [dataclasses.asdict(b) for b in self.blocks],
        }


def block_name(tensor: str) -> str:
    """The block of a tensor: its name up to the first numbered component, else ``"other"``.

    Example:
        >>> block_name("model.layers.3.mlp.up_proj.weight"), block_name("lm_head.weight")
        ('model.layers.3', 'other')
    """
    match = _BLOCK_OF.match(tensor)
    return match.group(1) if match else "other"


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def build_report(
    tensors: Sequence[TensorRow], sums: Sequence[TensorSums], seconds: float
) -> WeightOnlyReport:
    """The checkpoint's report from its tensors' reports and sums (``_NO_SUMS`` for kept ones)."""
    blocks: dict[str, list[int]] = {}
    for index, report in enumerate(tensors):
        blocks.setdefault(report.block, []).append(index)
    block_reports = []
    for name, members in blocks.items():
        quantized = [i for i in members if tensors[i].bits is not None]
        block_sums = sum((sums[i] for i in quantized), _NO_SUMS)
        block_reports.append(
            BlockRow(
                name=name,
                tensors=len(members),
                quantized_tensors=len(quantized),
                source_bytes=sum(tensors[i].source_bytes for i in members),
                quantized_bytes=sum(tensors[i].quantized_bytes for i in members),
                cosine=block_sums.cosine if quantized else None,
                min_cosine=min(tensors[i].cosine for i in quantized) if quantized else None,
            )
        )
    quantized = [i for i, t in enumerate(tensors) if t.bits is not None]
    model_sums = sum((sums[i] for i in quantized), _NO_SUMS)
    source = sum(t.source_bytes for t in tensors)
    stored = sum(t.quantized_bytes for t in tensors)
    fp32 = sum(4 * math.prod(t.shape) for t in tensors)
    return WeightOnlyReport(
        tensors=tuple(tensors),
        blocks=tuple(block_reports),
        total_source_bytes=source,
        total_quantized_bytes=stored,
        fp32_bytes=fp32,
        compression_vs_source=_ratio(source, stored),
        compression_vs_fp32=_ratio(fp32, stored),
        model_cosine=model_sums.cosine if quantized else None,
        seconds=seconds,
        bytes_per_second=_ratio(source, seconds),
    )


# ----------------------------------------------------------------------------- the stream


class QuantizedTensor(NamedTuple):
    """One tensor of the stream: its info, its QTensor (``None`` if kept), its stored values."""

    info: Any
    qtensor: QTensor | None
    array: np.ndarray
    report: TensorRow


class CheckpointQuantizer:
    """Quantize a checkpoint tensor by tensor: iterate it once, then ask for the report.

    The rules are resolved on construction (every rule error is raised before any weight is
    read). Iterating reads the tensors in file order and yields a :class:`QuantizedTensor`
    per tensor; the stream holds one tensor (and its QTensor) at a time, plus the one the
    caller still holds, so a caller should drop each before taking the next.

    Args:
        ckpt: the checkpoint (a :class:`~thermojax.models.hf.SafetensorsFolder`).
        rules: the quantization rules, in order.
        bits: the run's bit width (for rules without one).
        group_size: the run's group size (for rules without one).

    Raises:
        UserInputError: a bad rule, bit width or group size (naming the rule and tensor).
    """

    def __init__(
        self, ckpt: TensorSource, rules: Sequence[QuantRule], *, bits: int, group_size: int
    ) -> None:
        self.ckpt = ckpt
        self.plan: dict[str, ResolvedRule | None] = resolve_rules(
            ((info.name, info.shape) for info in ckpt.tensors.values()),
            rules,
            bits=bits,
            group_size=group_size,
        )
        self._reports: list[TensorRow] = []
        self._sums: list[TensorSums] = []
        self._seconds: float | None = None

    def __iter__(self) -> Iterator[QuantizedTensor]:
        if self._seconds is not None or self._reports:
            raise RuntimeError("a CheckpointQuantizer streams its checkpoint once")
        started = time.perf_counter()
        for info, array in self.ckpt.iter_tensors():
            rule = self.plan[info.name]
            if rule is None:
                qtensor, sums = None, _NO_SUMS
                report = TensorRow(
                    info.name, tuple(info.shape), info.dtype, None, None, None, None, None, None,
                    info.nbytes, info.nbytes, block_name(info.name),
                )  # fmt: skip
            else:
                qtensor, sums = quantize_tensor(array, bits=rule.bits, group_size=rule.group_size)
                report = TensorRow(
                    name=info.name,
                    shape=tuple(info.shape),
                    dtype=info.dtype,
                    rule=rule.text,
                    bits=rule.bits,
                    group_size=rule.group_size,
                    cosine=sums.cosine,
                    sqnr_db=sums.sqnr_db,
                    outlier_share=sums.outlier_share,
                    source_bytes=info.nbytes,
                    quantized_bytes=storage_bytes(qtensor),
                    block=block_name(info.name),
                )
            self._reports.append(report)
            self._sums.append(sums)
            yield QuantizedTensor(info, qtensor, array, report)
            del array, qtensor  # before reading the next: one tensor in memory at a time
        self._seconds = time.perf_counter() - started

    def report(self) -> WeightOnlyReport:
        """The report of the finished pass.

        Raises:
            RuntimeError: the checkpoint was not streamed to the end.
        """
        if self._seconds is None:
            raise RuntimeError("the report comes after iterating the whole checkpoint")
        return build_report(self._reports, self._sums, self._seconds)


Sink = Callable[[Any, "QTensor | None", np.ndarray], None]
"""``sink(info, qtensor_or_None, stored_array)``, called for each tensor in file order."""


def quantize_checkpoint(
    ckpt: TensorSource,
    rules: Sequence[QuantRule],
    *,
    bits: int,
    group_size: int,
    sink: Sink | None = None,
) -> WeightOnlyReport:
    """Quantize every tensor the rules take, streaming the checkpoint, and report on it.

    Args:
        ckpt: the checkpoint (:func:`thermojax.models.hf.open_checkpoint`).
        rules: the quantization rules, in order (:data:`~thermojax.pipeline.weights.rules.DEFAULT_RULES`).
        bits: the run's bit width, for rules without one.
        group_size: the run's group size, for rules without one.
        sink: called with ``(TensorInfo, QTensor or None, stored array)`` for each tensor, in
            file order (an exporter writes them); it should not keep them.

    Returns:
        The :class:`WeightOnlyReport`.

    Raises:
        UserInputError: a bad rule, bit width or group size, before any weight is read; a
            :class:`~thermojax.models.hf.CheckpointError` for a NaN/Inf or changed file.
    """
    quantizer = CheckpointQuantizer(ckpt, rules, bits=bits, group_size=group_size)
    for item in quantizer:
        if sink is not None:
            sink(item.info, item.qtensor, item.array)
        del item
    return quantizer.report()
