"""The files the commands publish: a run's ``baseline_metrics.json`` / ``.html``,
``samples.npz`` and phase table; a sweep's comparison (``sweep_summary.csv`` / ``.json``,
``comparison.html``).

Every file is published atomically; ``baseline_metrics.json`` is written first and renamed into
place last, because a sweep's resume takes a parseable report as "this job finished". The HTML
comes from :mod:`thermojax.report`, which reads only the
:class:`~thermojax.pipeline.results.schema.Result` (the comparison page: the
:class:`~thermojax.pipeline.results.sweep.SweepSummary`); a report that fails to render is a bug
in the report, never a lost run: one warning, and every other output is written.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thermojax.errors import os_errors_as_user_input
from thermojax.files import (
    COMPARISON_HTML,
    PHASE_RUNS_DIR,
    PHASES_CSV,
    PHASES_JSON,
    REPORT_HTML,
    REPORT_JSON,
    RUN_LOG,
    SAMPLES_NPZ,
    SWEEP_SUMMARY_CSV,
    SWEEP_SUMMARY_JSON,
    atomic_file,
    atomic_write_text,
    check_writable_folder,
    publish_staged,
    remove_temporaries,
    staged_path,
)
from thermojax.pipeline.results.schema import (
    PhasesSection,
    Result,
    write_result,
)
from thermojax.pipeline.results.sweep import SweepSummary
from thermojax.pipeline.run.phases import record_file_name
from thermojax.report import render_report
from thermojax.report.comparison import render_comparison, summary_csv

__all__ = ["OUTPUT_FILES", "PHASE_FILES", "phases_csv", "write_comparison", "write_outputs"]

log = logging.getLogger(__name__)

OUTPUT_FILES = {"json": REPORT_JSON, "html": REPORT_HTML, "samples": SAMPLES_NPZ}
"""What :func:`write_outputs` writes into the output folder (the CLI adds the log); the names
are :mod:`thermojax.files`'."""

PHASE_FILES = {"json": PHASES_JSON, "csv": PHASES_CSV, "runs": PHASE_RUNS_DIR}
"""The phase table's files: ``phases.json``, ``phases.csv``, one record per run in ``phases/``."""


def _write_phases(result: Result, out: Path) -> dict[str, Path]:
    """The phase table as JSON and CSV, and the per-run records (each file atomic)."""
    table = result.phases.to_dict()
    paths = {
        "phases_json": atomic_write_text(
            out / PHASE_FILES["json"], json.dumps(table, indent=2, allow_nan=False) + "\n"
        ),
        "phases_csv": atomic_write_text(out / PHASE_FILES["csv"], phases_csv(result.phases)),
    }
    if result.phase_records is not None:
        runs = out / PHASE_FILES["runs"]
        for record in result.phase_records:
            name = record_file_name(record["index"], record["variant"], record["seed"])
            text = json.dumps(_json_ready(record), indent=1, allow_nan=False) + "\n"
            atomic_write_text(runs / name, text)
        paths["phases_runs"] = runs
    return paths


