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
``phases`` is the phase table of ``experiment=phases``; ``chain`` the chain's error budget of
``thermo.chain_budget.enabled`` (optional and absent unless measured: no new schema version,
a file without it reads as before). Version 1 files still read. Schema 5
also gives ``interpretation`` a quality band and a verdict beside the smoothness band. Schema 7
makes ``quality`` one type per kind of sample, named by its ``kind``
(:mod:`thermojax.pipeline.quality.kind`); a section without one reads as an image section.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thermojax.core.markov import SEVERITY_LABELS
from thermojax.files import atomic_write_text
from thermojax.pipeline.quality.grading import Check
from thermojax.pipeline.quality.kind import FigureLabel, SampleQuality
from thermojax.pipeline.results.codec import dataclass_from_json, to_json
from thermojax.pipeline.results.phase_table import PhaseRow, PhasesSection, Spread
from thermojax.pipeline.results.sections import (
    BaselineSection,
    ChainSection,
    EnhancementSection,
    MetricsView,
    OptimizationSection,
)
from thermojax.pipeline.weights.section import BlockRow, TensorRow, WeightsSection

__all__ = [
    "RUN_MODES",
    "SCHEMA_VERSION",
    "SEVERITY_LABELS",
    "BaselineSection",
    "BlockRow",
    "ChainSection",
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
    "Result",
    "SamplePreview",
    "SampleQuality",
    "Spread",
    "TensorRow",
    "Violation",
    "ViolationAnalysis",
    "WeightsSection",
    "float32_list",
    "read_result",
    "write_result",
]

SCHEMA_VERSION = 7
"""Bumped whenever a key changes meaning or a required key is added (2: the enhancement,
baseline and phase sections; 3: ``mode`` and ``weights``, and weight-only runs; 4: the quality
section of a masked-diffusion LM, whose image figures are ``null``; 5: the phase table's
``family`` and its text figures, image figures ``null`` for a masked-diffusion LM; 6:
``sampler``, the sampler and steps that sampled and calibrated, with ``time_groups`` on the
model's timesteps and ``layers[].activation_min/max`` over the calibration steps; 7: ``quality``
is one type per kind of sample, with its ``kind`` and only that kind's figures (the phase
table's rows likewise), and ``sampler`` describes the model's own sampler in its words)."""

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
class SamplePreview:
    """A few fp32 and quantized samples (same noise), in pixel units, for the report's image grids."""

    fp32: tuple[tuple[tuple[float, ...], ...], ...]
    quantized: tuple[tuple[tuple[float, ...], ...], ...]


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
    (``fp32``/``quantized`` ``[N, *data_shape]``) for ``samples.npz``; it is not part of the JSON and is
    ``None`` for a result read back from disk. ``sampler`` says which sampler sampled
    (``sampler``, ``steps``, ``eta``, ``timesteps``, ``description``) and which calibrated
    (``calibration``, the same keys; ``layers[].activation_min/max`` are over its
    ``timesteps``); ``None`` (a weight-only run, or a result written before schema 6) means the
    full DDPM sampler. ``chain`` is the chain's error budget (``thermo.chain_budget``), ``None``
    when not measured. ``phase_records`` likewise holds the phase
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
    quality: SampleQuality | None
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
    chain: ChainSection | None = None
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

    def act_mode(self) -> str:
        """How the quantized sampler quantized activations, from ``config.act.mode``:
        ``static`` (each time group's parameters, and for a result written before the option
        existed) or ``dynamic`` (each token's own range; the time groups and their parameters
        then describe calibration, not what sampled)."""
        return str((self.config.get("act") or {}).get("mode", "static"))

    def act_rotation(self) -> str:
        """What the model was rotated by before anything ran on it, from
        ``config.act.rotation``: ``none`` (and for a result written before the option existed)
        or ``hadamard`` (randomized Hadamard rotations; every figure is of the rotated model)."""
        return str((self.config.get("act") or {}).get("rotation", "none"))

    def act_granularity(self) -> str:
        """What one activation scale and zero point covered, from ``config.act``: ``tensor``
        (and for a result written before the option existed) or ``channel K`` (K blocks of
        each layer's input channels; :attr:`layers` then holds each layer K times)."""
        act = self.config.get("act") or {}
        if act.get("granularity", "tensor") != "channel":
            return "tensor"
        return f"channel {act.get('channel_groups')}"

    def act_mask_aware(self) -> bool:
        """Whether a masked-diffusion LM's masked and unmasked positions had their own
        activation parameters (``config.act.mask_aware``; false for a result written before the
        option existed): :attr:`layers` then holds each layer twice, the second time for its
        masked positions."""
        return bool((self.config.get("act") or {}).get("mask_aware", False))

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
