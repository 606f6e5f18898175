"""The run log (``baseline_metrics.log``) and the console: a progress bar and a short summary.

The full log of a run (every INFO record of thermojax, warnings of the libraries) is collected in
memory and written atomically at the end, so an interrupted run never leaves a half-written log
and a rejected input leaves none at all. The console shows only a rich progress bar over the
pipeline's stages, warnings, and a few summary lines.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from thermojax.errors import UserInputError
from thermojax.files import atomic_write_text
from thermojax.pipeline import STAGES, ProgressCallback
from thermojax.pipeline.quality.kind import Headline, quality_kind
from thermojax.pipeline.results.schema import Result

__all__ = [
    "LOG_FORMAT",
    "PHASE_ROWS_SHOWN",
    "RunLog",
    "chain_line",
    "comparison_lines",
    "phase_lines",
    "print_summary",
    "stage_progress",
]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_QUIET_LOGGERS = ("jax", "absl", "urllib3", "wandb", "git", "matplotlib")
PHASE_ROWS_SHOWN = 6
"""Variants the console shows besides the baseline (the best by the second headline figure of
the kind of sample, :attr:`QualityKind.headline
<thermojax.pipeline.quality.kind.QualityKind.headline>`: paired Frechet change for images)."""


class RunLog:
    """Collects log records in memory while attached; :meth:`write` saves them atomically.

    Example:
        >>> run_log = RunLog()
        >>> with run_log.attached():
        ...     logging.getLogger("thermojax").info("hello")
        >>> "hello" in run_log.text()
        True
    """

    def __init__(self, level: int = logging.INFO) -> None:
        self._buffer = io.StringIO()
        self._handler = logging.StreamHandler(self._buffer)
        self._handler.setLevel(level)
        self._handler.setFormatter(logging.Formatter(LOG_FORMAT))
        self._console_handler: logging.Handler | None = None
        self._level = level

    @contextmanager
    def attached(self, console: Console | None = None) -> Iterator[RunLog]:
        """Route the root logger here (and warnings to ``console``) for the ``with`` block."""
        root = logging.getLogger()
        previous_level = root.level
        previous_levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
        root.setLevel(self._level)
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        root.addHandler(self._handler)
        if console is not None:
            self._console_handler = RichHandler(
                console=console, level=logging.WARNING, show_path=False, show_time=False
            )
            root.addHandler(self._console_handler)
        logging.captureWarnings(True)
        try:
            yield self
        finally:
            logging.captureWarnings(False)
            root.removeHandler(self._handler)
            if self._console_handler is not None:
                root.removeHandler(self._console_handler)
                self._console_handler = None
            root.setLevel(previous_level)
            for name, level in previous_levels.items():
                logging.getLogger(name).setLevel(level)

    def text(self) -> str:
        """Everything logged so far."""
        self._handler.flush()
        return self._buffer.getvalue()

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the log to ``path`` atomically."""
        return atomic_write_text(path, self.text())


@contextmanager
def stage_progress(console: Console) -> Iterator[ProgressCallback]:
    """A rich progress bar over the pipeline's stages; yields the callback for ``run``.

    Shown on interactive terminals only (a pipe or a CI log would get one stale final frame;
    the run log has every stage with its time). ``TTY_INTERACTIVE=1`` forces it on.
    """
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_interactive,
    ) as progress:
        task = progress.add_task("starting", total=len(STAGES))

        def on_stage(stage: str, index: int, total: int) -> None:
            progress.update(task, completed=index, total=total, description=stage, refresh=True)

        try:
            yield on_stage
        except UserInputError:
            # A rejected input ends in one error line; no half-filled bar above it.
            progress.live.transient = True
            raise


_BAND_STYLES = {"poor": "red", "fair": "yellow", "good": "blue", "excellent": "green"}
"""Each smoothness and quality band's colour in the terminal."""


