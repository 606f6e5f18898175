"""Text-quality metrics of masked-diffusion language-model samples (pure JAX, jit-compatible).

- :func:`token_agreement` / :func:`stepwise_token_agreement`: the fraction of positions where two
  token arrays agree, e.g. fp32 and quantized samples drawn with the same key, at the end or
  after every sampling step.
- :func:`sequence_nll`: per-token cross entropy of tokens under logits the caller computed.
- :func:`masked_diffusion_nll_bound`: the masked-diffusion ELBO (MDLM, LLaDA, Dream) of token
  sequences under a logits function, in nats per token; :func:`perplexity` is its ``exp``.

**Generative perplexity** here is ``perplexity(masked_diffusion_nll_bound(fp32_logits_fn,
samples, ...)[1])``: the full-precision model scores the (quantized) sampler's output with its
own likelihood bound. A bidirectional model has no one-pass likelihood: with every token
visible, the output at position ``i`` sees token ``i`` itself (the pass ``logits_fn(samples)``
scores a copy task, not the text), and the exact likelihood needs an order over positions. The
bound is what the masked-diffusion papers report as the model's perplexity, an upper bound on
the true per-token NLL; :func:`sequence_nll` is the kernel it applies to each masked input.

The bound, with ``n`` the scored positions of a sequence ``x`` (all of them, or those of
``positions``) and ``x_t`` the sequence with each of them replaced by ``[MASK]`` independently
with probability ``t``::

    B(x) = E_{t ~ U(0, 1]} [ (1 / t) * sum_{i masked in x_t} -log p(x_i | x_t) ] / n

is estimated without bias and with bounded variance. Given that ``k`` positions are masked,
``t`` has density ``Beta(k + 1, n - k + 1)`` and ``E[1 / t | k] = (n + 1) / k``, while ``k``
itself is uniform on ``0..n``; integrating ``t`` out gives::

    B(x) = E_{k ~ U{1..n}} E_{S uniform, |S| = k} [ (1 / k) * sum_{i in S} -log p(x_i | x_S) ]

(the form LLaDA evaluates): the mean NLL of the masked positions, with a uniformly random
masked count. The literal estimator, ``1 / t`` times a Bernoulli count, has infinite variance
(the rare draws with ``t`` near 0 that still mask a token weigh ``1 / t``); this one averages
bounded terms, and a model whose predictions are uniform over ``V`` tokens scores exactly
``log V``. ``num_mask_ratios`` stratified ratios ``k / n`` (one uniform draw in each of ``K``
equal strata of ``(0, 1]``, per sequence) lower the variance further. ``p`` never predicts
``[MASK]``: its logit is removed (MDLM's "SUBS" parameterization, and what the sampler does),
which can only lower the bound.

Example:
    >>> import jax, jax.numpy as jnp
    >>> a = jnp.array([[1, 2, 3, 4], [1, 1, 1, 1]])
    >>> b = jnp.array([[1, 2, 0, 4], [2, 2, 2, 2]])
    >>> per_sample, mean = token_agreement(a, b)
    >>> per_sample.tolist(), float(mean)
    ([0.75, 0.0], 0.375)
    >>> uniform = lambda tokens: jnp.zeros((*tokens.shape, 6))  # 5 tokens + [MASK] (id 5)
    >>> _, nll = masked_diffusion_nll_bound(
    ...     uniform, a, key=jax.random.key(0), num_mask_ratios=4, mask_token_id=5)
    >>> round(float(perplexity(nll)), 4)
    5.0
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "BOUND_LOGITS_BYTES",
    "bound_batch_size",
    "masked_diffusion_nll_bound",
    "perplexity",
    "sequence_nll",
    "stepwise_token_agreement",
    "token_agreement",
    "top_positions",
]

Array = jax.Array


def _is_concrete(x: object) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_int(name: str, value: object, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}")
    return int(value)


BOUND_LOGITS_BYTES = 1 << 30
"""What :func:`bound_batch_size` lets one network call of the bound hold in logits (1 GiB)."""
_LOGIT_COPIES = 3  # the logits, their log-softmax and the masked copy, float32


def bound_batch_size(length: int, vocab: int, *, budget: int = BOUND_LOGITS_BYTES) -> int:
    """Sequences per network call of :func:`masked_diffusion_nll_bound` whose float32 logits
    (three copies of ``[B, length, vocab]``) fit ``budget`` bytes, at least 1.

    A function of the model's shape alone, not of the memory free, so a run's numbers do not
    depend on the machine: a small model scores any batch in one call (the shipped LM: about
    2600 sequences of 128 bytes), Dream 7B's 152064-token vocabulary 4 sequences of 128.

    Example:
        >>> bound_batch_size(128, 264), bound_batch_size(128, 152064)
        (2647, 4)
    """
    per_sequence = (
        _LOGIT_COPIES * 4 * _check_int("length", length, low=1) * _check_int("vocab", vocab, low=1)
    )
    return max(1, budget // per_sequence)


def _int_array(name: str, x: Array, *, min_ndim: int) -> Array:
    x = jnp.asarray(x)
    if x.ndim < min_ndim or not jnp.issubdtype(x.dtype, jnp.integer):
        raise ValueError(
            f"{name} must be an integer array with at least {min_ndim} axes, "
            f"got dtype {x.dtype} and shape {x.shape}"
        )
    return x


def _positions_mask(name: str, mask: Array | None, shape: tuple[int, ...]) -> Array:
    """``mask`` as a boolean array of ``shape`` (all True when ``None``), broadcast explicitly."""
    if mask is None:
        return jnp.ones(shape, bool)
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise ValueError(f"{name} must be a boolean array, got dtype {mask.dtype}")
    try:
        fits = np.broadcast_shapes(mask.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(f"{name} of shape {mask.shape} does not broadcast to {shape}")
    return jnp.broadcast_to(mask, shape)


def top_positions(scores: Array, counts: Array | int, *, eligible: Array) -> Array:
    """The ``counts`` highest-scoring eligible positions of each row, as a boolean mask.

    Works with traced ``counts`` (one ``sort`` per call, no ``top_k`` with a static ``k``), so a
    ``lax.scan`` can reveal a different number of positions at every step.

    Args:
        scores: float ``[..., L]``; NaN ranks as -inf.
        counts: int, scalar or ``[...]``: positions to select per row.
        eligible: bool ``[..., L]``: the positions that may be selected.

    Returns:
        bool ``[..., L]`` with exactly ``min(counts, eligible.sum(-1))`` True per row: the eligible
        positions of highest score, the lower index first among equal scores.
    """
    scores = jnp.asarray(scores, jnp.float32)
    shape = scores.shape
    eligible = jnp.broadcast_to(jnp.asarray(eligible, bool), shape)
    scores = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
    index = lax.broadcasted_iota(jnp.int32, shape, len(shape) - 1)
    # Eligible positions first, then by descending score; the stable sort keeps index order in ties.
    _, _, order = lax.sort(
        ((~eligible).astype(jnp.int32), -scores, index), dimension=-1, is_stable=True, num_keys=2
    )
    rank = jnp.argsort(order, axis=-1)
    counts = jnp.broadcast_to(jnp.asarray(counts, jnp.int32), shape[:-1])
    return eligible & (rank < counts[..., None])


def token_agreement(a: Array, b: Array, *, mask: Array | None = None) -> tuple[Array, Array]:
    """The fraction of positions where ``a`` and ``b`` hold the same token.

    Args:
        a: integer tokens ``[..., L]`` (``[N, L]`` samples, or ``[T, N, L]`` trajectories).
        b: integer tokens, the same shape.
        mask: optional bool, broadcastable to that shape: the positions that count (e.g. the
            generated ones, not the prompt). A row with no counted position scores 1.0
            (nothing disagrees), so the result is never NaN.

    Returns:
        ``(per_sample [...], mean)``: float32 agreement in [0, 1] of every row (the last axis is
        the sequence) and its mean over all rows.

    Raises:
        ValueError: non-integer or differently shaped tokens, or a mask that does not fit.
    """
    a = _int_array("a", a, min_ndim=1)
    b = _int_array("b", b, min_ndim=1)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    counted = _positions_mask("mask", mask, a.shape)
    agree = jnp.sum((a == b) & counted, axis=-1)
    count = jnp.sum(counted, axis=-1)
    per_sample = jnp.where(count > 0, agree / jnp.maximum(count, 1), 1.0).astype(jnp.float32)
    return per_sample, jnp.mean(per_sample)


def stepwise_token_agreement(
    trajectory_a: Array, trajectory_b: Array, *, mask: Array | None = None
) -> Array:
    """Mean :func:`token_agreement` over samples after every step of two trajectories.

    ``[MASK]`` is a token like any other here: two still-masked positions agree. Pass
    ``mask=(trajectory_a != m) | (trajectory_b != m)`` to count only positions revealed in
    either run.

    Args:
        trajectory_a: integer tokens ``[T, N, L]`` (a sampler's tokens after each step).
        trajectory_b: the same shape.
        mask: optional bool broadcastable to ``[T, N, L]``.

    Returns:
        float32 ``[T]``: at each step, the mean over the N samples of their agreement.
    """
    a = _int_array("trajectory_a", trajectory_a, min_ndim=3)
    if a.ndim != 3:
        raise ValueError(f"trajectory_a must be [T, N, L], got shape {a.shape}")
    per_sample, _ = token_agreement(a, trajectory_b, mask=mask)
    return jnp.mean(per_sample, axis=-1)


def _token_nll(logits: Array, tokens: Array, exclude_token: int | None) -> Array:
    """``-log softmax(logits)[token]`` per position (float32), ``exclude_token``'s logit removed."""
    logits = jnp.asarray(logits, jnp.float32)
    if exclude_token is not None:
        vocab = lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
        logits = jnp.where(vocab == exclude_token, -jnp.inf, logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(log_probs, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]


def _check_token_values(
    name: str, tokens: Array, counted: Array, vocab_size: int, excluded: int | None
) -> None:
    """On concrete tokens: every counted token in ``[0, vocab_size)`` and not ``excluded``."""
    if not (_is_concrete(tokens) and _is_concrete(counted)):
        return
    values = np.asarray(tokens)[np.asarray(counted)]
    bad = values[(values < 0) | (values >= vocab_size)]
    if bad.size:
        raise ValueError(f"{name} must be token ids in [0, {vocab_size}), got {int(bad[0])}")
    if excluded is not None and np.any(values == excluded):
        raise ValueError(f"{name} contain the excluded token {excluded} at a scored position")


def sequence_nll(
    logits: Array,
    tokens: Array,
    *,
    mask: Array | None = None,
    exclude_token: int | None = None,
) -> tuple[Array, Array]:
    """Mean negative log-likelihood per token (natural log) of ``tokens`` under ``logits``.

    The kernel of a likelihood, not a likelihood of a sequence by itself: ``logits[..., i, :]``
    must be the model's prediction of token ``i`` from an input in which token ``i`` is hidden.
    For a bidirectional masked-diffusion LM that means an input with position ``i`` masked, as
    :func:`masked_diffusion_nll_bound` builds; the caller supplies the logits.

    Args:
        logits: float ``[..., L, V]``, ``logits[..., i, :]`` predicting token ``i``.
        tokens: integer ``[..., L]`` in ``[0, V)``.
        mask: optional bool broadcastable to ``tokens``: the positions scored.
        exclude_token: a token id whose logit is removed before the softmax (``[MASK]``, which
            a sampler never emits), or ``None``.

    Returns:
        ``(per_sample [...], mean)``: float32 nats per scored token of every row, and over all
        scored tokens together (rows weighted by their scored count). A row with no scored
        position has NLL 0.

    Raises:
        ValueError: mismatched shapes, a token id outside ``[0, V)`` or equal to
            ``exclude_token`` at a scored position (checked when the tokens are concrete).
    """
    logits = jnp.asarray(logits)
    tokens = _int_array("tokens", tokens, min_ndim=1)
    if logits.ndim != tokens.ndim + 1 or logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"logits must be [..., L, V] over tokens [..., L], got logits {logits.shape} and "
            f"tokens {tokens.shape}"
        )
    vocab_size = logits.shape[-1]
    if exclude_token is not None:
        _check_int("exclude_token", exclude_token, low=0)
    counted = _positions_mask("mask", mask, tokens.shape)
    _check_token_values("tokens", tokens, counted, vocab_size, exclude_token)
    nll = jnp.where(counted, _token_nll(logits, tokens, exclude_token), 0.0)
    count = jnp.sum(counted, axis=-1)
    total = jnp.sum(nll, axis=-1)
    per_sample = jnp.where(count > 0, total / jnp.maximum(count, 1), 0.0)
    mean = jnp.sum(total) / jnp.maximum(jnp.sum(count), 1)
    return per_sample.astype(jnp.float32), mean.astype(jnp.float32)


def masked_diffusion_nll_bound(
    logits_fn: Callable[[Array], Array],
    tokens: Array,
    *,
    key: Array,
    num_mask_ratios: int,
    mask_token_id: int,
    positions: Array | None = None,
    batch_size: int | None = None,
) -> tuple[Array, Array]:
    """Monte Carlo estimate of the masked-diffusion ELBO, in nats per token (module docstring).

    For each of ``K = num_mask_ratios`` strata of the mask ratio, every sequence draws a count
    ``k`` of its ``n`` scored positions (``k / n`` uniform within the stratum), masks a uniformly
    random ``k`` of them, calls ``logits_fn`` once on the batch and averages the NLL of the masked
    tokens; the estimate is the mean over strata. One ``lax.map`` over the strata, so a large
    model holds one batch of activations at a time. Pure and jit-compatible given ``logits_fn``;
    ``num_mask_ratios`` and ``mask_token_id`` are static.

    Args:
        logits_fn: ``tokens [N, L] int32 -> logits [N, L, V]``, ``logits[:, i]`` predicting token
            ``i`` (any shift already applied), jit-safe.
        tokens: integer ``[N, L]``: the sequences to score; no ``mask_token_id`` where scored.
        key: PRNG key (same key, same masks).
        num_mask_ratios: K >= 1 stratified mask ratios (network calls).
        mask_token_id: the ``[MASK]`` id in ``[0, V)``; its logit is removed from ``p``.
        positions: optional bool ``[L]`` or ``[N, L]``: the positions that are masked and scored
            (e.g. not the prompt, which stays as context). Default: all.
        batch_size: call ``logits_fn`` on at most this many sequences at a time (one
            ``lax.map`` over the chunks; the last is padded with repeated rows whose results
            are dropped), so the logits held at once are ``[batch_size, L, V]``. The masks are
            drawn for the whole batch first: the same estimate as one call (to the rounding of
            ``logits_fn`` at another batch size). Default: all ``N`` in one call.

    Returns:
        ``(per_sample [N], mean)``: float32 nats per scored token of every sequence, and over the
        batch (sequences weighted by their scored count). A sequence with no scored position
        has 0. ``perplexity(mean)`` is the generative perplexity.

    Raises:
        ValueError: bad counts or ids, tokens not ``[N, L]``, logits not ``[N, L, V]`` with
            ``V > mask_token_id``, or a scored token out of range or equal to ``mask_token_id``
            (checked when concrete).
    """
    num_mask_ratios = _check_int("num_mask_ratios", num_mask_ratios, low=1)
    mask_token_id = _check_int("mask_token_id", mask_token_id, low=0)
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size, low=1)
    tokens = _int_array("tokens", tokens, min_ndim=2)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [N, L], got shape {tokens.shape}")
    tokens = tokens.astype(jnp.int32)
    chunk = tokens.shape[0] if batch_size is None else min(batch_size, tokens.shape[0])
    scored = _positions_mask("positions", positions, tokens.shape)
    num_scored = jnp.sum(scored, axis=-1)
    count_key, subset_key = jax.random.split(key)

    def one_ratio(stratum: Array) -> Array:
        u = jax.random.uniform(jax.random.fold_in(count_key, stratum), num_scored.shape)
        ratio = (stratum.astype(jnp.float32) + 1.0 - u) / num_mask_ratios  # in (j/K, (j+1)/K]
        count = jnp.clip(jnp.ceil(ratio * num_scored), 1, jnp.maximum(num_scored, 1))
        subset_scores = jax.random.uniform(jax.random.fold_in(subset_key, stratum), tokens.shape)
        masked = top_positions(subset_scores, count.astype(jnp.int32), eligible=scored)
        nll = jnp.where(masked, chunked_nll(jnp.where(masked, mask_token_id, tokens)), 0.0)
        return jnp.sum(nll, axis=-1) / count

    def checked_nll(inputs: Array, targets: Array) -> Array:
        logits = logits_fn(inputs)
        if jnp.ndim(logits) != 3 or jnp.shape(logits)[:2] != inputs.shape:
            raise ValueError(
                f"logits_fn must return logits [N, L, V] = [{inputs.shape[0]}, "
                f"{inputs.shape[1]}, V], got shape {jnp.shape(logits)}"
            )
        vocab_size = jnp.shape(logits)[-1]
        if mask_token_id >= vocab_size:
            raise ValueError(f"mask_token_id must be in [0, V={vocab_size}), got {mask_token_id}")
        _check_token_values("tokens", tokens, scored, vocab_size, mask_token_id)
        return _token_nll(logits, targets, mask_token_id)

    def chunked_nll(inputs: Array) -> Array:
        """Each position's NLL ``[N, L]``, ``logits_fn`` called on ``chunk`` rows at a time."""
        rows = tokens.shape[0]
        if chunk == rows:
            return checked_nll(inputs, tokens)
        pad = -rows % chunk
        padded = [jnp.concatenate([a, a[:pad]]) if pad else a for a in (inputs, tokens)]
        shaped = [a.reshape(-1, chunk, a.shape[-1]) for a in padded]
        nll = lax.map(lambda pair: checked_nll(*pair), (shaped[0], shaped[1]))
        return nll.reshape(-1, tokens.shape[-1])[:rows]

    per_ratio = lax.map(one_ratio, jnp.arange(num_mask_ratios, dtype=jnp.int32))
    per_sample = jnp.where(num_scored > 0, jnp.mean(per_ratio, axis=0), 0.0)
    mean = jnp.sum(per_sample * num_scored) / jnp.maximum(jnp.sum(num_scored), 1)
    return per_sample.astype(jnp.float32), mean.astype(jnp.float32)


def perplexity(nll: Array | float) -> Array:
    """``exp(nll)``: perplexity from a mean NLL in nats per token (a uniform model over V: V).

    Raises:
        ValueError: a concrete NLL that is negative or NaN (no distribution gives one).
    """
    nll = jnp.asarray(nll, jnp.float32)
    if _is_concrete(nll):
        values = np.asarray(nll)
        if np.any(np.isnan(values) | (values < 0)):
            raise ValueError(f"nll must be >= 0 nats per token, got nll={values.tolist()}")
    return jnp.exp(nll)
