"""``python -m thermojax.compare SWEEP_DIR``: one sweep's reports side by side.

Reads every ``baseline_metrics.json`` of a sweep folder (strict JSON, into the saved ``Result``,
never recomputing a metric) and every ``failure.json`` the Ray launcher recorded
(:func:`thermojax.pipeline.results.sweep.collect`), and writes into the sweep folder (or ``--out``;
:func:`thermojax.cli.outputs.write_comparison`):

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

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from thermojax.cli.outputs import write_comparison
from thermojax.errors import OneLineArgumentParser, command_boundary
from thermojax.files import check_writable_folder
from thermojax.pipeline.results.sweep import SweepSummary, collect

__all__ = ["main"]


def _compare(sweep_dir: str, out: str | None) -> tuple[SweepSummary, dict[str, Path]]:
    """Check ``--out`` (before any work), read the sweep, write the comparison."""
    if out is not None:
        check_writable_folder(out, what="--out")
    summary = collect(sweep_dir)
    return summary, write_comparison(summary, out or sweep_dir)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line; an empty or foreign folder ends in one ``error:`` line and exit 2."""
    parser = OneLineArgumentParser(
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
