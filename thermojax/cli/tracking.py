"""Experiment tracking behind a two-method interface (``log``, ``finish``): W&B or nothing.

The baseline writes its local reports first and tracks afterwards; a tracker never raises, so a
W&B failure (no API key online, a broken service) becomes a warning in the run log, and the local
JSON, HTML, samples and log are kept. W&B runs offline by default: no network, the run lands in
``<run dir>/wandb/offline-run-*`` and ``wandb sync`` can upload it later.

Example:
    >>> tracker = make_tracker(WandbConfig(mode="disabled"), run_dir=".", name="int2")
    >>> tracker.log(result, {"html": Path("baseline_metrics.html")})  # doctest: +SKIP
    >>> tracker.finish()
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from thermojax.cli.run_names import run_name, sweep_context
from thermojax.files import PHASES_CSV, PHASES_JSON, REPORT_HTML, REPORT_JSON
from thermojax.pipeline.quality.kind import quality_kind
from thermojax.pipeline.results.schema import Result
from thermojax.pipeline.settings import WandbConfig

__all__ = [
    "NullTracker",
    "Tracker",
    "WandbTracker",
    "boundary_rows",
    "comparison_metrics",
    "layer_rows",
    "loss_curve",
    "make_tracker",
    "optimization_rows",
    "phase_columns",
    "phase_rows",
    "start_run",
    "summary_metrics",
    "tracked_metrics",
]

log = logging.getLogger(__name__)

BOUNDARY_COLUMNS = ["boundary", "t", "score", "violations"]
LAYER_COLUMNS = ["layer", "smoothness_score", "cosine_similarity", "violations", "scales"]
TENSOR_COLUMNS = [
    "tensor",
    "shape",
    "dtype",
    "bits",
    "group_size",
    "cosine",
    "sqnr_db",
    "outlier_share",
    "source_bytes",
    "quantized_bytes",
    "rule",
]
VIOLATION_COLUMNS = ["layer", "boundary_idx", "scale_jump", "zero_point_jump", "severity"]
OPTIMIZATION_COLUMNS = [
    "layer",
    "iterations",
    "converged",
    "initial_loss",
    "final_loss",
    "quant_error_before",
    "quant_error_after",
    "markov_penalty_before",
    "markov_penalty_after",
]
REPORT_FILES = {
    "html": REPORT_HTML,
    "json": REPORT_JSON,
    "phases_json": PHASES_JSON,
    "phases_csv": PHASES_CSV,
}
"""Files of the ``report`` artifact, by their key in ``files``, under their published names."""


class Tracker(Protocol):
    """Where a finished run's result goes besides the local files."""

    def log(self, result: Result, files: Mapping[str, Path]) -> None:
        """Record the result; ``files`` are the written outputs (``json``, ``html``, ...)."""
        ...

    def finish(self) -> None:
        """Close the tracking run (flush, release resources)."""
        ...


class NullTracker:
    """Tracks nothing (``wandb.mode=disabled``)."""

    def log(self, result: Result, files: Mapping[str, Path]) -> None:
        """Do nothing."""

    def finish(self) -> None:
        """Do nothing."""


