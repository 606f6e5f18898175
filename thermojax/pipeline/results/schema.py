"""The one versioned result schema of a baseline run, and its atomic JSON read/write.

``baseline_metrics.json`` is ``Result.to_dict()``; the HTML report, the W&B tracker, the sweep
comparison and the tests all read a ``Result`` through :func:`read_result`, so the schema lives in
exactly one place: the dataclasses below. Model-level figures are defined from ``layers``:

- ``smoothness_score`` = mean of the layers' ``smoothness_score``;
- ``boundary_scores[i]`` = mean over layers of ``layers[*].boundary_scores[i]``;
- ``violations`` = every (layer, boundary) whose scale jump exceeds ``smoothness_threshold``;
- ``min/max/mean/std_boundary_score`` are over ``boundary_scores`` (population std).

Later phases add optional sections (``None`` when absent, omitted from the JSON), so a file of an
older schema version still reads. Schema 2: the top-level metrics describe the parameters
the quantized sampler actually used; with smoothing, optimization or adaptive groups on, those are
the enhanced ones (a per-timestep schedule is measured per boundary window, see
:mod:`thermojax.core.schedule_metrics`), ``baseline`` then holds the uniform, unsmoothed parameters'
metrics and quality from the same calibration and noise, and ``enhancement`` says what was done.
``phases`` is the phase table of ``experiment=phases``. Version 1 files still read. Schema 5
also gives ``interpretation`` a quality band and a verdict beside the smoothness band.

Example:
    >>> result = read_result("outputs/run/baseline_metrics.json")  # doctest: +SKIP
    >>> result.smoothness_score, result.interpretation.band  # doctest: +SKIP
    (0.71, 'good')
    >>> result.interpretation.verdict, result.interpretation.quality_detail  # doctest: +SKIP
    ('poor', 'Frechet 16.8x fp32')
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thermojax.core.markov import SEVERITY_LABELS
from thermojax.files import atomic_write_text
from thermojax.pipeline.results.codec import dataclass_from_json, from_json, to_json
from thermojax.pipeline.weights.section import BlockRow, TensorRow, WeightsSection

__all__ = [
    "COMPARED",
    "COMPARED_QUALITY",
    "FIGURE_LABELS",
    "FP32_REFERENCE",
    "PHASE_SPREADS",
    "QUALITY_FIGURES",
    "RUN_MODES",
    "SCHEMA_VERSION",
    "SEVERITY_LABELS",
    "TEXT_QUALITY_FIGURES",
    "BaselineSection",
    "BlockRow",
    "Check",
    "EnhancementSection",
    "FigureLabel",
    "Interpretation",
    "LayerResult",
    "MetricsView",
    "OptimizationSection",
    "Pattern",
    "PhaseRow",
    "PhasesSection",
    "QualitySection",
    "Result",
    "SamplePreview",
    "Spread",
    "TensorRow",
    "Violation",
    "ViolationAnalysis",
    "WeightsSection",
    "float32_list",
    "phase_spreads",
    "read_result",
    "write_result",
]

SCHEMA_VERSION = 6
"""Bumped whenever a key changes meaning or a required key is added (2: the enhancement,
baseline and phase sections; 3: ``mode`` and ``weights``, and weight-only runs; 4: the quality
section of a masked-diffusion LM, whose image figures are ``null``; 5: the phase table's
``family`` and its text figures, image figures ``null`` for a masked-diffusion LM; 6:
``sampler``, the sampler and steps that sampled and calibrated, with ``time_groups`` on the
model's timesteps and ``layers[].activation_min/max`` over the calibration steps)."""

RUN_MODES = ("diffusion", "weight-only")
"""``Result.mode``: a model thermojax runs, or a checkpoint measured weight-only."""

# SEVERITY_LABELS, the JSON's ``severity`` strings, are the core's (thermojax.core.markov).


@dataclasses.dataclass(frozen=True)
class Violation:
    """One (layer, boundary) whose activation scale jump exceeds the smoothness threshold.

    Attributes:
        layer: layer name.
        boundary_idx: boundary i, between time groups i and i + 1.
        scale_jump: ``|s[i+1] - s[i]| / s[i]``.
        zero_point_jump: ``|z[i+1] - z[i]| / qmax``.
        severity: ``"low"``, ``"medium"`` or ``"high"``: the core's severity level
            (:data:`~thermojax.core.markov.SEVERITY_LABELS`; medium above ``MEDIUM_JUMP``, high
            above ``HIGH_JUMP``).
    """

    layer: str
    boundary_idx: int
    scale_jump: float
    zero_point_jump: float
    severity: str


@dataclasses.dataclass(frozen=True)
class LayerResult:
    """Time-group parameters and smoothness of one quantized layer's input activations.

    Attributes:
        name: layer name.
        scales, zero_points: activation scale and zero point of each time group ``[G]``.
        scale_jumps, zero_point_jumps, boundary_scores: one per boundary ``[G - 1]``.
        smoothness_score: the layer's Markov smoothness score in [0, 1].
        cosine_similarity: cosine between the fp32 and the dequantized weight.
        activation_min, activation_max: observed input range at each timestep ``[T]``.
    """

    name: str
    scales: tuple[float, ...]
    zero_points: tuple[float, ...]
    scale_jumps: tuple[float, ...]
    zero_point_jumps: tuple[float, ...]
    boundary_scores: tuple[float, ...]
    smoothness_score: float
    cosine_similarity: float
    activation_min: tuple[float, ...]
    activation_max: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class ViolationAnalysis:
    """Statistics of the violations that the pattern detection reads.

    Attributes:
        severity_distribution: count per label ``low``, ``medium``, ``high``.
        boundaries_involved: boundary indices with at least one violation, ascending.
        violations_per_boundary: count per boundary ``[G - 1]``.
        violations_per_layer: count per layer name (every layer, zeros included).
        top_layers: layers carrying the most violations (ties all listed; empty if none).
        max_scale_jump, mean_scale_jump: over the violations (0.0 when there are none).
    """

    severity_distribution: dict[str, int]
    boundaries_involved: tuple[int, ...]
    violations_per_boundary: tuple[int, ...]
    violations_per_layer: dict[str, int]
    top_layers: tuple[str, ...]
    max_scale_jump: float
    mean_scale_jump: float


@dataclasses.dataclass(frozen=True)
class Pattern:
    """A recognised violation pattern with its likely cause and recommended action (ArrowQuant V2's)."""

    id: str
    name: str
    detail: str
    cause: str
    action: str


@dataclasses.dataclass(frozen=True)
class Check:
    """One criterion of the interpretation band, with the measured value and whether it holds."""

    criterion: str
    value: str
    met: bool


@dataclasses.dataclass(frozen=True)
class Interpretation:
    """The smoothness band, the quality band, the verdict, and what to do next.

    See :func:`thermojax.pipeline.results.verdict.interpret` for the rules. The quality keys came in
    schema 5; a file without them reads with no quality band and no verdict.

    Attributes:
        band: the **smoothness** band, ``"poor"``, ``"good"`` or ``"excellent"``: how much the
            activation parameters jump between time groups, not a verdict on the model.
        summary: one or two sentences for people.
        poor_below, excellent_above: the smoothness band limits used (from the config).
        checks: the smoothness band's criteria (ArrowQuant V2's), evaluated on this run.
        actions: recommended next steps.
        quality_band: ``"good"``, ``"fair"`` or ``"poor"``: the quantized samples against fp32's;
            ``None`` without sample quality (a weight-only run).
        quality_detail: the figure that set the quality band, e.g. ``"Frechet 16.8x fp32"``.
        quality_checks: one criterion per quality figure this run has; ``met``: within its
            ``good`` limit.
        verdict: the headline: the quality band; ``None`` without one (then there is no verdict
            on the model, only the smoothness band).
    """

    band: str
    summary: str
    poor_below: float
    excellent_above: float
    checks: tuple[Check, ...]
    actions: tuple[str, ...]
    quality_band: str | None = None
    quality_detail: str = ""
    quality_checks: tuple[Check, ...] = ()
    verdict: str | None = None


@dataclasses.dataclass(frozen=True)
class QualitySection:
    """Quality of quantized sampling against fp32 sampling from the same noise.

    Attributes:
        drift_per_timestep: at each timestep ``[T]``, how far the quantized sampler's state is
            from the fp32 one's: the mean squared difference of x_t (DDPM), the fraction of
            positions whose token differs (masked-diffusion LM).
        drift_per_group: the same, averaged within each time group ``[G]``.
        drift_mean: its mean.
        final_mse: mean squared difference of the final samples (pixels); ``None`` for text.
        frechet_fp32, frechet_quantized: Frechet distance to the real data (classifier
            features); ``None`` for a model without an image reference.
        class_coverage_fp32, class_coverage_quantized: fraction of classes predicted
            confidently; ``None`` likewise.
        extra: any further figures the evaluator reports (kept as given): for a
            masked-diffusion LM ``token_agreement``, ``generative_perplexity_fp32`` /
            ``_quantized``, ``heldout_perplexity_fp32`` / ``_quantized`` (per token),
            ``sample_text_fp32`` / ``_quantized`` and ``kind: "text"``.
    """

    drift_per_timestep: tuple[float, ...]
    drift_per_group: tuple[float, ...]
    drift_mean: float
    final_mse: float | None = None
    frechet_fp32: float | None = None
    frechet_quantized: float | None = None
    class_coverage_fp32: float | None = None
    class_coverage_quantized: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_text(self) -> bool:
        """Whether these are a masked-diffusion LM's figures (token agreement, perplexities)."""
        return self.extra.get("kind") == "text"

    @property
    def family(self) -> str:
        """``text`` for a masked-diffusion LM's figures, ``image`` otherwise (:data:`COMPARED`)."""
        return "text" if self.is_text else "image"

    def figure(self, name: str) -> float | None:
        """One scalar figure by name, named or in ``extra``; ``None`` where this run has none."""
        value = getattr(self, name) if name in QUALITY_FIGURES else self.extra.get(name)
        return float(value) if isinstance(value, int | float) else None

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON form: the named figures plus the ``extra`` ones at the same level."""
        named = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"
        }
        return {**self.extra, **named}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QualitySection:
        """Inverse of :meth:`to_dict`: unnamed keys go back into ``extra``."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        named = {
            k: from_json(typing.get_type_hints(cls)[k], data[k], f"quality.{k}")
            for k in names
            if k in data
        }
        required = {"drift_per_timestep", "drift_per_group", "drift_mean"}
        missing = sorted(required - named.keys())
        if missing:
            raise ValueError(f"quality section lacks keys {missing}")
        return cls(**named, extra={k: v for k, v in data.items() if k not in names})

    def figures(self) -> dict[str, float]:
        """Every scalar figure this run has (:data:`QUALITY_FIGURES` and
        :data:`TEXT_QUALITY_FIGURES` that are not ``None``)."""
        values = {name: getattr(self, name) for name in QUALITY_FIGURES}
        values |= {name: self.extra.get(name) for name in TEXT_QUALITY_FIGURES}
        return {k: float(v) for k, v in values.items() if isinstance(v, int | float)}


