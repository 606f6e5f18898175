"""``act.mode=dynamic``: each token's layer inputs quantized with its own range while the quantized
model samples and is scored (no calibrated parameters), on the digits DDPM and the shipped LM; the
static time-group parameters still calibrated and reported, and the result saying which sampled."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermojax.cli.config import to_config
from thermojax.core.text_metrics import bound_batch_size, masked_diffusion_nll_bound, perplexity
from thermojax.errors import UserInputError
from thermojax.files import REPORT_JSON
from thermojax.models import load_model, shipped_path
from thermojax.models.dream.loading import load_masked_diffusion
from thermojax.models.dream.network import shift_logits
from thermojax.models.hf import write_dream_like
from thermojax.pipeline import run
from thermojax.pipeline.measure.sampling import ActParams, sample
from thermojax.pipeline.quality.text import NUM_MASK_RATIOS, quantized_text_figures
from thermojax.pipeline.results.schema import Result, read_result, write_result
from thermojax.pipeline.results.sweep import collect
from thermojax.pipeline.weights.quantize import quantize_weights, sampler_weights
from thermojax.report import render_report

QUICK = {"calibration": {"samples": 16, "samples_per_step": 16}, "bit_width": 8}
KINDS = {
    "digits": {**QUICK, "sampling": {"num_samples": 16}},
    "lm": {
        **QUICK,
        "model": {"shipped": "pydoc-mdlm"},
        "sampling": {"num_samples": 8, "steps": 16, "length": 32},
    },
}
MODES = ("static", "dynamic")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(kind, mode) -> Result`` at W8A8, static first, into one cache folder (about 45 s on
    two shared cores: the tests that use it are marked slow)."""
    cache = tmp_path_factory.mktemp("cache")
    found = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("THERMOJAX_CACHE_DIR", str(cache))
        for kind, settings in KINDS.items():
            for mode in MODES:
                found[kind, mode] = run(to_config({**settings, "act": {"mode": mode}}))
    return found


def per_token_reference(x: jax.Array, bits: int) -> jax.Array:
    """Each row's own range, written here apart from the code under test."""
    qmax = 2**bits - 1
    lo = jnp.minimum(jnp.min(x, axis=-1, keepdims=True), 0.0)
    hi = jnp.maximum(jnp.max(x, axis=-1, keepdims=True), 0.0)
    scale = jnp.where(hi > lo, (hi - lo) / qmax, 1.0)
    zero_point = jnp.clip(jnp.round(-lo / scale), 0, qmax)
    return (jnp.clip(jnp.round(x / scale) + zero_point, 0, qmax) - zero_point) * scale


def per_tensor(x: jax.Array, bits: int) -> jax.Array:
    """The mistake the tests must tell apart: one range for the whole layer input."""
    return per_token_reference(x.reshape(1, -1), bits).reshape(x.shape)


def dynamic_params(model, bits: int) -> ActParams:
    """Dynamic parameters with static arrays that would quantize everything to nothing."""
    layers, steps = len(model.layer_names), int(model.num_timesteps)
    zeros = np.zeros((layers, 1), np.float32)
    return ActParams(zeros + 1e6, zeros, np.array([0, steps]), bits, mode="dynamic")


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mode", MODES)
def test_the_result_says_which_mode_sampled(runs, kind, mode, tmp_path):
    result = runs[kind, mode]
    assert result.act_mode() == mode
    assert result.config["act"] == {
        "mode": mode,
        "rotation": "none",
        "mask_aware": False,
        "granularity": "tensor",
        "channel_groups": 8,
    }
    path = write_result(result, tmp_path / "job" / REPORT_JSON)
    assert read_result(path).act_mode() == mode
    page = render_report(result)
    assert ("quantized dynamically per token" in page) is (mode == "dynamic")
    (row,) = collect(tmp_path).rows
    assert row["act_mode"] == mode and row["act_bits"] == 8


