"""Masked-diffusion language-model sampling (Dream, MDLM, LLaDA) as one ``lax.scan``.

A masked-diffusion LM generates ``L`` tokens from all ``[MASK]`` in ``T`` steps. At step ``k``
the network predicts every position from the current tokens, a candidate token is drawn for each
masked position, the masked positions are scored by an unmasking rule, and the
``reveal_schedule(...)[k]`` best-scoring ones take their candidate; revealed positions never
change again (no remasking).

The network is any ``logits_fn(tokens [N, L] int32, step) -> logits [N, L, V]`` with
``logits[:, i]`` predicting token ``i`` (Dream's one-place shift is the caller's business), and
``step`` the traced int32 step index ``k`` in ``0..T-1``: ``k = 0`` is the first, all-masked
step (the DDPM timestep of ``run_sampler`` counts the other way, from ``T - 1`` down), and
``trajectory[k]`` holds the tokens after step ``k``. A quantization hook goes in by closure. With ``has_aux=True`` it returns
``(logits, aux)`` instead, and ``observe(step, aux, key)`` sees that ``aux`` at every step, its
outputs stacked over steps like :func:`~thermojax.models.base.run_sampler`'s: a network that
returns its quantizable layers' inputs as ``aux`` gives per-step activation statistics.

Unmasking rules (``UNMASKING_RULES``), as in Dream's ``generation_utils.py`` (``_sample`` and
``sample_tokens`` of ``Dream-org/Dream-v0-Instruct-7B``, read in copies on GitHub; the score is
computed from the distribution the candidate is drawn from, i.e. after temperature and top-p):

- ``"random"``: Dream's ``alg="origin"``, the MDLM / D3PM reverse process, where each masked
  position is revealed independently with probability ``1 - s / t``. Deviation: here exactly
  ``reveal_schedule[k]`` masked positions are revealed, a uniformly random subset, so every rule
  reveals the same number of tokens per step (fp32 and quantized runs, or two rules, compare
  step by step) instead of a Binomial count.
- ``"confidence"``: Dream's ``alg="maskgit_plus"`` (MaskGIT, Chang et al. 2022): the probability
  of the drawn candidate; the most confident positions are revealed first.
- ``"margin"``: Dream's ``alg="topk_margin"`` (Kim et al. 2025, "Train for the Worst, Plan for the
  Best"): top-1 minus top-2 probability; the largest margin first.
- ``"entropy"``: Dream's ``alg="entropy"``: the negative entropy ``sum_v p_v log p_v``; the
  lowest-entropy positions first.
- ``"low-confidence"``: LLaDA's ``remasking="low_confidence"`` (``generate.py`` of
  ``ML-GSAI/LLaDA``, read on GitHub): the candidate is the Gumbel-max draw at ``temperature``
  (LLaDA's ``argmax(exp(logits) / (-log u) ** temperature)``, the argmax at 0) and its score
  is its probability under the *untempered* softmax of the logits, where ``"confidence"`` scores
  it under the tempered distribution it was drawn from. LLaDA draws its Gumbel noise in float64
  (low-precision Gumbel-max lowers generation quality, arXiv:2409.02908); here it is JAX's
  high-dynamic-range float32 noise (``mode="high"``: events down to about 1e-14 rather than
  1e-7 are drawn unbiased). ``top_p``, which LLaDA lacks, filters the draw as for the other
  rules (``None`` or 1 for LLaDA's sampler). LLaDA's ``remasking="random"`` is the ``"random"``
  rule.

Semi-autoregressive blocks (LLaDA's ``block_length``, :func:`reveal_plan`): the ``G = L - P``
generated positions are cut into ``G / block_length`` blocks, revealed left to right, and the
``T`` steps are shared evenly among them (both divisions must be exact, as LLaDA asserts).
During a block's steps only its masked positions are eligible (LLaDA gives the positions after
the block confidence -inf; the blocks before it are fully revealed by then), and its
``block_length`` positions are spread over its steps as LLaDA's ``get_num_transfer_tokens``
does: ``block_length // steps`` each, one more on the first ``block_length % steps`` steps.
``block_length=None`` is Dream's schedule over the whole sequence; ``block_length = G`` is one
block with LLaDA's even schedule.

``unmasking_temperature`` is Dream's ``alg_temp``: above 0 the positions are drawn without
replacement with probabilities ``softmax(score / unmasking_temperature)`` over the masked ones
(Gumbel-top-k, which has the distribution of Dream's ``torch.multinomial`` without replacement);
0 takes the top scores. The random rule ignores it, as Dream's ``"origin"`` does. Among equal
scores the lower position wins (``torch.topk`` leaves that order unspecified). Unlike Dream, the
``[MASK]`` logit is removed before drawing, so ``[MASK]`` is never emitted.

Example:
    >>> import jax, jax.numpy as jnp
    >>> reveal_schedule(10, 4).tolist()
    [2, 2, 2, 4]
    >>> prefer_3 = lambda tokens, step: jnp.zeros((*tokens.shape, 6)).at[..., 3].set(5.0)
    >>> out = sample(prefer_3, key=jax.random.key(0), num_samples=2, length=5, num_steps=3,
    ...              mask_token_id=5, vocab_size=6, unmasking="confidence", prompt=jnp.array([1]))
    >>> out.tokens.tolist(), out.reveal_step[0].tolist()
    ([[1, 3, 3, 3, 3], [1, 3, 3, 3, 3]], [-1, 0, 1, 2, 2])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from thermojax.core.text_metrics import top_positions
from thermojax.models.nucleus import nucleus_filter

__all__ = [
    "DEFAULT_EPS",
    "UNMASKING_RULES",
    "MaskedDiffusionSamples",
    "UnmaskingOptions",
    "reveal_plan",
    "reveal_schedule",
    "sample",
    "unmask_step",
]

Array = jax.Array

UNMASKING_RULES = ("random", "confidence", "margin", "entropy", "low-confidence")
"""The unmasking rules of :func:`sample` (module docstring: which published rule each is)."""
DEFAULT_EPS = 1e-3
"""Dream's default ``eps``: the last of the ``T + 1`` linearly spaced times ``1 .. eps``."""

