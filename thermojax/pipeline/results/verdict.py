"""Violation patterns, the smoothness band, the quality band and the verdict of a run.

The patterns and the smoothness bands are ArrowQuant V2's (its "Common Violation Patterns" and
"Interpretation Guidelines"), restated for this project's conventions: boundary i sits between time groups i
and i + 1, and time group 0 holds the least noisy timesteps (t = 0), which the sampler runs last.
The band limits come from :class:`~thermojax.pipeline.settings.InterpretationConfig`, because ArrowQuant V2
derived them for another model (Dream 7B at INT2).

The smoothness band only says how much the activation parameters jump between time groups; on the
shipped models it stays "excellent" while INT2 destroys the digits. The quality band
(:func:`quality_band`) compares the quantized samples with fp32's, and the verdict is the quality
band (:func:`interpret`).

Example:
    >>> from thermojax.pipeline.settings import InterpretationConfig
    >>> interpret(smoothness_score=0.7, violations=(), boundary_scores=(0.7, 0.8),
    ...           cosine_similarity=0.9, bands=InterpretationConfig()).band
    'good'
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from thermojax.core.markov import HIGH_JUMP, SEVERITY_LABELS
from thermojax.pipeline.quality.grading import Check
from thermojax.pipeline.quality.kind import SampleQuality, quality_kind
from thermojax.pipeline.results.schema import (
    ChainSection,
    Interpretation,
    Pattern,
    Violation,
    ViolationAnalysis,
)
from thermojax.pipeline.settings import InterpretationConfig

__all__ = [
    "MEASURABLE_BOUNDARY_SHARE",
    "QUALITY_BANDS",
    "QualityBand",
    "analyze_violations",
    "boundary_regions",
    "chain_reading",
    "detect_patterns",
    "interpret",
    "quality_band",
    "severity_label",
]

_SEVERITIES = SEVERITY_LABELS[1:]


def severity_label(severity: int) -> str:
    """``"low"``, ``"medium"`` or ``"high"`` for the core's severity 1, 2, 3 (0 is ``"none"``)."""
    if not 0 <= severity < len(SEVERITY_LABELS):
        raise ValueError(f"severity={severity} is not one of 0..{len(SEVERITY_LABELS) - 1}")
    return SEVERITY_LABELS[severity]


def analyze_violations(
    violations: Sequence[Violation], *, layer_names: Sequence[str], num_boundaries: int
) -> ViolationAnalysis:
    """Severity distribution, boundaries and layers involved, and scale-jump statistics."""
    per_boundary = [0] * num_boundaries
    for v in violations:
        if not 0 <= v.boundary_idx < num_boundaries:
            raise ValueError(f"boundary_idx={v.boundary_idx} outside 0..{num_boundaries - 1}")
        per_boundary[v.boundary_idx] += 1
    per_layer = {name: 0 for name in layer_names}
    for v in violations:
        if v.layer not in per_layer:
            raise ValueError(f"violation names layer {v.layer!r}, not one of {list(layer_names)}")
        per_layer[v.layer] += 1
    most = max(per_layer.values(), default=0)
    severities = Counter(v.severity for v in violations)
    jumps = [v.scale_jump for v in violations]
    return ViolationAnalysis(
        severity_distribution={label: severities.get(label, 0) for label in _SEVERITIES},
        boundaries_involved=tuple(i for i, n in enumerate(per_boundary) if n),
        violations_per_boundary=tuple(per_boundary),
        violations_per_layer=per_layer,
        top_layers=tuple(name for name, n in per_layer.items() if n == most and most > 0),
        max_scale_jump=max(jumps, default=0.0),
        mean_scale_jump=math.fsum(jumps) / len(jumps) if jumps else 0.0,
    )


PHASE3_SAMPLES_HINT = "to try it, calibration.samples_per_step=1024"
"""Where Phase 3 is not advised: the setting under which it stopped hurting the shipped LM (it
overfits the default 64 values per step and clips the activations' heavy tails; README)."""