QUALITY_FIGURES = tuple(
    f.name for f in dataclasses.fields(QualitySection) if f.type in ("float", float, "float | None")
)
"""The scalar figures of :class:`QualitySection` (fp32 and quantized), for summaries."""

TEXT_QUALITY_FIGURES = (
    "token_agreement",
    "generative_perplexity_fp32",
    "generative_perplexity_quantized",
    "heldout_perplexity_fp32",
    "heldout_perplexity_quantized",
)
"""A masked-diffusion LM's scalar quality figures (in :attr:`QualitySection.extra`)."""

COMPARED = {
    "image": ("drift_mean", "final_mse", "frechet_quantized", "class_coverage_quantized"),
    "text": (
        "drift_mean",
        "token_agreement",
        "generative_perplexity_quantized",
        "heldout_perplexity_quantized",
    ),
}
"""Per model family, the quantized-sampling figures set beside a baseline's: enhanced against
baseline (report, W&B) and each phase variant against the baseline of the same seed (paired
deltas). ``image``: the digits DDPM; ``text``: a masked-diffusion LM."""

COMPARED_QUALITY = COMPARED["image"]
"""The image family's :data:`COMPARED` figures (the DDPM's)."""

FP32_REFERENCE = {
    "image": ("frechet_fp32", "class_coverage_fp32"),
    "text": ("generative_perplexity_fp32", "heldout_perplexity_fp32"),
}
"""Per family, the fp32 figures a phase table gives as its reference (mean and std over seeds)."""