def summary_metrics(result: Result) -> dict[str, float | int | str]:
    """The scalar figures of ``result`` for a tracker's run summary (non-finite ones left out)."""
    scalars: dict[str, Any] = {
        "smoothness_score": result.smoothness_score,
        "violation_count": result.violation_count,
        "cosine_similarity": result.cosine_similarity,
        "compression_ratio": result.compression_ratio,
        "model_size_mb": result.model_size_mb,
        "quantization_time_s": result.quantization_time_s,
        "min_boundary_score": result.min_boundary_score,
        "max_boundary_score": result.max_boundary_score,
        "mean_boundary_score": result.mean_boundary_score,
        "std_boundary_score": result.std_boundary_score,
        "band": result.interpretation.band if result.interpretation is not None else None,
        "quality_band": (
            result.interpretation.quality_band if result.interpretation is not None else None
        ),
        "mode": result.mode,
        "bit_width": result.bit_width,
        "act_bits": result.act_bits,
        "act_mode": result.act_mode(),
        "act_rotation": result.act_rotation(),
        "act_mask_aware": result.act_mask_aware(),
        "act_granularity": result.act_granularity(),
        "num_time_groups": result.num_time_groups,
        "smoothness_threshold": result.smoothness_threshold,
        "patterns": ",".join(p.id for p in result.common_violation_patterns),
    }
    if result.quality is not None:  # the figures of its kind of sample
        for key, value in result.quality.figures().items():
            scalars[f"quality/{key}"] = value
    if result.chain is not None:  # the chain's error budget: its total, groups and boundaries
        chain = result.chain
        scalars["chain/total"] = chain.total
        scalars["chain/additivity"] = chain.additivity
        for g, value in enumerate(chain.per_group):
            scalars[f"chain/group_{g}"] = value
        for b, value in enumerate(chain.per_boundary):
            scalars[f"chain/boundary_{b}"] = value
    if result.weights is not None:
        w = result.weights
        scalars.update(
            {
                "weights/quantized_tensors": len(w.quantized_tensors),
                "weights/tensors": len(w.tensors),
                "weights/source_bytes": w.total_source_bytes,
                "weights/quantized_bytes": w.total_quantized_bytes,
                "weights/compression_vs_source": w.compression_vs_source,
                "weights/compression_vs_fp32": w.compression_vs_fp32,
                "weights/model_cosine": w.model_cosine,
                "weights/bytes_per_second": w.bytes_per_second,
            }
        )
    return {
        k: v
        for k, v in scalars.items()
        if v is not None and not (isinstance(v, float) and not math.isfinite(v))
    }


CONFIG_SCALARS = (
    "bit_width",
    "act_bits",
    "act_mode",
    "act_rotation",
    "act_mask_aware",
    "act_granularity",
    "num_time_groups",
    "smoothness_threshold",
)
"""Keys of :func:`summary_metrics` that repeat the run config: in the summary, not metrics."""


def tracked_metrics(result: Result) -> dict[str, float | int]:
    """The numeric figures a run logs as metrics (one history row, each declared with
    ``define_metric``): :func:`summary_metrics` and :func:`comparison_metrics` less text and
    the config's keys, so W&B's run comparison and parallel coordinates offer them as is."""
    figures = {**summary_metrics(result), **comparison_metrics(result)}
    return {
        k: v
        for k, v in figures.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in CONFIG_SCALARS
    }


def tensor_rows(result: Result) -> list[list[Any]]:
    """One row per tensor of the ``weights`` section (empty without one)."""
    if result.weights is None:
        return []
    return [
        [
            row.name,
            "x".join(str(d) for d in row.shape),
            row.dtype,
            row.bits,
            row.group_size,
            row.cosine,
            row.sqnr_db,
            row.outlier_share,
            row.source_bytes,
            row.quantized_bytes,
            row.rule,
        ]
        for row in result.weights.tensors
    ]


def boundary_rows(result: Result) -> list[list[Any]]:
    """One row per boundary: index, timestep it sits at, model-level score, violations there."""
    if result.violation_analysis is None:
        return []
    return [
        [i, result.time_groups[i][1], score, result.violation_analysis.violations_per_boundary[i]]
        for i, score in enumerate(result.boundary_scores)
    ]


def layer_rows(result: Result) -> list[list[Any]]:
    """One row per layer: name, smoothness, weight cosine, violations, scales per group."""
    if result.violation_analysis is None:
        return []
    per_layer = result.violation_analysis.violations_per_layer
    return [
        [
            layer.name,
            layer.smoothness_score,
            layer.cosine_similarity,
            per_layer[layer.name],
            ", ".join(f"{s:.4g}" for s in layer.scales),
        ]
        for layer in result.layers
    ]