def phases_csv(phases: PhasesSection) -> str:
    """One row per variant: mean and std columns, paired deltas, per-group drift, timings."""
    groups = len(phases.drift_group_edges) - 1
    header = ["variant", "phase", "description", "num_seeds"]
    spreads, compared = phases.spreads(), phases.compared()
    for name in spreads:
        header += [f"{name}_mean", f"{name}_std"]
    for name in compared:
        header += [f"{name}_paired_delta_mean", f"{name}_paired_delta_std"]
    for g in range(groups):
        header += [f"drift_group{g}_mean", f"drift_group{g}_std"]
    header += ["param_time_s", "param_extra_s", "param_compile_s", "sampling_ratio", "edges"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in phases.rows:
        line: list[Any] = [row.variant, row.phase, row.description, row.num_seeds]
        for name in spreads:
            spread = row.spread(name)
            line += [repr(spread.mean), repr(spread.std)]
        for name in compared:
            line += [repr(row.paired_delta[name].mean), repr(row.paired_delta[name].std)]
        for spread in row.drift_per_group:
            line += [repr(spread.mean), repr(spread.std)]
        line += [
            repr(row.param_time_s),
            repr(row.param_extra_s),
            repr(row.param_compile_s),
            repr(row.sampling_ratio),
            " ".join(str(e) for e in row.edges),
        ]
        writer.writerow(line)
    return buffer.getvalue()


def _json_ready(value: Any) -> Any:
    """Non-finite floats as ``null`` (strict JSON), recursively."""
    if isinstance(value, Mapping):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_outputs(
    result: Result,
    out_dir: str | os.PathLike[str],
    *,
    json_path: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Write ``baseline_metrics.json``, ``samples.npz`` and ``baseline_metrics.html``, atomically.

    The JSON, the run's numbers, is written first, then the samples and the phase table, then
    the HTML: a report that fails to render (a bug in :mod:`thermojax.report`) loses nothing
    else. Its traceback goes to the run log, one warning naming the report and the error to the
    console, no ``baseline_metrics.html`` is left (not even an earlier run's) and the returned
    paths lack ``html``; an ``OSError`` while writing any file (a full disk) still propagates.

    Each file goes to a temporary name in ``out_dir`` and is renamed into place, so an
    interrupted run never leaves a half-written file. ``samples.npz`` (arrays ``fp32`` and
    ``quantized``, ``[N, 8, 8]``, plus ``baseline_quantized`` for an enhanced run) is written only
    when ``result.samples`` is present. With a phase table: ``phases.json``, ``phases.csv`` and,
    when ``result.phase_records`` is present, one JSON record per variant and seed in ``phases/``.
    ``baseline_metrics.json`` is a sweep's completion marker: it waits under its staged name
    (:func:`thermojax.files.staged_path`) and is renamed into place after the other files;
    ``json_path`` instead lets the baseline command stage it itself (and rename it after the log).

    Returns:
        The written paths keyed ``json``, ``html`` (unless the report failed to render) and
        ``samples``, ``phases_json``, ``phases_csv``, ``phases_runs`` when written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final_json = out / OUTPUT_FILES["json"]
    staged_json = staged_path(final_json) if json_path is None else Path(json_path)
    paths = {"json": write_result(result, staged_json)}
    try:
        if result.samples is not None:
            paths["samples"] = out / OUTPUT_FILES["samples"]
            with atomic_file(paths["samples"]) as temporary, open(temporary, "wb") as handle:
                np.savez(handle, **{k: np.asarray(v) for k, v in result.samples.items()})
        if result.phases is not None:
            paths.update(_write_phases(result, out))
        html = _render_or_warn(result)
        if html is not None:
            paths["html"] = atomic_write_text(out / OUTPUT_FILES["html"], html)
        else:  # an earlier run's page beside this run's numbers would mislead
            (out / OUTPUT_FILES["html"]).unlink(missing_ok=True)
        if json_path is None:
            paths["json"] = publish_staged(final_json)
    except BaseException:
        if json_path is None:
            staged_json.unlink(missing_ok=True)
        raise
    for kind, path in paths.items():
        log.info("wrote %s: %s", kind, path)
    return paths


def _render_or_warn(result: Result) -> str | None:
    """The HTML report of ``result``, or ``None`` (with its traceback in the run log and one
    warning line) when rendering fails: that is a bug in the report, and the run's numbers are
    complete in the JSON without it."""
    try:
        return render_report(result)
    except Exception as err:  # any bug of the renderer: the run is complete without it
        log.info("rendering %s failed:", OUTPUT_FILES["html"], exc_info=True)
        log.warning(
            "%s not written: the report failed to render (%s: %s), a bug in thermojax's report; "
            "the run's numbers are complete in %s, the traceback is in the run log (%s)",
            OUTPUT_FILES["html"],
            type(err).__name__,
            " ".join(str(err).split())[:200],
            OUTPUT_FILES["json"],
            RUN_LOG,
        )
        return None


def write_comparison(summary: SweepSummary, out_dir: str | Path) -> dict[str, Path]:
    """Write the three outputs as a set: everything rendered, then each file written whole under
    its staged name (:func:`thermojax.files.staged_path`), then the three renamed into place
    with Ctrl-C and SIGTERM held back. A failure or an interrupt before the renames leaves the
    previous set (or none) and no temporary.

    Raises:
        UserInputError: ``out_dir`` takes no files, or the disk fills while writing.
    """
    out = check_writable_folder(out_dir, what="--out")
    contents = {
        "csv": (SWEEP_SUMMARY_CSV, summary_csv(summary)),
        "json": (
            SWEEP_SUMMARY_JSON,
            json.dumps(summary.to_dict(), indent=2, allow_nan=False) + "\n",
        ),
        "html": (COMPARISON_HTML, render_comparison(summary)),
    }
    remove_temporaries(out, depth=0)  # what a killed comparison left
    staged = [out / name for name, _ in contents.values()]
    try:
        with os_errors_as_user_input(f"the comparison into {str(out)!r}"):
            for path, (_, text) in zip(staged, contents.values(), strict=True):
                atomic_write_text(staged_path(path), text)
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for path in staged:
                publish_staged(path)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
    finally:
        for path in staged:
            staged_path(path).unlink(missing_ok=True)
    return dict(zip(contents, staged, strict=True))
