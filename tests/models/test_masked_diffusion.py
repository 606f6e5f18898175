"""The masked-diffusion sampler: schedule, invariants, a float64 numpy reference, distributions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thermojax.models.masked_diffusion import (
    UNMASKING_RULES,
    MaskedDiffusionSamples,
    reveal_schedule,
    sample,
)
from thermojax.models.nucleus import nucleus_filter as _nucleus

V = 6
MASK = 5
# Chi-square critical values at p = 1e-4 by degrees of freedom: a fixed-key test that fails
# only if the frequencies are wrong (or with probability 1e-4 for this one key).
CHI2_CRITICAL = {1: 15.14, 2: 18.42, 3: 21.11}


def dream_counts(num_positions, num_steps, eps=1e-3):
    """Dream's ``_sample`` loop on a simulated sequence: count the masked, reveal, repeat."""
    masked = np.ones(num_positions, bool)
    times = np.linspace(1.0, eps, num_steps + 1)
    counts = []
    for i in range(num_steps):
        num_mask_token = masked.sum()
        t, s = times[i], times[i + 1]
        n = int(num_mask_token * (1 - s / t)) if i < num_steps - 1 else int(num_mask_token)
        masked[np.flatnonzero(masked)[:n]] = False
        counts.append(n)
    assert not masked.any()
    return counts


def neighbour_params(length, seed=0, vocab=V):
    rng = np.random.default_rng(seed)
    return tuple(
        2.0 * rng.normal(size=s) for s in ((vocab, vocab), (vocab, vocab), (length, vocab))
    )


def neighbour_logits(params, xp):
    """Logits that depend on both neighbours of a position (so revealing changes them)."""
    left_table, right_table, position_table = (xp.asarray(p) for p in params)
    if xp is jnp:
        left_table, right_table, position_table = (
            p.astype(jnp.float32) for p in (left_table, right_table, position_table)
        )

    def logits(tokens):
        left = xp.roll(tokens, 1, axis=1)
        right = xp.roll(tokens, -1, axis=1)
        return left_table[left] + right_table[right] + position_table[None]

    return logits


def softmax64(z):
    z = z - np.max(z)
    e = np.exp(z)
    return e / e.sum()


def ref_greedy(logits_np, *, num_samples, length, num_steps, rule, top_p, prompt):
    """Temperature-0 sampler in float64 numpy, one position at a time."""
    size = np.shape(prompt)[-1]
    x = np.full((num_samples, length), MASK, np.int64)
    x[:, :size] = prompt
    counts = dream_counts(length - size, num_steps)
    trajectory = []
    for k in range(num_steps):
        logits = np.array(logits_np(x), np.float64)
        logits[..., MASK] = -np.inf
        new = x.copy()
        for n in range(num_samples):
            ranked = []
            for i in np.flatnonzero(x[n] == MASK):
                z = logits[n, i].copy()
                if top_p is not None:
                    p = softmax64(z)
                    order = np.argsort(-p)
                    before = np.cumsum(p[order]) - p[order]
                    z[order[before >= top_p]] = -np.inf
                p = softmax64(z)
                c = int(np.argmax(p))
                top = np.sort(p)[::-1]
                score = {
                    "confidence": p[c],
                    "margin": top[0] - top[1],
                    "entropy": np.sum(p[p > 0] * np.log(p[p > 0])),
                }[rule]
                ranked.append((-score, i, c))
            for _, i, c in sorted(ranked)[: counts[k]]:
                new[n, i] = c
        x = new
        trajectory.append(x.copy())
    return np.stack(trajectory)


def fixed_logits_fn(logits):
    logits = jnp.asarray(logits, jnp.float32)
    return lambda tokens, step: jnp.broadcast_to(logits, (*tokens.shape, logits.shape[-1]))


