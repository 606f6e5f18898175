"""The named stages of a run: their order, their timings, and the progress callback.

Example:
    >>> from thermojax.pipeline.measure.memory import release_freed_memory
from thermojax.pipeline.settings import BaselineConfig
    >>> stage_names(BaselineConfig())[:3]
    ('load model', 'quantize weights', 'calibrate')
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from thermojax.pipeline.measure.memory import release_freed_memory
from thermojax.pipeline.settings import BaselineConfig

__all__ = [
    "CHAIN_STAGE",
    "ENHANCE_STAGE",
    "EXPORT_STAGE",
    "PHASES_STAGE",
    "SAMPLE_ENHANCED_STAGE",
    "STAGES",
    "ProgressCallback",
    "Stages",
    "stage_names",
]

log = logging.getLogger(__name__)

STAGES = (
    "load model",
    "quantize weights",
    "calibrate",
    "time groups + metrics",
    "sample fp32",
    "sample quantized",
    "evaluate quality",
)
"""The stages of a baseline run, in order (an enhanced run adds stages: :func:`stage_names`)."""

ENHANCE_STAGE = "enhance parameters"
SAMPLE_ENHANCED_STAGE = "sample enhanced"
CHAIN_STAGE = "chain budget"
PHASES_STAGE = "phase experiment"
EXPORT_STAGE = "export"


def stage_names(config: BaselineConfig) -> tuple[str, ...]:
    """The stages a run of a model thermojax samples reports to its ``progress`` callback."""
    names = list(STAGES)
    if config.enhanced:
        names.insert(names.index("sample fp32"), ENHANCE_STAGE)
        names.insert(names.index("evaluate quality"), SAMPLE_ENHANCED_STAGE)
    if config.thermo.chain_budget.enabled:
        names.append(CHAIN_STAGE)
    if config.phases.enabled:
        names.append(PHASES_STAGE)
    if config.export.path is not None:
        names.append(EXPORT_STAGE)
    return tuple(names)


ProgressCallback = Callable[[str, int, int], None]
"""``progress(stage, index, total)``, called as each stage starts and once with ``"done"``."""


class Stages:
    """Times the stages, logs them, and tells the progress callback."""

    def __init__(self, progress: ProgressCallback | None, names: Sequence[str] = STAGES) -> None:
        self.progress = progress
        self.names = tuple(names)
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        index, total = self.names.index(name), len(self.names)
        if self.progress is not None:
            self.progress(name, index, total)
        log.info("stage %d/%d: %s", index + 1, total, name)
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start
        release_freed_memory()  # what the stage's compilations freed, before the next allocates
        log.info("stage %s took %.2f s", name, self.timings[name])
        if self.progress is not None and index == total - 1:
            self.progress("done", total, total)
