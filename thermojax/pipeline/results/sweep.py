"""A sweep's summary: every configuration's row, the failures, and the correlations.

:func:`collect` reads a sweep folder's saved reports (``baseline_metrics.json``, strict JSON,
into the saved ``Result``, never recomputing a metric) and the ``failure.json`` records the Ray
launcher wrote, into a :class:`SweepSummary`: one row per configuration (``COLUMNS``), failed
ones included, and the Pearson correlations of smoothness with each quality figure, pooled and
within each bit width (with a bootstrap interval). ``python -m thermojax.compare`` writes it as
``sweep_summary.csv``/``.json`` and draws it (:mod:`thermojax.report.comparison`).

Example:
    >>> summary = collect("multirun/2026-11-27/10-11-31")  # doctest: +SKIP
    >>> summary.correlations["smoothness_vs_drift_mean"]["pearson"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import thermojax.pipeline.families  # noqa: F401  (registers the built-in kinds of sample)
from thermojax.errors import UserInputError
from thermojax.files import FAILURE_JSON, REPORT_JSON, read_json_file
from thermojax.pipeline.quality.kind import quality_kinds
from thermojax.pipeline.results.schema import Result

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "COLUMNS",
    "CONFIG_KEYS",
    "CORRELATED",
    "MIN_POINTS",
    "SUMMARY_SCHEMA_VERSION",
    "SweepSummary",
    "bootstrap_interval",
    "collect",
    "pearson",
    "within_correlations",
]

SUMMARY_SCHEMA_VERSION = 1


def _of_every_kind(attribute: str) -> tuple[str, ...]:
    """A figure list of every registered kind of sample (those of the built-in families'), in
    registration order, each figure once."""
    return tuple(
        dict.fromkeys(name for kind in quality_kinds() for name in getattr(kind, attribute))
    )


_QUALITY_COLUMNS = _of_every_kind("summary_columns")
"""Quality columns of the summary: each kind of sample's (empty for the other kinds)."""
CORRELATED = _of_every_kind("correlated")
"""The quality figures whose correlation with the smoothness score the summary reports."""
CONFIG_KEYS = (
    "bit_width",
    "group_size",
    "act_bits",
    "act_mode",
    "act_rotation",
    "act_mask_aware",
    "act_granularity",
    "num_time_groups",
    "smoothness_threshold",
    "seed",
    "sampler",
    "sampling_steps",
)
"""What tells the configurations of a sweep apart (and orders them); ``act_mode``,
``act_rotation``, ``act_mask_aware`` and ``act_granularity`` are ``act.mode``, ``act.rotation``,
``act.mask_aware`` and ``act.granularity`` (with ``act.channel_groups``: ``channel 8``),
``sampler`` and ``sampling_steps`` the
sampler that sampled and its S."""
COLUMNS = (
    "job",
    "status",
    "mode",
    *CONFIG_KEYS,
    "smoothness_score",
    "violation_count",
    "mean_boundary_score",
    "min_boundary_score",
    "cosine_similarity",
    "compression_ratio",
    "model_size_mb",
    *_QUALITY_COLUMNS,
    "band",
    "quality_band",
    "quantization_time_s",
    "error",
)
"""The keys of every row, in the CSV's column order (each kind of sample's quality figures:
empty for the other kinds)."""


MIN_POINTS = 5
"""Fewest configurations a within-bit-width correlation is given for (below: ``None``)."""


@dataclass(frozen=True)
class SweepSummary:
    """Everything the comparison shows, as plain JSON-ready data.

    Attributes:
        sweep_dir: the folder read.
        rows: one dict per configuration with the keys of ``COLUMNS`` (``None`` where a value
            does not apply, e.g. metrics of a failed configuration).
        failures: ``{job, overrides, error_type, message}`` per failed configuration.
        correlations: ``smoothness_vs_<metric>`` -> ``{"pearson": r or None, "n": count}`` over
            the distinct configurations apart from the threshold (which changes neither), less
            ``act.mode=dynamic`` runs (their smoothness is of parameters they did not use).
    """

    sweep_dir: str
    rows: tuple[dict[str, Any], ...]
    failures: tuple[dict[str, Any], ...]
    correlations: dict[str, dict[str, Any]]

    @property
    def completed(self) -> list[dict[str, Any]]:
        """The rows of configurations that finished."""
        return [row for row in self.rows if row["status"] == "ok"]

    def to_dict(self) -> dict[str, Any]:
        """The ``sweep_summary.json`` content."""
        return {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "sweep_dir": self.sweep_dir,
            "num_configurations": len(self.rows),
            "num_failed": len(self.failures),
            "correlations": self.correlations,
            "configurations": list(self.rows),
            "failures": list(self.failures),
        }


def _unit_scaled(values: np.ndarray) -> np.ndarray:
    """``values`` over their largest magnitude: Pearson's r is the same, and sums of squares of
    finite but absurd values (a corrupt report's 1e308) no longer overflow to NaN."""
    largest = float(np.max(np.abs(values), initial=0.0))
    return values / largest if largest > 0 else values


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation of paired finite values; ``None`` below 3 pairs or without spread."""
    x = np.asarray(xs, np.float64)
    y = np.asarray(ys, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = _unit_scaled(x[keep]), _unit_scaled(y[keep])
    if x.size < 3:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
    if denominator <= 1e-300:
        return None
    return float(np.clip(np.sum(dx * dy) / denominator, -1.0, 1.0))


BOOTSTRAP_RESAMPLES = 2000
"""Resamples of the bootstrap interval of a within-bit-width correlation (seeded: the same
sweep gives the same interval)."""


def bootstrap_interval(
    xs: Sequence[float], ys: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float] | None:
    """The 2.5th and 97.5th percentiles of Pearson's r over pairs resampled with replacement;
    resamples without spread are left out. ``None`` below :data:`MIN_POINTS` pairs."""
    x, y = _unit_scaled(np.asarray(xs, np.float64)), _unit_scaled(np.asarray(ys, np.float64))
    if x.size < MIN_POINTS:
        return None
    idx = np.random.default_rng(seed).integers(0, x.size, size=(resamples, x.size))
    dx = x[idx] - x[idx].mean(axis=1, keepdims=True)
    dy = y[idx] - y[idx].mean(axis=1, keepdims=True)
    den = np.sqrt(np.sum(dx * dx, axis=1) * np.sum(dy * dy, axis=1))
    ok = den > 1e-300
    if not np.any(ok):
        return None
    r = np.clip(np.sum(dx * dy, axis=1)[ok] / den[ok], -1.0, 1.0)
    return float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))


def within_correlations(rows: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Pearson's r of smoothness with ``metric`` within each (bit width, activation bits):
    bit width drives both, so a correlation across bit widths says little about smoothness.
    One entry per stratum, ``{bit_width, act_bits, n, pearson, interval}``; ``pearson`` and
    ``interval`` (bootstrap 95%) are ``None`` below :data:`MIN_POINTS` configurations."""
    strata: dict[tuple[Any, Any], list[tuple[float, float]]] = {}
    for row in rows:
        if row[metric] is None or row["smoothness_score"] is None:
            continue
        key = (row["bit_width"], row["act_bits"])
        strata.setdefault(key, []).append((row["smoothness_score"], row[metric]))
    out = []
    for (bits, act), pairs in sorted(strata.items(), key=lambda kv: tuple(map(str, kv[0]))):
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        enough = len(pairs) >= MIN_POINTS
        interval = bootstrap_interval(xs, ys) if enough else None
        out.append(
            {
                "bit_width": bits,
                "act_bits": act,
                "n": len(pairs),
                "pearson": pearson(xs, ys) if enough else None,
                "interval": list(interval) if interval is not None else None,
            }
        )
    return out


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _read_report(path: Path) -> Result:
    """A sweep job's report, as :func:`~thermojax.pipeline.results.schema.read_result` reads it, but
    through :func:`thermojax.files.read_json_file` (a regular file, capped in size and nesting,
    strict JSON: no NaN) and an object at the top (a report of another shape is a failed row)."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise TypeError(f"holds a JSON {type(data).__name__}, not a report object")
    return Result.from_dict(data)


def _read_failure(path: Path) -> tuple[list[str], str, str]:
    """A failure record's ``(overrides, error_type, message)``, read as :func:`_read_report`
    reads a report.

    Raises:
        OSError, ValueError, KeyError, TypeError: the file cannot be read, is not strict JSON, is
            not an object, its ``overrides`` is not a list, or it lacks ``error_type`` or
            ``message``.
    """
    record = read_json_file(path)
    if not isinstance(record, dict):
        raise TypeError(f"holds a JSON {type(record).__name__}, not a failure record object")
    overrides = record.get("overrides", [])
    if not isinstance(overrides, list):
        raise TypeError(f"overrides is a JSON {type(overrides).__name__}, not a list")
    return [str(o) for o in overrides], str(record["error_type"]), str(record["message"])


def _row_from_report(job: str, path: Path) -> dict[str, Any]:
    result = _read_report(path)
    quality = result.quality
    figures = quality.figures() if quality is not None else {}
    measured = {name: figures.get(name) for name in _QUALITY_COLUMNS}
    row = {
        "job": job,
        "status": "ok",
        "mode": result.mode,
        "bit_width": result.bit_width,
        "group_size": result.config.get("group_size"),
        "act_bits": result.act_bits,
        "act_mode": result.act_mode(),
        "act_rotation": result.act_rotation(),
        "act_mask_aware": result.act_mask_aware(),
        "act_granularity": result.act_granularity(),
        "num_time_groups": result.num_time_groups,
        "smoothness_threshold": result.smoothness_threshold,
        "seed": result.config.get("seed"),
        "sampler": (result.sampler or {}).get("sampler", "ddpm" if result.num_timesteps else None),
        "sampling_steps": (result.sampler or {}).get("steps", result.num_timesteps),
        "smoothness_score": result.smoothness_score,
        "violation_count": result.violation_count,
        "mean_boundary_score": result.mean_boundary_score,
        "min_boundary_score": result.min_boundary_score,
        "cosine_similarity": result.cosine_similarity,
        "compression_ratio": result.compression_ratio,
        "model_size_mb": result.model_size_mb,
        **measured,
        "band": result.interpretation.band if result.interpretation is not None else None,
        "quality_band": (
            result.interpretation.quality_band if result.interpretation is not None else None
        ),
        "quantization_time_s": result.quantization_time_s,
        "error": None,
    }
    return {key: _finite_or_none(value) for key, value in row.items()}


_OVERRIDE_COLUMNS = {
    "sampling.sampler": "sampler",
    "sampling.steps": "sampling_steps",
    "act.mode": "act_mode",
    "act.rotation": "act_rotation",
    "act.mask_aware": "act_mask_aware",
    "act.granularity": "act_granularity",
}
"""Override keys whose summary column has another name."""


def _config_from_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for override in overrides:
        key, _, value = str(override).lstrip("+~").partition("=")
        key = _OVERRIDE_COLUMNS.get(key, key)
        if key in CONFIG_KEYS:
            try:
                found[key] = json.loads(value)
            except ValueError:
                found[key] = value
    return found


def _failed_row(job: str, config: dict[str, Any], error: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(job=job, status="failed", error=error, **config)
    return row


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    def number(value: Any) -> float:
        return float(value) if isinstance(value, int | float) else math.inf

    return (*(number(row[key]) for key in CONFIG_KEYS), row["job"])


def collect(sweep_dir: str | Path) -> SweepSummary:
    """Read a sweep folder's reports and failure records.

    Raises:
        UserInputError: the folder does not exist or holds no sweep report or failure record.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise UserInputError(f"SWEEP_DIR {str(root)!r} is not a folder")
    reports = sorted(root.glob(f"**/{REPORT_JSON}"))
    failure_files = sorted(root.glob(f"**/{FAILURE_JSON}"))
    if not reports and not failure_files:
        raise UserInputError(
            f"SWEEP_DIR {str(root)!r} holds no sweep results (no */{REPORT_JSON} or "
            f"*/{FAILURE_JSON}); give the folder a multirun wrote (hydra.sweep.dir)"
        )
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    reported = set()
    for path in reports:
        job = str(path.parent.relative_to(root))
        reported.add(path.parent)
        try:
            rows.append(_row_from_report(job, path))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            message = f"unreadable {REPORT_JSON}: {type(err).__name__}: {err}"
            failures.append(
                {"job": job, "overrides": [], "error_type": "UnreadableReport", "message": message}
            )
            rows.append(_failed_row(job, {}, message))
    for path in failure_files:
        if path.parent in reported:
            continue  # a later attempt of the job finished: its report wins
        job = str(path.parent.relative_to(root))
        try:
            overrides, error_type, message = _read_failure(path)
        except (OSError, ValueError, KeyError, TypeError) as err:
            overrides, error_type, message = [], "UnreadableFailure", f"{type(err).__name__}: {err}"
        failures.append(
            {"job": job, "overrides": overrides, "error_type": error_type, "message": message}
        )
        rows.append(_failed_row(job, _config_from_overrides(overrides), f"{error_type}: {message}"))
    rows.sort(key=_sort_key)
    failures.sort(key=lambda f: f["job"])
    # Quality and smoothness do not depend on the threshold: count each calibrated and sampled
    # configuration once, or threshold variants would weigh it several times. A dynamic run's
    # smoothness describes parameters it did not sample with: not a point of the correlations.
    distinct: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        if row["status"] == "ok" and row["act_mode"] != "dynamic":
            distinct.setdefault(
                tuple(row[k] for k in CONFIG_KEYS if k != "smoothness_threshold"), row
            )
    correlations = {}
    for metric in CORRELATED:
        pairs = [
            (row["smoothness_score"], row[metric])
            for row in distinct.values()
            if row[metric] is not None and row["smoothness_score"] is not None
        ]
        correlations[f"smoothness_vs_{metric}"] = {
            "pearson": pearson([p[0] for p in pairs], [p[1] for p in pairs]),
            "n": len(pairs),
            "within": within_correlations(list(distinct.values()), metric),
        }
    return SweepSummary(str(root), tuple(rows), tuple(failures), correlations)
