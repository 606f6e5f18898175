"""Markov smoothness metrics vs a float64 loop reference, hand-worked cases and properties."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from thermojax import MarkovMetrics, markov_metrics


def ref_chain(scales, zero_points, qmax, threshold):
    """ArrowQuant V2's per-chain loop, in float64, zero-point jump over qmax."""
    g = len(scales)
    scale_jumps, zp_jumps, scores, violations, severity = [], [], [], [], []
    for i in range(g - 1):
        sj = abs(scales[i + 1] - scales[i]) / scales[i]
        zj = abs(zero_points[i + 1] - zero_points[i]) / qmax
        scale_jumps.append(sj)
        zp_jumps.append(zj)
        scores.append(1 - min(1.0, (sj + zj) / 2))
        violated = sj > threshold
        violations.append(violated)
        severity.append(0 if not violated else 3 if sj > 0.5 else 2 if sj > 0.3 else 1)
    total = sum(scale_jumps) + sum(zp_jumps)
    smooth = 1.0 if g < 2 else 1 - min(1.0, total / (2 * (g - 1)))
    return scale_jumps, zp_jumps, scores, smooth, violations, severity


def test_worked_case_by_hand():
    # scale jumps: |1.5-1|/1 = .5, 0, |0.3-1.5|/1.5 = .8; zero-point jumps 0, 51/255 = .2, 0.
    # boundary scores 1 - (.5/2, .2/2, .8/2) = .75, .9, .6; smoothness 1 - 1.5/6 = .75.
    m = markov_metrics(
        jnp.array([1.0, 1.5, 1.5, 0.3]), jnp.array([0.0, 0.0, 51.0, 51.0]), qmax=255, threshold=0.3
    )
    np.testing.assert_allclose(m.scale_jumps, [0.5, 0.0, 0.8], rtol=1e-6)
    np.testing.assert_allclose(m.zero_point_jumps, [0.0, 0.2, 0.0], rtol=1e-6)
    np.testing.assert_allclose(m.boundary_scores, [0.75, 0.9, 0.6], rtol=1e-6)
    np.testing.assert_allclose(m.smoothness_score, 0.75, rtol=1e-6)
    assert m.violations.tolist() == [True, False, True]
    assert m.severity.tolist() == [2, 0, 3]  # 0.5 is not > 0.5: medium; 0.8: high
    assert int(m.violation_count) == 2
    strict = markov_metrics(jnp.array([1.0, 1.5, 1.5, 0.3]), jnp.zeros(4), qmax=255, threshold=0.5)
    assert strict.violations.tolist() == [False, False, True]
    assert strict.severity.tolist() == [0, 0, 3]


def test_low_severity_and_zero_point_normalised_by_qmax():
    # scale jump 0.2 > threshold 0.1: violated, low. At 2 bits a zero-point step of 1 is 1/3.
    m = markov_metrics(jnp.array([1.0, 1.2]), jnp.array([1.0, 2.0]), qmax=3, threshold=0.1)
    assert m.severity.tolist() == [1]
    np.testing.assert_allclose(m.zero_point_jumps, [1 / 3], rtol=1e-6)
    np.testing.assert_allclose(m.smoothness_score, 1 - (0.2 + 1 / 3) / 2, rtol=1e-6)


def test_total_jump_saturates_at_zero_score():
    m = markov_metrics(jnp.array([1.0, 10.0]), jnp.array([0.0, 255.0]), qmax=255, threshold=0.3)
    assert m.boundary_scores.tolist() == [0.0] and float(m.smoothness_score) == 0.0


@pytest.mark.parametrize("num_groups", [0, 1])
def test_fewer_than_two_groups_is_perfect_with_empty_boundaries(num_groups):
    m = markov_metrics(
        jnp.ones((5, num_groups)), jnp.zeros((5, num_groups)), qmax=255, threshold=jnp.ones(3)
    )
    assert m.smoothness_score.tolist() == [1.0] * 5
    assert m.scale_jumps.shape == (5, 0) and m.boundary_scores.shape == (5, 0)
    assert m.violations.shape == (3, 5, 0) and m.severity.shape == (3, 5, 0)


