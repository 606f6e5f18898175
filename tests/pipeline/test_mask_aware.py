"""``act.mask_aware=true``: a masked-diffusion LM's masked and unmasked positions calibrated
apart and quantized with their own scale and zero point per layer and time group, checked
against numpy references of what each position kind saw, and the run reporting ``2 L`` rows."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermojax.cli.config import to_config
from thermojax.errors import UserInputError
from thermojax.files import REPORT_JSON
from thermojax.models import shipped_path
from thermojax.models.dream.loading import load_masked_diffusion
from thermojax.pipeline import run
from thermojax.pipeline.cache.stages import StageCache
from thermojax.pipeline.measure.calibrate import MASKED_SUFFIX, _kind_stats, act_rows, calibrate
from thermojax.pipeline.measure.sampling import ActParams, sample
from thermojax.pipeline.quality.text import quantized_text_figures
from thermojax.pipeline.results.schema import write_result
from thermojax.pipeline.weights.quantize import quantize_weights, sampler_weights

LM = {
    "model": {"shipped": "pydoc-mdlm"},
    "calibration": {"samples": 8, "samples_per_step": 16},
    "sampling": {"num_samples": 4, "steps": 8, "length": 24},
    "bit_width": 8,
    "act_bits": 4,
}


@pytest.fixture(scope="module")
def lm():
    return load_masked_diffusion(shipped_path("pydoc-mdlm"), steps=8, length=24)


# ------------------------------------------------------------------ one layer, one step


def kind_reference(h: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """min, max, mean, std (float64) of the positions ``chosen`` of ``h [N, L, C]``."""
    values = np.asarray(h, np.float64)[np.asarray(chosen)].reshape(-1)
    return np.array([values.min(), values.max(), values.mean(), values.std()])


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_a_kinds_statistics_are_its_positions_only(share):
    rng = np.random.default_rng(int(share * 10))
    h = rng.normal(size=(3, 7, 5)).astype(np.float32)
    chosen = rng.random((3, 7)) < share
    chosen[0, 0], chosen[0, 1] = True, False  # both kinds present
    h[~chosen] += 10.0  # the other kind's values lie far outside the chosen ones
    fallback = (jnp.zeros(4), jnp.zeros(64))
    stats, picks = _kind_stats(
        jnp.asarray(h), jnp.asarray(chosen), jax.random.PRNGKey(0), 64, fallback
    )
    np.testing.assert_allclose(np.asarray(stats, np.float64), kind_reference(h, chosen), rtol=1e-5)
    assert set(np.asarray(picks).tolist()) <= set(h[chosen].reshape(-1).tolist())
    assert len(set(np.asarray(picks).tolist())) > 8  # drawn from many of them, not one


def test_a_kind_without_positions_takes_the_fallback():
    h = jnp.ones((2, 3, 4))
    fallback = (jnp.arange(4.0), jnp.full(8, 7.0))
    stats, picks = _kind_stats(h, jnp.zeros((2, 3), bool), jax.random.PRNGKey(0), 8, fallback)
    np.testing.assert_array_equal(stats, fallback[0])
    np.testing.assert_array_equal(picks, fallback[1])


# ----------------------------------------------------------------------- calibration


@pytest.mark.slow  # two calibrations of the shipped LM (~25 s)
def test_calibration_splits_each_layer_by_position_kind():
    lm = load_masked_diffusion(shipped_path("pydoc-mdlm"), steps=8, length=24, prompt="The module ")
    qweights, _ = quantize_weights(lm, bits=8, group_size=64)
    together = calibrate(lm, bit_width=8, num_samples=4, samples_per_step=8, qweights=qweights)
    apart = calibrate(
        lm, bit_width=8, num_samples=4, samples_per_step=8, qweights=qweights, mask_aware=True
    )
    names = tuple(lm.layer_names)
    count = len(names)
    assert apart.layer_names == names + tuple(n + MASKED_SUFFIX for n in names)
    assert apart.layer_names == act_rows(names, True) and apart.act_min.shape[0] == 2 * count
    # The two kinds' ranges make up the range of all positions, at every step and layer.
    np.testing.assert_array_equal(
        np.minimum(apart.act_min[:count], apart.act_min[count:]), together.act_min
    )
    np.testing.assert_array_equal(
        np.maximum(apart.act_max[:count], apart.act_max[count:]), together.act_max
    )
    # The first step (the highest timestep) starts from the prompt and masks: each kind's rows
    # there are its positions' statistics of that network pass, computed here from it.
    state = lm.calibration_model().initial_state(jax.random.PRNGKey(0), 4)
    weights = lm.network_weights(sampler_weights(lm, qweights))
    _, inputs = lm.lm.forward(weights, state)
    masked = np.asarray(lm.position_kinds(state))
    assert masked.any() and (~masked).any()
    for j in (0, count - 1):
        reference = kind_reference(np.asarray(inputs[j]), masked)
        got = [a[count + j, -1] for a in (apart.act_min, apart.act_max, apart.act_mean)]
        np.testing.assert_allclose(got, reference[:3], rtol=1e-5, atol=1e-6, err_msg=names[j])
        reference = kind_reference(np.asarray(inputs[j]), ~masked)
        got = [a[j, -1] for a in (apart.act_min, apart.act_max, apart.act_mean)]
        np.testing.assert_allclose(got, reference[:3], rtol=1e-5, atol=1e-6, err_msg=names[j])


def test_calibration_refuses_a_model_without_masked_positions():
    from thermojax.models import load_model

    with pytest.raises(ValueError, match="has no masked positions"):
        calibrate(load_model(), bit_width=8, num_samples=2, mask_aware=True)


# ------------------------------------------------------------------ quantized sampling


def params(lm, masked_scale: float) -> ActParams:
    """Two time groups; unmasked rows at scale 0.05, masked rows at ``masked_scale``."""
    count, steps = len(lm.layer_names), int(lm.num_timesteps)
    scales = np.full((2 * count, 2), 0.05, np.float32)
    scales[count:] = masked_scale
    zero_points = np.full((2 * count, 2), 8.0, np.float32)
    return ActParams(scales, zero_points, np.array([0, steps // 2, steps]), 4, mask_aware=True)


def test_equal_rows_sample_as_one_parameter_set(lm):
    """Mask-aware parameters whose masked rows equal the unmasked ones sample exactly as the
    plain parameters; masked rows of another scale sample otherwise (the rows are used)."""
    count = len(lm.layer_names)
    same = params(lm, 0.05)
    plain = ActParams(same.scales[:count], same.zero_points[:count], same.edges, 4)
    a = sample(lm, act_params=same, num_samples=3, seed=1)
    b = sample(lm, act_params=plain, num_samples=3, seed=1)
    np.testing.assert_array_equal(a.trajectory, b.trajectory)
    c = sample(lm, act_params=params(lm, 0.5), num_samples=3, seed=1)
    assert not np.array_equal(a.trajectory, c.trajectory)
    # ... and the masked positions take rows L..2L-1, not the unmasked ones' (a swap differs)
    swapped = params(lm, 0.5)
    swapped = ActParams(
        np.concatenate([swapped.scales[count:], swapped.scales[:count]]),
        swapped.zero_points,
        swapped.edges,
        4,
        mask_aware=True,
    )
    d = sample(lm, act_params=swapped, num_samples=3, seed=1)
    assert not np.array_equal(c.trajectory, d.trajectory)


def test_the_heldout_bound_uses_the_rows_alike(lm):
    count = len(lm.layer_names)
    same = params(lm, 0.05)
    plain = ActParams(same.scales[:count], same.zero_points[:count], same.edges, 4)
    qweights, _ = quantize_weights(lm, bits=8, group_size=64)
    first = quantized_text_figures(lm, qweights, same, 0)
    second = quantized_text_figures(lm, qweights, plain, 0)
    assert first == second
    other = quantized_text_figures(lm, qweights, params(lm, 0.5), 0)
    assert other != first


def test_sampling_checks_the_rows(lm):
    count = len(lm.layer_names)
    bad = params(lm, 0.05)
    bad = ActParams(
        bad.scales[: count + 1], bad.zero_points[: count + 1], bad.edges, 4, mask_aware=True
    )
    with pytest.raises(ValueError, match=r"must both be \[2 L="):
        sample(lm, act_params=bad, num_samples=2)


# ---------------------------------------------------------------------------- the run


@pytest.mark.slow
def test_a_mask_aware_run_reports_both_kinds(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    result = run(to_config({**LM, "act": {"mask_aware": True}}))
    data = json.loads(write_result(result, tmp_path / REPORT_JSON).read_text())
    assert data["config"]["act"]["mask_aware"] is True
    names = [layer["name"] for layer in data["layers"]]
    count = len(names) // 2
    assert names[count:] == [n + MASKED_SUFFIX for n in names[:count]]
    # the two rows of a layer carry its weight's cosine; their scales differ
    layers = result.layers
    assert layers[0].cosine_similarity == layers[count].cosine_similarity
    assert any(layers[j].scales != layers[count + j].scales for j in range(count))
    plain = run(to_config(LM))
    assert len(plain.layers) == count
    mask_aware = result.quality.figure("heldout_perplexity_quantized")
    assert mask_aware > 0 and mask_aware != plain.quality.figure("heldout_perplexity_quantized")
    assert result.quality.figure("heldout_perplexity_fp32") == plain.quality.figure(
        "heldout_perplexity_fp32"
    )


def test_the_default_keeps_the_calibration_key(lm, tmp_path):
    """A run without the setting (written before it existed) and one with it false share their
    calibration; true is another calibration."""
    qweights, _ = quantize_weights(lm, bits=8, group_size=64)
    config = to_config(LM).to_dict()

    def key(cfg):
        return StageCache(lm, cfg, qweights, cache_dir=tmp_path).calibration_key()

    off = key(config)
    assert (
        key({**config, "act": {k: v for k, v in config["act"].items() if k != "mask_aware"}}) == off
    )
    assert key({**config, "act": {**config["act"], "mask_aware": True}}) != off


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"act": {"mask_aware": True}}, r"^act.mask_aware=true: the digits DDPM has no masked"),
        (
            {**LM, "act": {"mask_aware": True, "mode": "dynamic"}},
            r"^act.mask_aware=true: act.mode=dynamic has no calibrated parameters",
        ),
        (
            {**LM, "act": {"mask_aware": True}, "export": {"path": "/nonexistent/q"}},
            r"^act.mask_aware=true: exports hold one parameter set per layer",
        ),
        (
            {**LM, "act": {"mask_aware": True}, "phases": {"enabled": True}},
            r"^act.mask_aware=true: the phase experiment",
        ),
    ],
    ids=["digits", "dynamic", "export", "phases"],
)
def test_what_it_cannot_be_combined_with_is_one_line(settings, message):
    with pytest.raises(UserInputError, match=message):
        run(to_config(settings))
