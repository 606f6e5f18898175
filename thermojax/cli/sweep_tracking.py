"""A sweep in W&B: one summary run that compares the sweep's runs.

Every run of a sweep joins the sweep's group (:func:`thermojax.cli.tracking.make_tracker`) under a
name that says its configuration (:func:`thermojax.cli.run_names.run_name`: ``W2-G4-t0.3``).
When the sweep ends (:class:`CompareSweepCallback`, ``hydra.callbacks.compare``) the comparison
is written into the sweep folder (``sweep_summary.csv``/``.json``, ``comparison.html``) and,
unless ``wandb.mode=disabled``, one more run joins the group (:func:`log_comparison`): the table
of every configuration, the smoothness heatmap, quality against smoothness and violations against
the threshold as W&B plots, the correlations in its summary, the three files as a ``comparison``
artifact. ``python -m thermojax.compare SWEEP_DIR --wandb`` logs the same run afterwards.

Example:
    python -m thermojax.compare multirun/2026-11-27/10-11-31 --wandb   # offline, SWEEP_DIR/wandb
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from thermojax.cli.outputs import write_comparison
from thermojax.cli.run_names import MULTIRUN_YAML, sweep_name
from thermojax.cli.tracking import start_run
from thermojax.errors import UserInputError
from thermojax.files import COMPARISON_HTML, REPORT_JSON, SWEEP_SUMMARY_CSV, SWEEP_SUMMARY_JSON
from thermojax.pipeline.results.sweep import COLUMNS, CORRELATED, SweepSummary, collect
from thermojax.pipeline.settings import WandbConfig

__all__ = [
    "CompareSweepCallback",
    "compare_after_sweep",
    "comparison_settings",
    "correlation_rows",
    "heatmap_rows",
    "log_comparison",
]

POINT_COLUMNS = ["job", "bit_width", "act_bits", "num_time_groups", "smoothness_threshold", "seed"]
"""What names a point of a scatter plot, beside its two values."""
CORRELATION_COLUMNS = ["metric", "bit_width", "act_bits", "n", "pearson", "low", "high"]
HEATMAP_PRESET = "wandb/confusion_matrix/v1"
"""W&B's built-in preset whose chart is a heatmap over two categorical columns (its fields
``Actual``, ``Predicted``, ``nPredictions``); W&B has no heatmap preset of its own."""


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def heatmap_rows(rows: Sequence[Mapping[str, Any]], column: str, value: str) -> list[list[Any]]:
    """Mean ``value`` per (bit width, ``column``) of the rows that have it: ``[INT<bits>,
    str(column value), mean, runs]``, bit widths then columns in ascending order; the page's
    heatmap cells (the mean is over thresholds and seeds)."""
    cells: dict[tuple[Any, Any], list[float]] = {}
    for row in rows:
        if _finite(row[value]) and row[column] is not None:
            cells.setdefault((row["bit_width"], row[column]), []).append(float(row[value]))
    return [
        [f"INT{bits}", str(key), sum(values) / len(values), len(values)]
        for (bits, key), values in sorted(cells.items())
    ]


def correlation_rows(correlations: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
    """One row per correlation of the summary: pooled (``bit_width`` ``"all"``) and within each
    (weight bits, activation bits), with the bootstrap interval where there is one."""
    out = []
    for name, entry in correlations.items():
        metric = name.removeprefix("smoothness_vs_")
        out.append([metric, "all", "all", entry["n"], entry["pearson"], None, None])
        for within in entry.get("within", []):
            low, high = within["interval"] or (None, None)
            out.append(
                [
                    metric,
                    str(within["bit_width"]),
                    str(within["act_bits"]),
                    within["n"],
                    within["pearson"],
                    low,
                    high,
                ]
            )
    return out


def _violation_series(rows: Sequence[Mapping[str, Any]]) -> tuple[list, list, list]:
    """Mean violations against the threshold, one series per (bit width, time groups)."""
    series: dict[tuple[Any, Any], dict[float, list[int]]] = {}
    for row in rows:
        if row["violation_count"] is None or not _finite(row["smoothness_threshold"]):
            continue
        by_threshold = series.setdefault((row["bit_width"], row["num_time_groups"]), {})
        by_threshold.setdefault(row["smoothness_threshold"], []).append(row["violation_count"])
    xs, ys, keys = [], [], []
    for (bits, groups), points in sorted(series.items()):
        thresholds = sorted(points)
        xs.append(thresholds)
        ys.append([sum(points[t]) / len(points[t]) for t in thresholds])
        keys.append(f"INT{bits}, G={groups}")
    return xs, ys, keys


def _artifact_name(group: str) -> str:
    return "comparison-" + re.sub(r"[^A-Za-z0-9_.-]", "_", group)


def log_comparison(
    summary: SweepSummary,
    files: Mapping[str, Path],
    settings: WandbConfig,
    *,
    group: str,
    run_dir: str | Path,
) -> Path:
    """Log the summary run of a sweep into ``group``; returns the run's local folder.

    Logs ``configurations`` (one row per configuration, the columns of ``sweep_summary.csv``,
    the same values), the heatmap of mean smoothness over bit width x time groups (a weight-only
    sweep: weight cosine over bit width x group size), one scatter per quality figure against
    smoothness with its Pearson r in the title, violations against the threshold, the
    correlations (``summary["correlations"]`` is ``sweep_summary.json``'s, and a
    ``correlations`` table), ``comparison.html`` as an HTML panel, and the written ``files``
    (``csv``, ``json``, ``html``, as :func:`thermojax.cli.outputs.write_comparison` returns
    them) as a ``comparison`` artifact.

    Raises:
        Exception: whatever W&B raises (no API key online, ...); the local files are untouched.
    """
    import wandb

    run = start_run(
        dataclasses.replace(settings, group=group),
        run_dir=run_dir,
        name=f"{group}-comparison",
        job_type="comparison",
        config={"sweep": {"name": group, "dir": summary.sweep_dir}},
    )
    try:
        _log_comparison(run, wandb, summary, files, group)
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
    return Path(run.dir).parent


def _log_comparison(
    run: Any, wandb: Any, summary: SweepSummary, files: Mapping[str, Path], group: str
) -> None:
    completed = summary.completed
    markov = [row for row in completed if row["smoothness_score"] is not None]
    run.summary.update(
        {
            "num_configurations": len(summary.rows),
            "num_completed": len(completed),
            "num_failed": len(summary.failures),
            "correlations": summary.correlations,
        }
    )
    logged: dict[str, Any] = {
        "configurations": wandb.Table(
            columns=list(COLUMNS),
            data=[[row[key] for key in COLUMNS] for row in summary.rows],
            allow_mixed_types=True,
        ),
        "correlations_table": wandb.Table(
            columns=CORRELATION_COLUMNS,
            data=correlation_rows(summary.correlations),
            allow_mixed_types=True,
        ),
    }
    heatmaps = [
        (
            "smoothness_heatmap",
            "mean smoothness",
            heatmap_rows(markov, "num_time_groups", "smoothness_score"),
            "time groups",
        ),
    ]
    if len(markov) < len(completed):  # weight-only runs have no smoothness to map
        heatmaps.append(
            (
                "cosine_heatmap",
                "weight cosine",
                heatmap_rows(completed, "group_size", "cosine_similarity"),
                "group size",
            )
        )
    for key, value_label, cells, column_label in heatmaps:
        if not cells:
            continue
        columns = ["weight bits", column_label, value_label, "runs"]
        table = wandb.Table(columns=columns, data=cells)
        logged[key] = wandb.plot_table(
            HEATMAP_PRESET,
            table,
            {"Actual": "weight bits", "Predicted": column_label, "nPredictions": value_label},
            {"title": f"{value_label.capitalize()} over weight bits x {column_label}"},
        )
    for metric in CORRELATED:
        points = [r for r in markov if _finite(r[metric]) and _finite(r["smoothness_score"])]
        if not points:
            continue
        corr = summary.correlations.get(f"smoothness_vs_{metric}", {"pearson": None, "n": 0})
        r = "n/a" if corr["pearson"] is None else f"{corr['pearson']:+.3f}"
        table = wandb.Table(
            columns=[*POINT_COLUMNS, "smoothness_score", metric],
            data=[[p[k] for k in (*POINT_COLUMNS, "smoothness_score", metric)] for p in points],
            allow_mixed_types=True,
        )
        logged[f"quality_vs_smoothness/{metric}"] = wandb.plot.scatter(
            table,
            "smoothness_score",
            metric,
            title=f"{metric} against smoothness: Pearson r = {r} (n = {corr['n']})",
        )
    xs, ys, keys = _violation_series(markov)
    if keys:
        logged["violations_vs_threshold"] = wandb.plot.line_series(
            xs=xs,
            ys=ys,
            keys=keys,
            title="Mean violations against the smoothness threshold",
            xname="smoothness threshold",
        )
    if "html" in files:
        html = Path(files["html"]).read_text(encoding="utf-8")
        logged["comparison_page"] = wandb.Html(html, inject=False)
    run.log(logged)
    artifact = wandb.Artifact(
        _artifact_name(group),
        type="comparison",
        description=f"{COMPARISON_HTML}, {SWEEP_SUMMARY_CSV} and {SWEEP_SUMMARY_JSON} of the sweep",
    )
    for path in files.values():
        artifact.add_file(str(path), name=Path(path).name)
    run.log_artifact(artifact)


def comparison_settings(sweep_dir: str | Path, mode: str) -> tuple[WandbConfig, str]:
    """The W&B settings and group of a sweep folder's summary run, as its runs had them.

    Project and group from the sweep's ``multirun.yaml`` (its ``wandb`` section), else from a
    report's recorded config; the group when unset: the preset (``sweep=NAME``), else the
    folder's name, as :func:`thermojax.cli.tracking.make_tracker` names it.
    """
    root = Path(sweep_dir)
    try:
        master = OmegaConf.load(root / MULTIRUN_YAML)
        recorded = OmegaConf.to_container(master.wandb, resolve=True)
        preset = OmegaConf.select(master, "hydra.runtime.choices.sweep", default=None)
    except Exception:  # noqa: BLE001 - no or a foreign multirun.yaml: the reports say
        recorded, preset = {}, None
        for report in sorted(root.glob(f"**/{REPORT_JSON}")):
            try:
                recorded = json.loads(report.read_text(encoding="utf-8"))["config"]["wandb"]
                break
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return _settings(recorded, preset, root, mode)


def _settings(
    recorded: Any, preset: str | None, sweep_dir: Path, mode: str
) -> tuple[WandbConfig, str]:
    recorded = recorded if isinstance(recorded, Mapping) else {}
    settings = WandbConfig(
        mode=mode,
        project=str(recorded.get("project") or WandbConfig().project),
        group=recorded.get("group"),
    )
    return settings, str(settings.group or sweep_name(preset, sweep_dir.absolute()))


def compare_after_sweep(config: DictConfig) -> None:
    """What :class:`CompareSweepCallback` does when a multirun ends: the comparison into the
    sweep folder, then its W&B summary run unless ``wandb.mode=disabled``.

    A folder with no result is reported in one line; a W&B failure is a warning (the local
    comparison is kept). Progress goes to stderr as the launcher's does (``[sweep] ...``).
    """
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    try:
        summary = collect(sweep_dir)
    except UserInputError as err:
        print(f"[sweep] no comparison: {err}", file=sys.stderr)
        return
    files = write_comparison(summary, sweep_dir)
    print(f"[sweep] comparison: {files['html']}", file=sys.stderr)
    mode = str(OmegaConf.select(config, "wandb.mode") or "disabled")
    if mode == "disabled":
        return
    settings, group = _settings(
        OmegaConf.to_container(config.wandb, resolve=True),
        OmegaConf.select(config, "hydra.runtime.choices.sweep", default=None),
        sweep_dir,
        mode,
    )
    try:
        run_dir = log_comparison(summary, files, settings, group=group, run_dir=sweep_dir)
    except Exception as exc:  # noqa: BLE001 - tracking must never cost the local outputs
        print(f"[sweep] W&B summary run failed (the comparison is kept): {exc}", file=sys.stderr)
        return
    print(f"[sweep] W&B summary run {group}-comparison (group {group}): {run_dir}", file=sys.stderr)


class CompareSweepCallback(Callback):
    """Hydra callback (``hydra.callbacks.compare``): compare the sweep's runs when it ends.

    Hydra calls ``on_multirun_end`` after a sweep whose jobs all succeeded; the thermojax Ray
    launcher calls it too when some failed (Hydra's sweeper raises on a failed job before it
    would), so the comparison lists the failures.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Write the comparison and log its summary run (:func:`compare_after_sweep`)."""
        compare_after_sweep(config)