def boundary_regions(num_boundaries: int) -> tuple[range, range]:
    """The early and late boundaries: the first and last third (at least one each)."""
    width = max(1, math.ceil(num_boundaries / 3))
    return range(min(width, num_boundaries)), range(max(0, num_boundaries - width), num_boundaries)


def _at(boundaries: Sequence[int], time_groups: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"{i} (t={time_groups[i][1]})" for i in boundaries)


def detect_patterns(
    analysis: ViolationAnalysis,
    *,
    time_groups: Sequence[tuple[int, int]],
    bands: InterpretationConfig,
    advise_phase3: bool = True,
) -> tuple[Pattern, ...]:
    """ArrowQuant V2's common violation patterns found in ``analysis``, plus layer concentration.

    - early / late boundaries: more than half of the violations at the first / last third of the
      boundaries (needs at least 2 boundaries);
    - uniform spread: every boundary has violations and neither end holds a majority;
    - few but high severity: at most ``bands.good_max_violations`` violations, one of them high
      (scale jump above :data:`~thermojax.core.markov.HIGH_JUMP`);
    - layer concentration: a single layer carries the most violations, at least 2 and at least
      half of them (with 2 or more layers).

    ``advise_phase3=False`` (a kind of model where Phase 3 is measured to hurt,
    :attr:`QualityKind.advise_phase3 <thermojax.pipeline.quality.kind.QualityKind>`) keeps
    Phase 3 out of the actions.
    """
    per_boundary = analysis.violations_per_boundary
    num_boundaries = len(per_boundary)
    total = sum(per_boundary)
    patterns: list[Pattern] = []
    if total == 0:
        return ()
    early, late = boundary_regions(num_boundaries)
    early_count = sum(per_boundary[i] for i in early)
    late_count = sum(per_boundary[i] for i in late)
    clustered = False
    if num_boundaries >= 2 and 2 * early_count > total:
        clustered = True
        patterns.append(
            Pattern(
                id="early_boundaries",
                name="Early boundary violations",
                detail=f"{early_count} of {total} violations at boundaries {_at(early, time_groups)}",
                cause="Large parameter changes between the first time groups (small t: the least "
                "noisy steps, which the sampler runs last)",
                action="Phase 2 boundary smoothing with a larger window",
            )
        )
    if num_boundaries >= 2 and 2 * late_count > total:
        clustered = True
        patterns.append(
            Pattern(
                id="late_boundaries",
                name="Late boundary violations",
                detail=f"{late_count} of {total} violations at boundaries {_at(late, time_groups)}",
                cause="Large parameter changes between the last time groups (t near T: the "
                "noisiest steps, where the sampler starts)",
                action="Phase 2 boundary smoothing with sigmoid interpolation",
            )
        )
    if num_boundaries >= 2 and not clustered and all(per_boundary):
        patterns.append(
            Pattern(
                id="uniform_spread",
                name="Uniform distribution",
                detail=f"violations at all {num_boundaries} boundaries "
                f"({', '.join(str(n) for n in per_boundary)})",
                cause="Aggressive quantization without calibration: activation ranges drift "
                "across every boundary",
                action="Phase 3 transition optimization with Markov constraints"
                if advise_phase3
                else "More time groups (num_time_groups) or adaptive groups "
                "(time_groups.strategy=adaptive); Phase 3 is measured to hurt this kind of model "
                f"({PHASE3_SAMPLES_HINT})",
            )
        )
    high = analysis.severity_distribution.get("high", 0)
    if high and total <= bands.good_max_violations:
        patterns.append(
            Pattern(
                id="few_high_severity",
                name="High severity jumps",
                detail=f"only {total} violations, {high} with a scale jump above {HIGH_JUMP:.0%} "
                f"(max {analysis.max_scale_jump:.0%})",
                cause="Abrupt changes in the activation distribution at a few boundaries",
                action="Phase 2 cubic smoothing"
                + (" + Phase 3 optimization" if advise_phase3 else ""),
            )
        )
    per_layer = analysis.violations_per_layer
    if len(per_layer) >= 2 and len(analysis.top_layers) == 1:
        top = analysis.top_layers[0]
        if per_layer[top] >= 2 and 2 * per_layer[top] >= total:
            patterns.append(
                Pattern(
                    id="layer_concentration",
                    name="Violations concentrated in one layer",
                    detail=f"{top} carries {per_layer[top]} of {total} violations",
                    cause="This layer's input range changes faster over the timesteps than the "
                    "other layers'",
                    action="Smooth this layer's boundaries first (Phase 2) or give it finer "
                    "time groups",
                )
            )
    return tuple(patterns)