@pytest.mark.slow
def test_a_result_written_before_the_option_reads_as_static(runs):
    data = runs["digits", "static"].to_dict()
    del data["config"]["act"]
    assert Result.from_dict(data).act_mode() == "static"


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_dynamic_samples_differently_from_the_same_calibration(runs, kind):
    static, dynamic = runs[kind, "static"], runs[kind, "dynamic"]
    np.testing.assert_array_equal(dynamic.samples["fp32"], static.samples["fp32"])
    assert not np.array_equal(dynamic.samples["quantized"], static.samples["quantized"])
    # The time groups and their Markov figures describe the same static parameters.
    assert dynamic.time_groups == static.time_groups
    assert [layer.scales for layer in dynamic.layers] == [layer.scales for layer in static.layers]
    assert dynamic.smoothness_score == static.smoothness_score
    assert dynamic.cache == {"calibration": "hit", "fp32_samples": "hit", "quality": "miss"}


@pytest.mark.slow
def test_dynamic_a8_stays_close_to_fp32(runs):
    text = runs["lm", "dynamic"].quality
    ratio = text.heldout_perplexity_quantized / text.heldout_perplexity_fp32
    assert ratio == pytest.approx(1.0, abs=0.01)  # measured 1.0001 (static A8: 1.003)
    image = runs["digits", "dynamic"].quality
    assert image.final_mse < 0.5  # measured 0.089, like static A8's 0.088 (good: <= 2)
    assert image.frechet_quantized / image.frechet_fp32 == pytest.approx(1.0, abs=0.1)


@pytest.fixture(scope="module")
def models():
    lm = load_masked_diffusion(shipped_path("pydoc-mdlm"), steps=8, length=32, heldout_windows=4)
    return {"digits": load_model(), "lm": lm}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_sampler_quantizes_each_token_by_its_own_range(models, kind):
    model = models[kind]
    qweights, _ = quantize_weights(model, bits=8, group_size=64 if kind == "digits" else 32)
    got = sample(model, weights=qweights, act_params=dynamic_params(model, 4), num_samples=4)

    def reference(quantizer):
        x0, _ = jax.jit(
            lambda weights: model.sample(
                weights,
                key=jax.random.PRNGKey(0),
                num_samples=4,
                act_hook=lambda layer, h, t, kinds=None: quantizer(h, 4),
            )
        )(sampler_weights(model, qweights))
        return model.to_pixels(x0)

    want, mistaken = reference(per_token_reference), reference(per_tensor)
    np.testing.assert_allclose(got.x0, want, atol=1e-3)
    assert np.max(np.abs(np.asarray(mistaken, np.float64) - got.x0)) > 0.1


def test_the_heldout_bound_quantizes_each_token_by_its_own_range(models):
    model = models["lm"]
    qweights, _ = quantize_weights(model, bits=8, group_size=32)
    got = quantized_text_figures(model, qweights, dynamic_params(model, 4), seed=3)
    heldout = np.asarray(model.reference.heldout_tokens(), np.int32)
    stored = model.network_weights(sampler_weights(model, qweights))

    def bound(quantizer):
        def hook(layer, x):
            return quantizer(x, 4)

        def logits(batch):
            return shift_logits(model.lm.forward(stored, batch, act_hook=hook)[0])

        _, nll = masked_diffusion_nll_bound(
            logits,
            jnp.asarray(heldout),
            key=jax.random.PRNGKey(3),
            num_mask_ratios=NUM_MASK_RATIOS,
            mask_token_id=model.options.mask_token_id,
            positions=jnp.ones(heldout.shape, bool),
            batch_size=bound_batch_size(heldout.shape[1], model.lm.vocab_size),
        )
        return float(perplexity(nll))

    assert got["heldout_perplexity_quantized"] == pytest.approx(bound(per_token_reference), 1e-4)
    assert got["heldout_perplexity_quantized"] != pytest.approx(bound(per_tensor), 1e-2)


@pytest.mark.slow
def test_a_dynamic_export_ships_no_activation_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "export"
    settings = {**KINDS["digits"], "act": {"mode": "dynamic"}, "export": {"path": str(folder)}}
    result = run(to_config(settings))
    assert result.weights.export_path == str(folder)
    assert json.loads((folder / "quantization.json").read_text())["activations"] is None
    assert not (folder / "activations.safetensors").exists()


def test_a_weight_only_checkpoint_refuses_dynamic_activations(tmp_path):
    folder = write_dream_like(tmp_path / "dream", scale=64, layers=1)
    settings = {"model": {"path": str(folder)}, "bit_width": 4, "group_size": 8}
    with pytest.raises(UserInputError, match=r"^act\.mode='dynamic': .* is measured weight-only$"):
        run(to_config({**settings, "act": {"mode": "dynamic"}}))
