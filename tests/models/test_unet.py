"""diffusers' UNet2DModel in JAX: parity with diffusers, DDIM trajectories, noise schedules,
config checks, loading, and the synthetic google/ddpm-cifar10-32 layout.

The reference is ``tests/fixtures/unet_tiny/`` (``tools/make_unet_fixture.py``): three tiny
random bf16 ``UNet2DModel`` folders covering the supported options, their float32 outputs as
diffusers computes them, DDIM trajectories from diffusers' own ``DDIMScheduler.step`` loop, and
its betas, ``alphas_cumprod`` and ``set_timesteps``. Torch is not needed here.
"""

from __future__ import annotations

import dataclasses
import doctest
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from thermojax.errors import UserInputError
from thermojax.models.hf import CheckpointError, write_safetensors
from thermojax.models.hf.headers import read_shard
from thermojax.models.hf.reader import SafetensorsFolder
from thermojax.models.unet import (
    SchedulerConfig,
    UNet2DConfig,
    alphas_cumprod,
    apply,
    betas,
    ddim_alphas,
    ddim_sample,
    inference_timesteps,
    load_unet,
    loading,
    network,
    sampling,
    synthetic,
)
from thermojax.models.unet import config as config_module
from thermojax.models.unet import scheduler as scheduler_module
from thermojax.models.unet.synthetic import CIFAR10_UNET_CONFIG, write_ddpm_cifar10_like

FIXTURE = Path(__file__).parents[1] / "fixtures" / "unet_tiny"
MODELS = {"unet": FIXTURE, "variant": FIXTURE / "variant", "plain": FIXTURE / "plain"}
# Parity: max |ours - diffusers| / max |diffusers| (both float32; about 3e-6 measured).
RELATIVE_TOLERANCE = 1e-4
CIFAR10_PARAMETERS = 35_746_307  # diffusers' UNet2DModel(**that config), see reference.json

forward = jax.jit(apply, static_argnames=("config", "precision"))


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "reference.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FIXTURE / "reference.json").read_text())


@pytest.fixture(scope="module")
def models():
    return {name: load_unet(path) for name, path in MODELS.items()}


def load_file(path: Path) -> dict[str, np.ndarray]:
    shard = read_shard(path.parent, path.name)
    folder = SafetensorsFolder(path.parent, {}, b"{}", {path.name: shard})
    return {info.name: array for info, array in folder.iter_tensors()}


def save_file(tensors: dict[str, np.ndarray], path: Path) -> None:
    entries = [(name, "BF16", value.shape) for name, value in tensors.items()]
    write_safetensors(path, entries, tensors.__getitem__, metadata={"format": "pt"})


def relative_error(ours, ref: np.ndarray) -> float:
    return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


# ------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", list(MODELS))
def test_outputs_match_diffusers_at_every_timestep(models, reference, name):
    unet, samples = models[name], reference[f"{name}_samples"]
    for t, expected in zip(
        reference[f"{name}_timesteps"], reference[f"{name}_outputs"], strict=True
    ):
        ours = np.asarray(forward(unet.params, unet.config, samples, int(t)))
        assert ours.shape == expected.shape and ours.dtype == np.float32
        assert relative_error(ours, expected) <= RELATIVE_TOLERANCE, f"timestep {t}"


@pytest.mark.parametrize("name", list(MODELS))
def test_one_timestep_per_sample_matches_diffusers(models, reference, name):
    unet = models[name]
    timesteps = reference[f"{name}_mixed_timesteps"]
    assert len(set(timesteps.tolist())) > 1
    ours = forward(unet.params, unet.config, reference[f"{name}_samples"], timesteps)
    assert relative_error(ours, reference[f"{name}_mixed"]) <= RELATIVE_TOLERANCE


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_ddim_trajectory_matches_diffusers(models, reference, meta, kind):
    run = meta["ddim"][kind]
    scheduler = SchedulerConfig.from_dict(run["scheduler"])
    assert scheduler.prediction_type == kind
    unet = models["unet"]
    path = np.asarray(
        ddim_sample(
            unet.params, unet.config, scheduler, reference["ddim_noise"], num_steps=run["steps"]
        )
    )
    expected = reference[f"ddim_{kind}"]
    assert path.shape == expected.shape == (run["steps"] + 1, 2, 3, 16, 16)
    for step in range(1, run["steps"] + 1):
        assert relative_error(path[step], expected[step]) <= RELATIVE_TOLERANCE, f"step {step}"
    assert relative_error(path[-1], expected[0]) > 0.1  # the steps did move the sample


def test_pipeline_folder_carries_its_ddim_scheduler(models, meta):
    scheduler = models["unet"].scheduler
    assert scheduler == SchedulerConfig.from_dict(meta["ddim"]["epsilon"]["scheduler"])
    assert (scheduler.set_alpha_to_one, scheduler.steps_offset) == (False, 1)
    assert models["variant"].scheduler is None  # a bare model folder