QUALITY_BANDS = ("good", "fair", "poor")
"""The quality bands, best first."""


class QualityBand(NamedTuple):
    """A run's quality band, the figure that set it, and one criterion per figure it has."""

    band: str | None
    detail: str
    checks: tuple[Check, ...]


def quality_band(quality: SampleQuality | None, *, bands: InterpretationConfig) -> QualityBand:
    """The quality band of a run's samples against fp32's, from the figures it has.

    Each figure is ``good`` within its ``good_*`` limit, ``poor`` past its ``poor_*`` limit and
    ``fair`` in between; the band is the worst of them, so one destroyed figure is enough for
    ``poor``. Which figures, and how each is graded, is the kind of sample's
    (:attr:`QualityKind.grade <thermojax.pipeline.quality.kind.QualityKind.grade>`): for images
    the Frechet ratio quantized / fp32, class coverage lost against fp32 and the final-sample
    MSE; for text the held-out perplexity bound ratio (without held-out text, the generative
    perplexity ratio, either way) and token agreement. Limits and their reasons:
    :class:`~thermojax.pipeline.settings.InterpretationConfig`. No quality, or none of the
    figures: no band (``None``).

    Example:
        >>> from thermojax.pipeline.settings import InterpretationConfig
        >>> from thermojax.pipeline.quality.image import ImageQuality
        >>> q = ImageQuality(drift_per_timestep=(0.1,), drift_per_group=(0.1,), drift_mean=0.1,
        ...                  final_mse=36.2, frechet_fp32=23.2, frechet_quantized=389.3,
        ...                  class_coverage_fp32=1.0, class_coverage_quantized=0.5)
        >>> quality_band(q, bands=InterpretationConfig())[:2]
        ('poor', 'Frechet 16.8x fp32')
    """
    if quality is None:
        return QualityBand(None, "", ())
    graded = quality_kind(quality.kind).grade(quality, bands)
    if not graded:
        return QualityBand(None, "", ())
    band, detail, _ = max(graded, key=lambda g: QUALITY_BANDS.index(g[0]))  # the first worst
    return QualityBand(band, detail, tuple(check for _, _, check in graded))


def _quality_actions(*, bit_width: int | None, act_bits: int | None) -> list[str]:
    """What to try when the samples are worse than fp32's."""
    actions = []
    if act_bits is not None and act_bits < 8:
        actions.append(
            f"Try more activation bits (act_bits=8): at A{act_bits} each group's ranges may be "
            "too coarse"
        )
    options = ["a better weight quantizer (quant.method=gptq, Hessian-aware; or mse_clip, hqq)"]
    if bit_width is None or bit_width < 8:
        more = f" (bit_width={min(8, 2 * bit_width)})" if bit_width else " (bit_width)"
        options.insert(0, f"more weight bits{more}")
    actions.append(
        f"For the weights, try {', '.join(options)}, or more bits for the most sensitive layers "
        "(often the output layer or lm_head: quant.keep_bits={output:8}; weights.rules for a "
        "checkpoint measured weight-only)"
    )
    return actions


