"""How a run is judged and tracked: ``interpretation.*`` (the smoothness and quality bands) and
``wandb.*``."""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from thermojax.pipeline.settings.checks import fail

__all__ = [
    "WANDB_MODES",
    "InterpretationConfig",
    "WandbConfig",
    "validate_interpretation",
    "validate_quality_limits",
]

WANDB_MODES = ("offline", "online", "disabled")

# OmegaConf resolves the annotations itself; keep Optional (not `X | None`) for its type checker.


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases tracking: ``offline`` (default, no network), ``online`` or ``disabled``."""

    mode: str = "offline"
    project: str = "thermojax"
    group: Optional[str] = None  # noqa: UP045


@dataclasses.dataclass(frozen=True)
class InterpretationConfig:
    """The smoothness band and the quality band of a run, and their limits.

    **Smoothness band** (ArrowQuant V2's values, which it derived for Dream 7B at INT2): ``poor``
    below ``poor_below``, ``excellent`` above ``excellent_above``, ``good`` in between; the
    ``*_violations``, ``*_boundary_score`` and ``*_cosine`` fields are its criteria. It says how
    much the activation parameters jump between time groups, not how good the samples are.

    **Quality band**: the quantized samples against the fp32 samples of the same noise. Each
    figure the run has is ``good`` within its ``good_*`` limit, ``poor`` past its ``poor_*``
    limit, ``fair`` in between; the band is the worst of them
    (:func:`~thermojax.pipeline.results.verdict.quality_band`). The defaults, set on the shipped models
    (README's tables: 64 or 256 digits; 16 LM samples, 3 seeds):

    - ``*_frechet_ratio``: Frechet distance quantized / fp32 (digits DDPM). W8 scores 0.93-0.98x,
      W4 3.6x (64 samples) to 7.2x (256), W2 17-36x: 3x lies between W8 and W4 with room for
      the seed spread (about 25% at 64 samples). Fewer samples pull the ratio towards 1 (both
      distances carry the same small-sample floor).
    - ``*_coverage_drop``: fp32's class coverage minus the quantized one (fractions of the 10
      digits). One lost class (0.1) is within the seed spread at 64 samples; W2 loses 0.4-0.6.
    - ``*_final_mse``: mean squared difference of the final samples from their fp32 twins, pixel
      units (0..16). W8 0.05, W4 7.4-8.1, W2 36, which is what two unrelated real digits score
      (37.6): 18 is half of that.
    - ``*_perplexity_ratio``: the masked-diffusion LM's held-out perplexity bound quantized /
      fp32; without held-out text the generative perplexity ratio, counted either way (samples
      that fp32 finds much more predictable are usually more repetitive, not better). W8A8 and
      W4A8 stay within 1.2% (7.21 vs 7.15), W2A8 costs 17%, every A4 row 37% or more.
    - ``*_token_agreement``: fraction of final tokens equal to fp32's. W8A8 0.84-0.88, W4A8
      0.76-0.82, W2A8 0.45-0.52, W2A4 (held-out bound +85%) 0.20-0.28.
    """

    poor_below: float = 0.65
    excellent_above: float = 0.78
    good_max_violations: int = 3
    excellent_max_violations: int = 1
    excellent_min_boundary_score: float = 0.70
    good_min_boundary_score: float = 0.60
    poor_boundary_score: float = 0.50
    excellent_min_cosine: float = 0.75
    good_min_cosine: float = 0.70
    good_max_frechet_ratio: float = 1.5
    poor_above_frechet_ratio: float = 3.0
    good_max_coverage_drop: float = 0.1
    poor_above_coverage_drop: float = 0.3
    good_max_final_mse: float = 2.0
    poor_above_final_mse: float = 18.0
    good_max_perplexity_ratio: float = 1.05
    poor_above_perplexity_ratio: float = 1.25
    good_min_token_agreement: float = 0.7
    poor_below_token_agreement: float = 0.3


def validate_interpretation(bands: InterpretationConfig) -> None:
    """``interpretation.*``: the smoothness band's criteria, then the quality band's limits."""
    for name in ("poor_below", "excellent_above") + tuple(
        f.name for f in dataclasses.fields(bands) if f.name.endswith(("_score", "_cosine"))
    ):
        value = getattr(bands, name)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise fail(f"interpretation.{name}", value, "must be within [0, 1]")
    if bands.poor_below > bands.excellent_above:
        raise fail(
            "interpretation.poor_below",
            bands.poor_below,
            f"must not exceed interpretation.excellent_above={bands.excellent_above!r}",
        )
    for name in ("good_max_violations", "excellent_max_violations"):
        if getattr(bands, name) < 0:
            raise fail(f"interpretation.{name}", getattr(bands, name), "must be >= 0")
    validate_quality_limits(bands)


def validate_quality_limits(bands: InterpretationConfig) -> None:
    """The quality band's limits: in range, each ``good_*`` on the good side of its ``poor_*``."""
    pairs = (  # good limit, poor limit, lowest and highest allowed, higher is better
        ("good_max_frechet_ratio", "poor_above_frechet_ratio", 1.0, math.inf, False),
        ("good_max_coverage_drop", "poor_above_coverage_drop", 0.0, 1.0, False),
        ("good_max_final_mse", "poor_above_final_mse", 0.0, math.inf, False),
        ("good_max_perplexity_ratio", "poor_above_perplexity_ratio", 1.0, math.inf, False),
        ("good_min_token_agreement", "poor_below_token_agreement", 0.0, 1.0, True),
    )
    for good, poor, lo, hi, higher_is_better in pairs:
        for name in (good, poor):
            value = getattr(bands, name)
            if not (math.isfinite(value) and lo <= value <= hi):
                allowed = f">= {lo:g}" if hi == math.inf else f"within [{lo:g}, {hi:g}]"
                raise fail(f"interpretation.{name}", value, f"must be {allowed}")
        good_value, poor_value = getattr(bands, good), getattr(bands, poor)
        if good_value < poor_value if higher_is_better else good_value > poor_value:
            relation = "be below" if higher_is_better else "exceed"
            raise fail(
                f"interpretation.{good}",
                good_value,
                f"must not {relation} interpretation.{poor}={poor_value!r}",
            )