def print_summary(console: Console, result: Result, files: Mapping[str, Path]) -> None:
    """A few short lines: the smoothness and quality bands, violations, weights, quality, files.

    A weight-only run says so, and prints only the figures it has.
    """
    markov = result.smoothness_score is not None
    mode = "weight-only, " if result.mode == "weight-only" else ""
    act = " dynamic per token" if result.act_mode() == "dynamic" else ""
    act += ", Hadamard-rotated" if result.act_rotation() == "hadamard" else ""
    act += ", mask-aware" if result.act_mask_aware() else ""
    granularity = result.act_granularity()
    act += f", per block of channels ({granularity.split()[1]})" if granularity != "tensor" else ""
    lines = [
        f"[bold]{escape(result.model_name)}[/bold]: {mode}INT{result.bit_width} weights"
        + (f", A{result.act_bits}{act}, {result.num_time_groups} time groups" if markov else "")
        + (f", {escape(result.sampler_description())}" if result.sampler is not None else "")
    ]
    if markov:
        i = result.interpretation
        quality = ""
        if i.quality_band is not None:
            style = _BAND_STYLES.get(i.quality_band, "white")
            quality = (
                f", quality band: [bold {style}]{i.quality_band}[/] ({escape(i.quality_detail)})"
            )
        lines += [
            (
                f"  smoothness [bold {_BAND_STYLES.get(i.band, 'white')}]"
                f"{result.smoothness_score:.4f} (smoothness band: {i.band})[/]{quality}, "
                f"{result.violation_count} violations (jump > {result.smoothness_threshold})"
            ),
            (
                f"  boundary scores min/mean/max {result.min_boundary_score:.3f} / "
                f"{result.mean_boundary_score:.3f} / {result.max_boundary_score:.3f}"
            ),
        ]
    else:
        lines.append("  no per-timestep activation statistics: no Markov smoothness figures")
    lines.append(
        f"  weights: cosine {result.cosine_similarity:.4f}, {result.compression_ratio:.2f}x, "
        f"{result.model_size_mb:.4f} MB"
        + (f" ({result.weight_method()})" if result.mode != "weight-only" else "")
    )
    if result.weights is not None and result.mode == "weight-only":
        w = result.weights
        lines.append(
            f"  tensors: {len(w.quantized_tensors)} of {len(w.tensors)} quantized, "
            f"{w.total_source_bytes / 1e9:.3g} GB -> {w.total_quantized_bytes / 1e9:.3g} GB "
            f"({w.compression_vs_source:.2f}x as stored), {w.bytes_per_second / 1e9:.2f} GB/s"
        )
    if result.quality is not None:
        lines.append(f"  quality: {quality_kind(result.quality.kind).summary(result.quality)}")
    if result.chain is not None:
        lines.append(chain_line(result))
    lines.append(
        f"  time: quantization {result.quantization_time_s:.1f} s, "
        f"total {result.timings_s.get('total', float('nan')):.1f} s"
    )
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    for line in [*comparison_lines(result), *phase_lines(result, files)]:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    folder = Path(next(iter(files.values()))).parent if files else Path(".")
    tail = []
    if markov:
        patterns = ", ".join(p.name for p in result.common_violation_patterns) or "none"
        tail += [f"  patterns: {patterns}", f"  next: {'; '.join(result.interpretation.actions)}"]
    if result.weights is not None and result.weights.export_path:
        tail.append(f"  quantized checkpoint: {result.weights.export_path}")
    tail.append(f"  outputs: {folder}/")
    for line in tail:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def chain_line(result: Result) -> str:
    """The chain's error budget in one line (a run with ``thermo.chain_budget.enabled``).

    Example (as printed)::

          chain budget (final-state MSE, 16 samples): total 0.1508, per group 0.02749 / 0.04189 /
          0.01138 / 0.002247, additivity 0.55
    """
    chain = result.chain
    return (
        f"  chain budget (final-state MSE, {chain.num_samples} samples): total {chain.total:.4g}, "
        f"per group {' / '.join(f'{v:.4g}' for v in chain.per_group)}, "
        f"additivity {chain.additivity:.2f}"
    )


