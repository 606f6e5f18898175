"""Top-p (nucleus) filtering of logits without sorting the vocabulary: the masked-diffusion
sampler's (:mod:`thermojax.models.masked_diffusion`) filter before it draws, and what
``benchmarks/bench_nucleus.py`` measures against the sort it replaced.

Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    >>> bool(jnp.isinf(nucleus_filter(logits, 0.7)).tolist()[0][2])
    True
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["nucleus_filter"]

Array = jax.Array


_ONE_BITS = 0x3F800000
"""The int32 bit pattern of float32 1.0, the largest probability (and the nucleus's bracket)."""
_NUCLEUS_STEPS = _ONE_BITS.bit_length()
"""Bisection steps that narrow ``[0, _ONE_BITS]`` to one bit pattern (each halves, rounding down)."""


def nucleus_filter(logits: Array, top_p: float) -> Array:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p`` (ties at the cut
    are kept); the others get logit -inf.

    With ``p = softmax(logits)`` and ``S(t)``, the mass of the tokens with ``p_j > t``, the kept
    tokens are ``{i : p_i >= t*}``, ``t* = min{p_i : S(p_i) < top_p}``: walking down the sorted
    probabilities, the smallest one reached while the mass before it is still below ``top_p``
    (``S(p_i)`` is the mass before the first of ``p_i``'s ties), so a tie group at the cut is
    kept whole and the top token always is. Equivalently ``t*`` is the largest ``t`` with
    ``mass(p >= t) >= top_p`` when the whole mass reaches ``top_p``; when it does not (float32
    rounding with ``top_p`` near 1), every token is kept. A zero-probability token (the
    ``-inf`` ``[MASK]``, an underflow) is kept only then, with its logit unchanged.

    Found without sorting: ``S`` does not increase, and non-negative float32s order as their
    int32 bit patterns, so ``t*`` is reached by bisecting for the smallest bit pattern ``b`` in
    ``[0, bits(1.0)]`` with ``S(float(b)) < top_p`` (``S(1.0) = 0``), and
    ``{p_i >= float(b)}`` is the kept set (no probability lies in ``[float(b), t*)``; ``b = 0``
    keeps every token): :data:`_NUCLEUS_STEPS` (30) masked sums over the vocabulary, all rows
    at once, where the sort cost ~10x more on CPU (``benchmarks/bench_nucleus.py``). The set
    is the sort's, except where the float32 masked sum and the sort's float32 cumulative sum
    round differently right at the cut: ``S(t*)`` or ``mass(p >= t*)`` within float32 rounding
    of ``top_p`` (about 1e-7 of mass), which a large vocabulary or ``top_p`` near 1 makes
    likelier. The cut tier (one token, unless tied) is then kept by one and dropped by the
    other: measured on random logits, 41 of 31k rows differ, by one token each (up to 3% of
    the rows at a 19k vocabulary and ``top_p = 0.99``); against a float64 sort, 17 rows for
    this bisection, 40 for the sort. A row without a number (all logits -inf: NaN
    probabilities) keeps nothing, as with the sort.
    """
    probs = jax.nn.softmax(logits, axis=-1)
    bounds = (
        jnp.zeros((*probs.shape[:-1], 1), jnp.int32),
        jnp.full((*probs.shape[:-1], 1), _ONE_BITS, jnp.int32),
    )

    def halve(_: Array, bounds: tuple[Array, Array]) -> tuple[Array, Array]:
        low, high = bounds  # the answer is in [low, high]; S(float(high)) < top_p
        middle = low + (high - low) // 2
        # A subnormal t reads as 0 where XLA flushes them: S is then flat over them, and the
        # cut is 0 or a normal number either way.
        t = lax.bitcast_convert_type(middle, jnp.float32)
        below = jnp.sum(jnp.where(probs > t, probs, 0.0), axis=-1, keepdims=True) < top_p
        return jnp.where(below, low, middle + 1), jnp.where(below, middle, high)

    _, cut = lax.fori_loop(0, _NUCLEUS_STEPS, halve, bounds)
    return jnp.where(probs >= lax.bitcast_convert_type(cut, jnp.float32), logits, -jnp.inf)
