"""A whole run with DDIM: the Result, the report and an exported checkpoint say which sampler
ran and how many steps, and parameters calibrated with one sampler drive another."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from thermojax.cli.config import to_config
from thermojax.pipeline.results.schema import Result
from thermojax.pipeline.run.runner import run
from thermojax.report import render_report

FAST = {
    "calibration": {"samples": 8, "samples_per_step": 8},
    "wandb": {"mode": "disabled"},
    "bit_width": 8,
    "num_time_groups": 4,
}


def settings(sampling: dict, calibration: dict | None = None, **extra):
    return to_config(
        {
            **FAST,
            "sampling": {"num_samples": 8, **sampling},
            "calibration": {**FAST["calibration"], **(calibration or {})},
            **extra,
        }
    )


@pytest.fixture(scope="module")
def ddim_run(tmp_path_factory):
    export = tmp_path_factory.mktemp("export") / "digits-w8"
    config = settings({"sampler": "ddim", "steps": 20}, export={"path": str(export)})
    return run(config), export


def test_a_ddim_run_records_its_sampler_and_steps(ddim_run):
    result, _ = ddim_run
    steps = result.sampler["timesteps"]
    assert result.sampler["sampler"] == "ddim" and result.sampler["steps"] == 20 == len(steps)
    assert steps == sorted(steps) and steps[-1] == 999
    assert result.sampler["calibration"]["timesteps"] == steps
    # Groups on the model's timesteps; the Markov and drift figures over the 20 steps that ran.
    assert result.num_timesteps == 1000
    assert [list(g) for g in result.time_groups] == [[0, 250], [250, 500], [500, 750], [750, 1000]]
    assert len(result.quality.drift_per_timestep) == 20
    assert all(len(layer.activation_min) == 20 for layer in result.layers)
    in_group = [sum(a <= t < b for t in steps) for a, b in result.time_groups]
    drift = np.asarray(result.quality.drift_per_timestep)
    bounds = np.cumsum([0, *in_group])
    means = [drift[a:b].mean() for a, b in itertools.pairwise(bounds)]
    np.testing.assert_allclose(result.quality.drift_per_group, means, rtol=1e-6)
    again = Result.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.sampler == result.sampler
    page = render_report(again)
    assert "DDIM, 20 steps, eta 0" in page


def test_an_exported_ddim_checkpoint_samples_with_any_sampler(ddim_run):
    """The checkpoint's activation parameters live on the model's timesteps: the full DDPM
    sampler runs them as well as DDIM at another step count."""
    _, export = ddim_run
    saved = json.loads((export / "quantization.json").read_text())
    assert "activations" in json.dumps(saved)
    for sampling in ({}, {"sampler": "ddim", "steps": 7}):
        again = run(settings(sampling, model={"path": str(export)}))
        steps = 1000 if not sampling else 7
        assert len(again.quality.drift_per_timestep) == steps
        assert np.isfinite(again.quality.frechet_quantized)


def test_calibrating_on_another_sampler_is_recorded():
    result = run(settings({"sampler": "ddim", "steps": 20}, {"sampler": "ddpm"}))
    assert result.sampler["calibration"]["sampler"] == "ddpm"
    assert len(result.layers[0].activation_min) == 1000
    assert len(result.quality.drift_per_timestep) == 20
    assert result.sampler_description() == (
        "DDIM, 20 steps, eta 0 (calibrated with DDPM, 1000 steps)"
    )
