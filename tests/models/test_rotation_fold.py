"""The rotated masked-diffusion LM computes the original's logits (QuaRot-style folding):
on the shipped LM and on small synthetic Dream (Qwen2, q/k/v biases) and LLaDA checkpoints,
against the original's float32 logits and against a float64 reference of the original."""

from __future__ import annotations

import dataclasses
import doctest

import dream_reference
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import thermojax.models.dream.rotation as rotation_module
from thermojax.core.rotation import randomized_hadamard, rotate
from thermojax.models.dream import DreamLM, load_dream
from thermojax.models.dream.corpus import SHIPPED_LM, heldout_batch
from thermojax.models.dream.diffusion import MaskedDiffusionLM
from thermojax.models.dream.rotation import (
    fold_norms,
    hadamard_down_projections,
    rotate_lm,
    rotate_residual,
)
from thermojax.models.hf import write_dream_like, write_llada_like

# max |rotated - original| / max |original logits|, both float32. Measured 1.1e-6 .. 7.9e-6 over
# keys 0-3 on the three models below; the original's own float32 error against the float64
# reference is 4.6e-6 .. 7.3e-6 on the same inputs, and the rotated model's 2.4e-6 .. 9.6e-6:
# the rotation adds nothing beyond float32 rounding. A norm left unfolded or Q for Q^T moves
# the logits by 1e-2 .. 1.
RELATIVE_TOLERANCE = 2e-5

logits_of = jax.jit(lambda lm, tokens: lm.logits(tokens))
forward_of = jax.jit(lambda lm, tokens: lm.forward(None, tokens)[1])


def relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[DreamLM, np.ndarray]]:
    """name -> (float32 model, int32 tokens [B, L]). The synthetic ones at scale 32: Dream's
    hidden 112 = 7 x 16 and MLP 576 = 9 x 64, LLaDA's MLP 384 = 3 x 128 (block-diagonal)."""
    folder = tmp_path_factory.mktemp("rotation")
    found = {"shipped": (load_dream(SHIPPED_LM), heldout_batch(128, 8))}
    for writer in (write_dream_like, write_llada_like):
        lm = load_dream(writer(folder / writer.__name__, scale=32, layers=2, dtype="F32"))
        tokens = np.random.default_rng(0).integers(0, lm.vocab_size, (2, 64), dtype=np.int32)
        found[lm.config.layout.name] = (lm, tokens)
    return found


MODELS = ["shipped", "qwen2", "llada"]


@pytest.mark.parametrize("name", MODELS)
def test_rotated_logits_equal_the_original_within_float32_rounding(models, name):
    lm, tokens = models[name]
    rotated = rotate_lm(lm, key=jax.random.key(0))
    original = logits_of(lm, tokens)
    assert relative_error(logits_of(rotated, tokens), original) <= RELATIVE_TOLERANCE
    reference = dream_reference.logits(lm, tokens)  # float64, the original model
    assert relative_error(original, reference) <= RELATIVE_TOLERANCE
    assert relative_error(logits_of(rotated, tokens), reference) <= RELATIVE_TOLERANCE
    # The float64 reference runs the rotated network too (the online transform explicitly).
    assert relative_error(dream_reference.logits(rotated, tokens), reference) <= 1e-5


@pytest.mark.parametrize("name", MODELS)
def test_the_rotated_model_keeps_names_shapes_dtypes_and_flags_the_down_projections(models, name):
    lm, _ = models[name]
    rotated = rotate_lm(lm, key=jax.random.key(0))
    assert type(rotated) is DreamLM and rotated.config == lm.config
    assert {k: (v.shape, v.dtype) for k, v in rotated.params.items()} == {
        k: (v.shape, v.dtype) for k, v in lm.params.items()
    }
    layout = lm.config.layout
    downs = [layout.block_tensor(i, layout.linears[6]) for i in range(lm.config.num_hidden_layers)]
    assert rotated.online_hadamard == tuple(downs) and lm.online_hadamard == ()
    norms = [n for n in lm.params if n.endswith("norm.weight") or n == layout.final_norm]
    assert norms and all(bool(jnp.all(rotated.params[n] == 1)) for n in norms)
    same = rotate_lm(lm, key=jax.random.key(0))
    other = rotate_lm(lm, key=jax.random.key(1))
    embed = layout.embed
    np.testing.assert_array_equal(same.params[embed], rotated.params[embed])
    assert not np.allclose(other.params[embed], rotated.params[embed])


def test_each_step_alone_keeps_the_logits(models):
    lm, tokens = models["qwen2"]
    original = logits_of(lm, tokens)
    folded = fold_norms(lm)
    assert relative_error(logits_of(folded, tokens), original) <= RELATIVE_TOLERANCE
    down = hadamard_down_projections(lm, key=jax.random.key(2))  # needs no folded norms
    assert relative_error(logits_of(down, tokens), original) <= RELATIVE_TOLERANCE
    rotation = randomized_hadamard(jax.random.key(3), lm.config.hidden_size)
    residual = rotate_residual(folded, rotation)
    assert relative_error(logits_of(residual, tokens), original) <= RELATIVE_TOLERANCE


