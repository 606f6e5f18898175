"""Text metrics against float64 numpy references: agreement, NLL, the masked-diffusion bound."""

from __future__ import annotations

import itertools
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from thermojax.core.text_metrics import (
    masked_diffusion_nll_bound,
    perplexity,
    sequence_nll,
    stepwise_token_agreement,
    token_agreement,
    top_positions,
)

MASK = 4  # tokens 0..3 are text, 4 is [MASK]: logits have V = 5 entries


def log_softmax64(z):
    z = np.asarray(z, np.float64)
    finite = z[np.isfinite(z)]
    shifted = z - finite.max()
    return shifted - np.log(np.sum(np.exp(shifted[np.isfinite(shifted)])))


def neighbour_logits(seed, length, xp, vocab=MASK + 1):
    """Logits at each position from both neighbours and the position: they see the mask pattern."""
    rng = np.random.default_rng(seed)
    left, right, pos = (
        1.5 * rng.normal(size=s) for s in ((vocab, vocab),) * 2 + ((length, vocab),)
    )
    if xp is jnp:
        left, right, pos = (jnp.asarray(a, jnp.float32) for a in (left, right, pos))

    def logits_fn(tokens):
        return left[xp.roll(tokens, 1, axis=1)] + right[xp.roll(tokens, -1, axis=1)] + pos[None]

    return logits_fn


def ref_bound(logits_np, sequence, scored, *, grid=200_000):
    """The continuous-time ELBO by its definition, in float64: every masked subset S of the scored
    positions, weighted by the integral over t in (0, 1] of (1/t) t^|S| (1-t)^(n-|S|)
    (midpoint rule), times the NLL of the masked tokens given the masked sequence; over n."""
    sequence = np.asarray(sequence)
    where = np.flatnonzero(scored)
    n = len(where)
    t = (np.arange(grid) + 0.5) / grid
    total = 0.0
    for size in range(1, n + 1):
        weight = np.mean(t ** (size - 1) * (1 - t) ** (n - size))
        for subset in itertools.combinations(where, size):
            x_t = sequence.copy()
            x_t[list(subset)] = MASK
            logits = np.asarray(logits_np(x_t[None]), np.float64)[0]
            logits[:, MASK] = -np.inf
            total += weight * sum(-log_softmax64(logits[i])[sequence[i]] for i in subset)
    return total / n


# --- token agreement ----------------------------------------------------------------------


def test_token_agreement_worked_cases():
    a = jnp.array([[1, 2, 3, 4], [1, 1, 1, 1]])
    b = jnp.array([[1, 2, 0, 4], [2, 2, 2, 2]])
    per_sample, mean = token_agreement(a, b)
    np.testing.assert_allclose(per_sample, [0.75, 0.0])
    np.testing.assert_allclose(mean, 0.375)
    # Not counting position 2 (say, the prompt) the first pair agrees everywhere.
    per_sample, mean = token_agreement(a, b, mask=jnp.array([True, True, False, True]))
    np.testing.assert_allclose(per_sample, [1.0, 0.0])
    # Per-row masks; a row with nothing counted scores 1.0, never NaN.
    mask = jnp.array([[False, False, False, False], [True, False, False, False]])
    per_sample, mean = token_agreement(a, b, mask=mask)
    np.testing.assert_allclose(per_sample, [1.0, 0.0])
    np.testing.assert_allclose(mean, 0.5)
    assert per_sample.dtype == jnp.float32


@settings(max_examples=25, deadline=None)
@given(
    shape=st.sampled_from([(1, 1, 1), (2, 3, 5), (4, 1, 6)]),
    seed=st.integers(0, 2**31),
)
def test_token_agreement_matches_numpy_and_is_a_fraction(shape, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, size=shape)
    b = rng.integers(0, 3, size=shape)
    mask = rng.random(shape) < 0.6
    per_sample, mean = token_agreement(jnp.asarray(a), jnp.asarray(b), mask=jnp.asarray(mask))
    ref = np.ones(shape[:-1])
    for idx in np.ndindex(*shape[:-1]):
        if mask[idx].any():
            ref[idx] = np.mean(a[idx][mask[idx]] == b[idx][mask[idx]])
    np.testing.assert_allclose(per_sample, ref, rtol=1e-6)
    np.testing.assert_allclose(mean, ref.mean(), rtol=1e-6)
    assert np.all((np.asarray(per_sample) >= 0) & (np.asarray(per_sample) <= 1))
    np.testing.assert_array_equal(token_agreement(jnp.asarray(a), jnp.asarray(a))[0], 1.0)
    np.testing.assert_array_equal(
        token_agreement(jnp.asarray(b), jnp.asarray(a), mask=jnp.asarray(mask))[0], per_sample
    )
    steps = stepwise_token_agreement(jnp.asarray(a), jnp.asarray(b), mask=jnp.asarray(mask))
    np.testing.assert_allclose(steps, ref.mean(axis=1), rtol=1e-6)