def _smoothness_band(
    smoothness_score: float,
    violations: Sequence[Violation],
    boundary_scores: Sequence[float],
    cosine_similarity: float,
    bands: InterpretationConfig,
    advise_phase3: bool,
) -> tuple[str, tuple[Check, ...], list[str]]:
    """ArrowQuant V2's band of the smoothness score, its criteria on this run, and its actions."""
    count = len(violations)
    severities = Counter(v.severity for v in violations)
    high = severities.get("high", 0)
    scores = list(boundary_scores)
    below_poor = sum(s < bands.poor_boundary_score for s in scores)
    above_good = sum(s > bands.good_min_boundary_score for s in scores)
    cos = f"{cosine_similarity:.3f}"
    if smoothness_score < bands.poor_below:
        band = "poor"
        checks = (
            Check(
                f"{bands.good_max_violations + 1}+ violations, including high severity",
                f"{count} ({high} high)",
                count > bands.good_max_violations and high > 0,
            ),
            Check(
                f"multiple boundary scores < {bands.poor_boundary_score:.2f}",
                f"{below_poor} of {len(scores)}",
                below_poor >= 2,
            ),
            Check(
                f"cosine similarity < {bands.good_min_cosine:.2f}",
                cos,
                cosine_similarity < bands.good_min_cosine,
            ),
        )
        actions = [
            "Consider INT4 weights (bit_width=4)",
            "Increase the number of time groups (num_time_groups)",
        ]
        if advise_phase3:
            actions.append("Or skip to Phase 3 (transition optimization)")
    elif smoothness_score > bands.excellent_above:
        band = "excellent"
        checks = (
            Check(
                f"0-{bands.excellent_max_violations} violations, low severity only",
                f"{count} ({count - severities.get('low', 0)} above low)",
                count <= bands.excellent_max_violations and severities.get("low", 0) == count,
            ),
            Check(
                f"all boundary scores > {bands.excellent_min_boundary_score:.2f}",
                f"min {min(scores):.3f}" if scores else "no boundaries",
                all(s > bands.excellent_min_boundary_score for s in scores),
            ),
            Check(
                f"cosine similarity > {bands.excellent_min_cosine:.2f}",
                cos,
                cosine_similarity > bands.excellent_min_cosine,
            ),
        )
        actions = [
            "Smoothness is already good; Phase 2/3 can still improve accuracy"
            if advise_phase3
            else "Smoothness is already good; Phase 3 is not advised for this kind of model "
            f"(measured to hurt its samples; {PHASE3_SAMPLES_HINT})"
        ]
    else:
        band = "good"
        checks = (
            Check(
                f"0-{bands.good_max_violations} violations, mostly low/medium severity",
                f"{count} ({high} high)",
                count <= bands.good_max_violations and 2 * high <= count,
            ),
            Check(
                f"boundary scores mostly > {bands.good_min_boundary_score:.2f}",
                f"{above_good} of {len(scores)}",
                2 * above_good > len(scores) or not scores,
            ),
            Check(
                f"cosine similarity >= {bands.good_min_cosine:.2f}",
                cos,
                cosine_similarity >= bands.good_min_cosine,
            ),
        )
        actions = ["Proceed to Phase 2 (boundary smoothing) for further improvement"]
    return band, checks, actions


