"""What the Ray launcher keeps in each job folder: which overrides it runs, whether it finished,
why it failed, and the outputs copied back from another node.

Every file is published with :mod:`thermojax.files` (temporary file, fsync, rename), whose
names the defaults come from: a finished job leaves ``REPORT_JSON``, a failed one ``FAILURE_JSON``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hydra_plugins.thermojax_ray_launcher._worker import JobFailed
from thermojax.files import (
    FAILURE_JSON,
    REPORT_JSON,
    TEMPORARY_GLOB,
    TEMPORARY_SUFFIX,
    atomic_write_bytes,
    atomic_write_text,
)

log = logging.getLogger(__name__)

FAILURE_SCHEMA_VERSION = 1

JOB_RECORD = ".launcher_job.json"
"""Written by the launcher into each job folder before the job starts: which overrides it runs.

Hydra's own ``.hydra/overrides.yaml`` is not there when ``hydra.output_subdir`` is null."""


@dataclass
class PlannedJob:
    """One job of the batch: its number, overrides, composed config and folder."""

    idx: int
    overrides: list[str]
    config: DictConfig
    job_dir: Path


def report_file(configured: str | None) -> str:
    """``hydra.launcher.report_file``, or thermojax's report when it is unset."""
    return configured or REPORT_JSON


def failure_file(configured: str | None) -> str:
    """``hydra.launcher.failure_file``, or thermojax's failure record when it is unset."""
    return configured or FAILURE_JSON


def _recorded_overrides(job_dir: Path) -> list[str] | None:
    record = job_dir / JOB_RECORD
    try:
        if record.is_file():
            overrides = json.loads(record.read_text(encoding="utf-8"))["overrides"]
        elif (job_dir / ".hydra" / "overrides.yaml").is_file():
            overrides = OmegaConf.to_container(
                OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")
            )
        else:
            return None
    except Exception:  # noqa: BLE001 - unreadable means "unknown"
        return None
    return [str(o) for o in overrides] if isinstance(overrides, list) else None


def job_is_complete(job_dir: Path, report_file: str, overrides: Sequence[str]) -> bool:
    """True when ``job_dir`` holds a complete report written for exactly these overrides.

    The report must parse as a JSON object (reports are written atomically, so a parseable one is
    whole), and the overrides recorded in the folder (the launcher's ``.launcher_job.json``, else
    Hydra's ``.hydra/overrides.yaml``) must be the same: a folder left by a different sweep into
    the same directory is re-run, not mistaken for this job.
    """
    report = job_dir / report_file
    if not report.is_file() or _recorded_overrides(job_dir) != list(overrides):
        return False
    try:
        return isinstance(json.loads(report.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def remove_leftover_temporaries(job_dir: Path) -> None:
    """Delete the temporaries (``.NAME.*.tmp``) of atomic writes that a killed attempt left.

    Called while planning, before any job of this sweep starts, so no writer owns them.
    """
    for leftover in job_dir.glob(TEMPORARY_GLOB):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            leftover.unlink()
            log.info("removed %s, left by an interrupted attempt", leftover)


def prepare_to_run(job: PlannedJob, failure_file: str) -> None:
    """Forget an earlier attempt's failure (it no longer describes this job) and record the
    overrides the job is about to run."""
    with contextlib.suppress(FileNotFoundError):
        (job.job_dir / failure_file).unlink()
    record = {"job_num": job.idx, "overrides": job.overrides}
    atomic_write_text(job.job_dir / JOB_RECORD, json.dumps(record) + "\n")


def write_failure(
    job: PlannedJob, failure_file: str, error: JobFailed, *, worker_died: bool
) -> Path:
    """Record a failed job's error and traceback in its folder; returns the record's path."""
    path = job.job_dir / failure_file
    record = {
        "schema_version": FAILURE_SCHEMA_VERSION,
        "job_num": job.idx,
        "overrides": job.overrides,
        "error_type": error.error_type,
        "message": error.message,
        "worker_died": worker_died,
        "traceback": error.traceback_text,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def write_copied_outputs(job_dir: Path, files: dict[str, bytes]) -> None:
    """Write the files a worker on another node sent back, leaving out unfinished temporaries."""
    for relative, data in files.items():
        if not relative.endswith(TEMPORARY_SUFFIX):
            atomic_write_bytes(job_dir / relative, data)
