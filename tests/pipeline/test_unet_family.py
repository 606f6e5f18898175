"""A diffusers UNet2DModel folder runs the whole baseline: the family claims it, the run
calibrates, groups, quantizes (conv kernels along in*kh*kw) and samples it, the result and report
are written, the same seed gives the same numbers; options it cannot take end in one line.

The tiny fixture (tests/fixtures/unet_tiny: a random 3-channel 16x16 pipeline folder) has no
quality reference, so its Frechet figures are NaN (null in the JSON); the shipped digits UNet has
the digits classifier's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from thermojax.cli.config import to_config
from thermojax.errors import UserInputError
from thermojax.pipeline import run
from thermojax.pipeline.families import UNET, recognise
from thermojax.report import render_report

FIXTURE = Path(__file__).parents[1] / "fixtures" / "unet_tiny"


def settings(**extra):
    base = {
        "model": {"path": str(FIXTURE)},
        "calibration": {"samples": 4, "samples_per_step": 8},
        "wandb": {"mode": "disabled"},
        "sampling": {"num_samples": 4, "sampler": "ddim", "steps": 8},
        "bit_width": 4,
        "group_size": 16,
        "num_time_groups": 2,
    }
    for key, value in extra.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return to_config(base)


@pytest.fixture(scope="module")
def fixture_run():
    return run(settings())


def test_the_family_claims_model_and_pipeline_folders():
    assert recognise(settings()) is UNET
    assert recognise(settings(model={"path": str(FIXTURE / "unet")})) is UNET
    assert recognise(to_config({"wandb": {"mode": "disabled"}})).name == "digits-ddpm"
    # a model folder without its scheduler: claimed, then refused in one line
    with pytest.raises(UserInputError, match="scheduler_config.json") as refused:
        run(settings(model={"path": str(FIXTURE / "plain")}))
    assert "\n" not in str(refused.value)


def test_a_fixture_run_has_finite_metrics_and_a_report(fixture_run):
    result = fixture_run
    assert result.sampler["sampler"] == "ddim" and result.sampler["steps"] == 8
    assert result.num_timesteps == 1000
    layers = [layer.name for layer in result.layers]
    assert "conv_out" in layers and "down_blocks.1.attentions.0.to_q" in layers
    assert "conv_in" not in layers
    quality = result.quality
    assert math.isfinite(quality.final_mse) and quality.final_mse > 0
    assert all(math.isfinite(d) for d in quality.drift_per_timestep)
    assert math.isnan(quality.frechet_fp32)  # no reference
    assert math.isfinite(result.compression_ratio) and result.compression_ratio > 1
    saved = json.loads(json.dumps(result.to_dict()))
    assert saved["quality"]["frechet_fp32"] is None
    page = render_report(result)
    assert "DDIM, 8 steps, eta 0" in page


def test_the_same_seed_gives_the_same_numbers(fixture_run):
    again = run(settings())
    assert again.quality.final_mse == fixture_run.quality.final_mse
    assert again.quality.drift_per_timestep == fixture_run.quality.drift_per_timestep


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"group_size": 32}, "time_embedding.linear_1 (16)"),
        ({"export": {"path": "/tmp/never-written"}}, "no quantized checkpoint format"),
        ({"act": {"rotation": "hadamard"}}, "act.rotation"),
        ({"sampling": {"length": 16}}, "sampling.length"),
    ],
    ids=["group-size", "export", "rotation", "text-sampler"],
)
def test_options_it_cannot_take_end_in_one_line(extra, message):
    with pytest.raises(UserInputError) as refused:
        run(settings(**extra))
    text = str(refused.value)
    assert message in text and "\n" not in text


def test_the_command_writes_its_result_and_report(tmp_path, monkeypatch):
    import sys

    from thermojax.cli.baseline import main

    args = [
        f"model.path={FIXTURE}",
        "sampling.num_samples=4",
        "sampling.sampler=ddim",
        "sampling.steps=8",
        "calibration.samples=4",
        "group_size=16",
        "num_time_groups=2",
        "wandb.mode=disabled",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["thermojax", *args])
    main()  # returns on success (a refusal exits 2)
    files = {p.name for p in (tmp_path / "run").rglob("*")}
    assert "baseline_metrics.json" in files and any(name.endswith(".html") for name in files)


@pytest.mark.slow
def test_the_shipped_digits_unet_runs_with_its_reference():
    result = run(
        to_config(
            {
                "model": {"shipped": "digits-unet"},
                "group_size": 32,
                "calibration": {"samples": 16, "samples_per_step": 8},
                "wandb": {"mode": "disabled"},
                "sampling": {"num_samples": 32, "sampler": "ddim", "steps": 20},
                "bit_width": 8,
            }
        )
    )
    assert np.isfinite(result.quality.frechet_fp32) and np.isfinite(
        result.quality.frechet_quantized
    )
    assert 0 < result.quality.class_coverage_fp32 <= 1


@pytest.mark.slow
def test_gptq_takes_the_conv_layers_im2col_rows():
    """GPTQ's Hessians of a conv are over its im2col rows (in*kh*kw wide): the run works and
    its weights land closer to fp32 than minmax's."""
    gptq = run(settings(quant={"method": "gptq", "hessian_samples": 2}))
    assert math.isfinite(gptq.quality.final_mse)
    minmax = run(settings())
    assert gptq.quality.final_mse < minmax.quality.final_mse


def test_module_example():
    import doctest

    from thermojax.pipeline.families import unet

    assert doctest.testmod(unet).failed == 0