def comparison_lines(result: Result) -> list[str]:
    """Baseline beside enhanced for an enhanced run (nothing for a plain one).

    Example (as printed)::

          enhanced: cubic blend, window 20 timesteps; Phase 3 on the schedule, markov_weight 1
                        baseline  enhanced
          smoothness      0.9528    0.9088
          violations           1         5
          final MSE       36.475    36.549
          Frechet        440.865   441.734
          Phase 3: 4/6 layers converged, at most 40 iterations
    """
    if result.baseline is None or result.enhancement is None:
        return []
    base = result.baseline
    rows = [
        ("smoothness", base.metrics.smoothness_score, result.smoothness_score, ".4f"),
        ("violations", base.metrics.violation_count, result.violation_count, "d"),
    ]
    for shown in _headline(result.quality.kind, result.quality.figures()):
        before, after = base.quality.figure(shown.name), result.quality.figure(shown.name)
        if before is not None and after is not None:
            rows.append((shown.label, before, after, ".3f"))
    lines = [
        f"  enhanced: {result.enhancement.description}",
        f"  {'':<12}{'baseline':>10}{'enhanced':>10}",
    ]
    lines += [f"  {name:<12}{b:>10{fmt}}{e:>10{fmt}}" for name, b, e, fmt in rows]
    opt = result.enhancement.optimization
    if opt is not None and opt.iterations:
        lines.append(
            f"  Phase 3: {sum(opt.converged)}/{len(opt.converged)} layers converged, "
            f"at most {max(opt.iterations)} iterations"
        )
    return lines


def phase_lines(result: Result, files: Mapping[str, Path]) -> list[str]:
    """A compact top of the phase table (nothing without one) and where ``phases.csv`` is.

    The baseline row, then the :data:`PHASE_ROWS_SHOWN` variants with the lowest mean paired
    change in Frechet distance (variant minus the same seed's baseline; lower is better).
    Smoothness and violations are means over the seeds; deltas are ``mean±std`` over the seeds.
    """
    if result.phases is None:
        return []
    table = result.phases
    first_shown, key_shown = _headline(table.family, table.compared())
    first, first_label = first_shown.name, first_shown.short
    key, key_label = key_shown.name, key_shown.short
    sign = 1.0 if key_shown.lower_is_better else -1.0
    baseline = [row for row in table.rows if row.phase == "baseline"]
    others = sorted(
        (row for row in table.rows if row.phase != "baseline"),
        key=lambda row: _sort_key(sign * row.paired_delta[key].mean),
    )
    shown = [*baseline, *others[:PHASE_ROWS_SHOWN]]
    width = max([len("variant"), *(len(row.variant) for row in shown)])
    first_head, key_head = f"Δ {first_label} paired", f"Δ {key_label} paired"
    lines = [
        (
            f"  phase table: {len(table.rows)} variants x {len(table.seeds)} seeds, "
            f"INT{table.bit_width}; baseline and the best {min(PHASE_ROWS_SHOWN, len(others))} "
            f"by paired Δ {key_label} (mean±std over seeds)"
        ),
        (
            f"  {'variant':<{width}}  {'smoothness':>10}  {'violations':>10}  "
            f"{first_head:>15}  {key_head:>16}"
        ),
    ]
    for row in shown:
        a, b = row.paired_delta[first], row.paired_delta[key]
        lines.append(
            f"  {row.variant:<{width}}  {row.smoothness_score.mean:>10.4f}  "
            f"{row.violation_count.mean:>10.1f}  {_pm(a.mean, a.std):>15}  "
            f"{_pm(b.mean, b.std):>16}"
        )
    if len(shown) < len(table.rows):
        lines.append(f"  ... {len(table.rows) - len(shown)} more variants")
    if "phases_csv" in files:
        lines.append(f"  full phase table: {files['phases_csv']}")
    return lines


def _headline(kind: str, present: Iterable[str]) -> tuple[Headline, ...]:
    """The headline figures of the kind of sample ``kind``, each replaced by its stand-in
    where the run lacks it (held-out perplexity -> generative perplexity)."""
    present = tuple(present)
    return tuple(shown.present(present) for shown in quality_kind(kind).headline)


def _pm(mean: float, std: float) -> str:
    return f"{mean:+.3f}±{std:.3f}"


def _sort_key(value: float) -> float:
    return float("inf") if math.isnan(value) else value  # NaN sorts last
