"""``act.rotation=hadamard``: the loaded model replaced by its randomized-Hadamard rotation (signs
from ``seed``) before anything runs on it, on the shipped LM and the digits DDPM: the fp32
reference unchanged within float32 rounding, the A4 quantized model better, the result saying
it was rotated, and the settings a rotation cannot go with refused in one line."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from rich.console import Console

from thermojax.cli.config import to_config
from thermojax.cli.runlog import print_summary
from thermojax.cli.tracking import summary_metrics
from thermojax.errors import UserInputError
from thermojax.files import REPORT_JSON
from thermojax.models import load_model
from thermojax.models.hf import write_dream_like
from thermojax.pipeline import run
from thermojax.pipeline.checkpoint.export_digits import export_digits
from thermojax.pipeline.families.base import DiffusionFamily, LoadedModel
from thermojax.pipeline.families.digits import DIGITS
from thermojax.pipeline.results.schema import Result, read_result, write_result
from thermojax.pipeline.results.sweep import collect
from thermojax.pipeline.run.diffusion import _rotated
from thermojax.pipeline.weights.quantize import quantize_weights
from thermojax.report import render_report

QUICK = {"calibration": {"samples": 16, "samples_per_step": 16}, "bit_width": 8}
KINDS = {
    # A8 on the digits DDPM: its quantized samples stay close to fp32 either way.
    "digits": {**QUICK, "sampling": {"num_samples": 16}},
    # A4 on the LM: where static per-tensor activations lose most (README), and rotation helps.
    "lm": {
        **QUICK,
        "act_bits": 4,
        "model": {"shipped": "pydoc-mdlm"},
        "sampling": {"num_samples": 8, "steps": 16, "length": 32},
    },
}
ROTATIONS = ("none", "hadamard")
LM = KINDS["lm"]


def rotated(settings: dict, rotation: str = "hadamard") -> dict:
    return {**settings, "act": {"rotation": rotation}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(kind, rotation) -> Result``, unrotated first, into one cache folder (about 65 s on two
    shared cores: the tests that use it are marked slow)."""
    cache = tmp_path_factory.mktemp("cache")
    found = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THERMOJAX_CACHE_DIR", str(cache))
        for kind, settings in KINDS.items():
            for rotation in ROTATIONS:
                found[kind, rotation] = run(to_config(rotated(settings, rotation)))
    return found


def heldout_ratio(result: Result) -> float:
    quality = result.quality
    return quality.heldout_perplexity_quantized / quality.heldout_perplexity_fp32


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("rotation", ROTATIONS)
def test_the_result_says_whether_the_model_was_rotated(runs, kind, rotation, tmp_path):
    result = runs[kind, rotation]
    assert result.config["act"] == {
        "mode": "static",
        "rotation": rotation,
        "mask_aware": False,
        "granularity": "tensor",
        "channel_groups": 8,
    }
    assert result.act_rotation() == rotation
    path = write_result(result, tmp_path / "job" / REPORT_JSON)
    assert read_result(path).act_rotation() == rotation
    assert ("Hadamard-rotated" in render_report(result)) is (rotation == "hadamard")
    console = Console(record=True, width=200)
    print_summary(console, result, {})
    assert ("Hadamard-rotated" in console.export_text()) is (rotation == "hadamard")
    assert summary_metrics(result)["act_rotation"] == rotation
    (row,) = collect(tmp_path).rows
    assert row["act_rotation"] == rotation and row["act_mode"] == "static"


@pytest.mark.slow
def test_a_result_written_before_the_option_reads_as_unrotated(runs):
    data = runs["digits", "hadamard"].to_dict()
    del data["config"]["act"]["rotation"]
    assert Result.from_dict(data).act_rotation() == "none"


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_the_rotated_model_has_entries_of_its_own(runs, kind):
    """Its parameters differ, so its fingerprint does: the unrotated run's cached calibration
    and fp32 samples (same settings otherwise, same cache folder) are not reused."""
    assert runs[kind, "hadamard"].cache == dict.fromkeys(
        ("calibration", "fp32_samples", "quality"), "miss"
    )


@pytest.mark.slow
def test_the_rotated_lm_is_the_same_fp32_model(runs):
    """Its fp32 figures are those of the loaded LM within float32 rounding (measured: equal to
    the last printed digit)."""
    before, after = runs["lm", "none"].quality, runs["lm", "hadamard"].quality
    for name in ("heldout_perplexity_fp32", "generative_perplexity_fp32"):
        assert getattr(after, name) == pytest.approx(getattr(before, name), rel=1e-4), name
    fp32 = runs["lm", "hadamard"].samples["fp32"], runs["lm", "none"].samples["fp32"]
    assert np.mean(fp32[0] == fp32[1]) > 0.95  # measured 1.0: no token changed