def test_stepwise_agreement_counts_mask_as_a_token_unless_masked_out():
    m = MASK
    traj_a = jnp.array([[[m, m, m]], [[1, m, m]], [[1, 2, 3]]])  # [T=3, N=1, L=3]
    traj_b = jnp.array([[[m, m, m]], [[m, 0, m]], [[1, 0, 3]]])
    np.testing.assert_allclose(stepwise_token_agreement(traj_a, traj_b), [1.0, 1 / 3, 2 / 3])
    revealed = (traj_a != m) | (traj_b != m)
    np.testing.assert_allclose(
        stepwise_token_agreement(traj_a, traj_b, mask=revealed), [1.0, 0.0, 2 / 3]
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: token_agreement(jnp.zeros((2, 3)), jnp.zeros((2, 3))), "integer array"),
        (lambda: token_agreement(jnp.zeros((2, 3), int), jnp.zeros((3, 2), int)), "same shape"),
        (
            lambda: token_agreement(
                jnp.zeros((2, 3), int), jnp.zeros((2, 3), int), mask=jnp.ones(4, bool)
            ),
            "mask of shape",
        ),
        (
            lambda: token_agreement(
                jnp.zeros((2, 3), int), jnp.zeros((2, 3), int), mask=jnp.ones(3, int)
            ),
            "mask must be a boolean",
        ),
        (
            lambda: stepwise_token_agreement(jnp.zeros((2, 3), int), jnp.zeros((2, 3), int)),
            "trajectory_a",
        ),
    ],
    ids=["float-tokens", "shapes", "mask-shape", "mask-dtype", "trajectory-rank"],
)
def test_agreement_rejects_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- top positions ------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    scores=hnp.arrays(np.float32, (3, 7), elements=st.sampled_from([0.0, 0.5, 1.0, -2.0, np.nan])),
    eligible=hnp.arrays(np.bool_, (3, 7)),
    counts=hnp.arrays(np.int32, (3,), elements=st.integers(0, 8)),
)
def test_top_positions_matches_a_sorted_reference(scores, eligible, counts):
    chosen = np.asarray(top_positions(scores, counts, eligible=eligible))
    for row in range(3):
        where = np.flatnonzero(eligible[row])
        key = np.where(np.isnan(scores[row, where]), -np.inf, scores[row, where])
        ranked = sorted(zip(-key, where, strict=True))[: counts[row]]
        expected = np.zeros(7, bool)
        expected[[i for _, i in ranked]] = True
        np.testing.assert_array_equal(chosen[row], expected)


# --- sequence NLL ---------------------------------------------------------------------------


