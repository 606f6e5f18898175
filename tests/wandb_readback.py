"""Reading an offline W&B run back with ``wandb leet inspect`` (offline runs write no summary JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

WANDB = Path(sys.executable).with_name("wandb")


def inspect_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """``wandb leet inspect``: the run's summary object and its raw records."""
    summary = subprocess.run(
        [str(WANDB), "leet", "inspect", "--summary", "--json", str(run_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    records = subprocess.run(
        [str(WANDB), "leet", "inspect", "--json", str(run_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(summary.stdout), [json.loads(line) for line in records.stdout.splitlines()]


def offline_run_dir(out: Path) -> Path:
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    return run_dir
