"""Quantized sampling, calibration and the held-out bound run the packed weights themselves.

The codes, scales and zero points are arguments of the compiled program and each layer is
dequantized inside the step, right before its matmul (``thermojax.models.base.dense``). The
numbers are those of the dequantize-first path (every layer dequantized to a float32 ``[in,
out]`` array before the program), **bit for bit** on XLA:CPU: the dequantized values are the same
and each model feeds its matmul the same layout as before (the digits DDPM materializes the
transposed kernel as the old path passed it; without that, XLA reads the operand transposed and
the DDPM's trajectories differed by 1e-6 after 1000 steps). Compiled, the packed program never
holds every layer at float32.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from thermojax.core.timegroups import group_activation_params, uniform_edges
from thermojax.models import load_model, shipped_path
from thermojax.models.base import SamplerSpec
from thermojax.models.dream.checkpoint import load_dream
from thermojax.models.dream.diffusion import MaskedDiffusionLM
from thermojax.models.dream.loading import load_masked_diffusion
from thermojax.models.hf import write_dream_like
from thermojax.pipeline.measure.calibrate import _calibration_program
from thermojax.pipeline.measure.sampling import ActParams, _sample_program, sample
from thermojax.pipeline.quality.text import _bound
from thermojax.pipeline.weights.quantize import dense_weights, quantize_weights


def _calibration_outputs(model, weights) -> list[np.ndarray]:
    """Calibration's statistics ``[S, L, 4]`` (min, max, mean, std) and activation samples from
    its own compiled program, given the packed QTensors or the dense arrays of the
    dequantize-first path."""
    outputs = _calibration_program(
        model, weights, jax.random.PRNGKey(5), num_samples=6, samples_per_step=8, sampler=None
    )
    return [np.asarray(a) for a in outputs]


def _act_params(model, calibration: list[np.ndarray]) -> ActParams:
    """Activation parameters as a run makes them from its calibration: 4 groups, 8 bits."""
    stats = calibration[0]
    edges = uniform_edges(model.num_timesteps, 4)
    scales, zero_points = group_activation_params(stats[:, :, 0].T, stats[:, :, 1].T, edges, bits=8)
    return ActParams(scales=scales, zero_points=zero_points, edges=edges, bits=8)


def _assert_same_calibration(packed: list[np.ndarray], dequantized: list[np.ndarray]) -> None:
    for a, b in zip(packed, dequantized, strict=True):
        np.testing.assert_array_equal(a, b)


def _assert_same_samples(packed, dequantized) -> None:
    np.testing.assert_array_equal(packed.x0, dequantized.x0)
    np.testing.assert_array_equal(packed.trajectory, dequantized.trajectory)


@pytest.mark.parametrize("sampler", [None, SamplerSpec("ddim", steps=50)], ids=["ddpm", "ddim50"])
def test_digits_ddpm_packed_equals_dequantize_first_bit_for_bit(sampler):
    model = load_model()
    qweights, _ = quantize_weights(model, bits=4, group_size=32)
    dequantized = dense_weights(model, qweights)
    calibration = _calibration_outputs(model, qweights)
    act = _act_params(model, calibration)
    runs = [
        sample(model, weights=w, act_params=act, num_samples=12, seed=2, sampler=sampler)
        for w in (qweights, dequantized)
    ]
    _assert_same_samples(*runs)
    assert not np.array_equal(runs[0].x0, sample(model, num_samples=12, seed=2).x0)  # not fp32
    if sampler is None:
        _assert_same_calibration(calibration, _calibration_outputs(model, dequantized))


def test_shipped_lm_packed_equals_dequantize_first_bit_for_bit():
    """Samples (tokens and trajectory), calibration statistics and the held-out bound (the
    quantized model's, which ``heldout_perplexity_quantized`` reports) of the shipped LM
    (``model=pydoc-mdlm``) at W4A8."""
    model = load_masked_diffusion(shipped_path("pydoc-mdlm"), steps=8, length=32)
    qweights, _ = quantize_weights(model, bits=4, group_size=64)
    dequantized = dense_weights(model, qweights)
    calibration = _calibration_outputs(model, qweights)
    _assert_same_calibration(calibration, _calibration_outputs(model, dequantized))
    act = _act_params(model, calibration)
    runs = [
        sample(model, weights=w, act_params=act, num_samples=6, seed=1)
        for w in (qweights, dequantized)
    ]
    _assert_same_samples(*runs)
    heldout = np.asarray(model.reference.heldout_tokens(), np.int32)
    packed, first = (
        _bound(model, heldout, seed=0, weights=w, act_params=act, skip_prompt=False)
        for w in (qweights, dequantized)
    )
    assert packed == first
    assert packed != _bound(model, heldout, seed=0, skip_prompt=False)  # not fp32's


def _float32_linear_bytes(model) -> int:
    return sum(4 * int(np.prod(w.shape)) for w in model.quantizable_weights().values())


def test_the_compiled_sampler_holds_one_layer_at_float32_not_all(tmp_path):
    """A W4 model's sampler takes packed codes as arguments (about an eighth of float32), and
    its temporaries stay well below the float32 size of all linear layers; so do the bf16
    reference's, whose weights are upcast where used. Without the tie of ``dense`` to the layer
    input XLA hoisted every layer's conversion out of the scan: temporaries of 1.17x that size
    for both (measured)."""
    folder = write_dream_like(tmp_path / "dream", scale=16, layers=12)
    model = MaskedDiffusionLM.create(load_dream(folder, dtype=None), length=8, steps=2)
    assert model.lm.params["lm_head.weight"].dtype == np.dtype("bfloat16")
    qweights, _ = quantize_weights(model, bits=4, group_size=32)
    everything = _float32_linear_bytes(model)

    def memory(weights):
        compiled = _sample_program.lower(
            model, weights, None, None, None, jax.random.PRNGKey(0), num_samples=1, bits=0,
            sampler=None,
        ).compile()  # fmt: skip
        analysis = compiled.memory_analysis()
        return analysis.argument_size_in_bytes, analysis.temp_size_in_bytes

    packed_args, packed_temp = memory(qweights)
    dense_args, _ = memory(dense_weights(model, qweights))
    _, reference_temp = memory(None)
    assert dense_args - packed_args > 0.75 * everything  # measured 0.84
    assert packed_temp < 0.6 * everything  # measured 0.33; 1.17 without the tie
    assert reference_temp < 0.6 * everything  # measured 0.37; 1.17 without the tie