def test_sequence_nll_matches_float64_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 6, MASK + 1)) * 2
    tokens = rng.integers(0, MASK, size=(3, 6))
    mask = rng.random((3, 6)) < 0.7
    mask[2] = False
    per_sample, mean = sequence_nll(
        jnp.asarray(logits, jnp.float32),
        jnp.asarray(tokens),
        mask=jnp.asarray(mask),
        exclude_token=MASK,
    )
    excluded = logits.copy()
    excluded[..., MASK] = -np.inf
    nll = np.array(
        [[-log_softmax64(excluded[n, i])[tokens[n, i]] for i in range(6)] for n in range(3)]
    )
    ref_rows = [nll[n][mask[n]].mean() if mask[n].any() else 0.0 for n in range(3)]
    np.testing.assert_allclose(per_sample, ref_rows, rtol=1e-5)
    np.testing.assert_allclose(mean, nll[mask].mean(), rtol=1e-5)
    # Without exclusion or mask: the plain cross entropy over all positions.
    plain = np.array(
        [[-log_softmax64(logits[n, i])[tokens[n, i]] for i in range(6)] for n in range(3)]
    )
    per_sample, mean = sequence_nll(jnp.asarray(logits, jnp.float32), jnp.asarray(tokens))
    np.testing.assert_allclose(per_sample, plain.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(mean, plain.mean(), rtol=1e-5)


@pytest.mark.parametrize(
    ("tokens", "kwargs", "message"),
    [
        ([[0, 5]], {}, r"token ids in \[0, 5\), got 5"),
        ([[0, -1]], {}, "got -1"),
        ([[0, MASK]], {"exclude_token": MASK}, "excluded token 4"),
        ([[0, 1, 2]], {}, r"logits must be \[..., L, V\]"),
        ([[0, 1]], {"exclude_token": -2}, "exclude_token"),
    ],
    ids=["too-large", "negative", "excluded", "shape", "bad-exclude"],
)
def test_sequence_nll_rejects_bad_inputs(tokens, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sequence_nll(jnp.zeros((1, 2, 5)), jnp.asarray(tokens), **kwargs)


# --- the masked-diffusion bound -----------------------------------------------------------


def uniform_logits(tokens):
    return jnp.zeros((*tokens.shape, MASK + 1)).at[..., MASK].set(30.0)


@partial(jax.jit, static_argnames="num_mask_ratios")
def uniform_bound(tokens, positions, key, *, num_mask_ratios):
    return masked_diffusion_nll_bound(
        uniform_logits,
        tokens,
        key=key,
        num_mask_ratios=num_mask_ratios,
        mask_token_id=MASK,
        positions=positions,
    )


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    num_mask_ratios=st.sampled_from([1, 4]),
    length=st.sampled_from([1, 6]),
    prompt=st.integers(0, 5),
)
def test_uniform_model_scores_log_v_exactly(seed, num_mask_ratios, length, prompt):
    # Every masked token costs log 4 whatever is masked (the [MASK] logit is removed): the
    # bound, an average of masked-token NLLs, is log 4 for every draw, not only on average.
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(0, MASK, size=(3, length)))
    positions = jnp.asarray(np.arange(length) >= min(prompt, length - 1))
    per_sample, mean = uniform_bound(
        tokens, positions, jax.random.key(seed), num_mask_ratios=num_mask_ratios
    )
    np.testing.assert_allclose(per_sample, math.log(4), rtol=1e-6)
    np.testing.assert_allclose(perplexity(mean), 4.0, rtol=1e-5)


@pytest.mark.parametrize(
    "scored", [(True, True, True, True), (False, True, True, True)], ids=["all", "prompt-1"]
)
def test_bound_matches_the_continuous_time_definition(scored):
    length, replicas = 4, 1500
    sequences = np.array([[0, 1, 2, 3], [2, 2, 0, 1]])
    tokens = jnp.asarray(np.repeat(sequences, replicas, axis=0))
    per_sample, mean = masked_diffusion_nll_bound(
        neighbour_logits(0, length, jnp),
        tokens,
        key=jax.random.key(1),
        num_mask_ratios=3,
        mask_token_id=MASK,
        positions=jnp.asarray(scored),
    )
    per_sample = np.asarray(per_sample).reshape(2, replicas)
    refs = [ref_bound(neighbour_logits(0, length, np), s, np.array(scored)) for s in sequences]
    for row, ref in zip(per_sample, refs, strict=True):
        stderr = row.std() / math.sqrt(replicas)
        assert abs(row.mean() - ref) < 4 * stderr + 1e-4, (row.mean(), ref, stderr)
    np.testing.assert_allclose(mean, per_sample.mean(), rtol=1e-5)


def test_one_ratio_per_mask_count_is_exact():
    # The NLL of a masked token depends only on how many are masked (k), so with K = n strata
    # every k = 1..n is drawn once and the estimate is the exact bound mean_k g(k), any key.
    length = 5

    def logits_fn(tokens):
        k = jnp.sum(tokens == MASK, axis=1, keepdims=True).astype(jnp.float32)
        logits = jnp.zeros((*tokens.shape, MASK + 1))
        return logits.at[..., 0].set(jnp.broadcast_to(2.0 - 0.5 * k, tokens.shape))

    g = [-log_softmax64([2.0 - 0.5 * k, 0, 0, 0, -np.inf])[0] for k in range(1, length + 1)]
    for seed in range(3):
        per_sample, _ = masked_diffusion_nll_bound(
            logits_fn,
            jnp.zeros((2, length), jnp.int32),
            key=jax.random.key(seed),
            num_mask_ratios=length,
            mask_token_id=MASK,
        )
        np.testing.assert_allclose(per_sample, np.mean(g), rtol=1e-5)