def run(logits_fn, **overrides):
    kwargs = {
        "key": jax.random.key(0),
        "num_samples": 3,
        "length": 8,
        "num_steps": 4,
        "mask_token_id": MASK,
        "vocab_size": V,
    }
    kwargs.update(overrides)
    return sample(logits_fn, **kwargs)


# --- the schedule -------------------------------------------------------------------------


def test_reveal_schedule_worked_cases():
    # t = 1, .75025, .5005, .25075, .001: floor(10 * .24975) = 2, floor(8 * .3329) = 2,
    # floor(6 * .4990) = 2, the last step the remaining 4.
    assert reveal_schedule(10, 4).tolist() == [2, 2, 2, 4]
    # L = T: eps keeps the first count at floor(8 * .999 / 8) = 0, the last step catches up.
    assert reveal_schedule(8, 8).tolist() == [0, 1, 1, 1, 1, 1, 1, 2]
    assert reveal_schedule(3, 5).tolist() == [0, 0, 0, 1, 2]
    assert reveal_schedule(5, 1).tolist() == [5]
    assert reveal_schedule(10, 4).dtype == np.int32


@settings(max_examples=60, deadline=None)
@given(
    num_positions=st.integers(1, 300),
    num_steps=st.integers(1, 64),
    eps=st.sampled_from([1e-3, 1e-2, 0.3]),
)
def test_reveal_schedule_is_dreams_loop_and_a_partition(num_positions, num_steps, eps):
    counts = reveal_schedule(num_positions, num_steps, eps=eps)
    assert counts.shape == (num_steps,)
    assert counts.min() >= 0
    assert counts.sum() == num_positions
    assert counts.tolist() == dream_counts(num_positions, num_steps, eps)


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((0, 4), {}, "num_positions"),
        ((4, 0), {}, "num_steps"),
        ((4.0, 2), {}, "num_positions"),
        ((4, True), {}, "num_steps"),
        ((4, 2), {"eps": 0.0}, "eps"),
        ((4, 2), {"eps": 1.0}, "eps"),
        ((4, 2), {"eps": float("nan")}, "eps"),
    ],
    ids=["no-positions", "no-steps", "float-positions", "bool-steps", "eps-0", "eps-1", "eps-nan"],
)
def test_reveal_schedule_rejects_bad_values(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        reveal_schedule(*args, **kwargs)


# --- invariants ---------------------------------------------------------------------------


@pytest.mark.parametrize("rule", UNMASKING_RULES)
@pytest.mark.parametrize(
    ("temperature", "top_p", "prompt"),
    [(0.0, None, None), (1.0, 0.8, (1, 2, 3))],
    ids=["greedy", "sampled-prompt"],
)
def test_every_generated_position_revealed_once_on_schedule(rule, temperature, top_p, prompt):
    length, steps = 9, 4
    logits_fn = neighbour_logits(neighbour_params(length), jnp)
    # The mask token is the network's favourite everywhere: it must still never come out.
    favour_mask = lambda tokens, step: logits_fn(tokens).at[..., MASK].add(50.0)
    prompt_arr = None if prompt is None else jnp.array(prompt)
    out = run(
        favour_mask,
        length=length,
        num_steps=steps,
        unmasking=rule,
        temperature=temperature,
        top_p=top_p,
        prompt=prompt_arr,
    )
    size = 0 if prompt is None else len(prompt)
    counts = reveal_schedule(length - size, steps)
    tokens, trajectory, reveal = map(np.asarray, (out.tokens, out.trajectory, out.reveal_step))
    assert tokens.shape == (3, length) and trajectory.shape == (steps, 3, length)
    assert tokens.dtype == np.int32
    assert not np.any(tokens == MASK) and np.all((tokens >= 0) & (tokens < V))
    np.testing.assert_array_equal(trajectory[-1], tokens)
    np.testing.assert_array_equal(reveal[:, :size], -1)
    assert np.all((reveal[:, size:] >= 0) & (reveal[:, size:] < steps))
    for n in range(3):
        np.testing.assert_array_equal(np.bincount(reveal[n, size:], minlength=steps), counts)
    if size:
        np.testing.assert_array_equal(
            trajectory[:, :, :size], np.broadcast_to(prompt, (steps, 3, size))
        )
    # Revealed positions keep their token; the others are still masked.
    k = np.arange(steps)[:, None, None]
    expected = np.where(reveal[None] <= k, tokens[None], MASK)
    expected[:, :, :size] = tokens[None, :, :size]
    np.testing.assert_array_equal(trajectory, expected)
    assert isinstance(out, MaskedDiffusionSamples) and out.observed is None


@pytest.mark.parametrize("mask_token_id", [0, 3], ids=["mask-0", "mask-3"])
def test_greedy_gives_the_preferred_token_never_the_mask(mask_token_id):
    logits = np.zeros(V)
    logits[mask_token_id] = 100.0
    logits[2] = 8.0
    out = run(fixed_logits_fn(logits), mask_token_id=mask_token_id, unmasking="confidence")
    assert np.all(np.asarray(out.tokens) == 2)


def test_no_finite_logit_but_the_mask_still_gives_a_real_token():
    logits = np.full(V, -np.inf)
    logits[0] = 0.0
    out = run(fixed_logits_fn(logits), mask_token_id=0, temperature=1.0)
    assert not np.any(np.asarray(out.tokens) == 0)


# --- deterministic rules against the numpy reference --------------------------------------


@pytest.mark.parametrize("rule", ["confidence", "margin", "entropy"])
@pytest.mark.parametrize("top_p", [None, 0.7], ids=["full", "top-p"])
def test_greedy_rules_match_float64_reference(rule, top_p):
    length, steps = 8, 4
    prompt = np.array([[2, 0], [1, 4], [3, 3]])  # one prompt per sample: the samples differ
    params = neighbour_params(length, seed=1)
    out = run(
        lambda tokens, step: neighbour_logits(params, jnp)(tokens),
        length=length,
        num_steps=steps,
        unmasking=rule,
        top_p=top_p,
        prompt=jnp.asarray(prompt),
    )
    ref = ref_greedy(
        neighbour_logits(params, np),
        num_samples=3,
        length=length,
        num_steps=steps,
        rule=rule,
        top_p=top_p,
        prompt=prompt,
    )
    np.testing.assert_array_equal(np.asarray(out.trajectory), ref)


@pytest.mark.parametrize("rule", ["confidence", "margin", "entropy"])
def test_most_confident_positions_are_revealed_first(rule):
    # Position i predicts token 0 with logit c_i, the other tokens 0: confidence, margin and
    # negative entropy all grow with c_i, so the order is by descending c.
    length, steps, size = 10, 4, 2
    c = np.random.default_rng(3).permutation(length - size) * 0.5
    logits = np.zeros((length, V))
    logits[size:, 0] = c
    out = run(
        fixed_logits_fn(logits),
        length=length,
        num_steps=steps,
        unmasking=rule,
        prompt=jnp.array([1, 1]),
    )
    order = np.argsort(-c)
    bounds = np.cumsum(reveal_schedule(length - size, steps))
    expected = np.empty(length - size, np.int64)
    expected[order] = np.searchsorted(bounds, np.arange(length - size), side="right")
    for n in range(3):
        np.testing.assert_array_equal(np.asarray(out.reveal_step)[n, size:], expected)


def test_unmasking_temperature_interpolates_between_top_scores_and_random_order():
    length, steps = 8, 4
    logits = np.zeros((length, V))
    logits[:, 0] = np.random.default_rng(4).permutation(length) * 0.5
    greedy = run(fixed_logits_fn(logits), length=length, num_steps=steps, unmasking="confidence")
    cold = run(
        fixed_logits_fn(logits),
        length=length,
        num_steps=steps,
        unmasking="confidence",
        unmasking_temperature=1e-4,
    )
    hot = run(
        fixed_logits_fn(logits),
        num_samples=200,
        length=length,
        num_steps=steps,
        unmasking="confidence",
        unmasking_temperature=1e4,
    )
    np.testing.assert_array_equal(np.asarray(cold.reveal_step), np.asarray(greedy.reveal_step))
    same_order = np.all(np.asarray(hot.reveal_step) == np.asarray(greedy.reveal_step)[0], axis=1)
    assert same_order.mean() < 0.1


# --- the nucleus against a sorting reference ----------------------------------------------

nucleus = jax.jit(_nucleus)  # top_p traced: one program per vocabulary size


def nucleus_reference(probs, top_p):
    """The kept set by sorting, in float64 on the sampler's float32 probabilities."""
    p = np.asarray(probs, np.float64)
    descending = -np.sort(-p, axis=-1)
    before = np.cumsum(descending, axis=-1) - descending
    smallest_kept = np.where(before < top_p, descending, np.inf).min(axis=-1, keepdims=True)
    return p >= smallest_kept


def check_nucleus(logits, top_p):
    """``_nucleus``'s kept set against the reference, row by row; returns the rows that differ.

    A row may differ only where float32 rounding can move the cut: the mass above the cut tier,
    or that mass plus the tier's, within a float32 sum's error of ``top_p``. Every row keeps at
    least ``top_p`` and would not without its smallest kept tier (to the same error).
    """
    logits = np.asarray(logits, np.float32)
    out = np.asarray(nucleus(logits, np.float32(top_p)))
    probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    kept = out > -np.inf
    assert np.array_equal(out[kept], logits[kept])  # kept logits untouched
    # A -inf logit stays -inf, kept or not: compare the finite ones.
    reference = nucleus_reference(probs, top_p) & np.isfinite(logits)
    tol = 4 * logits.shape[-1] * 2.0**-24
    for row, mask in zip(probs, kept, strict=True):
        assert mask.any()
        tier = row == row[mask].min()
        assert row[mask].sum() >= top_p - tol
        assert row[mask & ~tier].sum() < top_p + tol
    differ = np.flatnonzero(np.any(kept != reference, axis=-1))
    for i in differ:
        cut = probs[i][reference[i]].min()
        above, through = probs[i][probs[i] > cut].sum(), probs[i][probs[i] >= cut].sum()
        assert min(abs(above - top_p), abs(through - top_p)) < tol, (i, above, through)
    return differ


@pytest.mark.parametrize("vocab", [50, 1000])
@pytest.mark.parametrize("top_p", [1e-6, 0.3, 0.7, 0.9, 0.99, 0.999])
def test_nucleus_matches_a_sorting_float64_reference(vocab, top_p):
    rng = np.random.default_rng(vocab)
    spread = rng.normal(size=(6, 32, vocab)) * np.array([0.3, 1, 3, 10, 1, 3])[:, None, None]
    spread[4:] = np.round(spread[4:])  # many ties, at the cut too
    logits = spread.reshape(-1, vocab)
    differ = check_nucleus(logits, top_p)
    # Only rounding at the cut may differ, and only near top_p = 1.
    assert len(differ) <= (0 if top_p < 0.99 else 2), differ


@pytest.mark.parametrize("top_p", [1e-6, 0.5, 0.59, 0.95, 0.999999])
def test_nucleus_edge_rows_match_exactly(top_p):
    vocab = 64
    rng = np.random.default_rng(7)
    rows = [
        np.zeros(vocab),  # uniform: one tie group, always kept whole
        np.where(np.arange(vocab) < 4, 2.0, 0.0),  # four-way tie on top
        np.r_[30.0, rng.normal(size=vocab - 1)],  # one token has all the mass
        np.r_[np.log(0.6), np.full(vocab - 1, np.log(0.4 / (vocab - 1)))],  # top reaches 0.6
        np.r_[rng.normal(size=vocab - 1), -np.inf],  # [MASK] removed
        np.r_[np.full(vocab - 2, -np.inf), 1.0, -np.inf],  # one finite logit
        np.r_[np.full(vocab - 1, -200.0), 0.0],  # the rest underflows to probability 0
        np.round(rng.normal(size=vocab) * 2),  # ties everywhere
    ]
    logits = np.stack(rows).astype(np.float32)
    assert len(check_nucleus(logits, top_p)) == 0
    out = np.asarray(nucleus(logits, np.float32(top_p)))
    assert np.all(np.isneginf(out[np.isneginf(logits)]))  # -inf stays -inf, never drawn
    assert np.isneginf(out[2, 1:]).all() and np.isneginf(out[6, :-1]).all()  # only the top
    assert np.all(np.isfinite(out[0])) and np.all(np.isfinite(out[1, :4]))  # whole tie groups


def test_nucleus_stops_where_the_mass_reaches_top_p_exactly():
    logits = np.array([[1.0, 1.0, 0.0, 0.0, -1.0]], np.float32)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1))
    reached = probs[0, 0] + probs[0, 1]  # exact in float32: twice a float32
    kept = np.isfinite(np.asarray(nucleus(logits, reached)))
    assert kept.tolist() == [[True, True, False, False, False]]
    more = np.nextafter(reached, np.float32(1))
    kept = np.isfinite(np.asarray(nucleus(logits, more)))
    assert kept.tolist() == [[True, True, True, True, False]]