MaskedLogitsFn = Callable[[Array, Array], Any]
"""``logits_fn(tokens [N, L] int32, step int32) -> logits [N, L, V]`` (or ``(logits, aux)``)."""
StepObserver = Callable[[Array, Any, Array], Any]
"""``observe(step, aux, key) -> pytree`` evaluated inside the sampler scan at each step."""


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["tokens", "trajectory", "reveal_step", "observed"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class MaskedDiffusionSamples:
    """The output of :func:`sample`.

    Invariant: for a generated position ``(n, i)``, ``trajectory[k, n, i]`` is ``[MASK]`` for
    ``k < reveal_step[n, i]`` and ``tokens[n, i]`` from then on; prompt positions hold the prompt
    throughout and have ``reveal_step == -1``. ``trajectory[-1] == tokens``.

    Attributes:
        tokens: int32 ``[N, L]``, the final samples (no ``[MASK]`` left).
        trajectory: int32 ``[T, N, L]``, the tokens after each step, in step order.
        reveal_step: int32 ``[N, L]``, the step in ``0..T-1`` that revealed each generated
            position, -1 for the prompt.
        observed: the stacked ``observe`` outputs, a pytree of ``[T, ...]``, or ``None``.
    """

    tokens: Array
    trajectory: Array
    reveal_step: Array
    observed: Any = None


def _check_int(name: str, value: object, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")
    return int(value)


def _check_number(
    name: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """``value`` as a float in the interval from ``low`` to ``high``, else ``ValueError``."""
    ok = not isinstance(value, bool) and isinstance(value, int | float | np.integer | np.floating)
    if ok:
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        ok = math.isfinite(value) and above and below
    if not ok:
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {name}={value!r}")
    return float(value)


def reveal_schedule(num_positions: int, num_steps: int, *, eps: float = DEFAULT_EPS) -> np.ndarray:
    """How many tokens each of the ``T`` steps reveals: Dream's linear timestep schedule.

    With ``t = linspace(1, eps, T + 1)`` and ``m`` positions still masked before step ``k``, step
    ``k < T - 1`` reveals ``floor(m * (1 - t[k + 1] / t[k]))`` and the last step all that remain
    (Dream's ``_sample``: ``int(num_mask_token * (1 - s / t))``). The flooring loses up to one
    token per step, so the last step reveals more than the others, and a step may reveal none
    (``T > num_positions``, or ``T = num_positions`` where ``eps`` keeps the first count just
    below 1). Computed in float64; Dream computes ``s / t`` in float32, so a count whose exact
    value is an integer could differ by one there.

    Args:
        num_positions: positions to generate, >= 1.
        num_steps: ``T`` >= 1 (more steps than positions is allowed).
        eps: the final time, in (0, 1).

    Returns:
        int32 ``[T]``, every entry >= 0, summing to ``num_positions``.

    Raises:
        ValueError: a count below 1 or ``eps`` outside (0, 1).
    """
    num_positions = _check_int("num_positions", num_positions, low=1)
    num_steps = _check_int("num_steps", num_steps, low=1)
    eps = _check_number("eps", eps, low=0.0, high=1.0, open_low=True, open_high=True)
    times = np.linspace(1.0, eps, num_steps + 1)
    counts = np.zeros(num_steps, np.int64)
    remaining = num_positions
    # A recurrence on the number still masked: host-side numpy, once per (positions, steps).
    for k in range(num_steps - 1):
        counts[k] = int(remaining * (1.0 - times[k + 1] / times[k]))
        remaining -= counts[k]
    counts[-1] = remaining
    return counts.astype(np.int32)


def reveal_plan(
    num_positions: int,
    num_steps: int,
    *,
    block_length: int | None = None,
    eps: float = DEFAULT_EPS,
) -> tuple[np.ndarray, np.ndarray | None]:
    """How many tokens each step reveals, and up to which position (the blocks of LLaDA).

    Without ``block_length``, Dream's :func:`reveal_schedule` over all positions. With it,
    LLaDA's semi-autoregressive schedule (``generate``): the positions form
    ``B = num_positions / block_length`` blocks and the steps ``B`` runs of
    ``S = num_steps / B``; step ``k`` is in block ``b = k // S``, which may reveal only positions
    before ``(b + 1) * block_length``, and reveals ``block_length // S`` of them, one more on
    the first ``block_length % S`` steps of the block (``get_num_transfer_tokens``).

    Args:
        num_positions: positions to generate, >= 1 (the prompt excluded).
        num_steps: ``T`` >= 1.
        block_length: positions per block, >= 1, dividing ``num_positions``, with ``T`` a
            multiple of the block count; ``None``: one block with Dream's schedule.
        eps: the final time of Dream's schedule (unused with blocks).

    Returns:
        ``(counts, block_end)``: int32 ``[T]`` counts summing to ``num_positions``, and int32
        ``[T]`` the exclusive end of each step's block, counted from the first generated
        position (``None`` without blocks: every position is eligible at every step).

    Raises:
        ValueError: a count below 1, ``eps`` outside (0, 1), or blocks that do not divide the
            positions or the steps (naming the values).

    Example:
        >>> counts, block_end = reveal_plan(8, 6, block_length=4)
        >>> counts.tolist(), block_end.tolist()
        ([2, 1, 1, 2, 1, 1], [4, 4, 4, 8, 8, 8])
    """
    if block_length is None:
        return reveal_schedule(num_positions, num_steps, eps=eps), None
    num_positions = _check_int("num_positions", num_positions, low=1)
    num_steps = _check_int("num_steps", num_steps, low=1)
    block_length = _check_int("block_length", block_length, low=1)
    if num_positions % block_length:
        raise ValueError(
            f"block_length={block_length} must divide the {num_positions} positions to "
            "generate (LLaDA's gen_length % block_length == 0)"
        )
    num_blocks = num_positions // block_length
    if num_steps % num_blocks:
        raise ValueError(
            f"num_steps={num_steps} must be a multiple of the {num_blocks} blocks of "
            f"block_length={block_length} (LLaDA's steps % num_blocks == 0)"
        )
    steps_per_block = num_steps // num_blocks
    base, extra = divmod(block_length, steps_per_block)
    per_block = base + (np.arange(steps_per_block) < extra)
    counts = np.tile(per_block, num_blocks)
    block_end = np.repeat(np.arange(1, num_blocks + 1) * block_length, steps_per_block)
    return counts.astype(np.int32), block_end.astype(np.int32)


def _prompt_tokens(prompt, *, num_samples: int, length: int, vocab_size: int, mask_token_id: int):
    """The prompt as int32 ``[N, P]`` (broadcast from ``[P]``), checked; ``None`` -> ``[N, 0]``."""
    if prompt is None:
        return jnp.zeros((num_samples, 0), jnp.int32)
    prompt = jnp.asarray(prompt)
    if prompt.ndim not in (1, 2) or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise ValueError(
            f"prompt must be integer token ids [P] or [N, P], got dtype {prompt.dtype} and "
            f"shape {prompt.shape}"
        )
    if prompt.ndim == 2 and prompt.shape[0] != num_samples:
        raise ValueError(
            f"a [N, P] prompt must have N = num_samples = {num_samples} rows, got shape "
            f"{prompt.shape}"
        )
    size = prompt.shape[-1]
    if size >= length:
        raise ValueError(
            f"prompt length must be < length={length} (at least one position to generate), "
            f"got prompt length {size}"
        )
    if not isinstance(prompt, jax.core.Tracer):
        values = np.asarray(prompt)
        bad = values[(values < 0) | (values >= vocab_size)]
        if bad.size:
            raise ValueError(f"prompt ids must be in [0, vocab_size={vocab_size}), got {bad[0]}")
        if np.any(values == mask_token_id):
            raise ValueError(f"prompt must not contain mask_token_id={mask_token_id}")
    return jnp.broadcast_to(prompt.astype(jnp.int32), (num_samples, size))


def _propose(
    logits: Array,
    key: Array,
    *,
    unmasking: str,
    temperature: float,
    top_p: float | None,
    mask_token_id: int,
    vocab_size: int,
) -> tuple[Array, Array | None]:
    """A candidate token per position and its unmasking score (``None`` for the random rule).

    Dream's ``sample_tokens``: divide by the temperature (if > 0), filter to the nucleus, then
    draw from (or take the argmax of) the softmax, and score from that same distribution; LLaDA's
    low-confidence rule scores from the untempered softmax instead (module docstring).
    """
    logits = jnp.asarray(logits, jnp.float32)
    vocab = lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    logits = jnp.where(vocab == mask_token_id, -jnp.inf, logits)
    untempered = logits
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = nucleus_filter(logits, top_p)
    if temperature > 0 and unmasking == "low-confidence":
        # argmax(logits / T + gumbel) = argmax(logits + T * gumbel): LLaDA's Gumbel-max draw,
        # with the high-dynamic-range noise (LLaDA's is float64).
        candidates = jax.random.categorical(key, logits, axis=-1, mode="high")
    elif temperature > 0:
        candidates = jax.random.categorical(key, logits, axis=-1)
    else:
        candidates = jnp.argmax(logits, axis=-1)
    # Only reachable when a row has no finite logit besides [MASK]'s: never emit [MASK].
    candidates = jnp.where(
        candidates == mask_token_id, (mask_token_id + 1) % vocab_size, candidates
    ).astype(jnp.int32)
    if unmasking == "random":
        return candidates, None
    if unmasking == "low-confidence":
        probs = jax.nn.softmax(untempered, axis=-1)
        return candidates, jnp.take_along_axis(probs, candidates[..., None], axis=-1)[..., 0]
    probs = jax.nn.softmax(logits, axis=-1)
    if unmasking == "confidence":
        scores = jnp.take_along_axis(probs, candidates[..., None], axis=-1)[..., 0]
    elif unmasking == "margin":
        top2, _ = lax.top_k(probs, 2)
        scores = top2[..., 0] - top2[..., 1]
    else:  # entropy
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        scores = jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)
    return candidates, scores


@dataclasses.dataclass(frozen=True)
class UnmaskingOptions:
    """How one step draws candidates and picks the positions it reveals (static, hashable).

    Attributes: as :func:`sample`'s arguments of the same names. ``block_length`` shapes the
    schedule (:func:`reveal_plan`), which gives :func:`unmask_step` its count and block end;
    it is compared and hashed but left out of the repr, which cache keys hash (a model that
    uses it names it beside the options: ``MaskedDiffusionLM.config``).
    """

    mask_token_id: int
    vocab_size: int
    unmasking: str = "random"
    temperature: float = 0.0
    top_p: float | None = None
    unmasking_temperature: float = 0.0
    block_length: int | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        vocab_size = _check_int("vocab_size", self.vocab_size, low=2)
        mask_token_id = _check_int("mask_token_id", self.mask_token_id, low=0)
        if mask_token_id >= vocab_size:
            raise ValueError(
                f"mask_token_id must be in [0, vocab_size={vocab_size}), got {mask_token_id}"
            )
        if self.unmasking not in UNMASKING_RULES:
            raise ValueError(f"unmasking must be one of {UNMASKING_RULES}, got {self.unmasking!r}")
        _check_number("temperature", self.temperature, low=0.0)
        if self.top_p is not None:
            _check_number("top_p", self.top_p, low=0.0, high=1.0, open_low=True)
        _check_number("unmasking_temperature", self.unmasking_temperature, low=0.0)
        if self.block_length is not None:
            _check_int("block_length", self.block_length, low=1)


def unmask_step(
    tokens: Array,
    logits: Array,
    count: Array,
    key: Array,
    options: UnmaskingOptions,
    *,
    block_end: Array | int | None = None,
) -> tuple[Array, Array]:
    """One step: draw a candidate for every position, reveal the ``count`` best-scoring masked
    positions (a traced count is fine), keep every other token.

    Args:
        tokens: int32 ``[N, L]``, the current tokens (``[MASK]`` where still hidden).
        logits: ``[N, L, V]`` with ``logits[:, i]`` predicting token ``i``.
        count: how many masked positions to reveal in each row (at most the eligible ones).
        key: this step's PRNG key (split here into the draw's and the order's).
        options: the rule, temperature and ids.
        block_end: positions from this index on are not eligible (the end of the current
            block, prompt included; may be traced); ``None``: every masked position is.

    Returns:
        ``(tokens after the step, revealed [N, L] bool)``.
    """
    draw_key, order_key = jax.random.split(key)
    candidates, scores = _propose(
        logits,
        draw_key,
        unmasking=options.unmasking,
        temperature=options.temperature,
        top_p=options.top_p,
        mask_token_id=options.mask_token_id,
        vocab_size=options.vocab_size,
    )
    if scores is None:
        scores = jax.random.uniform(order_key, tokens.shape)
    elif options.unmasking_temperature > 0:
        noise = jax.random.gumbel(order_key, tokens.shape)
        scores = scores / options.unmasking_temperature + noise
    eligible = tokens == options.mask_token_id
    if block_end is not None:
        position = lax.broadcasted_iota(jnp.int32, tokens.shape, tokens.ndim - 1)
        eligible = eligible & (position < block_end)
    reveal = top_positions(scores, count, eligible=eligible)
    return jnp.where(reveal, candidates, tokens), reveal


def sample(
    logits_fn: MaskedLogitsFn,
    *,
    key: Array,
    num_samples: int,
    length: int,
    num_steps: int,
    mask_token_id: int,
    vocab_size: int,
    unmasking: str = "random",
    temperature: float = 0.0,
    top_p: float | None = None,
    unmasking_temperature: float = 0.0,
    block_length: int | None = None,
    prompt: Array | None = None,
    eps: float = DEFAULT_EPS,
    has_aux: bool = False,
    observe: StepObserver | None = None,
) -> MaskedDiffusionSamples:
    """Generate ``num_samples`` sequences of ``length`` tokens in ``num_steps`` unmasking steps.

    One ``lax.scan`` over the steps; jit-compatible (all options are Python values, static; the
    key and a prompt may be traced) and deterministic given ``key``: the candidate draws, the
    random orders and the observer keys come from ``key`` folded with the step, whatever
    ``logits_fn`` is, so fp32 and quantized runs with one key share their randomness.

    Args:
        logits_fn: ``(tokens [N, L] int32, step int32) -> logits [N, L, V]`` with
            ``logits[:, i]`` predicting token ``i``; ``(logits, aux)`` with ``has_aux``.
        key: PRNG key.
        num_samples: N >= 1.
        length: L >= 1, prompt included.
        num_steps: T >= 1.
        mask_token_id: the ``[MASK]`` id in ``[0, vocab_size)``.
        vocab_size: V >= 2, the logits' last axis.
        unmasking: one of ``UNMASKING_RULES`` (module docstring).
        temperature: 0 takes the argmax; > 0 draws from ``softmax(logits / temperature)``.
        top_p: nucleus filtering in (0, 1] before drawing and scoring, or ``None``.
        unmasking_temperature: Dream's ``alg_temp``, >= 0 (module docstring).
        block_length: LLaDA's semi-autoregressive blocks of generated positions
            (:func:`reveal_plan`); ``None``: one block, Dream's schedule.
        prompt: optional int ``[P]`` (or ``[N, P]``) prefix with ``P < L``, kept at positions
            ``0..P-1`` and never masked; ids in ``[0, V)`` and not ``mask_token_id``.
        eps: the schedule's final time (:func:`reveal_schedule`).
        has_aux: whether ``logits_fn`` returns ``(logits, aux)``.
        observe: optional ``observe(step, aux, key) -> pytree`` called at every step with that
            step's ``aux`` (``None`` without ``has_aux``); outputs stacked to ``[T, ...]``.

    Returns:
        A :class:`MaskedDiffusionSamples`; step ``k`` revealed exactly
        ``reveal_plan(L - P, T, block_length=block_length, eps=eps)[0][k]`` positions of every
        sample.

    Raises:
        ValueError: a bad count, id, rule, temperature, ``top_p``, block length or prompt,
            naming it; logits that are not ``[N, L, V]`` (when traced).
    """
    num_samples = _check_int("num_samples", num_samples, low=1)
    length = _check_int("length", length, low=1)
    num_steps = _check_int("num_steps", num_steps, low=1)
    options = UnmaskingOptions(
        mask_token_id=mask_token_id,
        vocab_size=vocab_size,
        unmasking=unmasking,
        temperature=temperature,
        top_p=top_p,
        unmasking_temperature=unmasking_temperature,
        block_length=block_length,
    )
    if observe is not None and not callable(observe):
        raise ValueError(f"observe must be callable or None, got {observe!r}")
    prompt_ids = _prompt_tokens(
        prompt,
        num_samples=num_samples,
        length=length,
        vocab_size=vocab_size,
        mask_token_id=mask_token_id,
    )
    prompt_size = prompt_ids.shape[1]
    counts, block_end = reveal_plan(
        length - prompt_size, num_steps, block_length=block_length, eps=eps
    )
    ends = None if block_end is None else jnp.asarray(block_end + prompt_size)
    expected = (num_samples, length, vocab_size)
    step_key, observe_key = jax.random.split(key)

    def body(carry: tuple[Array, Array], step_and_count: tuple[Array, Array]):
        tokens, reveal_step = carry
        step, count = step_and_count
        out = logits_fn(tokens, step)
        logits, aux = out if has_aux else (out, None)
        if tuple(jnp.shape(logits)) != expected:
            raise ValueError(
                f"logits_fn must return logits [N, L, V] = {list(expected)}, got shape "
                f"{tuple(jnp.shape(logits))}"
            )
        tokens, reveal = unmask_step(
            tokens,
            logits,
            count,
            jax.random.fold_in(step_key, step),
            options,
            block_end=None if ends is None else ends[step],
        )
        reveal_step = jnp.where(reveal, step, reveal_step)
        seen = None
        if observe is not None:
            seen = observe(step, aux, jax.random.fold_in(observe_key, step))
        return (tokens, reveal_step), (tokens, seen)

    generated = jnp.full((num_samples, length - prompt_size), mask_token_id, jnp.int32)
    init = (
        jnp.concatenate([prompt_ids, generated], axis=1),
        jnp.full((num_samples, length), -1, jnp.int32),
    )
    steps = jnp.arange(num_steps, dtype=jnp.int32)
    (tokens, reveal_step), (trajectory, observed) = lax.scan(
        body, init, (steps, jnp.asarray(counts))
    )
    return MaskedDiffusionSamples(
        tokens=tokens, trajectory=trajectory, reveal_step=reveal_step, observed=observed
    )
