"""Phase 3 transition optimization: loss terms against a float64 numpy reference, and its guarantees."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermojax.core.transition import optimize_transitions, transition_terms


def make_problem(seed=0, layers=3, timesteps=40, samples=16, groups=4, bits=4, widen=1.0):
    """Activations whose spread grows with t, and min/max group params (optionally widened)."""
    rng = np.random.default_rng(seed)
    amp = np.exp(np.linspace(0, 1.5, timesteps))[None, :, None] * rng.uniform(
        0.5, 2, (layers, 1, 1)
    )
    x = (rng.normal(size=(layers, timesteps, samples)) + 0.4) * amp
    edges = np.arange(groups + 1) * timesteps // groups
    qmax = 2**bits - 1
    lo = np.stack([x[:, a:b].min(axis=(1, 2)) for a, b in itertools.pairwise(edges)], 1)
    hi = np.stack([x[:, a:b].max(axis=(1, 2)) for a, b in itertools.pairwise(edges)], 1)
    lo, hi = np.minimum(lo, 0) * widen, np.maximum(hi, 0) * widen
    scales = (hi - lo) / qmax
    zps = np.clip(np.round(-lo / scales), 0, qmax)
    return x.astype(np.float32), scales.astype(np.float32), zps.astype(np.float32), edges


def ref_terms(x, scales, zps, edges, qmax):
    """float64 reference of one layer's (mse, markov, kl, entropy) per the module docstring."""
    x = np.asarray(x, np.float64)
    scales = np.asarray(scales, np.float64)
    zps = np.clip(np.round(np.asarray(zps, np.float64)), 0, qmax)
    groups = np.searchsorted(edges, np.arange(x.shape[0]), side="right") - 1
    s, z = scales[groups][:, None], zps[groups][:, None]
    approx = (np.clip(np.round(x / s) + z, 0, qmax) - z) * s
    mse = np.mean((x - approx) ** 2)
    markov = (
        np.mean(np.diff(np.log(scales)) ** 2 + (np.diff(zps) / qmax) ** 2) if len(scales) > 1 else 0
    )
    floor = 1e-6 * np.mean(x**2)
    var_x, var_q = x.var(axis=1) + floor, approx.var(axis=1) + floor
    mean_gap = x.mean(axis=1) - approx.mean(axis=1)
    kl = np.mean(0.5 * (np.log(var_q / var_x) + (var_x + mean_gap**2) / var_q - 1))
    top = math.log(qmax + 1)
    entropy = np.mean(np.minimum(0.5 * np.log(2 * np.pi * np.e * var_x / s[:, 0] ** 2), top)) / top
    return mse, markov, kl, entropy


@pytest.mark.parametrize("groups", [1, 4, 40], ids=["one-group", "groups", "per-timestep"])
def test_loss_terms_match_reference(groups):
    x, scales, zps, edges = make_problem(groups=groups, widen=1.3)
    weights = {"markov_weight": 0.7, "kl_weight": 0.3, "entropy_weight": 0.2}
    result = optimize_transitions(
        x, scales, zps, edges, bits=4, learning_rate=0.01, max_iterations=5, **weights
    )
    for layer in range(x.shape[0]):
        mse, markov, kl, entropy = ref_terms(x[layer], scales[layer], zps[layer], edges, 15)
        expected = 1 + 0.7 * markov + 0.3 * kl - 0.2 * entropy
        np.testing.assert_allclose(result.quant_error_before[layer], mse, rtol=1e-5)
        np.testing.assert_allclose(
            result.markov_penalty_before[layer], markov, rtol=1e-5, atol=1e-7
        )
        np.testing.assert_allclose(result.initial_loss[layer], expected, rtol=1e-5)
        # The reported error after is the true error of the returned parameters.
        mse_after, markov_after, _, _ = ref_terms(
            x[layer], result.scales[layer], result.zero_points[layer], edges, 15
        )
        np.testing.assert_allclose(result.quant_error_after[layer], mse_after, rtol=1e-5)
        np.testing.assert_allclose(
            result.markov_penalty_after[layer], markov_after, rtol=1e-5, atol=1e-7
        )