@pytest.mark.slow
def test_the_rotated_digits_ddpm_is_the_same_fp32_model(runs):
    """fp32 samples of 1000 ancestral steps from the same noise differ by float32 rounding
    (measured 7.6e-6 at most, on pixels 0..16)."""
    before, after = runs["digits", "none"], runs["digits", "hadamard"]
    np.testing.assert_allclose(after.samples["fp32"], before.samples["fp32"], atol=1e-3)
    assert after.quality.frechet_fp32 == pytest.approx(before.quality.frechet_fp32, rel=1e-4)
    # A8 either way: the quantized samples stay near fp32 (measured final MSE 0.088 / 0.073).
    assert after.quality.final_mse < 0.5
    assert not np.array_equal(after.samples["quantized"], before.samples["quantized"])


@pytest.mark.slow
def test_rotation_lowers_the_lms_a4_heldout_bound(runs):
    """The point of the option: W8A4 with static per-time-group parameters, held-out bound /
    fp32 measured 1.32 unrotated and 1.06 rotated (seed 0). A run that skipped the rotation
    would score the unrotated model, its ratio equal to the first, and fail here."""
    plain, turned = heldout_ratio(runs["lm", "none"]), heldout_ratio(runs["lm", "hadamard"])
    assert turned < plain - 0.1, (plain, turned)
    assert turned < 1.15
    token_agreement = runs["lm", "hadamard"].quality.token_agreement
    assert token_agreement > runs["lm", "none"].quality.token_agreement


def test_the_rotation_comes_from_the_seed_and_is_logged(caplog):
    model = load_model()
    config = to_config(rotated(KINDS["digits"]))
    with caplog.at_level(logging.INFO, logger="thermojax.pipeline.run.diffusion"):
        turned = _rotated(DIGITS, config, LoadedModel(model))
    assert turned.online_rotation == ("block0", "block1", "block2")
    assert "act.rotation=hadamard (signs from seed 0): online rotation before block0, block1, " in (
        caplog.text
    )
    again = _rotated(DIGITS, config, LoadedModel(model))
    other = _rotated(DIGITS, to_config({**rotated(KINDS["digits"]), "seed": 1}), LoadedModel(model))
    kernel = [m.params["block1"]["kernel"] for m in (turned, again, other, model)]
    np.testing.assert_array_equal(kernel[0], kernel[1])
    assert not np.array_equal(kernel[0], kernel[2])
    assert not np.array_equal(kernel[0], kernel[3])
    assert _rotated(DIGITS, to_config(KINDS["digits"]), LoadedModel(model)) is model


def test_a_bad_value_is_refused_naming_the_key():
    with pytest.raises(
        UserInputError, match=r"^act\.rotation='bogus': must be one of none, hadamard$"
    ):
        to_config({"act": {"rotation": "bogus"}})


def test_an_export_path_is_refused(tmp_path):
    """The exports do not record the rotated embeddings and norms nor the online transforms."""
    with pytest.raises(
        UserInputError,
        match=r"^act\.rotation='hadamard': exports do not record the rotation yet \(leave "
        r"export\.path unset\)$",
    ):
        to_config(rotated({"export": {"path": str(tmp_path / "export")}}))


def test_parameters_laid_over_devices_are_refused():
    with pytest.raises(
        UserInputError,
        match=r"^act\.rotation='hadamard': not with parameters laid over devices "
        r"\(model\.devices=2; use 1\)$",
    ):
        to_config(rotated({**LM, "model": {"shipped": "pydoc-mdlm", "devices": 2}}))


def test_the_lm_held_apart_is_refused(tmp_path, monkeypatch):
    """Rotating rewrites every tensor: ``auto`` keeps the two models together (the runs above),
    ``apart`` is refused before a weight is read."""
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path))
    apart = {**LM, "model": {"shipped": "pydoc-mdlm", "residency": "apart"}}
    with pytest.raises(
        UserInputError,
        match=r"^model\.residency=apart: act\.rotation=hadamard needs the reference and the "
        r"quantized model together$",
    ):
        run(to_config(rotated(apart)))


def test_a_quantized_export_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    model = load_model()
    qweights, _ = quantize_weights(model, bits=8, group_size=64)
    folder = export_digits(model, tmp_path / "q", qweights, bits=8, group_size=64, orbax=False)
    settings = {"model": {"path": str(folder)}, "bit_width": 8, "group_size": 64}
    with pytest.raises(
        UserInputError,
        match=r"^act\.rotation='hadamard': model\.path=.* is a quantized checkpoint, whose "
        r"codes were made without the rotation$",
    ):
        run(to_config(rotated(settings)))


def test_a_weight_only_checkpoint_is_refused(tmp_path):
    folder = write_dream_like(tmp_path / "dream", scale=64, layers=1)
    settings = {"model": {"path": str(folder)}, "bit_width": 4, "group_size": 8}
    with pytest.raises(
        UserInputError,
        match=r"^act\.rotation='hadamard': a checkpoint measured weight-only has no rotations "
        r"\(set act\.rotation=none\)$",
    ):
        run(to_config(rotated(settings)))


class _Unrotated(DiffusionFamily):
    name = "unrotated-toy"
    description = "the toy family"


def test_a_family_without_rotations_refuses_them():
    family = _Unrotated()
    assert family.check(to_config({})).act.rotation == "none"
    with pytest.raises(
        UserInputError,
        match=r"^act\.rotation='hadamard': the toy family has no rotations \(set "
        r"act\.rotation=none\)$",
    ):
        family.check(to_config(rotated({})))