def test_deliberate_mistakes_are_caught(models, reference):
    """The parity tests would fail on a plausible porting slip: each of these changes the
    output far beyond the tolerance."""
    unet, samples = models["unet"], reference["unet_samples"]
    expected = reference["unet_outputs"][3]  # timestep 500
    assert relative_error(forward(unet.params, unet.config, samples, 500), expected) < 1e-4
    mistakes = {
        "flip_sin_to_cos": dataclasses.replace(unet.config, flip_sin_to_cos=True),
        "freq_shift": dataclasses.replace(unet.config, freq_shift=0.0),
        "downsample_padding": dataclasses.replace(unet.config, downsample_padding=1),
        "attention_head_dim": dataclasses.replace(unet.config, attention_head_dim=16),
        "norm_eps": dataclasses.replace(unet.config, norm_eps=1e-1),
    }
    for option, config in mistakes.items():
        assert relative_error(forward(unet.params, config, samples, 500), expected) > 1e-2, option


# ------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_betas_and_alphas_cumprod_match_diffusers(reference, schedule):
    extra = {"beta_start": 0.00085, "beta_end": 0.012} if schedule == "scaled_linear" else {}
    config = SchedulerConfig.from_dict({"beta_schedule": schedule, **extra})
    ours_betas, ours_cumprod = betas(config), alphas_cumprod(config)
    assert ours_betas.dtype == ours_cumprod.dtype == np.float64
    # diffusers computes in float32: equal to float32 rounding
    np.testing.assert_allclose(ours_betas, reference[f"betas_{schedule}"], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(
        ours_cumprod, reference[f"alphas_cumprod_{schedule}"], rtol=1e-4, atol=1e-9
    )


def test_inference_timesteps_match_diffusers_set_timesteps(meta):
    cases = meta["timesteps"]
    assert {case["config"]["timestep_spacing"] for case in cases} == {
        "leading",
        "trailing",
        "linspace",
    }
    for case in cases:
        config = SchedulerConfig.from_dict(case["config"])
        ours = inference_timesteps(config, case["steps"])
        assert ours.dtype == np.int64
        assert ours.tolist() == case["timesteps"], case


def test_ddim_alphas_look_up_the_previous_timestep_as_diffusers():
    config = SchedulerConfig(set_alpha_to_one=False, steps_offset=1)
    timesteps, alpha, previous = ddim_alphas(config, 4)
    cumprod = alphas_cumprod(config)
    assert timesteps.tolist() == [751, 501, 251, 1]
    np.testing.assert_array_equal(alpha, cumprod[timesteps])
    np.testing.assert_array_equal(previous[:3], cumprod[[501, 251, 1]])
    assert previous[3] == cumprod[0]  # t - 250 < 0: final_alpha_cumprod without set_alpha_to_one
    assert ddim_alphas(dataclasses.replace(config, set_alpha_to_one=True), 4)[2][3] == 1.0
    with pytest.raises(ValueError, match=r"num_steps must be in \[1, 1000\]"):
        inference_timesteps(config, 1001)


# ------------------------------------------------------------------------- config checks


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("time_embedding_type", "fourier"),
        ("class_embed_type", "timestep"),
        ("num_class_embeds", 10),
        ("resnet_time_scale_shift", "scale_shift"),
        ("act_fn", "gelu"),
        ("downsample_type", "resnet"),
        ("upsample_type", "resnet"),
        ("mid_block_type", "UNetMidBlock2DCrossAttn"),
        ("down_block_types", ["SkipDownBlock2D", "AttnDownBlock2D"]),
        ("up_block_types", ["AttnSkipUpBlock2D", "UpBlock2D"]),
        ("norm_num_groups", 5),
        ("attention_head_dim", 64),
        ("block_out_channels", [16]),
    ],
)
def test_unsupported_unet_options_are_refused_naming_them(key, value):
    config = json.loads((FIXTURE / "unet" / "config.json").read_text())
    UNet2DConfig.from_dict(config)  # the fixture's own config is accepted
    with pytest.raises(ValueError, match=key) as info:
        UNet2DConfig.from_dict({**config, key: value})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("beta_schedule", "sigmoid"),
        ("prediction_type", "flow"),
        ("timestep_spacing", "karras"),
        ("trained_betas", [0.1, 0.2]),
        ("thresholding", True),
        ("rescale_betas_zero_snr", True),
        ("variance_type", "learned_range"),
        ("_class_name", "PNDMScheduler"),
        ("num_train_timesteps", 0),
    ],
)
def test_unsupported_scheduler_options_are_refused_naming_them(key, value):
    with pytest.raises(ValueError, match=key):
        SchedulerConfig.from_dict({"_class_name": "DDIMScheduler", key: value})


def test_loader_names_the_unsupported_option_as_a_user_error(tmp_path):
    folder = tmp_path / "unet"
    shutil.copytree(FIXTURE / "unet", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "class_embed_type": "identity"}))
    with pytest.raises(UserInputError, match="config.json: class_embed_type is not supported"):
        load_unet(folder)


