"""Time-aware GPTQ Hessians and the weight methods through the pipeline.

The Hessians are recomputed in float64 numpy from the layer inputs the sampler records
(``run_sampler``'s observer, the same noise); the sensitivity from sampler runs with the error
injected by hand; the methods' choices (kept bits, GPTQ's Hessians) from the quantized codes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermojax.cli.config import to_config
from thermojax.core.quant import dequantize
from thermojax.core.timegroups import uniform_edges
from thermojax.errors import UserInputError
from thermojax.models import load_model
from thermojax.models.base import run_sampler
from thermojax.pipeline import run
from thermojax.pipeline.measure.hessians import collect_hessians, gptq_hessians, group_sensitivity
from thermojax.pipeline.settings import QuantConfig
from thermojax.pipeline.weights.quantize import dense_weights, layer_bits, quantize_weights

N = 4  # samples: the reference stacks every step's inputs, [T, N, 256] per layer


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def recorded(model):
    """Every layer's inputs at every step, float64 ``[T, N, in]``, from the fp32 sampler."""
    _, _, seen = run_sampler(
        model,
        dict(model.quantizable_weights()),
        key=jax.random.PRNGKey(3),
        num_samples=N,
        observe=lambda t, inputs, key, x_t: inputs,
    )
    return {
        name: np.asarray(x, np.float64) for name, x in zip(model.layer_names, seen, strict=True)
    }


def test_group_hessians_are_the_mean_x_xt_of_each_groups_steps(model, recorded):
    edges = np.array([0, 100, 400, 1000])
    groups = collect_hessians(model, edges=edges, num_samples=N, seed=3)
    for name, x in recorded.items():
        assert groups[name].shape == (3, x.shape[-1], x.shape[-1])
        for g in range(3):
            steps = x[edges[g] : edges[g + 1]].reshape(-1, x.shape[-1])
            expected = steps.T @ steps / len(steps)
            np.testing.assert_allclose(
                groups[name][g], expected, rtol=2e-4, atol=1e-6 * abs(expected).max()
            )


def test_uniform_weighting_is_the_mean_over_all_steps(model, recorded):
    found = gptq_hessians(
        model, weighting="uniform", edges=[0, 100, 400, 1000], num_samples=N, seed=3
    )
    np.testing.assert_allclose(found.group_weights, [0.1, 0.3, 0.6])
    assert found.sensitivity is None
    for name, x in recorded.items():
        flat = x.reshape(-1, x.shape[-1])
        expected = flat.T @ flat / len(flat)
        np.testing.assert_allclose(
            found.hessians[name], expected, rtol=2e-4, atol=1e-6 * abs(expected).max()
        )


def test_sensitivity_is_the_final_change_from_an_error_in_one_group_only(model):
    edges = uniform_edges(1000, 4)
    fp32 = dict(model.quantizable_weights())
    assert np.all(group_sensitivity(model, fp32, edges=edges, num_samples=N, seed=1) == 0)
    plain, _ = quantize_weights(model, bits=2, group_size=64)
    injected = dense_weights(model, plain)
    measured = group_sensitivity(model, injected, edges=edges, num_samples=N, seed=1)
    # By hand for the last group (timesteps 750..999, the first to run): quantized weights
    # there, fp32 after.
    key = jax.random.PRNGKey(1)
    init_key, step_key, _ = jax.random.split(key, 3)
    x = model.initial_state(init_key, N)
    step = jax.jit(lambda w, x, t, k: model.step(w, x, t, k)[0])  # one step, compiled once
    for t in range(999, -1, -1):
        weights = injected if t >= 750 else fp32
        x = step(weights, x, jnp.int32(t), jax.random.fold_in(step_key, t))
    reference, _, _ = run_sampler(model, fp32, key=key, num_samples=N)
    by_hand = np.mean((np.asarray(x, np.float64) - np.asarray(reference, np.float64)) ** 2)
    assert measured[3] == pytest.approx(by_hand, rel=1e-4)
    assert np.all(measured > 0)
    found = gptq_hessians(
        model, weighting="sensitivity", edges=edges, num_samples=N, seed=1, injected=injected
    )
    np.testing.assert_allclose(found.group_weights, measured / measured.sum(), rtol=1e-12)
    with pytest.raises(ValueError, match="needs the injected weights"):
        gptq_hessians(model, weighting="sensitivity", edges=edges, num_samples=N, seed=1)


