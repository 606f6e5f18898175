"""LLaDA through the masked-diffusion network: parity with transformers, LLaDA's names and
conventions (no logit shift, no biases), its config read and refused in one line.

The reference is ``tests/fixtures/llada_tiny/`` (``tools/make_llada_fixture.py``): a random
float32 checkpoint under LLaDA's names and the float32 logits transformers'
``LlamaForCausalLM`` computes from the same weights under Llama's names with a full
(non-causal) attention mask. Torch is not needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermojax.models import load_model
from thermojax.models.dream import DreamConfig, DreamLM, load_dream
from thermojax.models.dream.diffusion import MaskedDiffusionLM
from thermojax.models.hf import CheckpointError, expected_shapes, write_llada_like
from thermojax.models.hf.layouts import LLADA_LAYOUT
from thermojax.models.hf.synthetic import LLADA_8B_CONFIG, llada_like_config

FIXTURE = Path(__file__).parents[1] / "fixtures" / "llada_tiny"
# Parity: max |ours - transformers| / max |transformers|, both float32 (3.8e-7 measured: the
# largest difference 1.4e-6 on logits up to 3.8).
RELATIVE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model() -> DreamLM:
    return load_dream(FIXTURE)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "inputs.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def logits_fn():
    return jax.jit(lambda m, tokens: m.logits(tokens))


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(np.asarray(ours) - ref).max() / np.abs(ref).max())


# ------------------------------------------------------------------------- parity


def test_logits_match_transformers(model, reference, logits_fn):
    ours = np.asarray(logits_fn(model, reference["tokens"]))
    assert ours.dtype == np.float32 and ours.shape == reference["logits"].shape == (3, 12, 96)
    assert relative_error(ours, reference["logits"]) <= RELATIVE_TOLERANCE
    np.testing.assert_allclose(ours, reference["logits"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("changed", [11, 5], ids=["last-token", "middle-token"])
def test_every_position_sees_every_token(model, reference, logits_fn, changed):
    tokens = reference["tokens"].copy()
    before = np.asarray(logits_fn(model, tokens))
    tokens[:, changed] = (tokens[:, changed] + 1) % 90
    moved = np.abs(np.asarray(logits_fn(model, tokens)) - before).max(axis=-1)  # [B, L]
    assert (moved > 1e-4).all(), f"positions not reached by token {changed}: {moved.min()}"


# ------------------------------------------------------------------------- LLaDA's conventions


def test_the_fixture_is_a_llada_8b_config_at_a_tiny_size(model):
    config = json.loads((FIXTURE / "config.json").read_text())
    assert set(config) == set(LLADA_8B_CONFIG)  # the generator keeps LLaDA-8B's keys ...
    sized = {"d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size"}
    sized |= {"embedding_size", "max_sequence_length", "eos_token_id", "pad_token_id"}
    sized |= {"mask_token_id"}

    def unsized(c: dict) -> dict:
        return {k: v for k, v in c.items() if k not in sized}

    assert unsized(config) == unsized(LLADA_8B_CONFIG)  # ... and its values but the sizes
    c = model.config
    assert (c.layout, c.attention_bias, c.logit_shift) == (LLADA_LAYOUT, False, 0)
    assert (c.hidden_size, c.num_hidden_layers, c.intermediate_size) == (32, 2, 48)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (4, 2, 8)
    assert (c.vocab_size, c.rms_norm_eps, c.rope_theta) == (96, 1e-5, 5e5)
    assert (c.max_position_embeddings, c.tie_word_embeddings, c.mask_token_id) == (64, False, 95)
    assert set(model.params) == set(expected_shapes(config)) == set(c.tensor_shapes())
    assert not any(name.endswith(".bias") for name in model.params)
    assert load_model(FIXTURE).config == c  # the models' one entry point opens it too


def test_no_logit_shift_position_i_predicts_token_i(model, reference):
    tokens = reference["tokens"]
    raw = np.asarray(model.logits(tokens))
    assert model.logit_shift == 0
    np.testing.assert_array_equal(np.asarray(model.token_logits(tokens)), raw)
    # the sampler reads the same logits: a masked position's distribution is its own output
    sampler = MaskedDiffusionLM.create(model, length=12, steps=3)
    denoised, _ = sampler.denoise(sampler.quantizable_weights(), jnp.asarray(tokens), 0)
    np.testing.assert_allclose(np.asarray(denoised), raw, rtol=1e-6, atol=1e-6)


def test_layer_names_are_llada_tensor_names(model, reference):
    names = model.layer_names
    assert len(names) == 2 * 7 + 1
    assert names[:7] == tuple(
        f"model.transformer.blocks.0.{s}.weight"
        for s in ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
    )
    assert names[-1] == "model.transformer.ff_out.weight"
    weights = model.quantizable_weights()
    assert tuple(weights) == names and all(w is model.params[n] for n, w in weights.items())
    assert model.layer_input_widths[:7] == (32, 32, 32, 32, 32, 32, 48)
    tokens = reference["tokens"]
    # ff_proj is the gate (through SiLU), up_proj the linear branch: doubling up_proj doubles
    # the MLP's output exactly, as doubling ff_out (the down projection) does; the gate does not
    up, gate, down = (
        f"model.transformer.blocks.1.{s}.weight" for s in ("up_proj", "ff_proj", "ff_out")
    )
    via_up, via_gate, via_down = (
        np.asarray(model.forward({name: 2.0 * model.params[name]}, tokens)[0])
        for name in (up, gate, down)
    )
    np.testing.assert_allclose(via_up, via_down, rtol=1e-5, atol=1e-5)
    assert relative_error(via_gate, via_up) > 1e-3
    assert relative_error(via_up, np.asarray(model.logits(tokens))) > 1e-3
    with pytest.raises(ValueError, match="are not linear layers"):
        model.forward({"model.transformer.ln_f.weight": jnp.ones(32)}, tokens)


def test_tied_head_reuses_the_embedding(model, reference):
    config = json.loads((FIXTURE / "config.json").read_text())
    tied_config = DreamConfig.from_hf({**config, "weight_tying": True})
    params = {k: v for k, v in model.params.items() if k != LLADA_LAYOUT.head}
    tied = DreamLM.create(tied_config, params)
    untied = model.replace(params={**model.params, LLADA_LAYOUT.head: params[LLADA_LAYOUT.embed]})
    np.testing.assert_array_equal(
        tied.logits(reference["tokens"]), untied.logits(reference["tokens"])
    )
    assert tied.quantizable_weights()[LLADA_LAYOUT.head] is params[LLADA_LAYOUT.embed]
    # LLaDA's default, as its code has it: a config without the key ties the head
    untyped = {k: v for k, v in config.items() if k != "weight_tying"}
    assert LLADA_LAYOUT.head not in expected_shapes(untyped)


def test_include_qkv_bias_adds_query_key_value_biases(model, reference):
    config = json.loads((FIXTURE / "config.json").read_text())
    biased_config = DreamConfig.from_hf({**config, "include_qkv_bias": True})
    biases = {
        name: shape
        for name, shape in expected_shapes({**config, "include_qkv_bias": True}).items()
        if name.endswith(".bias")
    }
    assert biased_config.attention_bias and set(biases) == {
        f"model.transformer.blocks.{i}.{s}.bias" for i in range(2) for s in LLADA_LAYOUT.linears[:3]
    }
    zeros = {name: np.zeros(shape, np.float32) for name, shape in biases.items()}
    biased = DreamLM.create(biased_config, {**model.params, **zeros})
    tokens = reference["tokens"]
    np.testing.assert_array_equal(biased.logits(tokens), model.logits(tokens))
    value_bias = "model.transformer.blocks.0.v_proj.bias"
    shifted = DreamLM.create(
        biased_config, {**model.params, **zeros, value_bias: np.ones(biases[value_bias])}
    )
    assert relative_error(np.asarray(shifted.logits(tokens)), reference["logits"]) > 1e-3


# ------------------------------------------------------------------------- config, loading


def test_full_size_llada_config_parses():
    config = DreamConfig.from_hf(LLADA_8B_CONFIG)
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (
        4096,
        32,
        12288,
    )
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (
        32,
        32,
        128,
    )
    assert (config.vocab_size, config.rms_norm_eps, config.rope_theta) == (126464, 1e-5, 5e5)
    assert (config.mask_token_id, config.checked_mask_token_id()) == (126336, 126336)
    assert (config.max_position_embeddings, config.eos_token_id, config.pad_token_id) == (
        4096,
        126081,
        126081,
    )
    assert (config.tie_word_embeddings, config.attention_bias, config.logit_shift) == (
        False,
        False,
        0,
    )
    assert config.tensor_shapes() == expected_shapes(LLADA_8B_CONFIG)
    assert hash(config) == hash(DreamConfig.from_hf(dict(LLADA_8B_CONFIG)))
    assert config != DreamConfig.from_hf({**LLADA_8B_CONFIG, "include_qkv_bias": True})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("block_type", "sequential", "block_type must be 'llama'"),
        ("block_group_size", 2, "block_group_size must be 1"),
        ("attention_layer_norm", True, "attention_layer_norm must be false"),
        ("rope", False, "rope must be true"),
        ("activation_type", "gelu", "activation_type must be 'silu', got 'gelu'"),
        ("layer_norm_type", "default", "layer_norm_type must be 'rms', got 'default'"),
        ("scale_logits", True, "scale_logits must be False, got True"),
        ("input_emb_norm", True, "input_emb_norm must be False, got True"),
        ("include_bias", True, "include_bias must be False, got True"),
        ("alibi", True, "alibi must be False, got True"),
        ("n_heads", 5, "d_model=4096 is not a multiple of n_heads=5"),
        ("n_kv_heads", 5, "n_heads=32 is not a multiple of n_kv_heads=5"),
        ("embedding_size", 100, "embedding_size=100 is smaller than vocab_size=126464"),
        ("n_layers", 10**9, "n_layers must be at most 1000, got 1000000000"),
        ("d_model", None, "d_model must be a positive integer, got None"),
        ("weight_tying", "no", "tie_word_embeddings must be true or false, got 'no'"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else None,
)
def test_bad_config_values_name_the_key(key, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DreamConfig.from_hf({**LLADA_8B_CONFIG, key: value})


def test_architectures_alone_recognise_llada():
    config = {k: v for k, v in LLADA_8B_CONFIG.items() if k != "model_type"}
    assert DreamConfig.from_hf(config).layout == LLADA_LAYOUT


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"activation_type": "gelu"}, "config.json: activation_type must be 'silu'"),
        ({"n_layers": 10**9}, "config.json: n_layers must be at most 1000, got 1000000000"),
        (
            {"mlp_hidden_size": 256},
            "ff_out.weight: shape \\[36, 128\\] but config.json implies \\[36, 256\\]",
        ),
    ],
    ids=["activation", "layers", "shapes"],
)
def test_load_errors_are_one_line_checkpoint_errors(tmp_path, edit, message):
    folder = write_llada_like(tmp_path / "llada", scale=112, layers=1)
    config_file = folder / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **edit}))
    with pytest.raises(CheckpointError, match=message) as error:
        load_dream(folder)
    assert "\n" not in str(error.value)


def test_synthetic_llada_like_checkpoint_loads_and_runs(tmp_path):
    folder = write_llada_like(tmp_path / "llada", scale=64, layers=2, max_shard_bytes=200_000)
    assert (folder / "model.safetensors.index.json").is_file()  # sharded
    llada = load_dream(folder, dtype="bfloat16")
    c = llada.config
    assert (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (
        64,
        1,
        1,
        64,
    )
    assert json.loads((folder / "config.json").read_text()) == llada_like_config(scale=64, layers=2)
    assert llada.params[LLADA_LAYOUT.embed].dtype == jnp.bfloat16
    tokens = jnp.asarray(np.arange(16, dtype=np.int32).reshape(2, 8) * 37 % c.vocab_size)
    logits = jax.jit(lambda m, t: m.token_logits(t))(llada, tokens)
    assert logits.shape == (2, 8, c.vocab_size) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all() and float(jnp.std(logits)) > 0.1
