"""Weight quantizers (minmax, mse_clip, hqq, gptq) against float64 numpy references."""

from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import weight_quant_reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st

import thermojax
import thermojax.core.weight_quant as weight_quant_module
from thermojax import (
    WEIGHT_METHODS,
    GptqOptions,
    HqqOptions,
    MseClipOptions,
    dequantize,
    quantize,
    quantize_weight,
)
from thermojax.core.quant import _unpack
from thermojax.core.weight_quant import _hqq_float_zero_error


def codes_of(q) -> np.ndarray:
    packed = q.codes.reshape(*q.shape[:-1], q.num_groups, -1)
    return np.asarray(_unpack(packed, q.bits)).reshape(q.shape).astype(np.int64)


def group_errors(w: np.ndarray, q, group_size: int) -> np.ndarray:
    """Squared reconstruction error per group, float64."""
    d = np.asarray(dequantize(q), np.float64) - np.asarray(w, np.float64)
    return (d * d).reshape(*d.shape[:-1], -1, group_size).sum(-1)


def correlated_layer(rows: int, cols: int, seed: int, samples: int = 256):
    """Weights and the Hessian sum x x^T of correlated inputs (a random mixing of normals)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    mix = np.eye(cols) + 0.4 * rng.standard_normal((cols, cols))
    x = rng.standard_normal((samples, cols)) @ mix * rng.uniform(0.2, 2.0, cols)
    return w, (x.T @ x).astype(np.float32)


def layer(seed: int) -> np.ndarray:
    """The 16 x 128 weights most tests share (groups of 32), so they share compiled programs."""
    return np.random.default_rng(seed).standard_normal((16, 128)).astype(np.float32)


# ---------------------------------------------------------------------------------- gptq

# (group, block): groups inside blocks, groups spanning blocks, and a block that is neither
# (rounded down to the group without act_order; padded with decoupled columns with it).
GPTQ_LAYOUTS = [(16, 32), (32, 8), (16, 24)]
GPTQ_CASES = [
    pytest.param(
        bits,
        group_size,
        block_size,
        act_order,
        id=f"int{bits}-g{group_size}-b{block_size}-{'act_order' if act_order else 'natural'}",
        # The first layout at every width is fast, the rest slow (each case compiles a kernel).
        marks=[] if (group_size, block_size) == GPTQ_LAYOUTS[0] else pytest.mark.slow,
    )
    for bits in (2, 4, 8)
    for group_size, block_size in GPTQ_LAYOUTS
    for act_order in (False, True)
]


def gptq_layer(seed: int):
    """The 16 x 64 layer of the GPTQ tests and its Hessian, with a dead input channel (5)."""
    w, h = correlated_layer(16, 64, seed=seed)
    h[:, 5] = h[5, :] = 0.0
    return w, h


def gptq(w, h, bits, group_size=16, block_size=32, act_order=False):
    options = GptqOptions(block_size=block_size, act_order=act_order)
    return quantize_weight(
        jnp.asarray(w), method="gptq", bits=bits, group_size=group_size, hessian=h, options=options
    )


@pytest.mark.parametrize(("bits", "group_size", "block_size", "act_order"), GPTQ_CASES)
def test_gptq_matches_unblocked_float64_reference(bits, group_size, block_size, act_order):
    w, h = gptq_layer(seed=bits + group_size)
    q = gptq(w, h, bits, group_size, block_size, act_order)
    codes, scale, zero = ref.gptq(w, h, bits=bits, group_size=group_size, act_order=act_order)
    ours = codes_of(q)
    # The kernel runs in float32 and multiplies by 1/scale; a code can flip only where a value
    # lands within float32 rounding of a .5 tie, and a flip changes that row's error feedback from
    # there on, so a small share is tolerated; these inputs match exactly (0 of 1024).
    same = ours == codes
    assert np.mean(same) >= 0.99
    np.testing.assert_allclose(np.asarray(q.scale), scale, rtol=1e-5)
    assert np.mean(np.asarray(q.zero_point) == zero) >= 0.99
    deq = np.asarray(dequantize(q), np.float64)
    expected = ref.dequantize(codes, scale, zero, group_size)
    # Where the codes agree, the values differ by the float32 scale's rounding, |codes - zero|
    # steps of it.
    tolerance = 2e-6 * (np.abs(expected) + np.repeat(scale, group_size, axis=-1))
    assert np.all(np.abs(deq - expected)[same] <= tolerance[same])
    assert np.all(deq[:, 5] == 0.0)  # dead columns are zero weights, as in GPTQ


@pytest.mark.parametrize("act_order", [False, True], ids=["natural", "act_order"])
@pytest.mark.parametrize("bits", [2, 4, 8], ids=lambda b: f"int{b}")
def test_gptq_proxy_loss_below_minmax(bits, act_order):
    w, h = gptq_layer(seed=7)
    q = gptq(w, h, bits, act_order=act_order)
    rtn = dequantize(quantize(jnp.asarray(w), bits=bits, group_size=16))
    assert ref.proxy_loss(w, dequantize(q), h) < 0.8 * ref.proxy_loss(w, rtn, h)


def test_gptq_result_does_not_depend_on_block_size():
    w, h = gptq_layer(seed=3)
    first = codes_of(gptq(w, h, 4, block_size=32))
    for block_size in (8,):  # groups spanning blocks instead of blocks holding groups
        assert np.mean(codes_of(gptq(w, h, 4, block_size=block_size)) == first) >= 0.99


def test_gptq_zero_hessian_and_dead_columns_stay_finite():
    w, _ = gptq_layer(seed=0)
    q = gptq(w, np.zeros((64, 64), np.float32), 4)
    # Every input is dead: all weights are zero, exactly representable, nothing is NaN.
    assert np.all(np.asarray(dequantize(q)) == 0.0)
    assert np.all(np.isfinite(np.asarray(q.scale))) and np.all(np.asarray(q.scale) > 0)


def test_gptq_hessian_not_positive_definite_falls_back_to_rounding():
    # Positive diagonal but indefinite even after damping: the factorization fails, GPTQ's group
    # parameters with plain rounding remain, which is min-max quantization.
    w, _ = gptq_layer(seed=1)
    h = np.full((64, 64), 2.0, np.float32)
    np.fill_diagonal(h, 1.0)
    expected = dequantize(quantize(jnp.asarray(w), bits=4, group_size=16))
    np.testing.assert_array_equal(np.asarray(dequantize(gptq(w, h, 4))), np.asarray(expected))


# ------------------------------------------------------------------------------ mse_clip


@pytest.mark.parametrize(
    ("bits", "symmetric", "norm"),
    [(b, sym, 2.0) for b in (2, 4, 8) for sym in (False, True)] + [(4, False, 1.5)],
    ids=lambda v: {False: "affine", True: "symmetric"}.get(v, f"{v}"),
)
def test_mse_clip_matches_brute_force(bits, symmetric, norm):
    rng = np.random.default_rng(bits)
    # Heavy tails, where clipping pays, and a shifted row whose groups do not straddle zero.
    w = rng.standard_t(3, size=(12, 256)).astype(np.float32)
    w[3] += 4.0
    options = MseClipOptions(grid_size=24, min_shrink=0.4, norm=norm)
    q = quantize_weight(
        jnp.asarray(w), method="mse_clip", bits=bits, group_size=32, symmetric=symmetric,
        options=options,
    )  # fmt: skip
    errors, best = ref.mse_clip(
        w, bits=bits, group_size=32, factors=options.factors, symmetric=symmetric, norm=norm
    )
    scale_mm, zero_mm = ref.group_params(w.reshape(12, -1, 32), bits, symmetric)
    chosen = np.abs(np.asarray(q.scale)[..., None] / scale_mm[..., None] - options.factors)
    chosen = chosen.argmin(-1)
    np.testing.assert_array_equal(np.asarray(q.zero_point), zero_mm)
    # Same factor except where two candidates' errors agree to float32 rounding; there the
    # chosen one's float64 error is the minimum to 1e-5.
    assert np.mean(chosen == best) >= 0.97
    picked = np.take_along_axis(errors, chosen[..., None], -1)[..., 0]
    np.testing.assert_allclose(picked, errors.min(-1), rtol=1e-5, atol=1e-12)
    assert np.all(picked <= errors[..., 0] * (1 + 1e-5) + 1e-12)  # factor 1 = minmax
    if bits < 8:
        assert np.mean(best > 0) > 0.2  # the test data does make clipping pay


def test_mse_clip_with_one_factor_is_minmax():
    w = jnp.asarray(layer(seed=2))
    q = quantize_weight(
        w, method="mse_clip", bits=4, group_size=32, options=MseClipOptions(grid_size=1)
    )
    expected = quantize(w, bits=4, group_size=32)
    for a, b in zip(jax.tree.leaves(q), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------------------------- hqq


@pytest.mark.parametrize(
    "bits",
    [pytest.param(2, marks=pytest.mark.slow), 4, pytest.param(8, marks=pytest.mark.slow)],
    ids=lambda b: f"int{b}",
)
def test_hqq_beats_minmax_and_costs_little_for_an_integer_zero_point(bits):
    w = layer(seed=bits)
    total = {}
    for method in ("minmax", "mse_clip", "hqq"):
        q = quantize_weight(jnp.asarray(w), method=method, bits=bits, group_size=32)
        total[method] = group_errors(w, q, 32).sum()
    float_zero = _hqq_float_zero_error(
        jnp.asarray(w), bits=bits, group_size=32, symmetric=False, options=HqqOptions()
    )
    assert total["mse_clip"] <= total["minmax"]
    assert total["hqq"] < 0.95 * total["minmax"]
    # HQQ proper keeps a float zero point, a sub-step shift of the grid; the integer zero point
    # the packed format stores loses that, and the scale search wins most of it back (the figures
    # are in the benchmark, groups of 64: 1-2% at 4 bits; groups of 32 here give the float zero
    # point more to win; at 2 bits the least-squares scale wins outright).
    assert total["hqq"] < 1.06 * float(np.sum(float_zero))


@pytest.mark.parametrize(
    ("options", "symmetric"),
    [
        (HqqOptions(optimize_scale=True), False),
        pytest.param(
            HqqOptions(early_stop=False, iters=5, lp_norm=1.0), True, marks=pytest.mark.slow
        ),
        pytest.param(HqqOptions(scale_search=1, refit_steps=0), False, marks=pytest.mark.slow),
    ],
    ids=["optimize-scale", "l1-no-early-stop-symmetric", "no-search"],
)
def test_hqq_variants_never_worse_than_minmax(options, symmetric):
    w = layer(seed=5) * 0.05
    q = quantize_weight(
        jnp.asarray(w), method="hqq", bits=4, group_size=32, symmetric=symmetric, options=options
    )
    baseline = quantize(jnp.asarray(w), bits=4, group_size=32, symmetric=symmetric)
    ours, theirs = group_errors(w, q, 32), group_errors(w, baseline, 32)
    assert np.all(ours <= theirs * (1 + 1e-5) + 1e-20)
    if options.scale_search > 1:  # the scale search is what wins with an integer zero point
        assert np.sum(ours) < 0.98 * np.sum(theirs)
    if symmetric:
        assert np.all(np.asarray(q.zero_point) == 8)


# ------------------------------------------------------------------------- all the methods


@pytest.mark.slow
@given(
    shape=st.sampled_from([(16, 128), (2, 3, 64)]),
    bits=st.sampled_from([2, 4, 8]),
    method=st.sampled_from(["mse_clip", "hqq"]),
    spread=st.sampled_from([1e-3, 1.0, 300.0]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_property_never_worse_than_minmax(shape, bits, method, spread, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape) * spread + rng.choice([-2.0, 0.0, 1.0]) * spread
    w = w.astype(np.float32)
    q = quantize_weight(jnp.asarray(w), method=method, bits=bits, group_size=32)
    baseline = quantize(jnp.asarray(w), bits=bits, group_size=32)
    ours, theirs = group_errors(w, q, 32), group_errors(w, baseline, 32)
    assert np.all(ours <= theirs * (1 + 1e-5) + 1e-30)


@pytest.mark.parametrize("bits", [2, 4, 8], ids=lambda b: f"int{b}")
@pytest.mark.parametrize("method", ["mse_clip", "hqq"])
def test_never_worse_than_minmax_group_by_group(method, bits):
    rng = np.random.default_rng(bits)
    # Rows of very different scales and offsets: groups straddling zero, all positive, tiny.
    w = layer(seed=bits) * np.logspace(-3, 2, 16)[:, None] + rng.choice([-2.0, 0.0, 3.0], (16, 1))
    q = quantize_weight(jnp.asarray(w), method=method, bits=bits, group_size=32)
    baseline = quantize(jnp.asarray(w), bits=bits, group_size=32)
    ours, theirs = group_errors(w, q, 32), group_errors(w, baseline, 32)
    assert np.all(ours <= theirs * (1 + 1e-5) + 1e-30)


def all_methods(w, h, bits=4, group_size=32, symmetric=False):
    return {
        method: quantize_weight(
            w, method=method, bits=bits, group_size=group_size, symmetric=symmetric, hessian=h
        )
        for method in WEIGHT_METHODS
    }


@pytest.mark.parametrize(
    "symmetric", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["affine", "symmetric"]
)
def test_every_method_gives_a_valid_qtensor(symmetric):
    w, h = correlated_layer(16, 128, seed=11)
    w[0] = 0.0  # all-zero groups
    w[1] = 3.5  # constant groups
    w[2, :32] = 1e30  # huge values
    w[3] *= 1e-30  # tiny ones
    for method, q in all_methods(jnp.asarray(w), h, symmetric=symmetric).items():
        assert q.shape == w.shape and q.bits == 4 and q.group_size == 32, method
        assert q.codes.dtype == jnp.uint8 and q.codes.shape == (16, 64), method
        assert q.zero_point.dtype == jnp.uint8 and q.scale.dtype == jnp.float32, method
        zero = np.asarray(q.zero_point)
        assert zero.min() >= 0 and zero.max() <= 15, method
        scale = np.asarray(q.scale)
        assert np.all(np.isfinite(scale)) and np.all(scale > 0), method
        deq = np.asarray(dequantize(q))
        assert np.all(np.isfinite(deq)), method
        assert np.all(deq[0] == 0.0), method
        if method != "gptq":  # gptq trades the constant row's error for the layer's output
            np.testing.assert_allclose(deq[1], 3.5, rtol=0.07)


def test_every_method_is_deterministic():
    w, h = correlated_layer(16, 128, seed=4)
    first = all_methods(jnp.asarray(w), h)
    second = all_methods(jnp.asarray(w), h)
    for method in WEIGHT_METHODS:
        leaves = zip(jax.tree.leaves(first[method]), jax.tree.leaves(second[method]), strict=True)
        for a, b in leaves:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_minmax_is_quantize():
    w = jnp.asarray(layer(seed=0))
    q = quantize_weight(w, bits=2, group_size=32, symmetric=True)
    expected = quantize(w, bits=2, group_size=32, symmetric=True)
    assert q.symmetric and q.shape == expected.shape
    for a, b in zip(jax.tree.leaves(q), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_works_inside_a_callers_jit():
    w, h = gptq_layer(seed=9)

    @jax.jit
    def both(w, h):
        return (
            quantize_weight(w, method="mse_clip", bits=4, group_size=16),
            quantize_weight(w, method="gptq", bits=4, group_size=16, hessian=h),
        )

    clipped, gptq_q = both(jnp.asarray(w), jnp.asarray(h))
    eager = quantize_weight(jnp.asarray(w), method="gptq", bits=4, group_size=16, hessian=h)
    np.testing.assert_array_equal(np.asarray(gptq_q.codes), np.asarray(eager.codes))
    assert isinstance(clipped, thermojax.QTensor)


def test_public_names_are_exported():
    assert thermojax.WEIGHT_METHODS == ("minmax", "mse_clip", "hqq", "gptq")
    for name in ("quantize_weight", "MseClipOptions", "HqqOptions", "GptqOptions"):
        assert name in thermojax.__all__ and hasattr(thermojax, name)
    # Options are static jit arguments: frozen and hashable.
    assert hash(HqqOptions()) == hash(HqqOptions())


def test_module_example_runs():
    failures, tried = doctest.testmod(weight_quant_module, verbose=False)
    assert tried > 0 and failures == 0


W = jnp.ones((4, 64))
H = jnp.eye(64)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "awq"}, r"method must be one of \('minmax', 'mse_clip', 'hqq', 'gptq'\).*'awq'"),
        ({"method": "hqq", "bits": 3}, "bits=3"),
        ({"method": "mse_clip", "group_size": 48}, "group_size=48"),
        ({"method": "gptq"}, "hessian=None"),
        ({"method": "gptq", "hessian": jnp.eye(32)}, r"hessian must have shape \(64, 64\).*\(32, 32\)"),
        ({"method": "hqq", "options": MseClipOptions()}, "HqqOptions.*MseClipOptions"),
        ({"method": "minmax", "options": HqqOptions()}, "minmax.*no options"),
    ],
    ids=["method", "bits", "group", "no-hessian", "hessian-shape", "options-type", "minmax-options"],
)  # fmt: skip
def test_bad_arguments_raise_naming_the_value(kwargs, match):
    args = {"bits": 4, "group_size": 32, **kwargs}
    with pytest.raises(ValueError, match=match):
        quantize_weight(W, **args)


def test_gptq_needs_a_matrix():
    with pytest.raises(ValueError, match=r"\[out, in\].*\(2, 4, 64\)"):
        quantize_weight(jnp.ones((2, 4, 64)), method="gptq", bits=4, group_size=32, hessian=H)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: MseClipOptions(grid_size=0), "grid_size=0"),
        (lambda: MseClipOptions(min_shrink=0.0), "min_shrink=0.0"),
        (lambda: MseClipOptions(norm=-1), "norm=-1"),
        (lambda: HqqOptions(lp_norm=2.0), "lp_norm=2.0"),
        (lambda: HqqOptions(kappa=0.5), "kappa=0.5"),
        (lambda: HqqOptions(iters=0), "iters=0"),
        (lambda: HqqOptions(scale_span=1.0), "scale_span=1.0"),
        (lambda: HqqOptions(early_stop="yes"), "early_stop='yes'"),
        (lambda: GptqOptions(damp=-0.1), "damp=-0.1"),
        (lambda: GptqOptions(block_size=2.5), "block_size=2.5"),
        (lambda: GptqOptions(act_order=1), "act_order=1"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_options_raise_naming_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()
