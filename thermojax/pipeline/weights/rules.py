"""Which tensors of a checkpoint are quantized, with which bits and group size.

A run's ``quantization rules`` are an ordered list of :class:`QuantRule`, as Qwix's module rules
are: for each tensor, the **first** rule whose ``include`` regex matches the tensor's full name
(``re.search``) and whose ``exclude`` regex does not decides its bit width and group size; a
tensor that no rule takes is kept at its stored precision. Only 2-D tensors (linear weights,
``[out_features, in_features]`` in Hugging Face's layout) are ever quantized, whatever the rule
says: biases, norms, every other 1-D (or higher-rank) tensor and empty tensors are kept. Groups run along the
last (input) axis, so a rule's group size must divide the input width of every tensor it takes.

The default rule quantizes every ``*.weight`` matrix except embeddings, norms and the output
head (``lm_head``; LLaDA's ``transformer.wte`` and ``transformer.ff_out``), the usual choice for
weight-only LLM quantization: the embedding is a lookup table whose rows each matter, and the
head decides every token's logit.

Example:
    >>> rules = [QuantRule(include=r"mlp\\.down_proj", bits=8), QuantRule()]
    >>> resolved = resolve_rules(
    ...     [("model.layers.0.mlp.down_proj.weight", (64, 256)),
    ...      ("model.layers.0.mlp.up_proj.weight", (256, 64)),
    ...      ("model.layers.0.mlp.up_proj.bias", (256,)),
    ...      ("model.embed_tokens.weight", (1000, 64))],
    ...     rules, bits=4, group_size=64)
    >>> [(r.index, r.bits) if r else None for r in resolved.values()]
    [(0, 8), (1, 4), None, None]
    >>> print(resolved["model.layers.0.mlp.up_proj.weight"].text)  # doctest: +NORMALIZE_WHITESPACE
    rule 1: include '\\.weight$', exclude 'embed|norm|lm_head|wte|transformer\\.ff_out',
    4 bits, group 64
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Optional

import numpy as np

from thermojax.core.quant import WEIGHT_BITS
from thermojax.errors import UserInputError

__all__ = [
    "DEFAULT_EXCLUDE",
    "DEFAULT_INCLUDE",
    "DEFAULT_RULES",
    "QuantRule",
    "ResolvedRule",
    "resolve_rules",
    "validate_rules",
]

DEFAULT_INCLUDE = r"\.weight$"
"""Every ``*.weight`` tensor (only the 2-D ones are quantized)."""
DEFAULT_EXCLUDE = r"embed|norm|lm_head|wte|transformer\.ff_out"
"""Embeddings, norms and the output head stay at their stored precision (Qwen2's / Dream's
``embed_tokens`` and ``lm_head``, LLaDA's ``transformer.wte`` and ``transformer.ff_out``; a
block's ``ff_out``, ``transformer.blocks.{i}.ff_out``, is its MLP's down projection)."""


# The fields are plain str / int / None (typing.Optional, not `X | None`) because OmegaConf
# builds this dataclass from YAML and supports nothing richer.
@dataclasses.dataclass(frozen=True)
class QuantRule:
    """One quantization rule: which tensors (by name) it takes, and how it quantizes them.

    Attributes:
        include: regex searched (``re.search``) in the full tensor name; the rule applies to a
            2-D tensor whose name it matches.
        exclude: regex; a tensor whose name it matches is not taken by this rule (a later rule
            may take it). ``None``: exclude nothing.
        bits: weight bit width (2, 4 or 8); ``None``: the run's ``bit_width``.
        group_size: elements per quantization group along the input axis; ``None``: the run's
            ``group_size``.
    """

    include: str = DEFAULT_INCLUDE
    exclude: Optional[str] = DEFAULT_EXCLUDE  # noqa: UP045 (OmegaConf needs typing.Optional)
    bits: Optional[int] = None  # noqa: UP045
    group_size: Optional[int] = None  # noqa: UP045


DEFAULT_RULES: tuple[QuantRule, ...] = (QuantRule(),)
"""The rules of a run that names none: the default :class:`QuantRule`."""


@dataclasses.dataclass(frozen=True)
class ResolvedRule:
    """The rule that took a tensor, with the run's defaults filled in.

    Attributes:
        index: the rule's position in the list (0-based).
        bits: the bit width the tensor is quantized with.
        group_size: its group size.
        text: the rule for people, e.g.
            ``"rule 0: include '\\.weight$', exclude 'embed|norm|lm_head|wte|transformer\\.ff_out',
            4 bits, group 64"``.
    """

    index: int
    bits: int
    group_size: int
    text: str


def _is_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer)


def _describe(index: int, rule: QuantRule, bits: object, group_size: object) -> str:
    exclude = "no exclude" if rule.exclude is None else f"exclude '{rule.exclude}'"
    return f"rule {index}: include '{rule.include}', {exclude}, {bits} bits, group {group_size}"


def _check_bits(where: str, bits: object) -> None:
    if not _is_int(bits) or bits not in WEIGHT_BITS:
        raise UserInputError(f"{where}: bits must be one of {WEIGHT_BITS}, got {bits!r}")


def _check_group_size(where: str, group_size: object, bits: object) -> None:
    if not _is_int(group_size) or group_size < 1:
        raise UserInputError(f"{where}: group_size must be a positive integer, got {group_size!r}")
    if _is_int(bits) and bits in WEIGHT_BITS:
        per_byte = 8 // int(bits)
        if group_size % per_byte:
            raise UserInputError(
                f"{where}: group_size {group_size} is not a multiple of {per_byte} (codes per "
                f"byte at {bits} bits)"
            )


def _compile(where: str, field: str, pattern: object) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise UserInputError(f"{where}: {field} must be a regex string, got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as err:
        raise UserInputError(f"{where}: invalid {field} regex {pattern!r} ({err})") from None


def validate_rules(
    rules: Sequence[QuantRule], *, bits: int | None = None, group_size: int | None = None
) -> None:
    """The checks that need no tensors: regexes compile, bit widths and group sizes are valid.

    A rule's own ``bits`` / ``group_size`` are always checked; with the run's ``bits`` and
    ``group_size`` given, so are the values each rule ends up with (a run-wide group size that
    does not hold whole bytes of a rule's codes, say).

    Args:
        rules: the rules, in order.
        bits: the run's ``bit_width`` (the default of rules with ``bits=None``), or ``None``.
        group_size: the run's ``group_size``, or ``None``.

    Raises:
        UserInputError: one line naming the rule and the problem.

    Example:
        >>> validate_rules([QuantRule(include="(")])
        Traceback (most recent call last):
        ...
        thermojax.errors.UserInputError: rule 0: invalid include regex '(' (missing ), unterminated subpattern at position 0)
    """
    if isinstance(rules, QuantRule | str) or not isinstance(rules, Sequence):
        raise UserInputError(f"quantization rules must be a list of rules, got {rules!r}")
    if bits is not None:
        _check_bits("bit_width", bits)
    if group_size is not None:
        _check_group_size("group_size", group_size, None)
    for index, rule in enumerate(rules):
        where = f"rule {index}"
        if not isinstance(rule, QuantRule):
            raise UserInputError(f"{where}: not a QuantRule, got {rule!r}")
        _compile(where, "include", rule.include)
        if rule.exclude is not None:
            _compile(where, "exclude", rule.exclude)
        if rule.bits is not None:
            _check_bits(where, rule.bits)
        if rule.group_size is not None:
            _check_group_size(where, rule.group_size, rule.bits)
        rule_bits = bits if rule.bits is None else rule.bits
        rule_group = group_size if rule.group_size is None else rule.group_size
        if rule_bits is not None and rule_group is not None:
            _check_group_size(_describe(index, rule, rule_bits, rule_group), rule_group, rule_bits)


def resolve_rules(
    infos: Iterable[tuple[str, Sequence[int]]],
    rules: Sequence[QuantRule],
    *,
    bits: int,
    group_size: int,
) -> dict[str, ResolvedRule | None]:
    """The rule that takes each tensor (the first that matches), or ``None`` for a kept tensor.

    Args:
        infos: ``(name, shape)`` of every tensor, in checkpoint order.
        rules: the rules, in order; an empty list keeps every tensor.
        bits: the run's ``bit_width``, for rules with ``bits=None``.
        group_size: the run's ``group_size``, for rules with ``group_size=None``.

    Returns:
        ``name -> ResolvedRule`` for the tensors to quantize, ``name -> None`` for the others,
        in the order of ``infos``.

    Raises:
        UserInputError: a rule is invalid (:func:`validate_rules`), or a rule takes a tensor
            whose input width (last axis) its group size does not divide; one line naming the
            rule and the tensor.
    """
    validate_rules(rules, bits=bits, group_size=group_size)
    compiled = [
        (
            _compile("", "include", rule.include),
            None if rule.exclude is None else _compile("", "exclude", rule.exclude),
            int(bits if rule.bits is None else rule.bits),
            int(group_size if rule.group_size is None else rule.group_size),
        )
        for rule in rules
    ]
    texts = [
        _describe(index, rule, rule_bits, rule_group)
        for index, (rule, (_, _, rule_bits, rule_group)) in enumerate(
            zip(rules, compiled, strict=True)
        )
    ]
    resolved: dict[str, ResolvedRule | None] = {}
    for name, shape in infos:
        shape = tuple(int(d) for d in shape)
        resolved[name] = None
        if len(shape) != 2 or 0 in shape:
            continue
        for index, (include, exclude, rule_bits, rule_group) in enumerate(compiled):
            if not include.search(name) or (exclude is not None and exclude.search(name)):
                continue
            width = shape[-1]
            if width % rule_group:
                raise UserInputError(
                    f"{texts[index]}: group_size {rule_group} does not divide the input width "
                    f"{width} of {name} (shape {list(shape)})"
                )
            resolved[name] = ResolvedRule(index, rule_bits, rule_group, texts[index])
            break
    return resolved