@dataclasses.dataclass(frozen=True)
class FigureLabel:
    """How a quality figure is shown: its label, whether higher is better, its digits after the
    point (beside a baseline; ``table_digits`` in the phase table's mean +- std cells), and
    whether it is a fraction shown as a percentage."""

    label: str
    higher_is_better: bool
    digits: int
    table_digits: int
    percent: bool = False


FIGURE_LABELS = {
    "drift_mean": FigureLabel("trajectory drift (mean)", False, 5, 4),
    "final_mse": FigureLabel("final-sample MSE", False, 4, 3),
    "frechet_quantized": FigureLabel("Frechet distance", False, 3, 2),
    "frechet_fp32": FigureLabel("Frechet distance", False, 3, 2),
    "class_coverage_quantized": FigureLabel("class coverage", True, 2, 0, percent=True),
    "class_coverage_fp32": FigureLabel("class coverage", True, 2, 0, percent=True),
    "token_agreement": FigureLabel("token agreement", True, 4, 1, percent=True),
    "generative_perplexity_quantized": FigureLabel("generative perplexity", False, 3, 2),
    "generative_perplexity_fp32": FigureLabel("generative perplexity", False, 3, 2),
    "heldout_perplexity_quantized": FigureLabel("held-out perplexity bound", False, 3, 2),
    "heldout_perplexity_fp32": FigureLabel("held-out perplexity bound", False, 3, 2),
}
"""Display of every :data:`COMPARED` and :data:`FP32_REFERENCE` figure (report, run log)."""