@pytest.mark.parametrize("lead", [(), (7,), (3, 4)], ids=["chain", "layers", "batch-layers"])
def test_matches_loop_reference_for_threshold_vector(lead):
    rng = np.random.default_rng(len(lead))
    g = 9
    scales = np.exp(rng.normal(0, 0.4, (*lead, g))).astype(np.float32)
    zps = rng.integers(0, 16, (*lead, g)).astype(np.float32)
    thresholds = np.array([0.05, 0.2, 0.3, 0.45, 0.7], np.float32)
    m = markov_metrics(scales, zps, qmax=15, threshold=thresholds)
    assert m.violations.shape == (5, *lead, g - 1) and m.severity.dtype == jnp.int32
    flat_s = scales.reshape(-1, g).astype(np.float64)
    flat_z = zps.reshape(-1, g).astype(np.float64)
    for k, thr in enumerate(thresholds):
        for row in range(flat_s.shape[0]):
            sj, zj, sc, smooth, viol, sev = ref_chain(flat_s[row], flat_z[row], 15, float(thr))
            idx = np.unravel_index(row, lead) if lead else ()
            np.testing.assert_allclose(m.scale_jumps[idx], sj, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(m.zero_point_jumps[idx], zj, rtol=1e-6)
            np.testing.assert_allclose(m.boundary_scores[idx], sc, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(m.smoothness_score[idx], smooth, rtol=1e-5)
            assert m.violations[(k, *idx)].tolist() == viol
            assert m.severity[(k, *idx)].tolist() == sev


def test_threshold_vector_equals_separate_calls_and_runs_under_jit():
    rng = np.random.default_rng(3)
    scales = jnp.asarray(np.exp(rng.normal(0, 0.5, (6, 12))), jnp.float32)
    zps = jnp.asarray(rng.integers(0, 256, (6, 12)), jnp.float32)
    thresholds = jnp.linspace(0.0, 1.0, 8)
    batched = jax.jit(lambda s, z, t: markov_metrics(s, z, qmax=255, threshold=t))(
        scales, zps, thresholds
    )
    assert isinstance(batched, MarkovMetrics)
    for k in range(8):
        single = markov_metrics(scales, zps, qmax=255, threshold=float(thresholds[k]))
        np.testing.assert_array_equal(batched.violations[k], single.violations)
        np.testing.assert_array_equal(batched.severity[k], single.severity)
        np.testing.assert_array_equal(batched.smoothness_score, single.smoothness_score)
    counts = np.asarray(batched.violation_count)
    assert np.all(np.diff(counts, axis=0) <= 0)  # a higher threshold never flags more


def test_non_positive_scale_gives_no_nan():
    m = markov_metrics(jnp.array([0.0, 1.0, 0.0]), jnp.zeros(3), qmax=255, threshold=0.3)
    for leaf in jax.tree_util.tree_leaves(m):
        assert not np.any(np.isnan(np.asarray(leaf, np.float64)))
    assert float(m.smoothness_score) == 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 4\)"):
        markov_metrics(jnp.ones((2, 3)), jnp.ones((2, 4)), qmax=255, threshold=0.3)
    with pytest.raises(ValueError, match="threshold"):
        markov_metrics(jnp.ones(3), jnp.ones(3), qmax=255, threshold=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="qmax=0"):
        markov_metrics(jnp.ones(3), jnp.ones(3), qmax=0, threshold=0.3)
    with pytest.raises(ValueError, match="scalar"):
        markov_metrics(jnp.ones(()), jnp.ones(()), qmax=255, threshold=0.3)


# A few fixed shapes so examples reuse compiled kernels; hypothesis varies the values.
positive_chains = hnp.arrays(
    np.float32,
    st.sampled_from([(1, 2), (3, 5), (4, 12)]),
    elements=st.floats(2**-10, 1024.0, width=32),
)


@given(scales=positive_chains, data=st.data())
@settings(max_examples=40, deadline=None)
def test_property_scores_in_unit_interval(scales, data):
    zps = data.draw(hnp.arrays(np.float32, scales.shape, elements=st.integers(0, 255).map(float)))
    m = markov_metrics(scales, zps, qmax=255, threshold=0.3)
    b = np.asarray(m.boundary_scores)
    s = np.asarray(m.smoothness_score)
    assert np.all((b >= 0) & (b <= 1)) and np.all((s >= 0) & (s <= 1))
    assert np.all(np.asarray(m.severity)[~np.asarray(m.violations)] == 0)
    assert np.all(np.asarray(m.severity)[np.asarray(m.violations)] >= 1)


@given(
    value=st.floats(2**-10, 1024.0, width=32),
    zp=st.integers(0, 255),
    groups=st.sampled_from([1, 2, 5, 16]),
    threshold=st.floats(0.0, 2.0),
)
@settings(max_examples=30, deadline=None)
def test_property_constant_chain_is_perfect(value, zp, groups, threshold):
    m = markov_metrics(
        jnp.full((groups,), value), jnp.full((groups,), float(zp)), qmax=255, threshold=threshold
    )
    assert float(m.smoothness_score) == 1.0
    assert np.all(np.asarray(m.boundary_scores) == 1.0)
    assert not np.any(np.asarray(m.violations))


@given(
    rel_jumps=st.sampled_from([1, 4, 12]).flatmap(
        lambda n: st.lists(st.floats(0.0, 3.0, width=32), min_size=n, max_size=n)
    ),
    zps=st.lists(st.integers(0, 15), min_size=13, max_size=13),
    boundary=st.integers(0, 11),
    extra=st.floats(0.0, 3.0, width=32),
)
@settings(max_examples=40, deadline=None)
def test_property_more_jump_never_scores_higher(rel_jumps, zps, boundary, extra):
    # s[i+1] = s[i] * (1 + r_i) makes scale_jump_i = r_i, so growing one r_k grows only jump k.
    r = np.asarray(rel_jumps, np.float64)
    k = boundary % len(r)
    bigger = r.copy()
    bigger[k] += extra
    zp = np.asarray(zps[: len(r) + 1], np.float32)

    def chain(jumps):
        return np.concatenate([[1.0], np.cumprod(1.0 + jumps)]).astype(np.float32)

    m0 = markov_metrics(chain(r), zp, qmax=15, threshold=0.3)
    m1 = markov_metrics(chain(bigger), zp, qmax=15, threshold=0.3)
    tol = 1e-5
    assert float(m1.smoothness_score) <= float(m0.smoothness_score) + tol
    assert float(m1.boundary_scores[k]) <= float(m0.boundary_scores[k]) + tol
    assert int(m1.severity[k]) >= int(m0.severity[k])
