"""The run log (``baseline_metrics.log``) and the console: a progress bar and a short summary.

The full log of a run (every INFO record of thermojax, warnings of the libraries) is collected in
memory and written atomically at the end, so an interrupted run never leaves a half-written log
and a rejected input leaves none at all. The console shows only a rich progress bar over the
pipeline's stages, warnings, and a few summary lines.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator, Mapping
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
from thermojax.pipeline import STAGES, ProgressCallback
from thermojax.results import Result, atomic_write_text

__all__ = ["LOG_FORMAT", "RunLog", "print_summary", "stage_progress"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_QUIET_LOGGERS = ("jax", "absl", "urllib3", "wandb", "git", "matplotlib")


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


def print_summary(console: Console, result: Result, files: Mapping[str, Path]) -> None:
    """A few short lines: score and band, violations, weights, quality, where the files are."""
    band_style = {"poor": "red", "good": "blue", "excellent": "green"}.get(
        result.interpretation.band, "white"
    )
    q = result.quality
    lines = [
        (
            f"[bold]{escape(result.model_name)}[/bold]: INT{result.bit_width} weights, "
            f"A{result.act_bits}, {result.num_time_groups} time groups"
        ),
        (
            f"  smoothness [bold {band_style}]{result.smoothness_score:.4f} "
            f"({result.interpretation.band})[/], {result.violation_count} violations "
            f"(jump > {result.smoothness_threshold})"
        ),
        (
            f"  boundary scores min/mean/max {result.min_boundary_score:.3f} / "
            f"{result.mean_boundary_score:.3f} / {result.max_boundary_score:.3f}"
        ),
        (
            f"  weights: cosine {result.cosine_similarity:.4f}, {result.compression_ratio:.2f}x, "
            f"{result.model_size_mb:.4f} MB"
        ),
        (
            f"  quality: final MSE {q.final_mse:.3f}, Frechet {q.frechet_fp32:.2f} (fp32) / "
            f"{q.frechet_quantized:.2f}"
        ),
        (
            f"  time: quantization {result.quantization_time_s:.1f} s, "
            f"total {result.timings_s.get('total', float('nan')):.1f} s"
        ),
    ]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    patterns = ", ".join(p.name for p in result.common_violation_patterns) or "none"
    folder = Path(next(iter(files.values()))).parent if files else Path(".")
    for line in (
        f"  patterns: {patterns}",
        f"  next: {'; '.join(result.interpretation.actions)}",
        f"  outputs: {folder}/",
    ):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
