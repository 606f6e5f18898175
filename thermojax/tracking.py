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

from thermojax.config import WandbConfig
from thermojax.results import Result

__all__ = [
    "NullTracker",
    "Tracker",
    "WandbTracker",
    "boundary_rows",
    "layer_rows",
    "make_tracker",
    "summary_metrics",
    "sweep_context",
]

log = logging.getLogger(__name__)

BOUNDARY_COLUMNS = ["boundary", "t", "score", "violations"]
LAYER_COLUMNS = ["layer", "smoothness_score", "cosine_similarity", "violations", "scales"]
VIOLATION_COLUMNS = ["layer", "boundary_idx", "scale_jump", "zero_point_jump", "severity"]


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
        "band": result.interpretation.band,
        "bit_width": result.bit_width,
        "act_bits": result.act_bits,
        "num_time_groups": result.num_time_groups,
        "smoothness_threshold": result.smoothness_threshold,
        "patterns": ",".join(p.id for p in result.common_violation_patterns),
    }
    for key in (
        "drift_mean",
        "final_mse",
        "frechet_fp32",
        "frechet_quantized",
        "class_coverage_fp32",
        "class_coverage_quantized",
    ):
        scalars[f"quality/{key}"] = getattr(result.quality, key)
    return {k: v for k, v in scalars.items() if not (isinstance(v, float) and not math.isfinite(v))}


def boundary_rows(result: Result) -> list[list[Any]]:
    """One row per boundary: index, timestep it sits at, model-level score, violations there."""
    return [
        [i, result.time_groups[i][1], score, result.violation_analysis.violations_per_boundary[i]]
        for i, score in enumerate(result.boundary_scores)
    ]


def layer_rows(result: Result) -> list[list[Any]]:
    """One row per layer: name, smoothness, weight cosine, violations, scales per group."""
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


class WandbTracker:
    """Logs to Weights & Biases; every failure is logged as a warning and stops further calls.

    Logs the resolved config (at init), the summary metrics, the per-boundary, per-layer and
    violation tables, and the HTML (and JSON) report as a ``report`` artifact.
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
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            import wandb

            self._wandb = wandb
            self.run = wandb.init(
                project=settings.project,
                group=settings.group,
                mode=settings.mode,
                dir=str(run_dir),
                name=name,
                job_type="baseline",
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
            log.info("W&B run %s (%s) in %s", self.run.id, settings.mode, self.run.dir)
        except Exception as exc:  # noqa: BLE001 - tracking must never cost the local outputs
            self._failed("init", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        log.warning("W&B %s failed, tracking skipped (local outputs are kept): %s", what, exc)
        self.run = None

    def log(self, result: Result, files: Mapping[str, Path]) -> None:
        """Summary metrics, the three tables, and the report artifact."""
        if self.run is None:
            return
        wandb = self._wandb
        try:
            self.run.summary.update(summary_metrics(result))
            violations = [
                [v.layer, v.boundary_idx, v.scale_jump, v.zero_point_jump, v.severity]
                for v in result.violations
            ]
            self.run.log(
                {
                    "boundaries": wandb.Table(columns=BOUNDARY_COLUMNS, data=boundary_rows(result)),
                    "layers": wandb.Table(columns=LAYER_COLUMNS, data=layer_rows(result)),
                    "violations": wandb.Table(columns=VIOLATION_COLUMNS, data=violations),
                }
            )
            artifact = wandb.Artifact(
                f"baseline-report-{self.run.id}",
                type="report",
                description="baseline_metrics.html and baseline_metrics.json of this run",
            )
            for kind in ("html", "json"):
                if kind in files:
                    artifact.add_file(str(files[kind]), name=Path(files[kind]).name)
            self.run.log_artifact(artifact)
        except Exception as exc:  # noqa: BLE001
            self._failed("logging", exc)

    def finish(self) -> None:
        """Finish the run (writes the offline run's exit record)."""
        if self.run is None:
            return
        try:
            self.run.finish()
        except Exception as exc:  # noqa: BLE001
            self._failed("finish", exc)


def sweep_context() -> dict[str, Any] | None:
    """The Hydra multirun this process runs a job of, or ``None`` (a single run, no Hydra).

    Returns:
        ``{"name", "preset", "dir", "job_num", "overrides"}``: ``name`` is the sweep preset
        (``sweep=NAME``) when one was chosen, else the sweep folder's name; ``overrides`` are the
        job's own (``bit_width=2`` ...).
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # tracking works without Hydra installed
        return None
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(str(hydra_cfg.sweep.dir)).absolute()
    preset = hydra_cfg.runtime.choices.get("sweep")
    return {
        "name": str(preset) if preset else sweep_dir.name,
        "preset": str(preset) if preset else None,
        "dir": str(sweep_dir),
        "job_num": int(hydra_cfg.job.num),
        "overrides": [str(o) for o in hydra_cfg.overrides.task],
    }


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
    the W&B UI groups and compares the sweep's runs; the run is named ``<sweep>-<job number>``.
    """
    if settings.mode == "disabled":
        return NullTracker()
    sweep = sweep_context() if sweep is None else sweep
    if sweep:
        if settings.group is None:
            settings = dataclasses.replace(settings, group=str(sweep["name"]))
        config = {**dict(config or {}), "sweep": dict(sweep)}
        name = f"{sweep['name']}-{sweep['job_num']}"
    return WandbTracker(settings, run_dir=run_dir, name=name, config=config)
