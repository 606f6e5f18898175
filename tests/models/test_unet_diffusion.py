"""A diffusers UNet2DModel folder as a DiffusionModel: the same numbers as ``apply``, DDIM
trajectories as diffusers computes them, diffusers' DDPM step, conv weights quantized per output
channel along ``in * kh * kw`` (the im2col view), and the layer inputs it records and hooks.

The reference is ``tests/fixtures/unet_tiny/`` (see tests/models/test_unet.py).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.weight_quant_reference import fake_quant, group_params
from thermojax.core.quant import dequantize
from thermojax.models.unet import SchedulerConfig, apply, inference_timesteps, load_unet
from thermojax.models.unet.diffusion import (
    UNetDiffusion,
    UNetDiffusionConfig,
    is_unet_folder,
    load_unet_diffusion,
)
from thermojax.pipeline.weights.quantize import quantize_weights

FIXTURE = Path(__file__).parents[1] / "fixtures" / "unet_tiny"
RELATIVE_TOLERANCE = 1e-4  # test_unet.py's parity tolerance

forward = jax.jit(apply, static_argnames=("config", "precision"))


@pytest.fixture(scope="module")
def model() -> UNetDiffusion:
    return load_unet_diffusion(FIXTURE)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "reference.npz") as data:
        return dict(data)


def relative_error(ours, ref: np.ndarray) -> float:
    return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


@jax.jit
def _denoise(model, weights, x, t):
    return model.denoise(weights, x, t)


def test_folder_is_recognised_and_shaped(model):
    assert is_unet_folder(FIXTURE) and is_unet_folder(FIXTURE / "unet")
    assert not is_unet_folder(FIXTURE / "scheduler")
    assert model.data_shape == (3, 16, 16) and model.state_size == 768
    assert model.num_timesteps == 1000
    assert model.num_parameters() == sum(a.size for a in jax.tree.leaves(model))
    names = model.layer_names
    assert names[:3] == (
        "time_embedding.linear_1",
        "time_embedding.linear_2",
        "down_blocks.0.resnets.0.conv1",
    )
    assert names[-1] == "conv_out" and "conv_in" not in names  # kept float32
    convs = [n for n in names if model.params[f"{n}.weight"].ndim == 4]
    linears = [n for n in names if model.params[f"{n}.weight"].ndim == 2]
    every = {k[: -len(".weight")] for k, v in model.params.items() if k.endswith(".weight")}
    # every conv (but conv_in) and every linear layer, nothing else (norm weights are 1-D)
    matrices = {n for n in every if model.params[f"{n}.weight"].ndim > 1}
    assert set(convs) | set(linears) == matrices - {"conv_in"}
    assert "down_blocks.1.attentions.0.to_q" in linears
    assert "down_blocks.0.downsamplers.0.conv" in convs
    widths = dict(zip(names, model.layer_input_widths, strict=True))
    assert widths["conv_out"] == 16 * 3 * 3 and widths["time_embedding.linear_1"] == 16


def test_no_hook_fp32_weights_equal_apply_exactly(model, reference):
    samples = reference["unet_samples"]
    x = jnp.asarray(samples.reshape(len(samples), -1))
    for t in (0, 500, 999):
        expected = np.asarray(forward(model.params, model.config.unet, samples, t))
        ours, inputs = _denoise(model, model.quantizable_weights(), x, jnp.int32(t))
        np.testing.assert_array_equal(np.asarray(ours).reshape(expected.shape), expected)
        own, _ = _denoise(model, {}, x, jnp.int32(t))  # the params themselves
        np.testing.assert_array_equal(np.asarray(own), np.asarray(ours))
    assert len(inputs) == len(model.layer_names)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_ddim_step_between_follows_the_diffusers_trajectory(model, reference, kind):
    meta = json.loads((FIXTURE / "reference.json").read_text())["ddim"][kind]
    scheduler = SchedulerConfig.from_dict(meta["scheduler"])
    unet = dataclasses.replace(model, config=UNetDiffusionConfig(model.config.unet, scheduler))
    steps = meta["steps"]
    timesteps = inference_timesteps(scheduler, steps)
    gap = scheduler.num_train_timesteps // steps
    step = jax.jit(lambda m, x, t, tp: m.step_between({}, x, t, tp, jax.random.PRNGKey(0), eta=0.0))
    noise = reference["ddim_noise"]
    x = jnp.asarray(noise.reshape(len(noise), -1))
    expected = reference[f"ddim_{kind}"]
    for k, t in enumerate(timesteps, start=1):
        x, _ = step(unet, x, jnp.int32(t), jnp.int32(t - gap))
        ours = np.asarray(x).reshape(expected[k].shape)
        assert relative_error(ours, expected[k]) <= RELATIVE_TOLERANCE, f"step {k}"


def _ddpm_step_float64(eps, x, t, cumprod, variance_type, noise):
    """diffusers' DDPMScheduler.step (epsilon, clip_sample to [-1, 1]) in float64."""
    a_t = cumprod[t]
    a_prev = cumprod[t - 1] if t > 0 else 1.0
    current_beta = 1.0 - a_t / a_prev
    x0 = np.clip((x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t), -1.0, 1.0)
    mean = (np.sqrt(a_prev) * current_beta / (1 - a_t)) * x0 + (
        np.sqrt(a_t / a_prev) * (1 - a_prev) / (1 - a_t)
    ) * x
    if t == 0:
        return mean
    if variance_type == "fixed_small":
        variance = max((1 - a_prev) / (1 - a_t) * current_beta, 1e-20)
    else:
        variance = current_beta
    return mean + np.sqrt(variance) * noise


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("t", [0, 1, 640])
def test_ddpm_step_is_diffusers_ddpm_scheduler_step(model, reference, variance_type, t):
    scheduler = dataclasses.replace(model.config.scheduler, prediction_type="epsilon")
    config = UNetDiffusionConfig(model.config.unet, scheduler, variance_type)
    unet = dataclasses.replace(model, config=config)
    samples = reference["unet_samples"]
    x = jnp.asarray(samples.reshape(len(samples), -1))
    key = jax.random.PRNGKey(3)
    ours, _ = jax.jit(lambda m, x, t: m.step({}, x, t, key))(unet, x, jnp.int32(t))
    eps = np.asarray(_denoise(unet, {}, x, jnp.int32(t))[0], np.float64)
    noise = np.asarray(jax.random.normal(key, x.shape), np.float64)
    cumprod = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))
    expected = _ddpm_step_float64(eps, np.asarray(x, np.float64), t, cumprod, variance_type, noise)
    # float32 as diffusers: 1 - a_t / a_prev cancels near t = 0 (beta ~ 1e-4, 5e-4 relative)
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-3, atol=1e-4)