def test_loader_checks_tensors_against_the_config(tmp_path):
    folder = tmp_path / "unet"
    shutil.copytree(FIXTURE / "unet", folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    missing = {k: v for k, v in tensors.items() if k != "conv_out.bias"}
    save_file(missing, weights)
    with pytest.raises(CheckpointError, match="conv_out.bias: missing"):
        load_unet(folder)
    save_file({**tensors, "conv_in.weight": tensors["conv_in.weight"][:8]}, weights)
    with pytest.raises(CheckpointError, match=r"conv_in.weight: shape \[8, 3, 3, 3\]"):
        load_unet(folder)


def test_legacy_attention_names_load_as_diffusers_renames_them(tmp_path, models, reference):
    folder = tmp_path / "unet"
    shutil.copytree(FIXTURE / "unet", folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for name, value in load_file(weights).items():
        for new, legacy in old.items():
            name = name.replace(f".attentions.0.{new}.", f".attentions.0.{legacy}.")
        renamed[name] = value
    assert "mid_block.attentions.0.proj_attn.weight" in renamed
    save_file(renamed, weights)
    unet = load_unet(folder)
    assert set(unet.params) == set(models["unet"].params)
    for name, value in unet.params.items():
        np.testing.assert_array_equal(value, models["unet"].params[name])


# ------------------------------------------------------------------------- jit and pytree


def test_params_are_arguments_not_constants(models, reference):
    unet, samples = models["unet"], reference["unet_samples"]
    assert all(v.dtype == np.float32 for v in jax.tree.leaves(unet.params))
    assert set(unet.params) == set(unet.config.tensor_shapes())
    assert unet.num_parameters() == unet.config.num_parameters() == 177_427
    traces = []

    def traced(params, config, x, t):
        traces.append(config)
        return apply(params, config, x, t)

    compiled = jax.jit(traced, static_argnames="config")
    base = np.asarray(compiled(unet.params, unet.config, samples, 10))
    # conv_out's bias through the same compiled program: the output moves by exactly it
    shifted = {**unet.params, "conv_out.bias": unet.params["conv_out.bias"] + 1.0}
    moved = np.asarray(compiled(shifted, unet.config, samples, 10))
    np.testing.assert_allclose(moved - base, np.ones_like(base), atol=1e-5)
    assert len(traces) == 1  # one trace for both: the parameters are arguments
    # bf16 storage computes the same float32 numbers (the stored values are bf16)
    stored = load_unet(FIXTURE, dtype="bfloat16")
    assert stored.params["conv_in.weight"].dtype == jax.numpy.bfloat16
    np.testing.assert_allclose(forward(stored.params, stored.config, samples, 10), base, atol=1e-6)


def test_inputs_are_checked(models, reference):
    unet = models["unet"]
    with pytest.raises(ValueError, match=r"sample must be \[N, 3, H, W\]"):
        apply(unet.params, unet.config, np.zeros((1, 1, 16, 16)), 0)
    with pytest.raises(ValueError, match="divisible by 2"):
        apply(unet.params, unet.config, np.zeros((1, 3, 15, 16)), 0)
    with pytest.raises(ValueError, match="timesteps must be a scalar or"):
        apply(unet.params, unet.config, np.zeros((2, 3, 16, 16)), np.zeros(3))


# ------------------------------------------------------------------------- ddpm-cifar10-32


def test_cifar10_layout_has_diffusers_parameter_count(meta):
    config = UNet2DConfig.from_dict(CIFAR10_UNET_CONFIG)
    assert meta["ddpm_cifar10_32"] == {"parameters": CIFAR10_PARAMETERS, "tensors": 328}
    assert config.num_parameters() == CIFAR10_PARAMETERS
    assert len(config.tensor_shapes()) == 328
    assert config.attention_heads(256) == 1 and config.downsample_padding == 0
    # a config without the key means what diffusers makes of it: heads of 8 channels
    older = {k: v for k, v in CIFAR10_UNET_CONFIG.items() if k != "attention_head_dim"}
    assert UNet2DConfig.from_dict(older).attention_heads(256) == 32


def test_synthetic_cifar10_folder_loads_and_runs(tmp_path):
    folder = write_ddpm_cifar10_like(tmp_path / "ddpm-cifar10-32", seed=3, dtype="BF16")
    assert (folder / "model_index.json").is_file()
    unet = load_unet(folder)
    assert unet.num_parameters() == CIFAR10_PARAMETERS
    assert unet.scheduler.class_name == "DDPMScheduler"
    assert (unet.scheduler.beta_start, unet.scheduler.beta_end) == (1e-4, 0.02)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    out = np.asarray(forward(unet.params, unet.config, x, 999))
    assert out.shape == (1, 3, 32, 32) and np.isfinite(out).all()


@pytest.mark.parametrize(
    "module",
    [config_module, network, scheduler_module, sampling, loading, synthetic],
    ids=lambda m: m.__name__.rsplit(".", 1)[-1],
)
def test_module_examples(module):
    failures, tried = doctest.testmod(module, verbose=False)
    assert tried > 0 and failures == 0