def ref_gradients(x, scales, zps, edges, qmax, markov_weight):
    """float64 straight-through gradients of mse + markov_weight * markov wrt (scales, zero points).

    Rounding passes gradients unchanged, clipping blocks them outside [0, qmax]:
    inside the code range d x_hat / d s = round(x / s) - x / s and d x_hat / d z = 0; clipped,
    d x_hat / d s = q - z and d x_hat / d z = -s.
    """
    x = np.asarray(x, np.float64)
    scales = np.asarray(scales, np.float64)
    z = np.clip(np.round(np.asarray(zps, np.float64)), 0, qmax)
    sizes = np.diff(edges)
    s_t, z_t = np.repeat(scales, sizes)[:, None], np.repeat(z, sizes)[:, None]
    u = x / s_t
    codes = np.round(u) + z_t
    inside = (codes >= 0) & (codes <= qmax)
    q = np.clip(codes, 0, qmax)
    err = x - (q - z_t) * s_t
    d_approx = -2 * err / err.size
    d_s = np.add.reduceat(
        (d_approx * np.where(inside, np.round(u) - u, q - z_t)).sum(1), edges[:-1]
    )
    d_z = np.add.reduceat((d_approx * np.where(inside, 0.0, -s_t)).sum(1), edges[:-1])
    if len(scales) > 1:
        k = 2 * markov_weight / (len(scales) - 1)
        d_log, d_zp = np.diff(np.log(scales)), np.diff(z) / qmax
        d_s += k * (np.r_[0, d_log] - np.r_[d_log, 0]) / scales
        d_z += k * (np.r_[0, d_zp] - np.r_[d_zp, 0]) / qmax
    return d_s, d_z


@pytest.mark.parametrize("groups", [4, 40], ids=["groups", "per-timestep"])
def test_straight_through_gradients_match_reference(groups):
    # Zero points strictly inside (0, qmax) and widened ranges: some codes clip, none sit at a tie.
    x, scales, zps, edges = make_problem(seed=8, groups=groups, widen=0.8)
    zps = np.clip(zps, 1, 14) + 0.2

    def objective(s, z):
        terms = transition_terms(x, s, z, edges, bits=4)
        return jnp.sum(terms.mse) + 0.5 * jnp.sum(terms.markov)

    grad_s, grad_z = jax.grad(objective, argnums=(0, 1))(jnp.asarray(scales), jnp.asarray(zps))
    for layer in range(x.shape[0]):
        d_s, d_z = ref_gradients(x[layer], scales[layer], zps[layer], edges, 15, 0.5)
        np.testing.assert_allclose(grad_s[layer], d_s, rtol=2e-4, atol=1e-7 * np.abs(d_s).max())
        np.testing.assert_allclose(grad_z[layer], d_z, rtol=2e-4, atol=1e-7 * np.abs(d_z).max())
    assert np.any(np.asarray(grad_z) != 0)  # clipping really happened


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("widen", [1.0, 2.0], ids=["minmax-start", "poor-start"])
def test_zero_weight_never_increases_quantization_error(bits, widen):
    x, scales, zps, edges = make_problem(seed=bits, bits=bits, widen=widen)
    result = optimize_transitions(
        x, scales, zps, edges, bits=bits, markov_weight=0.0, learning_rate=0.02, max_iterations=150
    )
    after, before = np.asarray(result.quant_error_after), np.asarray(result.quant_error_before)
    assert np.all(after <= before)
    if widen > 1:  # a badly widened range leaves a lot to gain
        assert np.all(after < 0.8 * before)
    zp = np.asarray(result.zero_points)
    assert np.all(zp == np.round(zp)) and zp.min() >= 0 and zp.max() <= 2**bits - 1
    assert np.all(np.asarray(result.scales) > 0)