def test_conv_layer_inputs_are_its_im2col_rows(model, reference):
    samples = reference["unet_samples"]
    x = jnp.asarray(samples.reshape(len(samples), -1))
    _, inputs = _denoise(model, {}, x, jnp.int32(10))
    names = model.layer_names
    for name, rows in (
        ("down_blocks.0.resnets.0.conv1", 16 * 16),
        ("down_blocks.0.downsamplers.0.conv", 8 * 8),  # stride 2
        ("down_blocks.1.resnets.0.conv1", 8 * 8),
    ):
        i = names.index(name)
        kernel = model.params[f"{name}.weight"]
        assert inputs[i].shape == (3, rows, model.layer_input_widths[i])
        assert model.layer_input_widths[i] == kernel[0].size
    # the rows times the kernel are the conv itself: the ordering is the kernel's reshape
    for name in ("down_blocks.0.resnets.0.conv1", "down_blocks.0.downsamplers.0.conv"):
        i = names.index(name)
        maps = {}

        def keep(index, h, t, i=i, maps=maps):
            if index == i:
                maps["input"] = h
            return h

        model.denoise({}, x, jnp.int32(10), act_hook=keep)  # eager: the hook keeps a value
        layer = model.layers[i]
        kernel = model.params[f"{name}.weight"]
        conv = jax.lax.conv_general_dilated(
            maps["input"],
            kernel,
            (layer.stride, layer.stride),
            layer.padding,
            dimension_numbers=("NHWC", "OIHW", "NHWC"),
            precision="highest",
        )
        flat = np.asarray(kernel, np.float64).reshape(len(kernel), -1)
        rows = np.asarray(inputs[i], np.float64) @ flat.T
        np.testing.assert_allclose(rows.reshape(conv.shape), np.asarray(conv), atol=1e-4)