def test_nucleus_of_a_row_without_a_number_keeps_nothing():
    out = np.asarray(nucleus(np.full((2, 5), -np.inf, np.float32), np.float32(0.9)))
    assert np.all(np.isneginf(out))


# --- distributions ------------------------------------------------------------------------

PROBS = np.array([0.5, 0.3, 0.15, 0.05])  # tokens 0..3; token 4 is [MASK]


def chi_square(counts, probs):
    expected = probs * counts.sum()
    return float(np.sum((counts - expected) ** 2 / expected))


@pytest.mark.parametrize(
    ("temperature", "top_p", "expected"),
    [
        (1.0, None, PROBS),
        (2.0, None, np.sqrt(PROBS) / np.sqrt(PROBS).sum()),
        # Mass before each token: 0, .5, .8, .95: the nucleus of 0.7 is tokens 0 and 1.
        (1.0, 0.7, np.array([0.625, 0.375, 0.0, 0.0])),
    ],
    ids=["t1", "t2", "t1-top-p"],
)
def test_token_frequencies_match_the_tempered_distribution(temperature, top_p, expected):
    logits = np.log(np.append(PROBS, 1.0)) + 7.0
    logits[4] += 20.0  # [MASK] is removed, however likely the network makes it
    out = run(
        fixed_logits_fn(logits),
        num_samples=4000,
        length=4,
        num_steps=2,
        mask_token_id=4,
        vocab_size=5,
        temperature=temperature,
        top_p=top_p,
    )
    counts = np.bincount(np.asarray(out.tokens).ravel(), minlength=5)
    assert counts[4] == 0
    kept = expected > 0
    assert np.all(counts[:4][~kept] == 0)
    assert chi_square(counts[:4][kept], expected[kept]) < CHI2_CRITICAL[int(kept.sum()) - 1]


