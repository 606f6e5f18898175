"""The shipped digits DDPM: loading, forward pass against numpy, sampling quality, retraining."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import digits_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermojax.errors import UserInputError
from thermojax.models import SHIPPED_CHECKPOINT, DiffusionModel, load_model
from thermojax.models.base import sample_quality
from thermojax.models.digits.checkpoint import load_checkpoint
from thermojax.models.digits.ddpm import NoiseSchedule
from thermojax.models.digits.train import TrainConfig, main, train
from thermojax.pipeline.measure.sampling import sample


@pytest.fixture(scope="module")
def model():
    return load_model()


def test_shipped_checkpoint_is_small_and_describes_the_model(model):
    files = [p for p in SHIPPED_CHECKPOINT.iterdir() if p.is_file()]
    assert {p.name for p in files} == {
        "model.json",
        "denoiser.safetensors",
        "classifier.safetensors",
    }
    assert sum(p.stat().st_size for p in files) < 2_000_000
    assert isinstance(model, DiffusionModel)
    assert model.num_timesteps == 1000
    assert len(model.layer_names) >= 4
    assert all(w % 64 == 0 for w in model.layer_input_widths)
    weights = model.quantizable_weights()
    assert [weights[n].shape[0] for n in model.layer_names] == list(model.layer_input_widths)
    spec = json.loads((SHIPPED_CHECKPOINT / "model.json").read_text())
    assert spec["training"]["command"] == "python -m thermojax.models.train_digits"


def test_schedule_matches_float64_reference(model):
    betas, alpha_bar = ref.ddpm_schedule()
    np.testing.assert_allclose(model.schedule.betas, betas, rtol=1e-6)
    np.testing.assert_allclose(model.schedule.alpha_bar, alpha_bar, rtol=1e-5)
    # Rounded once from float64, not accumulated in float32.
    np.testing.assert_array_equal(model.schedule.alpha_bar, alpha_bar.astype(np.float32))


def test_schedule_is_static_hashable_and_equal_by_its_numbers(model):
    schedule = model.schedule
    same = NoiseSchedule(num_timesteps=1000, beta_start=1e-4, beta_end=0.02)
    assert schedule == same and hash(schedule) == hash(same)
    assert schedule != NoiseSchedule(num_timesteps=1000, beta_start=1e-4, beta_end=0.03)
    assert list(schedule.arrays()) == list(NoiseSchedule.ARRAY_NAMES)
    for name, array in schedule.arrays().items():
        assert array.shape == (1000,) and array.dtype == np.float32, name
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0.0
    assert schedule.alpha_bar_prev[0] == 1.0
    with pytest.raises(ValueError, match="beta_start"):
        NoiseSchedule(num_timesteps=10, beta_start=0.5, beta_end=0.1)


def test_static_parts_compare_by_content_across_loads(model):
    again = load_model()
    assert again.reference is not model.reference and again.reference == model.reference
    assert hash(again.reference) == hash(model.reference)
    assert again.metadata == model.metadata
    assert model.metadata["training"]["command"] == "python -m thermojax.models.train_digits"
    model.metadata["training"]["command"] = "changed"  # a fresh dict each time: no effect
    assert model.metadata["training"]["command"] == "python -m thermojax.models.train_digits"
    assert sum(leaf.size for leaf in jax.tree.leaves(model)) == model.num_parameters()


@pytest.mark.parametrize("t", [0, 417, 999])
def test_denoiser_matches_numpy_reference(model, t):
    x = np.random.default_rng(t).normal(size=(5, 64)).astype(np.float32)
    eps, inputs = model.denoise(model.quantizable_weights(), jnp.asarray(x), jnp.int32(t))
    eps_ref, inputs_ref = ref.denoiser(model, {}, x, t)
    np.testing.assert_allclose(eps, eps_ref, rtol=1e-4, atol=1e-4)
    assert len(inputs) == len(model.layer_names)
    for got, want, width in zip(inputs, inputs_ref, model.layer_input_widths, strict=True):
        assert got.shape == (5, width)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_forward_uses_given_weights_and_activation_hook(model):
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 64)), jnp.float32)
    t = jnp.int32(300)
    weights = dict(model.quantizable_weights())
    base, _ = model.denoise(weights, x, t)
    weights["block1"] = 0.5 * weights["block1"]
    halved, _ = model.denoise(weights, x, t)
    want, _ = ref.denoiser(model, {"block1": np.asarray(weights["block1"])}, np.asarray(x), 300)
    np.testing.assert_allclose(halved, want, rtol=1e-4, atol=1e-4)
    assert float(jnp.max(jnp.abs(halved - base))) > 1e-3

    seen = []

    def hook(layer, h, step):
        seen.append((layer, h.shape))
        assert step.shape == ()
        return 0.0 * h if layer == 2 else h

    hooked, raw_inputs = model.denoise(model.quantizable_weights(), x, t, act_hook=hook)
    assert seen == [(i, (3, w)) for i, w in enumerate(model.layer_input_widths)]
    # Zeroing layer 2's input leaves only its bias: compare with a zero kernel for that layer.
    want, _ = ref.denoiser(model, {"block0": np.zeros((256, 256))}, np.asarray(x), 300)
    np.testing.assert_allclose(hooked, want, rtol=1e-4, atol=1e-4)
    assert raw_inputs[2].shape == (3, 256)


def test_ancestral_step_matches_reference(model):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 64)), jnp.float32)
    key = jax.random.PRNGKey(7)
    noise = np.asarray(jax.random.normal(key, (4, 64)))
    for t in (999, 500, 0):
        got, _ = model.step(model.quantizable_weights(), x, jnp.int32(t), key)
        want = ref.ancestral_step(model, {}, np.asarray(x), t, noise)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_shipped_model_samples_recognizable_digits(model):
    samples = sample(model, num_samples=64, seed=0)
    assert samples.x0.shape == (64, 8, 8)
    assert samples.trajectory.shape == (1000, 64, 64)
    assert samples.x0.min() >= 0.0 and samples.x0.max() <= 16.0
    np.testing.assert_allclose(model.to_pixels(samples.trajectory[0]), samples.x0)
    quality = sample_quality(model, samples.x0)
    # The classifier (99% held-out accuracy on real digits) is confident on generated digits and
    # finds most of the ten classes among 64 samples.
    assert quality["class_coverage"] >= 0.8
    assert quality["classifier_confidence"] >= 0.85
    # Noise is not recognizable: the same measure on uniform noise images fails.
    noise = np.random.default_rng(0).uniform(0, 16, size=(64, 8, 8))
    assert sample_quality(model, noise)["frechet"] > 5 * quality["frechet"]
    again = sample(model, num_samples=64, seed=0)
    np.testing.assert_array_equal(again.x0, samples.x0)
    other = sample(model, num_samples=64, seed=1)
    assert not np.allclose(other.x0, samples.x0)


def test_load_model_accepts_folder_or_model_json(model):
    via_json = load_model(str(SHIPPED_CHECKPOINT / "model.json"))
    assert via_json.layer_names == model.layer_names


def test_missing_checkpoint_path_is_a_user_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserInputError, match="does not exist") as info:
        load_model(str(missing))
    assert str(missing) in str(info.value) and "\n" not in str(info.value)


def test_folder_that_is_not_a_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="not a thermojax-digits-ddpm checkpoint"):
        load_model(str(tmp_path))
    (tmp_path / "model.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UserInputError, match="something-else"):
        load_model(str(tmp_path))
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(UserInputError, match="unreadable"):
        load_model(str(tmp_path))


def test_corrupt_or_mismatched_tensors_are_user_errors(tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(SHIPPED_CHECKPOINT, ckpt)
    (ckpt / "denoiser.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserInputError, match="denoiser.safetensors"):
        load_model(str(ckpt))
    shutil.copy(SHIPPED_CHECKPOINT / "denoiser.safetensors", ckpt)
    spec = json.loads((ckpt / "model.json").read_text())
    spec["denoiser"]["hidden"] = 128
    (ckpt / "model.json").write_text(json.dumps(spec))
    with pytest.raises(UserInputError, match="denoiser tensors .* do not match"):
        load_model(str(ckpt))
    spec["denoiser"]["hidden"] = 256
    spec["classifier"]["features"] = 16
    (ckpt / "model.json").write_text(json.dumps(spec))
    with pytest.raises(UserInputError, match="classifier tensors .* do not match"):
        load_model(str(ckpt))


def test_smoke_training_writes_a_loadable_deterministic_checkpoint(tmp_path):
    cfg = TrainConfig(steps=20, classifier_steps=20)
    meta = train(tmp_path / "a", cfg, eval_samples=0, log=lambda _: None)
    assert meta["training"]["steps"] == 20 and np.isfinite(meta["training"]["final_loss"])
    first = load_checkpoint(tmp_path / "a")
    assert first.layer_names == load_model().layer_names
    main(
        [
            "--steps",
            "20",
            "--classifier-steps",
            "20",
            "--eval-samples",
            "0",
            "--out",
            str(tmp_path / "b"),
        ]
    )
    second = load_checkpoint(tmp_path / "b")
    # Written through thermojax.files.atomic_file: no temporary file is left behind.
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "classifier.safetensors",
        "denoiser.safetensors",
        "model.json",
    ]
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    samples = sample(second, num_samples=2, seed=0)
    assert np.all(np.isfinite(samples.x0))


@pytest.mark.slow
def test_training_command_end_to_end(tmp_path):
    out = tmp_path / "ckpt"
    args = ["--steps", "10", "--classifier-steps", "10", "--eval-samples", "8", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "thermojax.models.digits.train", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    spec = json.loads((out / "model.json").read_text())
    assert spec["training"]["steps"] == 10 and spec["quality"]["num_samples"] == 8
    assert 0.0 <= spec["quality"]["class_coverage"] <= 1.0
    assert load_model(str(out)).num_timesteps == 1000


def test_load_model_opens_a_qwen2_folder_as_a_masked_diffusion_lm(tmp_path):
    from pathlib import Path

    from thermojax.models.dream import DreamLM, load_dream
    from thermojax.models.hf import write_dream_like

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "qwen2_tiny"
    lm = load_model(fixture)
    assert isinstance(lm, DreamLM) and lm.config == load_dream(fixture).config
    dream = load_model(write_dream_like(tmp_path / "dream", scale=112, layers=1))
    assert isinstance(dream, DreamLM) and 0 <= dream.mask_token_id < dream.config.vocab_size
    other = tmp_path / "llama"
    shutil.copytree(fixture, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config | {"model_type": "llama"}))
    with pytest.raises(UserInputError, match="a 'llama' checkpoint; thermojax runs digits DDPMs"):
        load_model(other)
