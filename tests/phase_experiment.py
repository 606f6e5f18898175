"""The one real phase experiment of the suite (``experiment=phases``), made once per test run by
the session fixture ``phase_experiment`` (tests/conftest.py) and read by
tests/pipeline/test_phases.py (its table, records, CSV and page) and tests/cli/test_tracking.py
(its W&B offline run). One variant of each kind: timestep smoothing, group-level smoothing,
Phase 3 and adaptive groups, over two seeds, on the quick settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from user_env import command_env

VARIANTS = ["smooth-cubic-w25", "smooth-groups-linear-w1", "phase3-mw1", "adaptive+smooth"]
SEEDS = 2


def run_phase_experiment(root: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """``python -m thermojax.baseline experiment=phases ...`` into ``root / "phases"`` (HOME and
    cache folder under ``root``, W&B offline, 160 columns); its folder and its process."""
    out = root / "phases"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "thermojax.baseline",
            "experiment=phases",
            f"phases.seeds={SEEDS}",
            f"phases.variants=[{','.join(VARIANTS)}]",
            "phases.markov_weights=[1.0]",
            "thermo.optimization.max_iterations=40",
            "calibration=quick",
            "sampling.num_samples=16",
            "wandb.mode=offline",
            f"hydra.run.dir={out}",
        ],
        cwd=root,
        env=command_env(root / "home", root / "cache", COLUMNS="160"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc
