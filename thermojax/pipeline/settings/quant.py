"""How the weights are quantized and written: ``bit_width``'s choices, ``quant.*``,
``weights.*`` (the checkpoint rules) and ``export.*``."""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional  # noqa: UP035 (OmegaConf reads typing.List)

from thermojax.core.quant import WEIGHT_BITS
from thermojax.pipeline.settings.checks import MAX_INT32, check_count, fail, shown
from thermojax.pipeline.weights.rules import DEFAULT_RULES, QuantRule

__all__ = [
    "BIT_WIDTHS_TEXT",
    "EXPORT_FORMATS",
    "HESSIAN_WEIGHTINGS",
    "SUPPORTED_BIT_WIDTHS",
    "WEIGHT_METHOD_NAMES",
    "ExportConfig",
    "QuantConfig",
    "WeightsConfig",
    "validate_export",
    "validate_quant",
]

SUPPORTED_BIT_WIDTHS = WEIGHT_BITS  # the core quantizer's rule, not a copy of it
BIT_WIDTHS_TEXT = ", ".join(map(str, WEIGHT_BITS[:-1])) + f" or {WEIGHT_BITS[-1]}"

# OmegaConf resolves the annotations itself; keep Optional (not `X | None`) for its type checker.


@dataclasses.dataclass(frozen=True)
class WeightsConfig:
    """Which tensors of a checkpoint are quantized, and how (:mod:`thermojax.pipeline.weights.rules`).

    Attributes:
        rules: ordered rules; the first whose ``include`` matches (and ``exclude`` does not)
            takes a 2-D tensor, with its ``bits`` / ``group_size`` or the run's. The default
            quantizes every linear weight and keeps embeddings, norms and ``lm_head``. The digits
            DDPM quantizes its six layers at ``bit_width`` / ``group_size`` whatever the rules.
    """

    rules: List[QuantRule] = dataclasses.field(  # noqa: UP006
        default_factory=lambda: list(DEFAULT_RULES)
    )