def test_random_rule_reveals_a_uniformly_random_position():
    # reveal_schedule(4, 2) = [1, 3]: which position goes first is uniform over the four.
    out = run(fixed_logits_fn(np.zeros(V)), num_samples=4000, length=4, num_steps=2)
    reveal = np.asarray(out.reveal_step)
    assert np.all(np.sum(reveal == 0, axis=1) == 1)
    first = np.bincount(np.argmax(reveal == 0, axis=1), minlength=4)
    assert chi_square(first, np.full(4, 0.25)) < CHI2_CRITICAL[3]


# --- keys, jit, observers -----------------------------------------------------------------


def test_same_key_same_samples_other_key_other_samples():
    sampler = jax.jit(lambda key: run(fixed_logits_fn(np.zeros(V)), temperature=1.0, key=key))
    a, b, c = (sampler(jax.random.key(seed)) for seed in (7, 7, 8))
    np.testing.assert_array_equal(np.asarray(a.trajectory), np.asarray(b.trajectory))
    np.testing.assert_array_equal(np.asarray(a.reveal_step), np.asarray(b.reveal_step))
    assert np.any(np.asarray(a.tokens) != np.asarray(c.tokens))
    assert np.any(np.asarray(a.reveal_step) != np.asarray(c.reveal_step))