@dataclasses.dataclass(frozen=True)
class SamplePreview:
    """A few fp32 and quantized samples (same noise), pixel values 0..16, for the report's grids."""

    fp32: tuple[tuple[tuple[float, ...], ...], ...]
    quantized: tuple[tuple[tuple[float, ...], ...], ...]


@dataclasses.dataclass(frozen=True)
class MetricsView:
    """Markov metrics of one set of parameters, summarized like the top-level figures.

    Attributes:
        smoothness_score: mean over layers.
        violation_count: (layer, boundary) pairs whose scale jump exceeds the threshold.
        boundary_scores: per boundary, mean over layers ``[G - 1]``.
        scale_jumps: per layer and boundary ``[L][G - 1]``.
    """

    smoothness_score: float | None
    violation_count: int | None
    boundary_scores: tuple[float, ...]
    scale_jumps: tuple[tuple[float, ...], ...]


@dataclasses.dataclass(frozen=True)
class BaselineSection:
    """The baseline (uniform groups, unsmoothed) of an enhanced run: same calibration, same noise.

    Attributes:
        time_groups: the uniform ``[start, end)`` groups.
        scales, zero_points: ``[L][G]`` baseline parameters.
        metrics: their Markov metrics.
        quality: quantized sampling with them.
    """

    time_groups: tuple[tuple[int, int], ...]
    scales: tuple[tuple[float, ...], ...]
    zero_points: tuple[tuple[float, ...], ...]
    metrics: MetricsView
    quality: QualitySection