@pytest.mark.parametrize("groups", [4, 40], ids=["groups", "per-timestep"])
def test_large_markov_weight_drives_jumps_to_zero(groups):
    x, scales, zps, edges = make_problem(seed=3, groups=groups)
    result = optimize_transitions(
        x, scales, zps, edges, bits=4, markov_weight=1e4, learning_rate=0.05, max_iterations=400
    )
    before, after = (
        np.asarray(result.markov_penalty_before),
        np.asarray(result.markov_penalty_after),
    )
    assert np.all(before > 1e-3)
    assert np.all(after < 0.02 * before)
    log_jumps = np.abs(np.diff(np.log(np.asarray(result.scales)), axis=1))
    assert log_jumps.max() < 0.05


def test_history_iterations_and_convergence_are_consistent():
    x, scales, zps, edges = make_problem(seed=4, layers=4)
    result = optimize_transitions(
        x,
        scales,
        zps,
        edges,
        bits=4,
        markov_weight=0.5,
        learning_rate=0.01,
        max_iterations=300,
        convergence_threshold=1e-3,
        patience=10,
    )
    history = np.asarray(result.loss_history)
    for layer, steps in enumerate(np.asarray(result.iterations)):
        assert 1 <= steps <= 300
        assert np.all(np.isfinite(history[layer, :steps]))
        assert np.all(np.isnan(history[layer, steps:]))
        assert history[layer, 0] == result.initial_loss[layer]
        assert result.final_loss[layer] == np.nanmin(history[layer])
        # Stopped exactly when the best loss first gained < 1e-3 over 10 steps.
        gains = [
            history[layer, : i - 9].min() - history[layer, : i + 1].min() for i in range(10, steps)
        ]
        assert all(g >= 1e-3 for g in gains[:-1])
        if result.converged[layer]:
            assert gains[-1] < 1e-3
        else:
            assert steps == 300
    assert np.any(np.asarray(result.converged))
    never = optimize_transitions(
        x,
        scales,
        zps,
        edges,
        bits=4,
        markov_weight=0.5,
        max_iterations=40,
        convergence_threshold=0.0,
    )
    assert np.all(np.asarray(never.iterations) == 40) and not np.any(np.asarray(never.converged))


def test_layers_are_optimized_independently():
    x, scales, zps, edges = make_problem(seed=5, layers=3)
    kwargs = {"bits": 4, "markov_weight": 0.3, "learning_rate": 0.02, "max_iterations": 60}
    together = optimize_transitions(x, scales, zps, edges, **kwargs)
    alone = optimize_transitions(x[1:2] * 100, scales[1:2] * 100, zps[1:2], edges, **kwargs)
    # Scaling one layer's activations by 100 scales its optimal scales by 100 and nothing else:
    # the loss is scale-free and clipping/convergence are per layer.
    np.testing.assert_allclose(alone.scales[0], together.scales[1] * 100, rtol=1e-3)
    np.testing.assert_array_equal(alone.zero_points[0], together.zero_points[1])
    assert alone.iterations[0] == together.iterations[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"markov_weight": -1.0}, "markov_weight=-1.0"),
        ({"kl_weight": -0.5}, "kl_weight=-0.5"),
        ({"entropy_weight": float("nan")}, "entropy_weight=nan"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"grad_clip": -1.0}, "grad_clip=-1.0"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"patience": 0}, "patience=0"),
        ({"bits": 1}, "bits=1"),
    ],
)
def test_rejects_bad_options(kwargs, message):
    x, scales, zps, edges = make_problem(layers=1, timesteps=8, samples=4, groups=2)
    options = {"bits": 4, "markov_weight": 0.1, **kwargs}
    with pytest.raises(ValueError, match=message):
        optimize_transitions(x, scales, zps, edges, **options)


def test_rejects_bad_shapes_edges_and_scales():
    x, scales, zps, edges = make_problem(layers=2, timesteps=8, samples=4, groups=2)
    with pytest.raises(ValueError, match="edges"):
        optimize_transitions(x, scales, zps, np.array([0, 4, 9]), bits=4, markov_weight=0.1)
    with pytest.raises(ValueError, match="scales"):
        optimize_transitions(x, scales[:1], zps[:1], edges, bits=4, markov_weight=0.1)
    with pytest.raises(ValueError, match="scales must be finite and > 0"):
        optimize_transitions(x, scales * 0, zps, edges, bits=4, markov_weight=0.1)