def comparison_metrics(result: Result) -> dict[str, float | int | str]:
    """Baseline-vs-enhanced and Phase 3 figures of an enhanced run (empty for a plain run).

    ``baseline/*`` are the uniform, unsmoothed parameters' figures from the same calibration and
    noise, ``enhanced/*`` the parameters the sampler used (the top level), ``delta/*`` enhanced
    minus baseline; ``optimization/*`` summarize Phase 3 over the layers.
    """
    if result.baseline is None or result.enhancement is None:
        return {}
    base, enh = result.baseline, result.enhancement
    metrics: dict[str, Any] = {
        "baseline/smoothness_score": base.metrics.smoothness_score,
        "baseline/violation_count": base.metrics.violation_count,
        "enhanced/smoothness_score": result.smoothness_score,
        "enhanced/violation_count": result.violation_count,
        "enhanced/group_view_smoothness_score": enh.group_view.smoothness_score,
        "enhanced/group_view_violation_count": enh.group_view.violation_count,
        "delta/smoothness_score": result.smoothness_score - base.metrics.smoothness_score,
        "delta/violation_count": result.violation_count - base.metrics.violation_count,
        "enhancement/description": enh.description,
        "enhancement/strategy": enh.strategy,
        "enhancement/per_timestep": enh.per_timestep,
        "enhancement/parameter_time_s": enh.parameter_time_s,
    }
    for key in quality_kind(result.quality.kind).compared:
        before, after = base.quality.figure(key), result.quality.figure(key)
        if before is None or after is None:
            continue
        metrics[f"baseline/{key}"] = before
        metrics[f"enhanced/{key}"] = after
        metrics[f"delta/{key}"] = after - before
    opt = enh.optimization
    if opt is not None:
        layers = max(len(opt.iterations), 1)
        metrics.update(
            {
                "optimization/target": opt.target,
                "optimization/iterations_max": max(opt.iterations, default=0),
                "optimization/iterations_mean": sum(opt.iterations) / layers,
                "optimization/converged_fraction": sum(opt.converged) / layers,
                "optimization/initial_loss_mean": sum(opt.initial_loss) / layers,
                "optimization/final_loss_mean": sum(opt.final_loss) / layers,
                "optimization/quant_error_before_mean": sum(opt.quant_error_before) / layers,
                "optimization/quant_error_after_mean": sum(opt.quant_error_after) / layers,
            }
        )
    return {k: v for k, v in metrics.items() if not (isinstance(v, float) and not math.isfinite(v))}


def optimization_rows(result: Result) -> list[list[Any]]:
    """One row per layer of Phase 3's outcome (:data:`OPTIMIZATION_COLUMNS`); empty without it."""
    opt = result.enhancement.optimization if result.enhancement is not None else None
    if opt is None:
        return []
    names = [layer.name for layer in result.layers]
    return [
        list(row)
        for row in zip(
            names,
            opt.iterations,
            opt.converged,
            opt.initial_loss,
            opt.final_loss,
            opt.quant_error_before,
            opt.quant_error_after,
            opt.markov_penalty_before,
            opt.markov_penalty_after,
            strict=True,
        )
    ]


def loss_curve(result: Result) -> list[float]:
    """Phase 3's loss per iteration, mean over the layers; empty without an optimization.

    A layer that stopped early (converged) keeps its last loss in the later iterations, so every
    point averages all layers and the curve ends at the mean final loss.
    """
    opt = result.enhancement.optimization if result.enhancement is not None else None
    histories = [h for h in (opt.loss_history if opt is not None else ()) if h]
    steps = max((len(h) for h in histories), default=0)
    return [sum(h[min(i, len(h) - 1)] for h in histories) / len(histories) for i in range(steps)]


