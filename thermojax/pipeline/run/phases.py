"""The phase experiment: every enhancement variant measured on one shared calibration.

:func:`run_phases` is the phase table: every variant (:mod:`thermojax.pipeline.run.variants`) on ONE
shared calibration and weight quantization, sampled from the same noise as fp32 for each seed.
Parameters do not depend on the seed (only the sampling noise does), so smoothness and violations
have no spread; the quality figures get a mean and a sample standard deviation (``ddof=1``) over
the seeds. The fp32 samples of a seed are shared by every variant, and the sampler compiles once
per parameter shape (``[L, G]`` and ``[L, T]``); parameters go in as arrays.

Example:
    >>> table, records = run_phases(model, qweights, report, stats, config)  # doctest: +SKIP
    >>> [row["variant"] for row in table["rows"]][:2]  # doctest: +SKIP
    ['baseline', 'smooth-linear-w25']
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from thermojax.core.timegroups import uniform_edges
from thermojax.pipeline.families.registry import evaluate_quality, family_of
from thermojax.pipeline.measure.calibrate import CalibrationStats
from thermojax.pipeline.measure.sampling import sample
from thermojax.pipeline.quality.kind import QualityKind
from thermojax.pipeline.run.variants import (
    ParameterSet,
    Variant,
    build_variants,
    compute_parameters,
)
from thermojax.pipeline.settings import BaselineConfig, sampler_specs
from thermojax.pipeline.weights.quantize import WeightReport

__all__ = [
    "phase_table",
    "record_file_name",
    "run_phases",
]

log = logging.getLogger(__name__)

WARM_REPEATS = 3
"""Warm parameter computations per variant; the fastest is the reported ``param_time_s``."""


def record_file_name(index: int, variant: str, seed: int) -> str:
    """``NN-<variant>-seedS.json`` with anything but letters, digits, ``.`` and ``-`` as ``_``."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", variant)
    return f"{index:02d}-{slug}-seed{seed}.json"


ProgressFn = Callable[[str], None]


