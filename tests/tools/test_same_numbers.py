"""tools/same_numbers.py: equal runs pass, a changed number or sample fails, timings do not count."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
from result_samples import make_result

from thermojax.cli.outputs import write_outputs

TOOL = Path(__file__).resolve().parents[2] / "tools" / "same_numbers.py"


def check(before: Path, after: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), str(before), str(after)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_timings_and_environment_aside_equal_runs_are_identical(tmp_path):
    result = make_result()
    write_outputs(result, tmp_path / "before")
    later = dataclasses.replace(
        result,
        timings_s={"calibrate": 9.0, "total": 99.0},
        quantization_time_s=5.0,
        environment={"jax": "other"},
    )
    write_outputs(later, tmp_path / "after")
    proc = check(tmp_path / "before", tmp_path / "after")
    assert proc.returncode == 0, proc.stdout
    assert "1 report(s) compared: identical" in proc.stdout


def test_a_changed_figure_or_sample_is_reported(tmp_path):
    result = make_result()
    write_outputs(result, tmp_path / "before")
    quality = dataclasses.replace(result.quality, final_mse=result.quality.final_mse + 1e-6)
    samples = {**result.samples, "quantized": np.asarray(result.samples["quantized"]) + 1.0}
    write_outputs(dataclasses.replace(result, quality=quality, samples=samples), tmp_path / "after")
    proc = check(tmp_path / "before", tmp_path / "after")
    assert proc.returncode == 1
    assert ".quality.final_mse:" in proc.stdout
    assert "samples.npz[quantized] differs" in proc.stdout
    assert "samples.npz[fp32]" not in proc.stdout


def test_a_missing_report_is_reported(tmp_path):
    write_outputs(make_result(), tmp_path / "before" / "0")
    (tmp_path / "after").mkdir()
    proc = check(tmp_path / "before", tmp_path / "after")
    assert proc.returncode == 1
    assert "0/baseline_metrics.json: missing" in proc.stdout