def interpret(
    *,
    smoothness_score: float,
    violations: Sequence[Violation],
    boundary_scores: Sequence[float],
    cosine_similarity: float,
    bands: InterpretationConfig,
    quality: SampleQuality | None = None,
    bit_width: int | None = None,
    act_bits: int | None = None,
) -> Interpretation:
    """The smoothness band with its criteria, the quality band, the verdict, and what to do.

    Smoothness band (ArrowQuant V2's): ``poor`` if score < ``poor_below``, ``excellent`` if
    score > ``excellent_above``, else ``good``. Quality band: :func:`quality_band`.

    The **verdict** is the quality band, whatever the smoothness band: the samples are what a
    user keeps, and on the shipped models smoothness scores 0.93-0.99 at every bit width while
    the samples go from fp32-like (W8) to destroyed (W2). Taking the worse of the two would call
    a run poor for jumps that do not show in its samples. Without sample quality (a weight-only
    run) there is no verdict, only the smoothness band. When smoothness is good or excellent but
    quality is not good, the summary says the error is in the quantized weights or ranges rather
    than in jumps between groups, and the actions point to bits and the weight quantizer, not to
    Phase 2/3. Phase 3 is left out of the actions for a kind of samples where it is measured to
    hurt (:attr:`QualityKind.advise_phase3 <thermojax.pipeline.quality.kind.QualityKind>`).
    """
    advise_phase3 = quality is None or quality_kind(quality.kind).advise_phase3
    band, checks, actions = _smoothness_band(
        smoothness_score, violations, boundary_scores, cosine_similarity, bands, advise_phase3
    )
    count = len(violations)
    cos = f"{cosine_similarity:.3f}"
    grade = quality_band(quality, bands=bands)
    smooth = band != "poor"
    if grade.band == "good":
        actions.insert(0, f"Sample quality is within the good limits of fp32's ({grade.detail})")
    elif grade.band is not None:
        fixes = _quality_actions(bit_width=bit_width, act_bits=act_bits)
        # Smooth parameters: Phase 2/3 only smooth the jumps, which are not the problem.
        actions = fixes if smooth else [*fixes, *actions]
    if band != "poor" and cosine_similarity < bands.good_min_cosine:
        actions.append(
            f"Weight cosine similarity {cos} is below {bands.good_min_cosine:.2f}: "
            "consider more weight bits (bit_width=4)"
        )
    smoothness = (
        f"Smoothness {smoothness_score:.3f} is in the {band} smoothness band (poor < "
        f"{bands.poor_below:.2f} <= good <= {bands.excellent_above:.2f} < excellent), with "
        f"{count} violation{'' if count == 1 else 's'}."
    )
    if grade.band is None:
        summary = (
            f"{smoothness} No sample quality was measured, so there is no verdict on the model."
        )
    else:
        summary = f"Sample quality is {grade.band} against fp32 ({grade.detail}). {smoothness}"
        if grade.band != "good":
            summary += (
                f" The smoothness band is {band}, so the error is in the quantized weights or "
                "activation ranges rather than in jumps between groups."
                if smooth
                else " Both the quantized weights or ranges and the jumps between groups may "
                "contribute."
            )
    return Interpretation(
        band=band,
        summary=summary,
        poor_below=bands.poor_below,
        excellent_above=bands.excellent_above,
        checks=checks,
        actions=tuple(actions),
        quality_band=grade.band,
        quality_detail=grade.detail,
        quality_checks=grade.checks,
        verdict=grade.band,
    )


MEASURABLE_BOUNDARY_SHARE = 0.05
"""A boundary's jump costs something measurable when removing it changes the chain's final error
by more than this share of the total (smaller changes are within the budget's sampling noise on
the shipped digits, whose 16-chain totals move by a few percent between seeds)."""

GROUPS_NAMED = 3
"""The most time groups the chain reading names as carrying most of the error."""


def _share(value: float, whole: float) -> str:
    return f"{value / whole:.0%}"


def chain_reading(chain: ChainSection) -> tuple[str, tuple[str, ...]]:
    """What the chain's error budget says, as a sentence for the summary and next steps.

    - The time groups carrying most of the error: the fewest groups (at most
      :data:`GROUPS_NAMED`), largest first, whose ``per_group`` errors reach half of
      ``sum(per_group)``, each with its share of that sum.
    - The boundaries whose cost is measurable: ``|per_boundary[b]| >``
      :data:`MEASURABLE_BOUNDARY_SHARE` of ``total``; a negative one is a jump that raises the
      final error (smoothing it should pay), a positive one a jump that lowers it (its groups
      need their own parameters). None of them: the jumps cost nothing measurable.

    Example:
        >>> chain = ChainSection(total=0.2, per_group=(0.02, 0.15, 0.03),
        ...     per_boundary=(-0.03, 0.001), additivity=1.0, edges=(0, 300, 600, 1000),
        ...     steps_per_group=(15, 15, 20), measure="mse", num_samples=16)
        >>> print(chain_reading(chain)[0])  # doctest: +NORMALIZE_WHITESPACE
        The chain's error budget puts most of the final error in time group g1 (t in [300,
        600)): 75% of the groups' summed error. The jump at b0 (t=300: 15%) raises the final
        error measurably (by more than 5% of the total): without it the final error is lower.
    """
    per_group = [float(v) for v in chain.per_group]
    whole = math.fsum(v for v in per_group if math.isfinite(v))
    total = float(chain.total)
    groups = [
        f"g{g} (t in [{chain.edges[g]}, {chain.edges[g + 1]}))" for g in range(len(per_group))
    ]
    if not whole > 0 or not total > 0:
        return (
            "The chain's error budget measures no error: the quantized chain ends where fp32's does.",
            (),
        )
    if len(per_group) == 1:
        return "The chain's error budget has one time group, so no boundary to cost.", ()
    order = sorted(range(len(per_group)), key=lambda g: -per_group[g])
    named: list[int] = []
    for g in order[:GROUPS_NAMED]:
        named.append(g)
        if math.fsum(per_group[n] for n in named) >= whole / 2:
            break
    carried = ", ".join(f"{groups[g]}: {_share(per_group[g], whole)}" for g in named)
    if len(named) == 1:
        text = (
            f"The chain's error budget puts most of the final error in time group {groups[named[0]]}"
            f": {_share(per_group[named[0]], whole)} of the groups' summed error."
        )
    else:
        text = (
            f"The chain's error budget puts most of the final error in time groups {carried} of "
            "the groups' summed error."
        )
    limit = MEASURABLE_BOUNDARY_SHARE * total
    costly = [
        (b, float(v))
        for b, v in enumerate(chain.per_boundary)
        if math.isfinite(v) and abs(v) > limit
    ]
    where = ", ".join(groups[g] for g in named)
    focus = (
        f"Most of the final error enters at the steps of {where}: precision spent there (finer "
        "time groups over those steps, more activation bits) pays most"
    )
    actions = [focus]
    if not costly:
        text += (
            f" No boundary's jump changes the final error by more than "
            f"{MEASURABLE_BOUNDARY_SHARE:.0%} of the total: the jumps between time groups cost "
            "nothing measurable."
        )
        actions.append(
            "Boundary smoothing (Phase 2) has little to gain: no jump between time groups "
            "costs a measurable share of the final error"
        )
    else:
        harmful = [(b, -cost) for b, cost in costly if cost < 0]
        helpful = [(b, cost) for b, cost in costly if cost > 0]
        over = f"by more than {MEASURABLE_BOUNDARY_SHARE:.0%} of the total"
        for found, verb, consequence in (
            (harmful, "raise", "without {it} the final error is lower"),
            (helpful, "lower", "{its} groups need their own parameters"),
        ):
            if not found:
                continue
            one = len(found) == 1
            at = ", ".join(f"b{b} (t={chain.edges[b + 1]}: {_share(c, total)})" for b, c in found)
            text += (
                f" The jump{'' if one else 's'} at {at} {verb}{'s' if one else ''} the final "
                f"error measurably ({over}): "
                + consequence.format(it="it" if one else "them", its="its" if one else "their")
                + "."
            )
        if harmful:
            names = ", ".join(f"b{b}" for b, _ in harmful)
            actions.append(
                f"Smooth boundar{'y' if len(harmful) == 1 else 'ies'} {names} (Phase 2 boundary "
                "smoothing): the chain budget measures the jump there raising the final error"
            )
    return text, tuple(actions)
