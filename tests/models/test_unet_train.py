"""The digits UNet's training script: its architecture fits the brief (one channel, 8x8, under
10 MB), a few steps write a diffusers folder that loads as a DiffusionModel, bad flags end in one
line; and the shipped folder is the one the script writes."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from thermojax.errors import UserInputError
from thermojax.models import shipped_path
from thermojax.models.unet.config import UNet2DConfig
from thermojax.models.unet.diffusion import load_unet_diffusion
from thermojax.models.unet.train import (
    DIGITS_UNET_CONFIG,
    SHIPPED_UNET,
    init_params,
    main,
)


def test_the_architecture_is_small_and_seeded():
    config = UNet2DConfig.from_dict(DIGITS_UNET_CONFIG)
    assert config.in_channels == config.out_channels == 1 and config.sample_size == 8
    assert 100_000 < config.num_parameters() < 10e6 / 4  # float32 under 10 MB
    first, again = init_params(config, 0), init_params(config, 0)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["conv_in.weight"], init_params(config, 1)["conv_in.weight"])


def test_bad_flags_end_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--steps", "0", "--out", str(tmp_path / "x")])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--steps" in err[0]
    with pytest.raises(SystemExit):
        main(["--out", str(SHIPPED_UNET)])  # the shipped folder needs --ship
    assert "--ship" in capsys.readouterr().err


@pytest.mark.slow
def test_a_few_steps_write_a_folder_that_loads(tmp_path):
    out = tmp_path / "unet"
    main(["--steps", "2", "--batch-size", "4", "--eval-samples", "0", "--out", str(out)])
    record = json.loads((out / "thermojax.json").read_text())
    assert record["reference"] == "digits" and record["training"]["steps"] == 2
    assert np.isfinite(record["training"]["final_loss"])
    model = load_unet_diffusion(out)
    assert model.reference is not None and model.data_shape == (8, 8)
    init = init_params(UNet2DConfig.from_dict(DIGITS_UNET_CONFIG), 0)
    assert not np.array_equal(np.asarray(model.params["conv_out.weight"]), init["conv_out.weight"])
    x0, _ = jax.jit(model.sample, static_argnames="num_samples")(
        key=jax.random.PRNGKey(0), num_samples=2
    )
    assert model.to_pixels(x0).shape == (2, 8, 8)


def test_the_shipped_folder_is_a_trained_digits_unet():
    if not (SHIPPED_UNET / "config.json").is_file():
        pytest.fail(f"{SHIPPED_UNET} is missing: python -m thermojax.models.unet.train --ship")
    assert shipped_path("digits-unet") == SHIPPED_UNET
    assert json.loads((SHIPPED_UNET / "config.json").read_text()) == DIGITS_UNET_CONFIG
    record = json.loads((SHIPPED_UNET / "thermojax.json").read_text())
    assert record["reference"] == "digits" and record["training"]["final_loss"] < 0.1
    size = sum(p.stat().st_size for p in SHIPPED_UNET.rglob("*") if p.is_file())
    assert size < 10e6
    with pytest.raises(UserInputError, match="digits-unet|must be one of"):
        shipped_path("digits-unet-2")