def run_phases(
    model: Any,
    qweights: Mapping[str, Any],
    weight_report: WeightReport,
    stats: CalibrationStats,
    config: BaselineConfig,
    *,
    progress: ProgressFn | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run every variant of ``config.phases`` on one calibration over the configured seeds.

    Args:
        model: the model ``stats`` came from.
        qweights, weight_report: the weight quantization shared by every variant.
        stats: the shared calibration.
        config: the run's configuration (``phases``, ``thermo.optimization``, sampling, ...).
        progress: optional callback, given one line per finished step.

    Returns:
        ``(table, records)``: the table (:func:`phase_table` plus the run's settings) and one
        record per variant and seed (plain dicts, in run order).
    """
    start = time.perf_counter()
    kind = family_of(model).quality
    variants = build_variants(config)
    num_groups = config.num_time_groups
    # Drift per group on the uniform groups of the model's timesteps, as the sampler finds them.
    uniform = uniform_edges(stats.model_timesteps, num_groups)
    sampler = sampler_specs(config.to_dict())[0]

    def compute(variant: Variant) -> ParameterSet:
        return compute_parameters(
            stats,
            variant,
            num_groups=num_groups,
            act_bits=config.act_bits,
            threshold=config.smoothness_threshold,
            optimization=config.thermo.optimization,
        )

    params: list[ParameterSet] = []
    compile_s: dict[str, float] = {}
    for variant in variants:
        cold = compute(variant)
        # Timed again without compilation, best of a few: other processes share the CPU, and a
        # millisecond computation picks up their noise.
        warm = min((compute(variant) for _ in range(WARM_REPEATS)), key=lambda p: p.seconds)
        params.append(warm)
        compile_s[variant.name] = max(cold.seconds - warm.seconds, 0.0)
        _tell(progress, f"parameters {variant.name}: {warm.seconds * 1e3:.1f} ms")
    seeds = [config.seed + i for i in range(config.phases.seeds)]
    num_samples = config.sampling.num_samples
    # One compilation per parameter shape, outside the timings.
    for shape in {p.scales.shape: p for p in params}.values():
        sample(
            model,
            weights=qweights,
            act_params=shape.act_params(config.act_bits),
            num_samples=num_samples,
            seed=seeds[0],
            sampler=sampler,
        )
    records: list[dict[str, Any]] = []
    fp32_quality: list[dict[str, float]] = []
    for seed in seeds:
        fp32 = sample(model, num_samples=num_samples, seed=seed, sampler=sampler)
        for index, p in enumerate(params):
            t0 = time.perf_counter()
            quantized = sample(
                model,
                weights=qweights,
                act_params=p.act_params(config.act_bits),
                num_samples=num_samples,
                seed=seed,
                sampler=sampler,
            )
            sampling_s = time.perf_counter() - t0
            # Drift per group on the uniform groups, so the columns line up across variants.
            quality = evaluate_quality(
                model,
                fp32,
                quantized,
                uniform,
                weight_report,
                qweights=qweights,
                act_params=p.act_params(config.act_bits),
                seed=seed,
            )
            record = _record(index, p, seed, quality, sampling_s, compile_s, kind)
            records.append(record)
            shown = ", ".join(f"{m} {record[m]:.4g}" for m in kind.compared if m in record)
            _tell(progress, f"seed {seed} {p.variant.name}: {shown}")
        fp32_quality.append(
            {m: v for m in kind.fp32_reference if (v := quality.figure(m)) is not None}
        )
        del fp32
    table = {
        "seeds": seeds,
        "num_samples": num_samples,
        "bit_width": config.bit_width,
        "act_bits": config.act_bits,
        "num_time_groups": num_groups,
        "smoothness_threshold": config.smoothness_threshold,
        "drift_group_edges": [int(e) for e in uniform],
        "rows": phase_table(records, kind=kind),
        "total_time_s": time.perf_counter() - start,
        "family": kind.name,
        "fp32": {
            m: _mean_std([q[m] for q in fp32_quality])
            for m in kind.fp32_reference
            if all(m in q for q in fp32_quality)
        },
    }
    return table, records


def _tell(progress: ProgressFn | None, line: str) -> None:
    log.info("phases: %s", line)
    if progress is not None:
        progress(line)


def _record(
    index: int,
    p: ParameterSet,
    seed: int,
    quality: Any,
    sampling_s: float,
    compile_s: Mapping[str, float],
    kind: QualityKind,
) -> dict[str, Any]:
    """One run's record: the variant's Markov figures and the quality figures of its kind of
    sample (compared and fp32 reference; one the run has none of is left out)."""
    windows, groups = p.metrics.windows, p.metrics.groups
    opt = p.optimization
    figures = {
        m: v for m in (*kind.compared, *kind.fp32_reference) if (v := quality.figure(m)) is not None
    }
    return {
        "index": index,
        "variant": p.variant.name,
        "phase": p.variant.phase,
        "description": p.variant.description,
        "seed": seed,
        "edges": [int(e) for e in p.model_edges],
        "per_timestep": p.variant.per_timestep,
        "smoothness_score": float(np.mean(windows.smoothness_score)),
        "violation_count": int(np.sum(windows.violations)),
        "group_view_smoothness_score": float(np.mean(groups.smoothness_score)),
        "max_step_scale_jump": float(np.max(p.metrics.steps.scale_jumps, initial=0.0)),
        **figures,
        "drift_per_group": [float(v) for v in quality.drift_per_group],
        "drift_per_timestep": [float(v) for v in quality.drift_per_timestep],
        "param_time_s": float(p.seconds),
        "param_compile_s": float(compile_s[p.variant.name]),
        "sampling_time_s": float(sampling_s),
        "optimization_iterations": ([int(i) for i in opt.iterations] if opt is not None else None),
        "optimization_converged": ([bool(c) for c in opt.converged] if opt is not None else None),
    }


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value)."""
    arr = np.asarray(values, np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std}


def phase_table(records: Sequence[Mapping[str, Any]], *, kind: QualityKind) -> list[dict[str, Any]]:
    """One row per variant (in first-seen order) from per-run records.

    Each figure of ``kind.phase_spreads()`` the records have becomes ``{"mean", "std"}`` over
    the variant's seeds (sample std, ``ddof=1``), as do the per-group drifts
    (``drift_per_group``: one per group); the per-timestep drift is averaged over seeds.
    ``paired_delta[m]`` for the kind's compared quality figures ``m`` is the mean
    and std over seeds of (variant - baseline of the same seed): every variant of a seed samples
    from the same noise, so the seed-to-seed spread is shared and the paired difference's spread
    is the one to compare a change against. Timings relative to the ``baseline`` row:
    ``param_extra_s`` (parameter computation, warm, minus the baseline's), ``sampling_ratio``
    (mean quantized sampling time over the baseline's). Rows keep the records' ``edges``.
    """
    by_variant: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_variant.setdefault(record["variant"], []).append(record)
    rows = []
    for name, runs in by_variant.items():
        first = runs[0]
        drift_groups = np.asarray([r["drift_per_group"] for r in runs], np.float64)
        row: dict[str, Any] = {
            "variant": name,
            "phase": first["phase"],
            "description": first["description"],
            "edges": list(first["edges"]),
            "num_seeds": len(runs),
        }
        for metric in kind.phase_spreads():
            if all(metric in r for r in runs):
                row[metric] = _mean_std([r[metric] for r in runs])
        row["drift_per_group"] = [_mean_std(col) for col in drift_groups.T]
        row["drift_per_timestep"] = [
            float(v) for v in np.mean([r["drift_per_timestep"] for r in runs], axis=0)
        ]
        row["paired_delta"] = {}
        row["param_time_s"] = float(np.mean([r["param_time_s"] for r in runs]))
        row["param_compile_s"] = float(np.mean([r["param_compile_s"] for r in runs]))
        rows.append(row)
    base = next((r for r in rows if r["variant"] == "baseline"), rows[0] if rows else None)
    base_runs = {r["seed"]: r for r in by_variant.get(base["variant"], [])} if base else {}
    for row in rows:
        runs = [r for r in by_variant[row["variant"]] if r["seed"] in base_runs]
        for metric in kind.compared:
            if metric not in row:
                continue
            row["paired_delta"][metric] = _mean_std(
                [r[metric] - base_runs[r["seed"]][metric] for r in runs]
            )
        row["param_extra_s"] = row["param_time_s"] - base["param_time_s"]
        denominator = base["sampling_time_s"]["mean"]
        row["sampling_ratio"] = (
            row["sampling_time_s"]["mean"] / denominator if denominator > 0 else math.nan
        )
    return rows
