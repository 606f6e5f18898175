"""``python -m thermojax.compare SWEEP_DIR``: one sweep's reports side by side.

Reads every ``baseline_metrics.json`` of a sweep folder (strict JSON, into the saved ``Result``,
never recomputing a metric) and every ``failure.json`` the Ray launcher recorded, and writes into
the sweep folder (or ``--out``):

- ``sweep_summary.csv``: one row per configuration, failed ones included;
- ``sweep_summary.json``: the same rows, the failures and the correlations;
- ``comparison.html``: self-contained (inline CSS and SVG, Jinja2 with autoescaping), drawn by
  :mod:`thermojax.report.comparison`: the table, the smoothness heatmap over bit width x time
  groups, violations against the threshold, sample quality (drift, Frechet distance) against
  smoothness with their correlation, and the failures.

With ``--wandb`` the comparison is also logged as one W&B run in the sweep's group
(:func:`thermojax.cli.sweep_tracking.log_comparison`; offline by default, under
``<out>/wandb``), as a sweep does by itself when it ends.

An empty or foreign folder ends in one ``error:`` line, exit status 2, and nothing written.

Example:
    python -m thermojax.compare multirun/2026-11-27/10-11-31 [--wandb]
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thermojax.errors import UserInputError, command_boundary, os_errors_as_user_input
from thermojax.files import (
    COMPARISON_HTML,
    FAILURE_JSON,
    REPORT_JSON,
    SWEEP_SUMMARY_CSV,
    SWEEP_SUMMARY_JSON,
    atomic_write_text,
    check_writable_folder,
    publish_staged,
    remove_temporaries,
    staged_path,
)
from thermojax.pipeline.results.schema import Result
from thermojax.report.comparison import (
    COLUMNS,
    CONFIG_KEYS,
    MIN_POINTS,
    SUMMARY_SCHEMA_VERSION,
    SweepSummary,
    render_comparison,
    summary_csv,
)

__all__ = [
    "COLUMNS",
    "SUMMARY_SCHEMA_VERSION",
    "SweepSummary",
    "collect",
    "main",
    "pearson",
    "within_correlations",
    "write_comparison",
]

_QUALITY_COLUMNS = (
    "drift_mean",
    "final_mse",
    "frechet_fp32",
    "frechet_quantized",
    "class_coverage_quantized",
    "token_agreement",
    "generative_perplexity_quantized",
    "heldout_perplexity_quantized",
)
"""Quality columns of the summary: the DDPM's and a masked-diffusion LM's (empty for the other)."""
CORRELATED = (
    "drift_mean",
    "frechet_quantized",
    "final_mse",
    "token_agreement",
    "generative_perplexity_quantized",
    "heldout_perplexity_quantized",
)
"""The quality figures whose correlation with the smoothness score the summary reports."""


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson correlation of paired finite values; ``None`` below 3 pairs or without spread."""
    x = np.asarray(xs, np.float64)
    y = np.asarray(ys, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
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
    x, y = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
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


def _not_strict(name: str) -> float:
    raise ValueError(f"{name} is not strict JSON")


def _read_report(path: Path) -> Result:
    """A sweep job's report, as :func:`~thermojax.pipeline.results.schema.read_result` reads it, but
    strict JSON (no NaN) and an object at the top (a report of another shape is a failed row)."""
    data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_not_strict)
    if not isinstance(data, dict):
        raise TypeError(f"holds a JSON {type(data).__name__}, not a report object")
    return Result.from_dict(data)


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


_OVERRIDE_COLUMNS = {"sampling.sampler": "sampler", "sampling.steps": "sampling_steps"}
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
            record = json.loads(path.read_text(encoding="utf-8"))
            overrides = [str(o) for o in record.get("overrides", [])]
            error_type, message = str(record["error_type"]), str(record["message"])
        except (OSError, ValueError, KeyError, AttributeError) as err:
            overrides, error_type, message = [], "UnreadableFailure", f"{type(err).__name__}: {err}"
        failures.append(
            {"job": job, "overrides": overrides, "error_type": error_type, "message": message}
        )
        rows.append(_failed_row(job, _config_from_overrides(overrides), f"{error_type}: {message}"))
    rows.sort(key=_sort_key)
    failures.sort(key=lambda f: f["job"])
    # Quality and smoothness do not depend on the threshold: count each calibrated and sampled
    # configuration once, or threshold variants would weigh it several times.
    distinct: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        if row["status"] == "ok":
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


def _compare(sweep_dir: str, out: str | None) -> tuple[SweepSummary, dict[str, Path]]:
    """Check ``--out`` (before any work), read the sweep, write the comparison."""
    if out is not None:
        check_writable_folder(out, what="--out")
    summary = collect(sweep_dir)
    return summary, write_comparison(summary, out or sweep_dir)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line; an empty or foreign folder ends in one ``error:`` line and exit 2."""
    parser = argparse.ArgumentParser(
        prog="python -m thermojax.compare",
        description="Compare the configurations of one sweep: CSV, JSON and an HTML dashboard.",
    )
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="the folder a multirun wrote")
    parser.add_argument("--out", help="where to write (default: SWEEP_DIR)")
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the comparison as one W&B run in the sweep's group (offline: OUT/wandb)",
    )
    parser.add_argument(
        "--wandb-mode",
        choices=("offline", "online"),
        default="offline",
        help="with --wandb: offline (default, no network; `wandb sync` uploads) or online",
    )
    args = parser.parse_args(argv)
    # A bad SWEEP_DIR or --out, a full disk: one error line, exit 2; Ctrl-C: one line, 130.
    summary, files = command_boundary(
        lambda: _compare(args.sweep_dir, args.out), name="thermojax.compare"
    )
    done = len(summary.completed)
    print(f"{done} configurations compared, {len(summary.failures)} failed")
    for path in files.values():
        print(f"  {path}")
    if args.wandb:
        _log_to_wandb(
            summary, files, Path(args.sweep_dir), Path(args.out or args.sweep_dir), args.wandb_mode
        )


def _log_to_wandb(
    summary: SweepSummary, files: Mapping[str, Path], sweep_dir: Path, out: Path, mode: str
) -> None:
    """``--wandb``: the summary run; a W&B failure is one ``error:`` line and exit 1, after the
    local outputs are written."""
    from thermojax.cli.sweep_tracking import comparison_settings, log_comparison

    settings, group = comparison_settings(sweep_dir, mode)
    try:
        run_dir = log_comparison(summary, files, settings, group=group, run_dir=out)
    except Exception as exc:  # noqa: BLE001 - any W&B failure: the local files are kept
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: W&B summary run failed (local outputs kept): {message}", file=sys.stderr)
        sys.exit(1)
    print(f"W&B summary run {group}-comparison in group {group} ({mode}): {run_dir}")
    if mode == "offline":
        print(f"  upload: wandb sync {run_dir}")


if __name__ == "__main__":
    main()