def test_bound_is_deterministic_and_jit_compatible():
    length = 6
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, MASK, size=(4, length)))
    logits_fn = neighbour_logits(1, length, jnp)

    def bound(tokens, key):
        return masked_diffusion_nll_bound(
            logits_fn, tokens, key=key, num_mask_ratios=4, mask_token_id=MASK
        )

    eager = bound(tokens, jax.random.key(0))
    jitted = jax.jit(bound)
    again = jitted(tokens, jax.random.key(0))
    other = jitted(tokens, jax.random.key(1))
    np.testing.assert_allclose(eager[0], again[0], rtol=1e-6)
    np.testing.assert_array_equal(again[0], jitted(tokens, jax.random.key(0))[0])
    assert np.any(np.asarray(eager[0]) != np.asarray(other[0]))
    assert np.all(np.asarray(eager[0]) > 0)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 7, 100])
def test_a_bound_in_chunks_is_the_bound_in_one_call(batch_size):
    # The masks are drawn for the whole batch before the chunks are scored, and this
    # logits_fn scores each row on its own: the same numbers, to the bit, in any chunking
    # (7 rows: chunks of 3 and 4 pad the last one with repeated rows, which are dropped).
    length = 6
    tokens = jnp.asarray(np.random.default_rng(3).integers(0, MASK, size=(7, length)))
    calls = []

    def logits_fn(batch):
        calls.append(batch.shape[0])
        return neighbour_logits(1, length, jnp)(batch)

    def bound(size):
        return masked_diffusion_nll_bound(
            logits_fn,
            tokens,
            key=jax.random.key(5),
            num_mask_ratios=3,
            mask_token_id=MASK,
            positions=jnp.asarray(np.arange(length) >= 1),
            batch_size=size,
        )

    whole = bound(None)
    calls.clear()
    chunked = bound(batch_size)
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])
    assert set(calls) == {min(batch_size, 7)}  # logits_fn never saw more rows than a chunk
    with pytest.raises(ValueError, match="batch_size must be"):
        bound(0)


@pytest.mark.parametrize(
    ("tokens", "kwargs", "message"),
    [
        ([[0, 1]], {"num_mask_ratios": 0}, "num_mask_ratios"),
        ([[0, 1]], {"mask_token_id": -1}, "mask_token_id"),
        ([[0, 1]], {"mask_token_id": 5}, r"mask_token_id must be in \[0, V=5\)"),
        ([0, 1], {}, r"tokens must be"),
        ([[0, MASK]], {}, "excluded token 4"),
        ([[0, 7]], {}, r"token ids in \[0, 5\)"),
        ([[0, 1]], {"positions": jnp.ones(3, bool)}, "positions of shape"),
        ([[0, 1]], {"logits_fn": lambda x: jnp.zeros((1, 5))}, "logits_fn must return"),
    ],
    ids=[
        "ratios",
        "negative-mask",
        "mask-outside-v",
        "rank",
        "mask-in-tokens",
        "too-large",
        "positions",
        "logits-shape",
    ],
)
def test_bound_rejects_bad_inputs(tokens, kwargs, message):
    options = {
        "logits_fn": uniform_logits,
        "key": jax.random.key(0),
        "num_mask_ratios": 2,
        "mask_token_id": MASK,
    }
    options.update(kwargs)
    logits_fn = options.pop("logits_fn")
    with pytest.raises(ValueError, match=message):
        masked_diffusion_nll_bound(logits_fn, jnp.asarray(tokens), **options)


# --- perplexity ---------------------------------------------------------------------------


def test_perplexity_is_exp_and_refuses_impossible_nll():
    np.testing.assert_allclose(perplexity(0.0), 1.0)
    np.testing.assert_allclose(perplexity(jnp.array([0.0, math.log(7.0)])), [1.0, 7.0], rtol=1e-6)
    for bad in (-0.5, float("nan")):
        with pytest.raises(ValueError, match="nll"):
            perplexity(bad)
    assert float(jax.jit(perplexity)(jnp.float32(-1.0))) == pytest.approx(math.exp(-1.0))