@pytest.mark.parametrize("name", ["qwen2", "llada"])
def test_only_the_residual_stream_and_the_down_inputs_are_rotated(models, name):
    """Every reader of the stream sees ``rms_norm(x) Q``; the attention output and the MLP's
    down projection see what they saw (heads and their rotary embedding untouched), until the
    down projections get their own online rotation ``diag(d) H``."""
    lm, tokens = models[name]
    # Per element, a layer input's float32 error grows through the layers before it: 3.4e-5 of
    # the tensor's largest value at most (measured); a misplaced rotation is off by O(1).
    tolerance = 1e-4
    folded = fold_norms(lm)
    rotation = randomized_hadamard(jax.random.key(4), lm.config.hidden_size)
    residual = rotate_residual(folded, rotation)
    before, after = forward_of(folded, tokens), forward_of(residual, tokens)
    per_block = len(lm.config.layout.linears)
    for j, (x, y) in enumerate(zip(before, after, strict=True)):
        role = j % per_block if j < len(before) - 1 else "head"
        want = x if role in (3, 6) else rotate(x, rotation)  # o, down: not on the stream
        np.testing.assert_allclose(y, want, rtol=0, atol=tolerance * float(jnp.max(jnp.abs(x))))
    key = jax.random.key(5)
    down = forward_of(hadamard_down_projections(residual, key=key), tokens)
    for i in range(lm.config.num_hidden_layers):
        j = per_block * i + 6
        q = randomized_hadamard(jax.random.fold_in(key, i), lm.config.intermediate_size)
        scale = float(jnp.max(jnp.abs(after[j])))
        np.testing.assert_allclose(down[j], rotate(after[j], q), rtol=0, atol=tolerance * scale)


def test_the_hook_sees_the_online_transformed_input(models):
    lm, tokens = models["shipped"]
    rotated = rotate_lm(lm, key=jax.random.key(0))
    seen = {}

    def hook(index, x):
        seen[index] = x
        return x

    _, inputs = rotated.forward(None, tokens[:2, :16], act_hook=hook)
    assert len(seen) == len(inputs)
    for index, x in seen.items():
        np.testing.assert_array_equal(x, inputs[index])


def test_a_tied_head_is_untied_because_the_final_norm_folds_into_it(models):
    lm, tokens = models["qwen2"]
    head = lm.config.layout.head
    tied = DreamLM.create(
        dataclasses.replace(lm.config, tie_word_embeddings=True),
        {name: value for name, value in lm.params.items() if name != head},
    )
    rotated = rotate_lm(tied, key=jax.random.key(0))
    assert not rotated.config.tie_word_embeddings and head in rotated.params
    original = logits_of(tied, tokens)
    assert relative_error(logits_of(rotated, tokens), original) <= RELATIVE_TOLERANCE


def test_bf16_storage_stays_bf16(models):
    lm, _ = models["llada"]
    half = lm.replace(params={k: v.astype(jnp.bfloat16) for k, v in lm.params.items()})
    rotated = rotate_lm(half, key=jax.random.key(0))
    assert {v.dtype for v in rotated.params.values()} == {jnp.dtype(jnp.bfloat16)}


def test_mistakes_are_refused(models):
    lm, _ = models["qwen2"]
    rotation = randomized_hadamard(jax.random.key(0), lm.config.hidden_size)
    with pytest.raises(ValueError, match="input_layernorm.weight is not 1.*fold_norms first"):
        rotate_residual(lm, rotation)
    with pytest.raises(ValueError, match="width 64, the residual stream 112"):
        rotate_residual(fold_norms(lm), randomized_hadamard(jax.random.key(0), 64))
    rotated = rotate_lm(lm, key=jax.random.key(0))
    with pytest.raises(ValueError, match="already has an online Hadamard transform"):
        hadamard_down_projections(rotated, key=jax.random.key(1))
    linear = lm.config.layout.block_tensor(0, "self_attn.q_proj")
    partial = lm.replace(params={k: v for k, v in lm.params.items() if k != linear})
    with pytest.raises(ValueError, match="needs every tensor in memory"):
        rotate_lm(partial, key=jax.random.key(0))
    strange = lm.replace(online_hadamard=("model.layers.0.mlp.nothing.weight",))
    with pytest.raises(ValueError, match="online_hadamard.*not linear layers"):
        strange.logits(jnp.zeros((1, 4), jnp.int32))


def test_the_sampler_runs_the_rotated_model_unchanged(models):
    lm, _ = models["shipped"]
    rotated = rotate_lm(lm, key=jax.random.key(0))
    runs = []
    for network in (lm, rotated):
        model = MaskedDiffusionLM.create(network, length=24, steps=6, unmasking="confidence")
        runs.append(np.asarray(model.sample(key=jax.random.key(1), num_samples=4)[0]))
    np.testing.assert_array_equal(runs[1], runs[0])


def test_module_example_runs():
    failures, tried = doctest.testmod(rotation_module, verbose=False)
    assert tried > 0 and failures == 0