def test_jit_with_traced_key_and_prompt_matches_eager():
    params = neighbour_params(8, seed=2)
    logits_fn = lambda tokens, step: neighbour_logits(params, jnp)(tokens)
    options = {"unmasking": "entropy", "temperature": 0.7, "top_p": 0.9}
    prompt = jnp.array([3, 1, 4])
    eager = run(logits_fn, prompt=prompt, **options)
    jitted = jax.jit(lambda key, prompt: run(logits_fn, key=key, prompt=prompt, **options))(
        jax.random.key(0), prompt
    )
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_observe_sees_each_steps_aux_in_step_order():
    length, steps, size = 9, 5, 2

    def logits_fn(tokens, step):
        logits = jnp.zeros((*tokens.shape, V))
        return logits, {"masked": jnp.sum(tokens == MASK, axis=1), "step": step}

    def observe(step, aux, key):
        return {"masked": aux["masked"], "step": aux["step"], "draw": jax.random.uniform(key)}

    out = run(
        logits_fn,
        length=length,
        num_steps=steps,
        prompt=jnp.array([0, 0]),
        has_aux=True,
        observe=observe,
    )
    seen = jax.tree.map(np.asarray, out.observed)
    np.testing.assert_array_equal(seen["step"], np.arange(steps))
    remaining = (length - size) - np.concatenate([[0], np.cumsum(reveal_schedule(7, steps))[:-1]])
    np.testing.assert_array_equal(seen["masked"], np.broadcast_to(remaining[:, None], (steps, 3)))
    assert len(np.unique(seen["draw"])) == steps
    # Without has_aux the observer still runs every step, with aux None.
    plain = run(fixed_logits_fn(np.zeros(V)), observe=lambda step, aux, key: (aux is None) + step)
    np.testing.assert_array_equal(np.asarray(plain.observed), np.arange(4) + 1)


