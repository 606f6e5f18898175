"""The ``weights`` section of the result schema: every tensor of the model, quantized or kept.

Part of the one result schema (:mod:`thermojax.pipeline.results.schema` re-exports it). A run lists each
tensor with the rule that chose its bits and group size (or ``None`` when it stays in full
precision), how far quantization moved it, and its honest size: packed codes plus one float32
scale and one uint8 zero point per group for a quantized tensor, the stored bytes for a kept one.
Blocks sum the tensors of one transformer layer (``model.layers.3``) or one top-level module.

Example:
    >>> row = TensorRow("model.layers.0.mlp.up_proj.weight", (64, 32), "BF16", "rule 0", 4, 32,
    ...                 0.99, 20.0, 0.001, 4096, 1152)
    >>> row.quantized
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from thermojax.pipeline.results.codec import dataclass_from_json, to_json

__all__ = ["BlockRow", "TensorRow", "WeightsSection"]


@dataclasses.dataclass(frozen=True)
class TensorRow:
    """One tensor of the checkpoint.

    Attributes:
        name: the tensor's name in the checkpoint (Hugging Face names as they are).
        shape: its shape; dtype: as stored (``F32``, ``F16``, ``BF16``).
        rule: the rule that quantized it (readable text), ``None`` when kept in full precision.
        bits, group_size: its weight quantization, ``None`` when kept.
        cosine, sqnr_db: dequantized against the source (``None`` when kept).
        outlier_share: fraction of its weights far from the tensor's mean (the definition is
            :mod:`thermojax.pipeline.weights.stream`'s); ``None`` when not measured.
        source_bytes: bytes as stored in the source; quantized_bytes: bytes after quantization.
        block: the block it belongs to (a :class:`BlockRow`'s name).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    rule: str | None
    bits: int | None
    group_size: int | None
    cosine: float | None
    sqnr_db: float | None
    outlier_share: float | None
    source_bytes: int
    quantized_bytes: int
    block: str = ""

    @property
    def quantized(self) -> bool:
        """Whether a rule quantized this tensor."""
        return self.bits is not None


@dataclasses.dataclass(frozen=True)
class BlockRow:
    """The tensors of one block summed: a transformer layer (``model.layers.3``) or a module.

    Attributes:
        cosine: over all of the block's quantized weights together (``None`` if it has none);
        min_cosine: the worst of its tensors.
    """

    name: str
    tensors: int
    quantized_tensors: int
    source_bytes: int
    quantized_bytes: int
    cosine: float | None
    min_cosine: float | None


@dataclasses.dataclass(frozen=True)
class WeightsSection:
    """Every tensor, every block and the model's totals.

    Attributes:
        tensors: one row per tensor, in checkpoint order.
        blocks: one row per block, in checkpoint order.
        total_source_bytes: the checkpoint's tensor bytes as stored; total_quantized_bytes: after.
        fp32_bytes: every parameter at float32.
        compression_vs_source, compression_vs_fp32: the two size ratios.
        model_cosine: over all quantized weights together.
        seconds: wall time of quantizing and measuring; bytes_per_second: source bytes per second.
        source: where the weights came from (path, fingerprint, format).
        export_path: the quantized checkpoint written by the run, or ``None``.
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
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    export_path: str | None = None

    @property
    def quantized_tensors(self) -> tuple[TensorRow, ...]:
        """The rows a rule quantized."""
        return tuple(row for row in self.tensors if row.quantized)

    def worst_first(self) -> tuple[TensorRow, ...]:
        """Quantized tensors by cosine, lowest first (then kept ones, by name)."""
        quantized = sorted(self.quantized_tensors, key=lambda r: (r.cosine, r.name))
        kept = sorted((row for row in self.tensors if not row.quantized), key=lambda r: r.name)
        return (*quantized, *kept)

    def tensors_by_block(self) -> dict[str, tuple[TensorRow, ...]]:
        """Each block's rows, in checkpoint order."""
        out: dict[str, list[TensorRow]] = {block.name: [] for block in self.blocks}
        for row in self.tensors:
            out.setdefault(row.block, []).append(row)
        return {name: tuple(rows) for name, rows in out.items()}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {f.name: to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightsSection:
        """Inverse of :meth:`to_dict`, checking keys and types."""
        return dataclass_from_json(cls, data, "weights")