@dataclasses.dataclass(frozen=True)
class OptimizationSection:
    """Phase 3 outcome, per layer (``[L]``; ``loss_history[l]`` has ``iterations[l]`` entries).

    Attributes:
        target: ``groups`` (``S = G``) or ``timesteps`` (the smoothed schedule, ``S = T``).
        settings: the ``thermo.optimization`` values used.
    """

    target: str
    settings: dict[str, Any]
    iterations: tuple[int, ...]
    converged: tuple[bool, ...]
    initial_loss: tuple[float, ...]
    final_loss: tuple[float, ...]
    quant_error_before: tuple[float, ...]
    quant_error_after: tuple[float, ...]
    markov_penalty_before: tuple[float, ...]
    markov_penalty_after: tuple[float, ...]
    loss_history: tuple[tuple[float, ...], ...]


@dataclasses.dataclass(frozen=True)
class EnhancementSection:
    """What an enhanced run did to the parameters, and the views the top level does not show.

    The top-level metrics are the headline view (per boundary window for a schedule).

    Attributes:
        description: one line for people.
        strategy, lam: time grouping (``lam`` is the YAML ``time_groups.lambda``).
        smoothing: the ``thermo.smoothing`` values used, or ``None``.
        per_timestep: the parameters are a per-timestep schedule ``[L][T]``.
        schedule_scales, schedule_zero_points: that schedule (``None`` for group parameters).
        group_view: metrics of each group's mean parameters (ArrowQuant V2's group-level view).
        max_step_scale_jump: per layer, the largest consecutive-timestep scale jump.
        optimization: Phase 3 outcome, or ``None``.
        parameter_time_s: wall time of computing the enhanced parameters.
    """

    description: str
    strategy: str
    lam: float
    smoothing: dict[str, Any] | None
    per_timestep: bool
    schedule_scales: tuple[tuple[float, ...], ...] | None
    schedule_zero_points: tuple[tuple[float, ...], ...] | None
    group_view: MetricsView
    max_step_scale_jump: tuple[float, ...]
    optimization: OptimizationSection | None
    parameter_time_s: float


@dataclasses.dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation (``ddof=1``) over the seeds."""

    mean: float
    std: float


def phase_spreads(family: str) -> tuple[str, ...]:
    """The :class:`PhaseRow` figures that are a :class:`Spread` over seeds for a model family
    (:data:`COMPARED`): one list for the phase table, its CSV and its W&B table."""
    return ("smoothness_score", "violation_count", *COMPARED[family], "sampling_time_s")


PHASE_SPREADS = phase_spreads("image")
"""The DDPM's :func:`phase_spreads`."""


@dataclasses.dataclass(frozen=True)
class PhaseRow:
    """One variant of the phase table (figures over the seeds; see :func:`thermojax.pipeline.run.phases.phase_table`).

    ``drift_per_group`` is on the uniform groups (comparable across variants);
    ``drift_per_timestep`` is the mean over seeds ``[T]``. ``param_time_s`` is the warm parameter
    computation, ``param_extra_s`` the same minus the baseline's, ``sampling_ratio`` the mean
    quantized sampling time over the baseline's. ``paired_delta`` holds, per quality figure, the
    mean and std over seeds of (variant - baseline with the same seed's noise). The quality
    figures are the model family's (:data:`COMPARED`); the other family's are ``None``, and so
    is a figure the run has none of (held-out perplexity without held-out text).
    """

    variant: str
    phase: str
    description: str
    edges: tuple[int, ...]
    num_seeds: int
    smoothness_score: Spread
    violation_count: Spread
    drift_mean: Spread
    sampling_time_s: Spread
    drift_per_group: tuple[Spread, ...]
    drift_per_timestep: tuple[float, ...]
    paired_delta: dict[str, Spread]
    param_time_s: float
    param_compile_s: float
    param_extra_s: float
    sampling_ratio: float
    final_mse: Spread | None = None
    frechet_quantized: Spread | None = None
    class_coverage_quantized: Spread | None = None
    token_agreement: Spread | None = None
    generative_perplexity_quantized: Spread | None = None
    heldout_perplexity_quantized: Spread | None = None