def phase_columns(result: Result) -> list[str]:
    """Columns of the W&B phase table: names, means and spreads, paired deltas, timings."""
    if result.phases is None:
        return []
    paired = result.phases.compared()
    columns = ["variant", "phase", "description", "num_seeds"]
    for name in result.phases.spreads():
        columns += [f"{name}_mean", f"{name}_std"]
    for name in paired:
        columns += [f"{name}_paired_delta_mean", f"{name}_paired_delta_std"]
    return [*columns, "param_extra_s", "sampling_ratio"]


def phase_rows(result: Result) -> list[list[Any]]:
    """One row per variant of the phase table, in :func:`phase_columns` order."""
    if result.phases is None:
        return []
    paired, spreads = result.phases.compared(), result.phases.spreads()
    rows = []
    for row in result.phases.rows:
        line: list[Any] = [row.variant, row.phase, row.description, row.num_seeds]
        for name in spreads:
            spread = row.spread(name)
            line += [spread.mean, spread.std]
        for name in paired:
            line += [row.paired_delta[name].mean, row.paired_delta[name].std]
        rows.append([*line, row.param_extra_s, row.sampling_ratio])
    return rows


def start_run(
    settings: WandbConfig,
    *,
    run_dir: str | os.PathLike[str],
    name: str,
    job_type: str,
    config: Mapping[str, Any] | None = None,
) -> Any:
    """``wandb.init`` as thermojax starts every run: quiet, no console capture, no system
    statistics, machine info, git state or code; the run folder under ``run_dir/wandb``.

    Raises whatever W&B raises (e.g. online without an API key): callers decide what a failed
    start costs.
    """
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    run = wandb.init(
        project=settings.project,
        group=settings.group,
        mode=settings.mode,
        dir=str(run_dir),
        name=name,
        job_type=job_type,
        config=dict(config or {}),
        reinit="create_new",
        settings=wandb.Settings(
            silent=True,
            console="off",
            x_disable_stats=True,
            x_disable_machine_info=True,
            disable_git=True,
            save_code=False,
        ),
    )
    log.info("W&B run %s (%s) in %s", run.id, settings.mode, run.dir)
    return run