def test_act_hook_sees_every_layer_channels_last(model, reference):
    samples = reference["unet_samples"]
    x = jnp.asarray(samples.reshape(len(samples), -1))
    seen = {}

    def hook(index, h, t):
        seen[index] = h.shape
        return h * 0.5

    plain, _ = _denoise(model, {}, x, jnp.int32(10))
    hooked, _ = jax.jit(lambda m, x: m.denoise({}, x, jnp.int32(10), act_hook=hook))(model, x)
    assert sorted(seen) == list(range(len(model.layer_names)))
    assert seen[model.layer_names.index("down_blocks.0.resnets.0.conv1")] == (3, 16, 16, 16)
    assert relative_error(hooked, np.asarray(plain)) > 1e-3


def _grouped_reference(kernel: np.ndarray, bits: int, group_size: int):
    """Per-output-channel affine quantization in groups along in*kh*kw, float64: the
    dequantized kernel and each element's quantization step."""
    out = kernel.shape[0]
    rows = np.asarray(kernel, np.float64).reshape(out, -1, group_size)
    scale, zero = group_params(rows, bits)
    step = np.broadcast_to(scale[..., None], rows.shape).reshape(kernel.shape)
    return fake_quant(rows, scale, zero, bits)[1].reshape(kernel.shape), step


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_conv_kernels_quantize_per_output_channel_along_in_kh_kw(model, bits):
    group_size = 16
    # float32 weights off the bf16 grid, whose values sit on 8-bit rounding ties
    rng = np.random.default_rng(0)
    params = {
        k: v * (1.0 + 1e-3 * rng.standard_normal(v.shape, np.float32))
        for k, v in model.params.items()
    }
    model = model.replace(params=params)
    qweights, _ = quantize_weights(model, bits=bits, group_size=group_size)
    for name in (
        "conv_out",
        "down_blocks.1.resnets.0.conv1",
        "up_blocks.0.resnets.0.conv_shortcut",
    ):
        kernel = np.asarray(model.params[f"{name}.weight"])
        ours = np.asarray(dequantize(qweights[name])).reshape(kernel.shape)
        expected, step = _grouped_reference(kernel, bits, group_size)
        # float32 vs float64: a value at a rounding tie (the bf16 fixture has some) may take
        # the next code; every other element is equal
        off = np.abs(ours - expected) > 1e-3 * step  # float32 rounding is far below a step
        assert off.mean() < 2e-3, (name, off.sum())
        assert np.all(np.abs(ours - expected)[off] <= step[off] * 1.0001), name
        if kernel.shape[2:] == (1, 1):
            continue  # a 1x1 kernel has one order
        # deliberate mistake: groups along kh*kw*in (channels last) are other groups
        wrong_order = kernel.transpose(0, 2, 3, 1)
        wrong = _grouped_reference(wrong_order, bits, group_size)[0].transpose(0, 3, 1, 2)
        assert (np.abs(wrong - ours) > 1e-3 * step).mean() > 0.05, name


def test_quantized_weights_run_dequantized_in_the_step(model, reference):
    qweights, _ = quantize_weights(model, bits=4, group_size=16)
    params = dict(model.params)
    for name in qweights:
        shape = model.params[f"{name}.weight"].shape
        params[f"{name}.weight"] = dequantize(qweights[name]).reshape(shape)
    samples = reference["unet_samples"]
    x = jnp.asarray(samples.reshape(len(samples), -1))
    ours, _ = _denoise(model, qweights, x, jnp.int32(300))
    expected = forward(params, model.config.unet, samples, 300)
    assert relative_error(np.asarray(ours).reshape(expected.shape), np.asarray(expected)) < 1e-5
    fp32, _ = _denoise(model, {}, x, jnp.int32(300))
    assert relative_error(ours, np.asarray(fp32)) > 1e-4  # 4 bits did change the output


def test_a_group_size_that_does_not_divide_a_layer_names_it(model):
    with pytest.raises(ValueError, match=r"time_embedding.linear_1 \(16\)"):
        quantize_weights(model, bits=4, group_size=32)
    with pytest.raises(ValueError, match=r"down_blocks.1.resnets.0.conv2 \(288\)"):
        quantize_weights(model, bits=4, group_size=64)


def test_loading_needs_a_scheduler(tmp_path):
    import shutil

    from thermojax.models.hf import CheckpointError

    shutil.copytree(FIXTURE / "unet", tmp_path / "unet")
    with pytest.raises(CheckpointError, match="scheduler"):
        load_unet_diffusion(tmp_path / "unet")
    assert load_unet(tmp_path / "unet").scheduler is None
