"""``model.dtype``: a masked-diffusion LM's parameters held in bfloat16 or float32 (``None``: as
stored), its matmuls float32 either way.

bf16 storage rounds the weights and nothing else: every weight is upcast where its layer uses it,
so a bf16 model computes exactly what the float32 model of its rounded weights computes, and a
checkpoint stored in bf16 gives the same logits at either dtype. Against the float32 weights the
logits move by the rounding (tolerances below, measured first).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermojax.cli.config import to_config
from thermojax.errors import UserInputError
from thermojax.models import shipped_path
from thermojax.models.dream.checkpoint import load_dream
from thermojax.models.dream.loading import load_masked_diffusion
from thermojax.models.hf import write_dream_like
from thermojax.pipeline import run
from thermojax.pipeline.cache.stages import StageCache
from thermojax.pipeline.families.registry import recognise
from thermojax.pipeline.weights.quantize import quantize_weights

BF16 = np.dtype(jnp.bfloat16)


@jax.jit
def _logits(lm, tokens):
    return lm.logits(tokens)


def _tokens(vocab: int, seed: int = 0) -> jax.Array:
    return jax.random.randint(jax.random.PRNGKey(seed), (4, 32), 0, vocab)


def test_bf16_parameters_compute_what_the_float32_model_of_their_rounding_computes(tmp_path):
    """Bit for bit on the shipped LM (and on a scale-8 synthetic Dream, measured); at the odd
    widths of a scale-56 one (hidden 70, head_dim 10) XLA:CPU's kernels sum a parameter and a
    converted array differently: within 6.5e-7 of the logits' scale (measured), float32
    rounding."""
    halved = load_dream(shipped_path("pydoc-mdlm"), dtype="bfloat16")
    assert {leaf.dtype for leaf in jax.tree.leaves(halved)} == {BF16}
    rounded = halved.replace(params=jax.tree.map(lambda a: a.astype(jnp.float32), halved.params))
    tokens = _tokens(halved.vocab_size)
    np.testing.assert_array_equal(_logits(halved, tokens), _logits(rounded, tokens))
    # A checkpoint stored in bf16 gives the same logits held as stored or upcast on load.
    stored_bf16 = write_dream_like(tmp_path / "bf16", scale=56, layers=2, dtype="BF16")
    as_stored = load_dream(stored_bf16, dtype=None)
    assert {leaf.dtype for leaf in jax.tree.leaves(as_stored)} == {BF16}
    tokens = _tokens(as_stored.vocab_size)
    upcast = np.asarray(_logits(load_dream(stored_bf16, dtype="float32"), tokens))
    scale = np.max(np.abs(upcast))
    np.testing.assert_allclose(_logits(as_stored, tokens), upcast, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize(
    ("which", "max_abs", "rms_relative"),
    [
        # shipped LM: measured max |diff| 0.064 (logits up to 18), RMS relative 0.0022, 3 seeds
        ("shipped", 0.25, 0.01),
        # synthetic Dream (random weights, outlier channels): measured max |diff| 0.77 (logits
        # up to 21), RMS relative 0.0075, 3 seeds
        ("synthetic", 2.5, 0.03),
    ],
)
def test_bf16_and_float32_logits_agree_within_the_rounding(tmp_path, which, max_abs, rms_relative):
    """Tolerances about 4x the largest difference measured over three token draws."""
    folder = (
        shipped_path("pydoc-mdlm")
        if which == "shipped"
        else write_dream_like(tmp_path / "f32", scale=56, layers=2, dtype="F32", seed=3)
    )
    f32, bf16 = (load_dream(folder, dtype=d) for d in ("float32", "bfloat16"))
    for seed in range(3):
        tokens = _tokens(f32.vocab_size, seed)
        exact = np.asarray(_logits(f32, tokens), np.float64)
        halved = np.asarray(_logits(bf16, tokens), np.float64)
        diff = halved - exact
        assert 0 < np.max(np.abs(diff)) <= max_abs
        assert np.sqrt(np.mean(diff**2) / np.mean(exact**2)) <= rms_relative


def _lm_config(dtype: str | None):
    return to_config(
        {
            "model": {
                "shipped": "pydoc-mdlm",
                "path": str(shipped_path("pydoc-mdlm")),
                "dtype": dtype,
            },
            "sampling": {"steps": 8, "length": 32},
        }
    )


def test_model_dtype_reaches_the_loader_and_the_cache_keys():
    """The run's model holds its parameters at ``model.dtype``; another dtype is another
    model for every cache entry (the parameters' dtypes and bytes are in the model's
    fingerprint), while ``None`` (as stored) and the stored dtype itself (the shipped LM's
    float32) load the same parameters and share the calibration and fp32 samples (the quality
    entry keys the whole config, ``model.dtype`` included)."""
    keys = {}
    for dtype in (None, "float32", "bfloat16"):
        config = _lm_config(dtype)
        family = recognise(config)
        config = family.check(config)
        model = family.load(config).model
        expected = BF16 if dtype == "bfloat16" else np.dtype(np.float32)
        assert {leaf.dtype for leaf in jax.tree.leaves(model)} == {expected}
        qweights, _ = quantize_weights(model, bits=4, group_size=64)
        cached = StageCache(model, config.to_dict(), qweights)
        keys[dtype] = (cached.calibration_key(), cached.fp32_samples_key(), cached.quality_key())
    for name, half, full in zip(
        ("calibration", "fp32 samples", "quality"), keys["bfloat16"], keys["float32"], strict=True
    ):
        assert half != full, name
    assert keys[None][:2] == keys["float32"][:2]


def test_load_masked_diffusion_takes_the_dtype():
    folder = shipped_path("pydoc-mdlm")
    assert load_masked_diffusion(folder).lm.params["lm_head.weight"].dtype == np.float32
    model = load_masked_diffusion(folder, dtype="bfloat16", steps=4, length=16)
    assert model.lm.params["lm_head.weight"].dtype == BF16
    quantized, _ = quantize_weights(model, bits=4, group_size=64)  # from the bf16 weights
    assert all(q.scale.dtype == np.float32 for q in quantized.values())


def test_the_digits_ddpm_refuses_bfloat16_in_one_line():
    config = to_config({"model": {"dtype": "bfloat16"}})
    with pytest.raises(UserInputError) as refused:
        recognise(config).check(config)
    assert str(refused.value) == (
        "model.dtype='bfloat16': only for a masked-diffusion LM run, not the digits DDPM"
    )
    assert dataclasses.replace(config.model, dtype=None) == type(config.model)()


def test_an_export_of_a_bf16_run_runs_again_at_bf16(tmp_path, monkeypatch):
    """The export records ``model.dtype``; a run of it loads its source at that dtype (the
    network fingerprint it was exported with) and gives the same numbers; another dtype given
    is not the model it was exported from."""
    settings = {
        "calibration": {"samples": 4, "samples_per_step": 4},
        "sampling": {"num_samples": 4, "steps": 8, "length": 24},
        "bit_width": 4,
        "group_size": 32,
        "num_time_groups": 4,
    }
    out = tmp_path / "exported"
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache-export"))
    model = {"shipped": "pydoc-mdlm", "dtype": "bfloat16"}
    first = run(to_config({**settings, "model": model, "export": {"path": str(out)}}))
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache-reload"))
    again = run(to_config({**settings, "model": {"path": str(out)}}))
    assert again.config["model"]["dtype"] == "bfloat16"
    assert again.quality.heldout_perplexity_quantized == first.quality.heldout_perplexity_quantized
    assert again.quality.token_agreement == first.quality.token_agreement
    for name, array in first.samples.items():
        np.testing.assert_array_equal(again.samples[name], array, err_msg=name)
    with pytest.raises(UserInputError, match="not the model it was exported from"):
        run(to_config({**settings, "model": {"path": str(out), "dtype": "float32"}}))