@dataclasses.dataclass(frozen=True)
class PhasesSection:
    """The phase table (``phases.json``): every variant on one calibration, over several seeds.

    ``family`` is the model's (:data:`COMPARED`); ``fp32`` holds its :data:`FP32_REFERENCE`
    figures over the seeds (those the run has)."""

    seeds: tuple[int, ...]
    num_samples: int
    bit_width: int
    act_bits: int
    num_time_groups: int
    smoothness_threshold: float
    drift_group_edges: tuple[int, ...]
    rows: tuple[PhaseRow, ...]
    total_time_s: float
    family: str = "image"
    fp32: dict[str, Spread] = dataclasses.field(default_factory=dict)

    def spreads(self) -> tuple[str, ...]:
        """The :func:`phase_spreads` of this table's family that its rows have (not ``None``)."""
        first = self.rows[0] if self.rows else None
        return tuple(
            name
            for name in phase_spreads(self.family)
            if first is not None and getattr(first, name) is not None
        )

    def compared(self) -> tuple[str, ...]:
        """The quality figures with paired deltas (:data:`COMPARED` that the rows have)."""
        return tuple(name for name in COMPARED[self.family] if name in self.spreads())

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``phases.json`` and the ``phases`` key of ``baseline_metrics.json``)."""
        return {f.name: to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhasesSection:
        """Inverse of :meth:`to_dict`, checking keys and types; a table written before schema 5
        (``fp32_frechet`` and ``fp32_class_coverage`` at the top) reads as the image family's."""
        data = dict(data)
        legacy = {"fp32_frechet": "frechet_fp32", "fp32_class_coverage": "class_coverage_fp32"}
        if any(key in data for key in legacy):
            data["fp32"] = {new: data.pop(old) for old, new in legacy.items() if old in data}
        return dataclass_from_json(cls, data, "phases")