# --- bad values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": True}, "num_samples"),
        ({"length": 0}, "length"),
        ({"num_steps": 0}, "num_steps"),
        ({"num_steps": 2.5}, "num_steps"),
        ({"vocab_size": 1, "mask_token_id": 0}, "vocab_size"),
        ({"mask_token_id": V}, "mask_token_id"),
        ({"mask_token_id": -1}, "mask_token_id"),
        ({"unmasking": "maskgit_plus"}, "unmasking"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"unmasking_temperature": -0.1}, "unmasking_temperature"),
        ({"eps": 0.0}, "eps"),
        ({"prompt": jnp.ones(8, jnp.int32)}, "prompt length"),
        ({"prompt": jnp.array([1, V])}, "prompt ids"),
        ({"prompt": jnp.array([1, -1])}, "prompt ids"),
        ({"prompt": jnp.array([1, MASK])}, "mask_token_id"),
        ({"prompt": jnp.array([1.0])}, "prompt"),
        ({"prompt": jnp.ones((2, 3), jnp.int32)}, "num_samples"),
        ({"observe": 3}, "observe"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_values_raise_naming_them(overrides, name):
    with pytest.raises(ValueError, match=name):
        run(fixed_logits_fn(np.zeros(V)), **overrides)


def test_logits_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"logits_fn must return logits \[N, L, V\]"):
        run(fixed_logits_fn(np.zeros(V + 1)))