def test_kept_bits_follow_the_first_matching_pattern():
    names = ("input", "block0", "block1", "output")
    assert layer_bits(names, 2, {"block*": 4, "block1": 8, "output": 8}) == {
        "input": 2,
        "block0": 4,
        "block1": 4,
        "output": 8,
    }
    with pytest.raises(ValueError, match=r"quant.keep_bits.head: matches none of the layers input"):
        layer_bits(names, 2, {"head": 8})


def test_each_method_gives_packed_codes_and_gptq_lowers_the_output_error(model, recorded):
    """minmax is today's quantizer; mse_clip and hqq never raise a layer's weight error; gptq
    lowers the error of each layer's output on the calibration inputs it was given."""
    plain, plain_report = quantize_weights(model, bits=2, group_size=64)
    weights = model.quantizable_weights()
    hessians = gptq_hessians(
        model, weighting="uniform", edges=uniform_edges(1000, 4), num_samples=N, seed=3
    ).hessians

    def weight_error(q, name):
        return float(np.sum((np.asarray(dequantize(q)).T - np.asarray(weights[name])) ** 2))

    def output_error(q, name):
        x = recorded[name].reshape(-1, recorded[name].shape[-1])
        delta = np.asarray(dequantize(q), np.float64).T - np.asarray(weights[name], np.float64)
        return float(np.sum((x @ delta) ** 2))

    for method in ("mse_clip", "hqq"):
        better, _ = quantize_weights(model, bits=2, group_size=64, quant=QuantConfig(method=method))
        for name in model.layer_names:
            assert better[name].bits == 2 and better[name].codes.dtype == jnp.uint8
            assert weight_error(better[name], name) <= weight_error(plain[name], name) * (1 + 1e-6)
    gptq, _ = quantize_weights(
        model, bits=2, group_size=64, quant=QuantConfig(method="gptq"), hessians=hessians
    )
    for name in model.layer_names:
        assert output_error(gptq[name], name) < output_error(plain[name], name)
    with pytest.raises(UserInputError, match="needs a Hessian for every layer"):
        quantize_weights(model, bits=2, group_size=64, quant=QuantConfig(method="gptq"))
    kept, report = quantize_weights(
        model, bits=2, group_size=64, quant=QuantConfig(keep_bits={"output": 8})
    )
    assert kept["output"].bits == 8 and kept["block0"].bits == 2
    extra = 256 * 64 * (8 - 2) // 8  # the output layer's codes at 8 instead of 2 bits
    assert report.quantized_bytes == plain_report.quantized_bytes + extra
    assert kept["block0"].codes.tobytes() == plain["block0"].codes.tobytes()


@pytest.mark.parametrize(
    ("quant", "message"),
    [
        ({"method": "awq"}, "quant.method='awq': must be one of minmax, mse_clip, hqq, gptq"),
        ({"hessian": "late"}, "quant.hessian='late': must be one of uniform, sensitivity"),
        ({"damp": 2.0}, "quant.damp=2.0: must be in [0, 1]"),
        ({"clip_min_shrink": 0.0}, "quant.clip_min_shrink=0.0: must be in (0, 1]"),
        ({"hessian_samples": 0}, "quant.hessian_samples=0: must be >= 1"),
        ({"keep_bits": {"output": 3}}, "quant.keep_bits.output=3: weight bits must be 2, 4 or 8"),
    ],
)
def test_bad_quant_settings_are_one_line(quant, message):
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        to_config({"quant": quant})


def test_a_gptq_run_records_its_method_and_is_deterministic():
    settings = {
        "bit_width": 4,
        "quant": {"method": "gptq", "hessian": "sensitivity", "hessian_samples": 8},
        "calibration": {"samples": 8},
        "sampling": {"num_samples": 8},
    }
    first, second = run(to_config(settings)), run(to_config(settings))
    assert first.to_dict()["config"]["quant"]["method"] == "gptq"
    assert first.to_dict()["quality"] == second.to_dict()["quality"]
    plain = run(to_config({**settings, "quant": {}}))
    assert first.quality.final_mse < plain.quality.final_mse
    with pytest.raises(UserInputError, match="keep_bits.lm_head: matches none of the layers"):
        run(to_config({**settings, "quant": {"keep_bits": {"lm_head": 8}}}))