@dataclasses.dataclass(frozen=True)
class Result:
    """Everything one baseline run measured; ``to_dict()`` is ``baseline_metrics.json``.

    ArrowQuant V2's baseline-metrics keys come first, then thermojax's additions.

    ``mode`` is ``diffusion`` for a model thermojax runs (calibration, sampling, quality) and
    ``weight-only`` for a checkpoint whose architecture it cannot run: then ``quality``,
    ``sample_preview`` are ``None`` (null in the JSON), and so are the Markov figures
    (``smoothness_score``, ``violation_count``, ``violation_analysis``, ``interpretation``,
    ``num_timesteps``) unless per-timestep activation statistics were given. ``weights`` lists
    every tensor with its rule and size. ``samples`` holds the full sample arrays
    (``fp32``/``quantized`` ``[N, 8, 8]``) for ``samples.npz``; it is not part of the JSON and is
    ``None`` for a result read back from disk. ``sampler`` says which sampler sampled
    (``sampler``, ``steps``, ``eta``, ``timesteps``, ``description``) and which calibrated
    (``calibration``, the same keys; ``layers[].activation_min/max`` are over its
    ``timesteps``); ``None`` (a weight-only run, or a result written before schema 6) means the
    full DDPM sampler. ``phase_records`` likewise holds the phase
    experiment's per-run records for ``phases/runs/*.json``.
    """

    model_name: str
    bit_width: int
    num_time_groups: int
    smoothness_score: float | None
    violation_count: int | None
    violations: tuple[Violation, ...]
    boundary_scores: tuple[float, ...]
    cosine_similarity: float
    compression_ratio: float
    model_size_mb: float
    quantization_time_s: float
    min_boundary_score: float
    max_boundary_score: float
    mean_boundary_score: float
    std_boundary_score: float
    common_violation_patterns: tuple[Pattern, ...]
    act_bits: int
    smoothness_threshold: float
    num_timesteps: int | None
    time_groups: tuple[tuple[int, int], ...]
    layers: tuple[LayerResult, ...]
    violation_analysis: ViolationAnalysis | None
    quality: QualitySection | None
    interpretation: Interpretation | None
    sample_preview: SamplePreview | None
    timings_s: dict[str, float]
    environment: dict[str, str]
    config: dict[str, Any]
    mode: str = "diffusion"
    weights: WeightsSection | None = None
    baseline: BaselineSection | None = None
    enhancement: EnhancementSection | None = None
    phases: PhasesSection | None = None
    cache: dict[str, str] = dataclasses.field(default_factory=dict)  # stage -> hit/miss
    sampler: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    samples: dict[str, np.ndarray] | None = dataclasses.field(
        default=None, compare=False, repr=False, metadata={"json": False}
    )
    phase_records: tuple[dict[str, Any], ...] | None = dataclasses.field(
        default=None, compare=False, repr=False, metadata={"json": False}
    )

    def sampler_description(self) -> str:
        """The sampler in words, and the calibration's when it differs: ``DDIM, 50 steps, eta 0
        (calibrated with DDPM, 1000 steps)``."""
        if self.sampler is None:
            steps = self.num_timesteps
            return f"DDPM, {steps} steps" if steps else "none"
        text = str(self.sampler.get("description", ""))
        calibration = self.sampler.get("calibration") or {}
        if calibration.get("description") and calibration["description"] != text:
            text += f" (calibrated with {calibration['description']})"
        return text

    def calibration_timesteps(self) -> list[int]:
        """The model timestep of each entry of ``layers[].activation_min`` (every timestep
        for the full sampler)."""
        calibration = (self.sampler or {}).get("calibration") or {}
        if "timesteps" in calibration:
            return [int(t) for t in calibration["timesteps"]]
        return list(range(self.num_timesteps or 0))

    def sampling_timesteps(self) -> list[int]:
        """The model timestep of each entry of ``quality.drift_per_timestep``."""
        if self.sampler is not None and "timesteps" in self.sampler:
            return [int(t) for t in self.sampler["timesteps"]]
        return list(range(self.num_timesteps or 0))

    def weight_method(self) -> str:
        """The weight quantizer in words, from ``config.quant`` (``minmax`` for a result written
        before the option existed): the method, GPTQ's Hessian weighting, kept bits."""
        quant = self.config.get("quant") or {}
        text = str(quant.get("method", "minmax"))
        if text == "gptq":
            text += f", Hessian {quant.get('hessian', 'uniform')}"
        kept = quant.get("keep_bits") or {}
        if kept:
            text += "; " + ", ".join(f"{p} at {b} bits" for p, b in kept.items())
        return text

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: nested dicts and lists, non-finite floats as ``null``."""
        return {
            f.name: to_json(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.metadata.get("json", True)
            and not (f.default is None and getattr(self, f.name) is None)
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        """Build a ``Result`` from its JSON form, checking keys, types and the schema version.

        Raises:
            ValueError: a newer schema version, a missing or unknown key, or a wrongly typed value.
        """
        version = data.get("schema_version")
        if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
            raise ValueError(
                f"schema_version={version!r} is not supported (this thermojax reads 1..{SCHEMA_VERSION})"
            )
        return dataclass_from_json(cls, data, "result")


def float32_list(values: Any) -> tuple[float, ...]:
    """Float32 values as Python floats with their shortest float32 text (0.3, not 0.30000001...).

    Keeps the JSON readable and exact: each number parses back to the same float32.
    """
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    return tuple(float(np.format_float_positional(v, unique=True, trim="0")) for v in flat)


def write_result(result: Result, path: str | os.PathLike[str]) -> Path:
    """Write ``result`` as indented JSON, atomically; returns the path."""
    text = json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def read_result(path: str | os.PathLike[str]) -> Result:
    """Read a ``baseline_metrics.json`` written by :func:`write_result`.

    Raises:
        ValueError: the file is not valid JSON of a supported schema version.
    """
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return Result.from_dict(data)
