"""Quantization rules: the first matching rule wins, the defaults keep what should stay full
precision, and every bad rule is one UserInputError line naming the rule (and the tensor)."""

from __future__ import annotations

import pytest

from thermojax.errors import UserInputError
from thermojax.models.hf import expected_shapes
from thermojax.models.hf.synthetic import dream_like_config
from thermojax.pipeline.weights.rules import (
    DEFAULT_RULES,
    QuantRule,
    ResolvedRule,
    resolve_rules,
    validate_rules,
)

SHAPES = expected_shapes(dream_like_config(scale=64, layers=2))  # hidden 56, MLP 320


def resolve(rules, shapes=SHAPES, *, bits=4, group_size=8):
    return resolve_rules(shapes.items(), rules, bits=bits, group_size=group_size)


def test_defaults_quantize_linear_weights_and_keep_embeddings_norms_head_and_biases():
    resolved = resolve(DEFAULT_RULES)
    quantized = {name for name, rule in resolved.items() if rule is not None}
    kept = set(resolved) - quantized
    assert list(resolved) == list(SHAPES)  # every tensor, in order
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert quantized == {
        f"model.layers.{layer}.{part}.{proj}.weight"
        for layer in range(2)
        for part, proj in [("self_attn", p) for p in projections[:4]]
        + [("mlp", p) for p in projections[4:]]
    }
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} <= kept
    assert "model.layers.0.self_attn.q_proj.bias" in kept
    assert "model.layers.1.input_layernorm.weight" in kept
    assert all(rule == ResolvedRule(0, 4, 8, rule.text) for rule in resolved.values() if rule)


def test_the_first_matching_rule_wins_with_its_own_precision():
    rules = [
        QuantRule(include=r"mlp\.down_proj", bits=8, group_size=64),
        QuantRule(include=r"self_attn\.[qk]_proj", bits=2),
        QuantRule(include=r"mlp", group_size=56),
        QuantRule(),  # would take everything above too, but comes last
    ]
    resolved = resolve(rules)
    got = {name: (r.index, r.bits, r.group_size) for name, r in resolved.items() if r}
    layer = "model.layers.1"
    assert got[f"{layer}.mlp.down_proj.weight"] == (0, 8, 64)
    assert got[f"{layer}.self_attn.q_proj.weight"] == (1, 2, 8)
    assert got[f"{layer}.self_attn.k_proj.weight"] == (1, 2, 8)
    assert got[f"{layer}.mlp.up_proj.weight"] == (2, 4, 56)
    assert got[f"{layer}.self_attn.v_proj.weight"] == (3, 4, 8)
    assert resolved[f"{layer}.mlp.up_proj.weight"].text == (
        "rule 2: include 'mlp', exclude 'embed|norm|lm_head|wte|transformer\\.ff_out', 4 bits, "
        "group 56"
    )


def test_an_excluded_tensor_falls_through_to_a_later_rule():
    rules = [QuantRule(include="mlp", exclude="up_proj", bits=2), QuantRule(include="up_proj")]
    resolved = resolve(rules)
    assert resolved["model.layers.0.mlp.gate_proj.weight"].index == 0
    assert resolved["model.layers.0.mlp.up_proj.weight"].index == 1
    assert resolved["model.layers.0.self_attn.o_proj.weight"] is None  # no rule takes it


def test_only_two_dimensional_non_empty_tensors_are_ever_quantized():
    shapes = {"a.bias": (64,), "b.weight": (4, 64), "c.weight": (2, 4, 64), "d.weight": (0, 64)}
    resolved = resolve([QuantRule(include=".", exclude=None)], shapes)
    assert [name for name, rule in resolved.items() if rule] == ["b.weight"]


def test_no_rules_keep_everything():
    assert all(rule is None for rule in resolve([]).values())


def test_rule_text_without_exclude():
    (rule,) = resolve([QuantRule(include="w", exclude=None, bits=8)], {"w": (2, 8)}).values()
    assert rule.text == "rule 0: include 'w', no exclude, 8 bits, group 8"


BAD_RULES = {
    "include regex": ([QuantRule(include="(")], "rule 0: invalid include regex '('"),
    "exclude regex": ([QuantRule(), QuantRule(exclude="[")], "rule 1: invalid exclude regex '['"),
    "bits 3": ([QuantRule(bits=3)], "rule 0: bits must be one of (2, 4, 8), got 3"),
    "bits True": ([QuantRule(bits=True)], "rule 0: bits must be one of (2, 4, 8), got True"),
    "group 0": ([QuantRule(group_size=0)], "rule 0: group_size must be a positive integer"),
    "group -8": ([QuantRule(group_size=-8)], "rule 0: group_size must be a positive integer"),
    "group 2.0": ([QuantRule(group_size=2.0)], "rule 0: group_size must be a positive integer"),
    "codes per byte": (
        [QuantRule(bits=2, group_size=6)],
        "rule 0: group_size 6 is not a multiple of 4 (codes per byte at 2 bits)",
    ),
    "not a rule": ([{"include": "mlp"}], "rule 0: not a QuantRule"),
    "not a list": (QuantRule(), "quantization rules must be a list of rules"),
}


@pytest.mark.parametrize(
    ("rules", "message"),
    list(BAD_RULES.values()),
    ids=list(BAD_RULES),
)
def test_a_bad_rule_is_one_line_naming_it(rules, message):
    for check in (lambda: validate_rules(rules), lambda: resolve(rules)):
        with pytest.raises(UserInputError) as err:
            check()
        assert str(err.value).startswith(message), str(err.value)
        assert "\n" not in str(err.value)


def test_group_sizes_are_checked_against_each_rules_bits():
    rules = [QuantRule(include="mlp", bits=8), QuantRule(bits=2)]
    with pytest.raises(
        UserInputError, match=r"^rule 1: include .*2 bits, group 6: group_size 6 is"
    ):
        validate_rules(rules, bits=4, group_size=6)
    validate_rules(rules[:1], bits=4, group_size=6)  # 8 bits: one code per byte, any group


@pytest.mark.parametrize(("bits", "group_size"), [(3, 8), (4, 0), (4, True)])
def test_bad_run_options(bits, group_size):
    with pytest.raises(UserInputError, match=r"^(bit_width|group_size): "):
        resolve(DEFAULT_RULES, bits=bits, group_size=group_size)


def test_a_group_size_that_does_not_divide_an_input_width_names_rule_and_tensor():
    rules = [QuantRule(include="self_attn"), QuantRule(include="mlp", group_size=64)]
    with pytest.raises(UserInputError) as err:
        resolve(rules)  # the MLP's up/gate inputs are 56 wide
    message = str(err.value)
    assert message == (
        "rule 1: include 'mlp', exclude 'embed|norm|lm_head|wte|transformer\\.ff_out', 4 bits, "
        "group 64: group_size 64 does not divide the input width 56 of "
        "model.layers.0.mlp.gate_proj.weight (shape [320, 56])"
    )


def test_omegaconf_builds_rules_from_yaml():
    omegaconf = pytest.importorskip("omegaconf")
    schema = omegaconf.OmegaConf.structured(QuantRule)
    yaml = omegaconf.OmegaConf.create({"include": r"mlp\.", "bits": 8, "exclude": None})
    rule = omegaconf.OmegaConf.to_object(omegaconf.OmegaConf.merge(schema, yaml))
    assert rule == QuantRule(include=r"mlp\.", exclude=None, bits=8)
