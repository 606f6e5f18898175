"""What a kind of sample is to the rest of thermojax: its quality type and how it is shown.

A model family's samples (8x8 images, token sequences, anything a new family draws) are compared
with fp32 samples of the same noise by one evaluator, whose figures are one frozen dataclass, a
:class:`SampleQuality` with a ``kind``. Everything that reads those figures (the verdict, the
phase table, the run log, the report, W&B, the sweep summary) looks the kind up by
``quality.kind`` in this registry and asks its :class:`QualityKind` declaration instead of
naming a kind: which figures it has, which it compares with a baseline, which it grades and how,
their labels, and which template partial previews its samples.

Example:
    >>> @dataclasses.dataclass(frozen=True, kw_only=True)
    ... class ToyQuality(SampleQuality):
    ...     kind: ClassVar[str] = "toy"
    ...     distance: float = math.nan
    >>> toy = register_quality_kind(
    ...     QualityKind(name="toy", type=ToyQuality, evaluate=print, figures=("distance",)))
    >>> q = quality_from_dict({"kind": "toy", "drift_per_timestep": [0.5], "drift_per_group": [0.5],
    ...                        "drift_mean": 0.5, "distance": 2.0})
    >>> q.figure("distance"), quality_kind(q.kind).compared
    (2.0, ('drift_mean',))
    >>> _KINDS.pop("toy").name
    'toy'
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from thermojax.pipeline.results.codec import fields_as_plain_data, from_json

__all__ = [
    "DriftText",
    "FigureLabel",
    "Headline",
    "QualityKind",
    "SampleQuality",
    "quality_from_dict",
    "quality_kind",
    "quality_kinds",
    "register_quality_kind",
    "untagged_kind",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleQuality:
    """Quantized sampling against fp32 sampling from the same noise: what every kind has.

    A kind subclasses it with its own figures and a ``kind`` class attribute; its JSON form
    (``baseline_metrics.json``'s ``quality``, the stage cache) is its fields plus ``kind``.

    Attributes:
        drift_per_timestep: at each step the sampler ran ``[S]``, how far the quantized
            sampler's state is from the fp32 one's (each kind says how it measures it).
        drift_per_group: the same, averaged within each time group ``[G]``.
        drift_mean: its mean.
        layer_cosine: layer name -> weight cosine similarity; model_cosine: over all weights.
        num_samples: N.
    """

    kind: ClassVar[str] = ""
    drift_per_timestep: tuple[float, ...]
    drift_per_group: tuple[float, ...]
    drift_mean: float
    layer_cosine: dict[str, float] = dataclasses.field(default_factory=dict)
    model_cosine: float = math.nan
    num_samples: int = 0

    def __post_init__(self) -> None:
        # Evaluators hand over numpy arrays; the type holds plain floats (hashable, comparable).
        for name in ("drift_per_timestep", "drift_per_group"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

    def figure(self, name: str) -> float | None:
        """One scalar figure by name; ``None`` where this run has none (or this kind lacks it)."""
        value = getattr(self, name, None)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    def figures(self) -> dict[str, float]:
        """The kind's :attr:`QualityKind.figures` that this run has (NaN kept, ``None`` left out)."""
        found = {name: self.figure(name) for name in quality_kind(self.kind).figures}
        return {name: value for name, value in found.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data, ``kind`` first (NaN kept: the stage cache stores it as it is; the
        result's writer turns it into ``null``)."""
        return {"kind": self.kind, **fields_as_plain_data(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SampleQuality:
        """Inverse of :meth:`to_dict`, checking keys and types. On the base class it builds the
        type of ``data["kind"]`` (:func:`quality_from_dict`).

        Raises:
            ValueError: an unknown kind or key, a missing required key, a wrongly typed value.
        """
        if cls is SampleQuality:
            return quality_from_dict(data)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        # Before schema 7 one section held every kind's figures, the other kind's as null.
        unknown = sorted(
            k for k, v in data.items() if k not in fields and k != "kind" and v is not None
        )
        if unknown:
            raise ValueError(f"quality section has unknown keys {unknown} (kind {cls.kind!r})")
        values = {
            name: from_json(hints[name], data[name], f"quality.{name}")
            for name in fields
            if name in data
        }
        missing = sorted(
            name
            for name, f in fields.items()
            if name not in values
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise ValueError(f"quality section lacks keys {missing} (kind {cls.kind!r})")
        return cls(**values)


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


@dataclasses.dataclass(frozen=True)
class Headline:
    """A figure the console sets beside a baseline's: its name, label, short label (phase
    table heads) and whether lower is better; ``instead`` stands in when a run lacks it."""

    name: str
    label: str
    short: str
    lower_is_better: bool
    instead: Headline | None = None

    def present(self, figures: Sequence[str]) -> Headline:
        """This headline, or its stand-in when ``figures`` lack it (and there is one)."""
        return self if self.name in figures or self.instead is None else self.instead


@dataclasses.dataclass(frozen=True)
class DriftText:
    """The words of a kind's drift chart: what drift measures, the chart's title and axes."""

    measure: str = "drift"
    title: str = "Drift, quantized vs fp32 (same noise)"
    x_label: str = "timestep t (the sampler runs T-1 down to 0)"
    y_label: str = "drift (log)"
    log_y: bool = True


GradeFn = Callable[[Any, Any], Sequence[tuple[str, str, Any]]]
"""``grade(quality, bands) -> [(band, detail, Check), ...]``: one per figure the run has
(:mod:`thermojax.pipeline.quality.grading`)."""


def _no_grades(quality: Any, bands: Any) -> list[tuple[str, str, Any]]:
    return []


def _plain_summary(quality: SampleQuality) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in quality.figures().items())


@dataclasses.dataclass(frozen=True)
class QualityKind:
    """One kind of sample: its quality type and what every reader of the result needs of it.

    Attributes:
        name: the ``kind`` of its quality (``quality.kind`` in the JSON).
        type: its :class:`SampleQuality` subclass.
        evaluate: its evaluator, ``evaluate(model, fp32, quantized, edges, weight_report, *,
            qweights, act_params, seed) -> type`` (samples of one seed and sampler).
        figures: its scalar figures (W&B ``quality/*``; fp32 and quantized).
        compared: the figures set beside a baseline's: enhanced against baseline (report,
            W&B, console) and each phase variant against the baseline of its seed (the phase
            table's columns and paired deltas); ``drift_mean`` first.
        fp32_reference: the fp32 figures a phase table gives as its reference.
        labels: how each compared and reference figure is shown.
        comparison_labels: the report's baseline-vs-enhanced row label of each compared figure.
        headline: the two figures the console sets beside a baseline's (the second orders the
            phase table's console rows).
        grade: the quality band's grading of its figures
            (:func:`~thermojax.pipeline.results.verdict.quality_band`).
        graded_ratio: ``graded_ratio(quality) -> GradedRatio | None``, the ratio to fp32 that
            ``grade`` grades first (:class:`~thermojax.pipeline.quality.grading.GradedRatio`),
            which the report headlines (``None``, or a run without it: the smoothness score
            stands there instead).
        summary, log_summary: its figures in one line, for the console and for the run log.
        summary_columns, correlated, sweep_headline: the sweep summary's columns, the figures
            correlated with smoothness, and ``(figure, label)`` candidates the comparison page
            sets against smoothness (the first a sweep has).
        drift: its drift chart's words.
        preview: the report's template partial of its samples (``samples/_<name>.html.j2``
            by default); ``template_folder`` a folder holding it, for a kind defined outside
            thermojax (``None``: the report's own templates).
        pixel_preview: the result keeps a few samples as pixels (``sample_preview``) for the
            report's image grids.
        comparison_copies: the memory its evaluator takes beyond the two trajectories, in
            float32 trajectories (:mod:`thermojax.pipeline.measure.memory`).
        reads_untagged: it reads a quality section without ``kind`` (written before schema 7).
        quantized_figures: for a run that holds the reference and the quantized model apart,
            ``quantized_figures(model, qweights, act_params, seed) -> dict`` gives the figures
            that need the quantized model (by field name), while it is in memory; the
            evaluator then runs on the reference with ``qweights=None`` and they replace its
            ``None`` figures. ``None``: the kind has no such figure.
        advise_phase3: the next steps may suggest Phase 3 (transition optimization); ``False``
            where it is measured to hurt this kind's samples (text: README, "Why Phase 3 hurts
            the LM").
    """

    name: str
    type: type[SampleQuality]
    evaluate: Callable[..., SampleQuality]
    figures: tuple[str, ...] = ()
    compared: tuple[str, ...] = ("drift_mean",)
    fp32_reference: tuple[str, ...] = ()
    labels: Mapping[str, FigureLabel] = dataclasses.field(default_factory=dict)
    comparison_labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    headline: tuple[Headline, ...] = ()
    grade: GradeFn = _no_grades
    graded_ratio: Callable[[Any], Any] | None = None
    summary: Callable[[Any], str] = _plain_summary
    log_summary: Callable[[Any], str] = _plain_summary
    summary_columns: tuple[str, ...] = ()
    correlated: tuple[str, ...] = ()
    sweep_headline: tuple[tuple[str, str], ...] = ()
    drift: DriftText = DriftText()
    preview: str = ""
    template_folder: str | None = None
    pixel_preview: bool = False
    comparison_copies: float = 1.0
    reads_untagged: bool = False
    quantized_figures: Callable[..., dict[str, Any]] | None = None
    advise_phase3: bool = True

    def __post_init__(self) -> None:
        if self.type.kind != self.name:
            raise ValueError(f"quality kind {self.name!r}: its type says kind={self.type.kind!r}")
        if not self.preview:
            object.__setattr__(self, "preview", f"samples/_{self.name}.html.j2")
        listed = tuple(dict.fromkeys((*self.compared, *self.fp32_reference)))
        for name in ("figures", "summary_columns", "correlated"):
            if not getattr(self, name):
                object.__setattr__(self, name, listed)
        labels = {"drift_mean": FigureLabel("drift (mean)", False, 5, 4), **self.labels}
        for name in (*self.compared, *self.fp32_reference):
            labels.setdefault(name, FigureLabel(name.replace("_", " "), False, 4, 3))
        object.__setattr__(self, "labels", labels)
        shown = {"drift_mean": "Drift (mean)", **self.comparison_labels}
        for name in self.compared:
            shown.setdefault(name, labels[name].label.capitalize())
        object.__setattr__(self, "comparison_labels", shown)
        if not self.headline:
            rest = self.compared[1:3] or self.compared[:1]
            headline = tuple(Headline(n, labels[n].label, labels[n].label, True) for n in rest)
            object.__setattr__(self, "headline", (*headline, *headline)[:2])

    def phase_spreads(self) -> tuple[str, ...]:
        """The phase-table row figures that are a mean +- std over seeds (its CSV, W&B table)."""
        return ("smoothness_score", "violation_count", *self.compared, "sampling_time_s")


_KINDS: dict[str, QualityKind] = {}


def register_quality_kind(kind: QualityKind) -> QualityKind:
    """Make ``kind`` known to every reader of results (by ``kind.name``); returns it.

    Raises:
        ValueError: another kind of that name is registered already.
    """
    known = _KINDS.get(kind.name)
    if known is not None and known != kind:
        raise ValueError(f"a quality kind {kind.name!r} is registered already")
    _KINDS[kind.name] = kind
    return kind


def quality_kind(name: str) -> QualityKind:
    """The registered kind ``name``.

    Raises:
        ValueError: no kind of that name.
    """
    if name not in _KINDS:
        raise ValueError(
            f"quality kind {name!r} is not one this thermojax knows ({', '.join(_KINDS)})"
        )
    return _KINDS[name]


def quality_kinds() -> tuple[QualityKind, ...]:
    """Every registered kind, in registration order."""
    return tuple(_KINDS.values())


def untagged_kind() -> QualityKind:
    """The kind of a quality section or phase table written without one (before schema 7).

    Raises:
        ValueError: no registered kind reads them.
    """
    for kind in _KINDS.values():
        if kind.reads_untagged:
            return kind
    raise ValueError("no registered quality kind reads a section without a kind")


def quality_from_dict(data: Mapping[str, Any]) -> SampleQuality:
    """The quality of ``data["kind"]`` from its JSON form; without ``kind`` (written before
    schema 7), the kind that reads untagged sections.

    Raises:
        ValueError: an unknown kind, or data that does not fit its type.
    """
    name = data.get("kind")
    if name is None:
        return untagged_kind().type.from_dict(data)
    if not isinstance(name, str):
        raise ValueError(f"quality.kind: expected a string, got {name!r}")  # noqa: TRY004
    return quality_kind(name).type.from_dict(data)