EXPORT_FORMATS = ("thermojax", "compressed-tensors")
"""``export.format`` values: thermojax's own layout, or compressed-tensors' ``pack-quantized``
(:mod:`thermojax.pipeline.checkpoint.compressed_tensors`)."""


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Write the quantized checkpoint (:mod:`thermojax.pipeline.checkpoint.export`).

    Attributes:
        path: the folder to create (it must not exist, or be empty); ``None``: no export.
        orbax: also save the quantized tensors as Orbax checkpoints (``orbax/``); reloading
            never needs them, and without them an export writes each quantized byte once.
            thermojax's layout only: a compressed-tensors folder holds its codes once.
        format: ``thermojax`` (its own layout) or ``compressed-tensors`` (the
            ``pack-quantized`` Hugging Face folder serving stacks load; a masked-diffusion
            LM's export, or a Hugging Face checkpoint's measured weight-only).
    """

    path: Optional[str] = None  # noqa: UP045
    orbax: bool = True
    format: str = "thermojax"


def validate_export(export: ExportConfig) -> None:
    """``export.format`` from :data:`EXPORT_FORMATS`."""
    if export.format not in EXPORT_FORMATS:
        raise fail("export.format", export.format, f"must be {' or '.join(EXPORT_FORMATS)}")


WEIGHT_METHOD_NAMES = ("minmax", "mse_clip", "hqq", "gptq")
MAX_CLIP_GRID = 10_000
"""The most ``quant.clip_grid`` shrink factors: the search holds every factor's trial of a group at
once (``clip_grid x group_size`` floats; 2**31 of them ran the machine out of memory), and 10000
already spaces the default factors 5e-5 apart."""
"""``quant.method`` values (:data:`thermojax.core.weight_quant.WEIGHT_METHODS`)."""

HESSIAN_WEIGHTINGS = ("uniform", "sensitivity")
"""``quant.hessian``: how GPTQ's Hessian weighs the denoising steps (:class:`QuantConfig`)."""


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """How the weights of a model thermojax runs are quantized (:mod:`thermojax.core.weight_quant`).

    Attributes:
        method: ``minmax`` (round to nearest on each group's range), ``mse_clip`` (per-group
            search over shrunk ranges for the least squared error), ``hqq`` (half-quadratic
            zero-point optimization, integer zero points) or ``gptq`` (Hessian-aware rounding
            with error feedback, from per-step calibration inputs).
        clip_grid, clip_min_shrink: ``mse_clip``'s shrink factors (``clip_grid`` of them, from 1
            down to ``clip_min_shrink``).
        hqq_iters: ``hqq``'s most iterations.
        hessian: ``gptq``: ``uniform`` sums every step's ``x x^T`` alike; ``sensitivity`` (the
            default) weighs each time group's mean ``x x^T`` by how far minmax-quantized weights
            used in that group alone move the final sample (measured, one sampler run per
            group). On the digits DDPM at W2 it lowered the Frechet distance on each of 5 seeds
            (-20.6 +- 6.1 against uniform) and tied at W4 and W8 (README).
        damp, block_size, act_order: ``gptq``'s dampening (fraction of the mean diagonal), lazy
            update width and decreasing-``diag(H)`` column order.
        hessian_samples: ``gptq``: samples of the fp32 sampler whose layer inputs build the
            Hessians (and of each sensitivity run).
        keep_bits: layer-name pattern (``fnmatch``, e.g. ``output`` or ``*lm_head*``) -> bits
            for those layers instead of ``bit_width`` (mixed precision).
    """

    method: str = "minmax"
    clip_grid: int = 20
    clip_min_shrink: float = 0.5
    hqq_iters: int = 20
    hessian: str = "sensitivity"
    damp: float = 0.01
    block_size: int = 128
    act_order: bool = False
    hessian_samples: int = 64
    keep_bits: Dict[str, int] = dataclasses.field(default_factory=dict)  # noqa: UP006


def validate_quant(quant: QuantConfig) -> None:
    """``quant.*``: names from their lists, counts and fractions in range, whole-byte bits."""
    if quant.method not in WEIGHT_METHOD_NAMES:
        raise fail("quant.method", quant.method, f"must be one of {', '.join(WEIGHT_METHOD_NAMES)}")
    if quant.hessian not in HESSIAN_WEIGHTINGS:
        raise fail(
            "quant.hessian", quant.hessian, f"must be one of {', '.join(HESSIAN_WEIGHTINGS)}"
        )
    if quant.block_size < 1:  # capped at the input width where it is larger
        raise fail("quant.block_size", quant.block_size, "must be >= 1")
    check_count(
        "quant.hessian_samples",
        quant.hessian_samples,
        at_most=MAX_INT32,
        why="JAX counts samples in int32",
    )
    check_count(
        "quant.clip_grid",
        quant.clip_grid,
        at_most=MAX_CLIP_GRID,
        why="each shrink factor is tried on every group at once",
    )
    check_count("quant.hqq_iters", quant.hqq_iters, at_most=MAX_INT32, why="an int32 counter")
    if not (math.isfinite(quant.clip_min_shrink) and 0.0 < quant.clip_min_shrink <= 1.0):
        raise fail("quant.clip_min_shrink", quant.clip_min_shrink, "must be in (0, 1]")
    if not (math.isfinite(quant.damp) and 0.0 <= quant.damp <= 1.0):
        raise fail("quant.damp", quant.damp, "must be in [0, 1]")
    for pattern, bits in quant.keep_bits.items():
        if bits not in SUPPORTED_BIT_WIDTHS:
            key = (
                f"quant.keep_bits.{pattern}"
                if len(pattern) <= 80
                else f"quant.keep_bits[{shown(pattern)}]"
            )
            raise fail(key, bits, f"weight bits must be {BIT_WIDTHS_TEXT}")