class WandbTracker:
    """Logs to Weights & Biases; every failure is logged as a warning and stops further calls.

    Logs the resolved config (at init), the summary metrics (the numeric ones also as one
    history row of metrics declared with ``define_metric``, :func:`tracked_metrics`), the
    per-boundary, per-layer and violation tables, and the HTML (and JSON) report as a ``report``
    artifact. An enhanced run adds the baseline-vs-enhanced figures (:func:`comparison_metrics`),
    Phase 3's per-layer table and its loss curve (``optimization/loss`` against
    ``optimization/iteration``); the phase experiment adds the ``phases`` table (one row per
    variant) and its CSV/JSON files; the chain's error budget adds ``chain/total``,
    ``chain/additivity``, ``chain/group_<g>`` and ``chain/boundary_<b>``.
    """

    def __init__(
        self,
        settings: WandbConfig,
        *,
        run_dir: str | os.PathLike[str],
        name: str,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.run: Any = None
        try:
            import wandb

            self._wandb = wandb
            self.run = start_run(
                settings, run_dir=run_dir, name=name, job_type="baseline", config=config
            )
        except Exception as exc:  # noqa: BLE001 - tracking must never cost the local outputs
            self._failed("init", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        log.warning("W&B %s failed, tracking skipped (local outputs are kept): %s", what, exc)
        self.run = None

    def log(self, result: Result, files: Mapping[str, Path]) -> None:
        """Summary metrics (the numeric ones also declared metrics), the tables, the artifact."""
        if self.run is None:
            return
        wandb = self._wandb
        try:
            self.run.summary.update(summary_metrics(result))
            self.run.summary.update(comparison_metrics(result))
            if result.phases is not None:
                self.run.summary.update(
                    {
                        "phases/num_variants": len(result.phases.rows),
                        "phases/num_seeds": len(result.phases.seeds),
                        "phases/total_time_s": result.phases.total_time_s,
                    }
                )
            violations = [
                [v.layer, v.boundary_idx, v.scale_jump, v.zero_point_jump, v.severity]
                for v in result.violations
            ]
            tables = {
                "boundaries": wandb.Table(columns=BOUNDARY_COLUMNS, data=boundary_rows(result)),
                "layers": wandb.Table(columns=LAYER_COLUMNS, data=layer_rows(result)),
                "violations": wandb.Table(columns=VIOLATION_COLUMNS, data=violations),
            }
            if result.weights is not None:
                tables["tensors"] = wandb.Table(columns=TENSOR_COLUMNS, data=tensor_rows(result))
            if result.enhancement is not None and result.enhancement.optimization is not None:
                tables["optimization"] = wandb.Table(
                    columns=OPTIMIZATION_COLUMNS, data=optimization_rows(result)
                )
            if result.phases is not None:
                tables["phases"] = wandb.Table(
                    columns=phase_columns(result), data=phase_rows(result)
                )
            metrics = tracked_metrics(result)
            for key in metrics:
                self.run.define_metric(key)
            self.run.log({**metrics, **tables})
            self._log_loss_curve(loss_curve(result))
            artifact = wandb.Artifact(
                f"baseline-report-{self.run.id}",
                type="report",
                description=f"{REPORT_HTML} and {REPORT_JSON} of this run"
                + (f" with {PHASES_JSON} and {PHASES_CSV}" if result.phases is not None else ""),
            )
            for kind, name in REPORT_FILES.items():
                if kind in files:
                    artifact.add_file(str(files[kind]), name=name)
            self.run.log_artifact(artifact)
        except Exception as exc:  # noqa: BLE001
            self._failed("logging", exc)

    def _log_loss_curve(self, curve: list[float]) -> None:
        """One history row per Phase 3 iteration, plotted against ``optimization/iteration``."""
        if not curve:
            return
        self.run.define_metric("optimization/iteration")
        self.run.define_metric("optimization/loss", step_metric="optimization/iteration")
        for iteration, loss in enumerate(curve):
            self.run.log({"optimization/iteration": iteration, "optimization/loss": loss})

    def finish(self) -> None:
        """Finish the run (writes the offline run's exit record)."""
        if self.run is None:
            return
        try:
            self.run.finish()
        except Exception as exc:  # noqa: BLE001
            self._failed("finish", exc)


def make_tracker(
    settings: WandbConfig,
    *,
    run_dir: str | os.PathLike[str],
    name: str,
    config: Mapping[str, Any] | None = None,
    sweep: Mapping[str, Any] | None = None,
) -> Tracker:
    """A :class:`WandbTracker`, or a :class:`NullTracker` for ``mode="disabled"``.

    Inside a sweep (``sweep``, default :func:`sweep_context`), every run of the sweep joins one
    W&B group named after it when ``settings.group`` is unset, and the run config gets a
    ``sweep`` entry (name, folder, job number, the job's overrides) beside the swept keys, so
    the W&B UI groups and compares the sweep's runs; the run is named after its configuration
    (:func:`run_name`, e.g. ``W2-G4-t0.3``), or ``<sweep>-<job number>`` when the config lacks
    the keys a name is made of.
    """
    if settings.mode == "disabled":
        return NullTracker()
    sweep = sweep_context() if sweep is None else sweep
    if sweep:
        if settings.group is None:
            settings = dataclasses.replace(settings, group=str(sweep["name"]))
        config = {**dict(config or {}), "sweep": dict(sweep)}
        try:
            name = run_name(config, sweep["overrides"], sweep.get("swept"))
        except (KeyError, TypeError, ValueError):
            name = f"{sweep['name']}-{sweep['job_num']}"
    return WandbTracker(settings, run_dir=run_dir, name=name, config=config)
