"""The Dream network: parity with transformers, bidirectionality, Dream's conventions, loading.

The reference is ``tests/fixtures/qwen2_tiny/`` (``tools/make_qwen2_fixture.py``): a random
bf16 Qwen2 checkpoint and the float32 logits transformers' ``Qwen2ForCausalLM`` computes from
it with a full (non-causal) attention mask. Torch is not needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermojax.models.dream import (
    LOGIT_SHIFT,
    DreamConfig,
    DreamLM,
    linear_layer_names,
    load_dream,
    shift_logits,
)
from thermojax.models.hf import CheckpointError, expected_shapes, write_dream_like
from thermojax.models.hf.synthetic import dream_like_config

FIXTURE = Path(__file__).parents[1] / "fixtures" / "qwen2_tiny"
# Parity: max |ours - transformers| / max |transformers| (both float32; about 4e-7 measured).
RELATIVE_TOLERANCE = 1e-4


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
    assert ours.dtype == np.float32 and ours.shape == reference["logits"].shape == (2, 16, 320)
    assert relative_error(ours, reference["logits"]) <= RELATIVE_TOLERANCE
    # Per element too; atol 1e-5 (2.4e-6 of max |logit| = 4.1) covers logits near zero.
    np.testing.assert_allclose(ours, reference["logits"], rtol=1e-4, atol=1e-5)


def test_padding_key_mask_matches_transformers(model, reference):
    key_mask = reference["key_mask"]
    ours = np.asarray(model.logits(reference["tokens"], attention_mask=key_mask))
    real = key_mask  # padding positions' outputs are not used by anyone
    assert relative_error(ours[real], reference["logits_padded"][real]) <= RELATIVE_TOLERANCE
    # the padded keys matter: row 1 differs from the unmasked logits
    assert relative_error(ours[1][real[1]], reference["logits"][1][real[1]]) > 1e-3


def test_bf16_storage_computes_the_same_float32_numbers(model, reference):
    stored = load_dream(FIXTURE, dtype="bfloat16")
    assert stored.params["model.layers.0.mlp.up_proj.weight"].dtype == jnp.bfloat16
    assert model.params["model.layers.0.mlp.up_proj.weight"].dtype == jnp.float32
    np.testing.assert_allclose(
        stored.logits(reference["tokens"]), model.logits(reference["tokens"]), rtol=0, atol=1e-6
    )


# ------------------------------------------------------------------------- bidirectional


@pytest.mark.parametrize("changed", [15, 8], ids=["last-token", "middle-token"])
def test_every_position_sees_every_token(model, reference, logits_fn, changed):
    tokens = reference["tokens"].copy()
    before = np.asarray(logits_fn(model, tokens))
    tokens[:, changed] = (tokens[:, changed] + 1) % 300
    after = np.asarray(logits_fn(model, tokens))
    moved = np.abs(after - before).max(axis=-1)  # [B, L]
    assert (moved > 1e-4).all(), f"positions not reached by token {changed}: {moved.min()}"


def test_positions_are_zero_based_by_default_and_relative(model, reference):
    tokens = reference["tokens"]
    plain = np.asarray(model.logits(tokens))
    arange = np.broadcast_to(np.arange(16, dtype=np.int32), (2, 16))
    np.testing.assert_array_equal(model.logits(tokens, positions=arange), plain)
    # RoPE sees only position differences: shifting every position changes nothing ...
    np.testing.assert_allclose(model.logits(tokens, positions=arange + 7), plain, atol=1e-5)
    # ... but a gap (Dream's left-padded rows) does.
    gapped = np.where(arange < 8, arange, arange + 5).astype(np.int32)
    assert relative_error(np.asarray(model.logits(tokens, positions=gapped)), plain) > 1e-3


# ------------------------------------------------------------------------- Dream conventions


def test_mask_token_and_logit_shift_convention(model, reference):
    tokens = reference["tokens"]
    assert model.mask_token_id == model.config.checked_mask_token_id() == 319
    assert (tokens == model.mask_token_id).any()  # the reference embeds [MASK] too
    assert model.logit_shift == LOGIT_SHIFT == 1
    raw = np.asarray(model.logits(tokens))
    shifted = np.asarray(model.token_logits(tokens))
    np.testing.assert_array_equal(shifted[:, 1:], raw[:, :-1])  # token i read from output i-1
    np.testing.assert_array_equal(shifted[:, 0], raw[:, 0])
    np.testing.assert_array_equal(shift_logits(jnp.asarray(raw)), shifted)


def test_shift_logits_moves_one_place_right():
    logits = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
    expected = np.stack([logits[:, 0], logits[:, 0], logits[:, 1]], axis=1)
    np.testing.assert_array_equal(shift_logits(logits), expected)
    with pytest.raises(ValueError, match="logits must be"):
        shift_logits(logits[0])


def test_mask_token_outside_the_vocabulary_is_reported():
    scaled = dream_like_config(scale=112, layers=1)
    assert (scaled["mask_token_id"], scaled["vocab_size"]) == (946, 1344)  # kept in the vocab
    config = DreamConfig.from_hf({**scaled, "mask_token_id": 151666})
    with pytest.raises(ValueError, match="mask_token_id=151666 is not below vocab_size=1344"):
        config.checked_mask_token_id()
    plain = DreamConfig.from_hf({**dream_like_config(scale=112), "mask_token_id": None})
    with pytest.raises(ValueError, match="mask_token_id is not set"):
        plain.checked_mask_token_id()


# ------------------------------------------------------------------------- jit and pytree


def test_jit_takes_the_model_as_an_argument(model, reference, logits_fn):
    tokens = reference["tokens"]
    jitted = np.asarray(logits_fn(model, tokens))
    # the same numbers as eager, up to float32 rounding of a differently fused program
    np.testing.assert_allclose(jitted, model.logits(tokens), rtol=1e-5, atol=1e-5)
    # Other parameters through the same compiled program: nothing was baked in as a constant
    # (doubling lm_head doubles the logits exactly: a power of two).
    scaled = model.replace(
        params={**model.params, "lm_head.weight": 2.0 * model.params["lm_head.weight"]}
    )
    np.testing.assert_array_equal(logits_fn(scaled, tokens), 2.0 * jitted)
    assert jax.tree.structure(scaled) == jax.tree.structure(model)
    assert sum(leaf.size for leaf in jax.tree.leaves(model)) == model.num_parameters()
    assert set(model.params) == set(
        expected_shapes(json.loads((FIXTURE / "config.json").read_text()))
    )


def test_forward_hook_sees_every_linear_input_in_order(model, reference):
    tokens = reference["tokens"]
    seen = []

    def hook(index, x):
        assert isinstance(index, int)  # static: a quantizer can pick per-layer settings
        seen.append(index)
        return 2.0 * x if model.layer_names[index] == "lm_head.weight" else x

    logits, inputs = jax.jit(lambda m, t: m.forward(None, t, act_hook=hook))(model, tokens)
    names = model.layer_names
    assert names == linear_layer_names(2) and len(names) == 2 * 7 + 1
    assert seen == list(range(len(names)))
    assert [x.shape for x in inputs] == [(2, 16, w) for w in model.layer_input_widths]
    assert model.layer_input_widths[:7] == (64, 64, 64, 64, 64, 64, 128)
    np.testing.assert_array_equal(inputs[0], inputs[1])  # q, k, v read the same input
    # lm_head has no bias: doubling its input doubles the logits
    plain = np.asarray(model.logits(tokens))
    np.testing.assert_allclose(logits, 2.0 * plain, rtol=1e-5, atol=1e-5)
    head_input = np.asarray(inputs[-1], np.float64)
    head = np.asarray(model.params["lm_head.weight"], np.float64)
    np.testing.assert_allclose(head_input @ head.T, plain, rtol=1e-4, atol=1e-5)


def test_forward_with_replaced_weights(model, reference):
    tokens = reference["tokens"]
    weights = model.quantizable_weights()
    assert tuple(weights) == model.layer_names
    shapes = model.config.tensor_shapes()
    assert all(weights[name].shape == shapes[name] for name in model.layer_names)
    same, _ = model.forward(weights, tokens)
    np.testing.assert_array_equal(same, model.logits(tokens))
    zero_down = {"model.layers.1.mlp.down_proj.weight": jnp.zeros((64, 128))}
    changed, _ = model.forward(zero_down, tokens)
    assert np.abs(np.asarray(changed) - np.asarray(same)).max() > 1e-3
    with pytest.raises(ValueError, match="are not linear layers"):
        model.forward({"model.norm.weight": jnp.ones(64)}, tokens)


def test_tied_embeddings_reuse_the_embedding_as_output_projection(model, reference):
    tied_config = DreamConfig.from_hf(
        {**json.loads((FIXTURE / "config.json").read_text()), "tie_word_embeddings": True}
    )
    params = {k: v for k, v in model.params.items() if k != "lm_head.weight"}
    tied = DreamLM.create(tied_config, params)
    untied = model.replace(
        params={**model.params, "lm_head.weight": params["model.embed_tokens.weight"]}
    )
    tokens = reference["tokens"]
    np.testing.assert_array_equal(tied.logits(tokens), untied.logits(tokens))
    assert tied.quantizable_weights()["lm_head.weight"] is params["model.embed_tokens.weight"]
    with pytest.raises(ValueError, match="unexpected"):
        DreamLM.create(tied_config, model.params)


def test_bad_inputs_are_refused_or_loud(model, reference):
    tokens = reference["tokens"]
    with pytest.raises(ValueError, match="tokens must be integer"):
        model.logits(tokens.astype(np.float32))
    with pytest.raises(ValueError, match="attention_mask must be"):
        model.logits(tokens, attention_mask=np.ones((2, 15), bool))
    with pytest.raises(ValueError, match="positions must be"):
        model.logits(tokens, positions=np.zeros((2, 15), np.int32))
    with pytest.raises(ValueError, match="matmul_precision"):
        model.replace(matmul_precision="fastest").logits(tokens)
    outside = tokens.copy()
    outside[0, 3] = 320
    logits = np.asarray(model.logits(outside))
    assert np.isnan(logits[0]).all() and np.isfinite(logits[1]).all()


# ------------------------------------------------------------------------- loading, config


def test_synthetic_dream_like_checkpoint_loads_and_runs(tmp_path):
    folder = write_dream_like(tmp_path / "dream", scale=112, layers=2, max_shard_bytes=100_000)
    assert (folder / "model.safetensors.index.json").is_file()  # sharded
    dream = load_dream(folder)
    c = dream.config
    assert (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (
        28,
        7,
        1,
        4,
    )
    assert dream.params["model.embed_tokens.weight"].dtype == jnp.float32
    tokens = jnp.asarray(np.arange(16, dtype=np.int32).reshape(2, 8) * 37 % c.vocab_size)
    logits = jax.jit(lambda m, t: m.token_logits(t))(dream, tokens)
    assert logits.shape == (2, 8, 1344) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all() and float(jnp.std(logits)) > 0.1


def test_full_size_dream_config_parses():
    config = DreamConfig.from_hf(dream_like_config())
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (
        3584,
        28,
        18944,
    )
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (28, 4, 128)
    assert (config.vocab_size, config.rms_norm_eps, config.rope_theta) == (152064, 1e-6, 1e6)
    assert (config.mask_token_id, config.checked_mask_token_id()) == (151666, 151666)
    assert (config.pad_token_id, config.eos_token_id, config.tie_word_embeddings) == (
        151643,
        151643,
        False,
    )
    assert config.kv_group_size == 7
    assert config.tensor_shapes() == expected_shapes(dream_like_config())
    assert len(linear_layer_names(config.num_hidden_layers)) == 28 * 7 + 1
    assert hash(config) == hash(DreamConfig.from_hf(dream_like_config()))


def test_rope_theta_is_read_from_either_spelling():
    base = dream_like_config(scale=112)
    assert DreamConfig.from_hf(base).rope_theta == 1e6
    moved = {k: v for k, v in base.items() if k != "rope_theta"}
    moved["rope_parameters"] = {"rope_theta": 5e5, "rope_type": "default"}
    assert DreamConfig.from_hf(moved).rope_theta == 5e5
    eos_list = DreamConfig.from_hf({**base, "eos_token_id": [151643, 151645]})
    assert eos_list.eos_token_id == (151643, 151645)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("hidden_size", 0, "hidden_size must be a positive integer, got 0"),
        ("hidden_size", None, "hidden_size must be a positive integer, got None"),
        ("num_hidden_layers", 2.0, "num_hidden_layers must be a positive integer, got 2.0"),
        (
            "num_key_value_heads",
            3,
            "num_attention_heads=7 is not a multiple of num_key_value_heads=3",
        ),
        ("vocab_size", "1344", "vocab_size must be a positive integer, got '1344'"),
        ("rms_norm_eps", -1e-6, "rms_norm_eps must be a positive number, got -1e-06"),
        ("rope_theta", 0, "rope_theta must be a positive number, got 0"),
        ("mask_token_id", -1, "mask_token_id must be a non-negative integer or null, got -1"),
        ("tie_word_embeddings", "no", "tie_word_embeddings must be true or false, got 'no'"),
        ("hidden_act", "gelu", "hidden_act must be 'silu', got 'gelu'"),
        ("use_sliding_window", True, "use_sliding_window is not supported, got True"),
        ("rope_scaling", {"type": "linear", "factor": 2.0}, "rope_scaling is not supported"),
        ("head_dim", 3, "head_dim must be even"),
        ("model_type", "llama", "model_type 'llama'"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else None,
)
def test_bad_config_values_name_the_key(key, value, message):
    config = {**dream_like_config(scale=112), key: value}
    if key == "model_type":
        del config["architectures"]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DreamConfig.from_hf(config)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"hidden_act": "gelu"}, "config.json: hidden_act must be 'silu'"),
        (
            {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
            "config.json: model_type 'llama'",
        ),
        ({"num_key_value_heads": 7}, "k_proj.weight: shape \\[4, 28\\] but config.json implies"),
    ],
    ids=["activation", "architecture", "shapes"],
)
def test_load_errors_are_one_line_checkpoint_errors(tmp_path, edit, message):
    folder = write_dream_like(tmp_path / "dream", scale=112, layers=1)
    config_file = folder / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **edit}))
    with pytest.raises(CheckpointError, match=message) as error:
        load_dream(folder)
    assert "\n" not in str(error.value)


def test_load_refuses_an_unknown_dtype():
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_dream(FIXTURE, dtype="int8")
