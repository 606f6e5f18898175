"""Quantization kernels against an independent float64 numpy reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from weight_quant_reference import group_params

from thermojax import (
    QTensor,
    activation_params,
    cosine_similarity,
    dequantize,
    fake_quantize,
    fake_quantize_activations,
    fp32_bytes,
    mse,
    quantize,
    sqnr_db,
    storage_bytes,
)
from thermojax.core.quant import _pack, _unpack, pack_codes, unpack_codes

SHAPES = [(64,), (3, 128), (2, 3, 256), (5, 512)]
GROUP_SIZES = [32, 64, 128]


def ref_quantize(x: np.ndarray, bits: int, group_size: int, symmetric: bool):
    """float64 reference: (codes [..., n] int64, scale [..., g], zero_point [..., g])."""
    qmax = 2**bits - 1
    xg = x.astype(np.float64).reshape(*x.shape[:-1], -1, group_size)
    scale, zero_point = group_params(xg, bits, symmetric)
    zero_point = np.clip(zero_point, 0, qmax)
    codes = np.clip(np.round(xg / scale[..., None]) + zero_point[..., None], 0, qmax)
    return codes.reshape(x.shape).astype(np.int64), scale, zero_point


def np_unpack(packed: np.ndarray, bits: int, group_size: int) -> np.ndarray:
    """Reference unpack of the documented layout: planar lanes within each group.

    Byte b of a group holds the group's elements b + k * lane (lane = group_size // per_byte) in
    bits [k * bits, (k + 1) * bits).
    """
    per_byte = 8 // bits
    lane = group_size // per_byte
    grouped = packed.astype(np.int64).reshape(*packed.shape[:-1], -1, lane)
    lanes = [(grouped >> (k * bits)) & (2**bits - 1) for k in range(per_byte)]
    return np.concatenate(lanes, axis=-1).reshape(*packed.shape[:-1], -1)


def random_input(shape, seed):
    rng = np.random.default_rng(seed)
    # Mixed scales and signs so groups see all-negative, all-positive and straddling ranges.
    x = rng.standard_normal(shape) * rng.choice([0.01, 1.0, 30.0], size=shape[:-1] + (1,))
    return (x + rng.choice([-2.0, 0.0, 2.0], size=shape[:-1] + (1,))).astype(np.float32)


@pytest.mark.parametrize("symmetric", [False, True], ids=["affine", "symmetric"])
@pytest.mark.parametrize("bits", [2, 4, 8], ids=lambda b: f"int{b}")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_quantize_matches_float64_reference(shape, bits, symmetric):
    group_size = 32 if shape[-1] < 128 else 128
    x = random_input(shape, seed=bits * 7 + len(shape))
    q = quantize(jnp.asarray(x), bits=bits, group_size=group_size, symmetric=symmetric)
    ref_codes, ref_scale, ref_zp = ref_quantize(x, bits, group_size, symmetric)

    assert q.shape == shape and q.bits == bits and q.group_size == group_size
    np.testing.assert_allclose(np.asarray(q.scale), ref_scale, rtol=2e-6)
    assert q.zero_point.dtype == jnp.uint8
    zp_diff = np.abs(np.asarray(q.zero_point).astype(np.int64) - ref_zp)
    assert zp_diff.max() <= 1 and np.mean(zp_diff > 0) < 0.01
    codes = np_unpack(np.asarray(q.codes), bits, group_size)
    # float32 x * (1/scale) may land on the other side of a .5 tie than float64 x / scale.
    code_diff = np.abs(codes - ref_codes)
    assert code_diff.max() <= 1 and np.mean(code_diff > 0) < 1e-3


@pytest.mark.parametrize("symmetric", [False, True], ids=["affine", "symmetric"])
@pytest.mark.parametrize("bits", [2, 4, 8], ids=lambda b: f"int{b}")
@pytest.mark.parametrize("group_size", GROUP_SIZES)
def test_error_at_most_one_step(bits, group_size, symmetric):
    x = random_input((6, 384), seed=group_size + bits)
    q = quantize(jnp.asarray(x), bits=bits, group_size=group_size, symmetric=symmetric)
    err = np.abs(np.asarray(dequantize(q), np.float64) - x)
    step = np.repeat(np.asarray(q.scale, np.float64), group_size, axis=-1)
    assert np.all(err <= step * (1 + 1e-5))
    # Affine (range includes zero, rounded zero point) is within one step; interior values are
    # within half a step plus the zero-point rounding.
    assert np.mean(err) < np.mean(step)


@pytest.mark.parametrize("bits", [2, 4, 8], ids=lambda b: f"int{b}")
def test_codes_really_packed(bits):
    x = jnp.asarray(random_input((4, 256), seed=1))
    q = quantize(x, bits=bits, group_size=64)
    per_byte = 8 // bits
    assert q.codes.dtype == jnp.uint8
    assert q.codes.shape == (4, 256 // per_byte)
    assert q.codes.nbytes == 4 * 256 * bits // 8
    assert q.scale.shape == (4, 4) and q.scale.dtype == jnp.float32
    assert q.zero_point.shape == (4, 4)


@pytest.mark.parametrize("bits", [2, 4, 8], ids=lambda b: f"int{b}")
def test_pack_roundtrips_exactly(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2**bits, size=(3, 5, 64))
    packed = _pack(jnp.asarray(codes, jnp.float32), bits)
    assert packed.dtype == jnp.uint8 and packed.shape == (3, 5, 64 * bits // 8)
    np.testing.assert_array_equal(np_unpack(np.asarray(packed), bits, 64), codes)
    np.testing.assert_array_equal(np.asarray(_unpack(packed, bits)), codes)


def test_worked_case_int2_by_hand():
    # lo = -1, hi = 2: scale = 3 / 3 = 1, zero_point = 1, codes = round(x) + 1 with round-half-even,
    # so 0.5 -> 0 -> code 1. Packed little-endian: 0 | 1<<2 | 1<<4 | 3<<6 = 212.
    q = quantize(jnp.array([[-1.0, 0.0, 0.5, 2.0]]), bits=2, group_size=4)
    assert q.scale.tolist() == [[1.0]] and q.zero_point.tolist() == [[1]]
    assert q.codes.tolist() == [[212]]
    assert dequantize(q).tolist() == [[-1.0, 0.0, 0.0, 2.0]]


def test_worked_case_positive_group_by_hand():
    # lo widened to 0, hi = 6: scale = 2, zero_point = 0; x/scale = .5, 1, 1.5, 3 -> 0, 1, 2, 3.
    # Packed: 0 | 1<<2 | 2<<4 | 3<<6 = 228. Second group all negative: lo = -6, hi = 0, zp = 3.
    q = quantize(jnp.array([1.0, 2.0, 3.0, 6.0, -6.0, -4.0, -2.0, 0.0]), bits=2, group_size=4)
    assert q.scale.tolist() == [2.0, 2.0] and q.zero_point.tolist() == [0, 3]
    assert q.codes.tolist() == [228, 0 | 1 << 2 | 2 << 4 | 3 << 6]
    assert dequantize(q).tolist() == [0.0, 2.0, 4.0, 6.0, -6.0, -4.0, -2.0, 0.0]


def test_worked_case_planar_layout_by_hand():
    # lo = 0, hi = 3: scale 1, zero point 0, codes = x. With 8 codes in a group at 2 bits the
    # lane is 2 bytes: byte 0 holds elements 0, 2, 4, 6 and byte 1 holds elements 1, 3, 5, 7.
    q = quantize(jnp.array([0.0, 1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 0.0]), bits=2, group_size=8)
    assert q.codes.tolist() == [0 | 2 << 2 | 3 << 4 | 1 << 6, 1 | 3 << 2 | 2 << 4 | 0 << 6]
    assert dequantize(q).tolist() == [0.0, 1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 0.0]


def test_worked_case_symmetric_int4_by_hand():
    # absmax 7 -> scale 7 / 7 = 1, zero point 8: codes = round(x) + 8.
    q = quantize(jnp.array([-7.0, -1.0, 0.0, 3.0]), bits=4, group_size=4, symmetric=True)
    assert q.scale.tolist() == [1.0] and q.zero_point.tolist() == [8]
    assert np_unpack(np.asarray(q.codes), 4, 4).tolist() == [1, 7, 8, 11]


def test_zero_is_exact_and_constant_groups_are_finite():
    x = np.zeros((3, 64), np.float32)
    x[1] = 5.0  # constant non-zero group: range [0, 5]
    x[2, :32] = -3.0  # constant negative half, zero half
    for bits in (2, 4, 8):
        for symmetric in (False, True):
            q = quantize(jnp.asarray(x), bits=bits, group_size=32, symmetric=symmetric)
            d = np.asarray(dequantize(q))
            assert np.all(np.isfinite(d)) and np.all(np.asarray(q.scale) > 0)
            assert np.all(d[0] == 0.0) and np.all(d[2, 32:] == 0.0)
            np.testing.assert_allclose(d[1], 5.0, rtol=1e-6)
            np.testing.assert_allclose(d[2, :32], -3.0, rtol=1e-6)


def test_tiny_and_huge_ranges_stay_finite():
    # XLA:CPU flushes subnormals to zero: the tiny group gets scale 1 and reconstructs as zeros.
    # Near +-1e38 the range (hi - lo) would overflow float32 if computed before dividing by qmax.
    big = 1e38
    x = jnp.array([[1e-42, -1e-42, 0.0, 3e-43], [big, -big, 1.0, 0.0]], jnp.float32)
    for bits in (2, 4, 8):
        q = quantize(x, bits=bits, group_size=4)
        d = np.asarray(dequantize(q))
        assert np.all(np.isfinite(d))
        assert np.all(np.abs(d - np.asarray(x)) <= np.asarray(q.scale) * (1 + 1e-5))


@pytest.mark.parametrize("symmetric", [False, True], ids=["affine", "symmetric"])
@pytest.mark.parametrize("bits", [2, 4, 8], ids=lambda b: f"int{b}")
def test_fake_quantize_equals_dequantize_quantize(bits, symmetric):
    x = jnp.asarray(random_input((4, 192), seed=3))
    fq = fake_quantize(x, bits=bits, group_size=64, symmetric=symmetric)
    dq = dequantize(quantize(x, bits=bits, group_size=64, symmetric=symmetric))
    assert fq.dtype == jnp.float32
    # Same codes and params; separately compiled programs may round the scale product 1 ulp apart.
    np.testing.assert_allclose(np.asarray(fq), np.asarray(dq), rtol=1e-6, atol=0)


def test_qtensor_is_a_pytree_with_static_metadata():
    q = quantize(jnp.ones((2, 64)), bits=4, group_size=32)
    leaves, treedef = jax.tree_util.tree_flatten(q)
    assert len(leaves) == 3 and all(isinstance(leaf, jax.Array) for leaf in leaves)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert (rebuilt.shape, rebuilt.bits, rebuilt.group_size) == ((2, 64), 4, 32)
    other = quantize(jnp.ones((2, 64)), bits=2, group_size=32)
    assert jax.tree_util.tree_structure(other) != treedef  # bits live in the treedef


def test_works_inside_callers_jit_and_vmap():
    x = jnp.asarray(random_input((3, 2, 128), seed=5))

    @jax.jit
    def roundtrip(a):
        return dequantize(quantize(a, bits=4, group_size=64))

    direct = dequantize(quantize(x, bits=4, group_size=64))
    np.testing.assert_array_equal(np.asarray(roundtrip(x)), np.asarray(direct))
    vmapped = jax.vmap(roundtrip)(x)
    np.testing.assert_allclose(np.asarray(vmapped), np.asarray(direct), rtol=1e-6, atol=1e-7)
    q = jax.jit(lambda a: quantize(a, bits=2, group_size=64))(x)
    assert isinstance(q, QTensor) and q.codes.shape == (3, 2, 32)


def test_storage_bytes_counts_codes_and_params():
    q = quantize(jnp.ones((4, 256)), bits=2, group_size=64)
    # codes 4*256/4 = 256 B, scales 4*4 float32 = 64 B, zero points 4*4 uint8 = 16 B.
    assert storage_bytes(q) == 256 + 64 + 16
    assert fp32_bytes((4, 256)) == 4096
    assert storage_bytes(quantize(jnp.ones((4, 256)), bits=8, group_size=64)) == 1024 + 64 + 16


@pytest.mark.parametrize(
    ("bits", "match"),
    [(3, "bits=3"), (1, "bits=1"), (16, "bits=16"), (0, "bits=0"), (True, "bits=True")],
)
def test_bad_bits_raise(bits, match):
    with pytest.raises(ValueError, match=match):
        quantize(jnp.ones((2, 64)), bits=bits, group_size=32)
    with pytest.raises(ValueError, match=match):
        fake_quantize(jnp.ones((2, 64)), bits=bits, group_size=32)


def test_last_axis_not_multiple_of_group_size_names_both_numbers():
    with pytest.raises(ValueError, match=r"100.*group_size=64"):
        quantize(jnp.ones((3, 100)), bits=4, group_size=64)


@pytest.mark.parametrize(
    ("x", "group_size", "match"),
    [
        (jnp.ones(()), 4, "scalar"),
        (jnp.ones((2, 64)), 0, "group_size=0"),
        (jnp.ones((2, 64)), 2, "group_size=2 must be a multiple of 4"),
    ],
    ids=["scalar", "zero-group", "group-smaller-than-byte"],
)
def test_other_bad_inputs_raise(x, group_size, match):
    with pytest.raises(ValueError, match=match):
        quantize(x, bits=2, group_size=group_size)


@given(
    x=hnp.arrays(
        np.float32,
        # A few fixed shapes so examples reuse compiled kernels; hypothesis varies the values.
        st.sampled_from([(16,), (3, 16), (2, 2, 32)]),
        elements=st.floats(-1e6, 1e6, width=32),
    ),
    bits=st.sampled_from([2, 4, 8]),
    symmetric=st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_property_error_within_one_step(x, bits, symmetric):
    q = quantize(jnp.asarray(x), bits=bits, group_size=8, symmetric=symmetric)
    d = np.asarray(dequantize(q), np.float64)
    step = np.repeat(np.asarray(q.scale, np.float64), 8, axis=-1)
    assert np.all(np.isfinite(d))
    assert np.all(np.abs(d - x) <= step * (1 + 1e-5) + 1e-30)
    codes = np_unpack(np.asarray(q.codes), bits, 8)
    assert codes.min() >= 0 and codes.max() <= 2**bits - 1


def ref_activation_params(x_min, x_max, bits):
    qmax = 2**bits - 1
    lo = np.minimum(np.asarray(x_min, np.float64), 0.0)
    hi = np.maximum(np.asarray(x_max, np.float64), 0.0)
    scale = np.where(hi > lo, (hi - lo) / qmax, 1.0)
    return scale, np.clip(np.round(-lo / scale), 0, qmax)


@pytest.mark.parametrize("bits", [2, 4, 8, 16], ids=lambda b: f"int{b}")
def test_activation_params_match_reference(bits):
    rng = np.random.default_rng(bits)
    x_min = (rng.standard_normal((5, 7)) * 3).astype(np.float32)
    x_max = x_min + rng.random((5, 7)).astype(np.float32) * 4
    x_min[0, 0] = x_max[0, 0] = 0.0  # zero range
    scale, zp = activation_params(jnp.asarray(x_min), jnp.asarray(x_max), bits=bits)
    ref_scale, ref_zp = ref_activation_params(x_min, x_max, bits)
    assert scale.dtype == jnp.float32 and zp.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(scale), ref_scale, rtol=2e-6)
    # Round to nearest: equal to the float64 reference except where -lo / scale sits within
    # float32 round-off of a half-integer (the two precisions may round a tie apart).
    raw = -np.minimum(x_min.astype(np.float64), 0.0) / ref_scale
    tie = np.abs(raw - np.floor(raw) - 0.5) < 1e-6 * np.maximum(raw, 1.0)
    np.testing.assert_array_equal(np.asarray(zp)[~tie], ref_zp[~tie])
    assert np.max(np.abs(np.asarray(zp) - ref_zp)) <= 1
    assert float(scale[0, 0]) == 1.0 and float(zp[0, 0]) == 0.0


@pytest.mark.parametrize(
    ("x_min", "x_max", "bits", "scale", "zero_point"),
    [
        (-1.8, 1.2, 2, 1.0, 2.0),  # -lo / scale = 1.8: to nearest 2, not down to 1
        (-1.2, 1.8, 2, 1.0, 1.0),  # 1.2 -> 1
        (-0.6, 14.4, 4, 1.0, 1.0),  # 0.6 -> 1
        (-2.5, 0.5, 2, 1.0, 2.0),  # 2.5: half to even
        (0.5, 3.5, 4, 3.5 / 15, 0.0),  # range widened to include zero: lo = 0
        (-3.0, -1.0, 2, 1.0, 3.0),  # hi widened to 0: the zero point is qmax
    ],
    ids=["1.8", "1.2", "0.6", "tie-2.5", "positive", "negative"],
)
def test_activation_params_worked_cases(x_min, x_max, bits, scale, zero_point):
    s, z = activation_params(jnp.float32(x_min), jnp.float32(x_max), bits=bits)
    assert float(s) == pytest.approx(scale, rel=1e-6)
    assert float(z) == zero_point


def test_fake_quantize_activations_matches_reference():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 4, 10)) * 2).astype(np.float32)
    scale = np.array([0.01, 0.05, 0.1], np.float32).reshape(3, 1, 1)
    zp = np.array([128.0, 0.0, 255.0], np.float32).reshape(3, 1, 1)
    out = fake_quantize_activations(jnp.asarray(x), jnp.asarray(scale), jnp.asarray(zp), bits=8)
    codes = np.clip(np.round(x.astype(np.float64) / scale) + zp, 0, 255)
    ref = (codes - zp) * scale
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6, atol=float(scale.max()) * 1.01)
    assert np.mean(np.abs(np.asarray(out) - ref) > 1e-6) < 0.01


def test_fake_quantize_activations_scalar_and_zero_scale():
    x = jnp.array([-1.0, 0.0, 0.3, 2.0])
    out = fake_quantize_activations(x, 0.5, 2.0, bits=2)
    # codes clip(round(x / 0.5) + 2, 0, 3) = [0, 2, 3, 3] -> (c - 2) * 0.5
    assert out.tolist() == [-1.0, 0.0, 0.5, 0.5]
    zero = fake_quantize_activations(x, 0.0, 0.0, bits=8)
    assert np.all(np.asarray(zero) == 0.0)


@pytest.mark.parametrize("bits", [1, 17, 2.5])
def test_activation_bits_out_of_range_raise(bits):
    with pytest.raises(ValueError, match="bits"):
        activation_params(jnp.zeros(3), jnp.ones(3), bits=bits)
    with pytest.raises(ValueError, match="bits"):
        fake_quantize_activations(jnp.zeros(3), 1.0, 0.0, bits=bits)


def test_activation_params_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\(3,\) and \(4,\)"):
        activation_params(jnp.zeros(3), jnp.ones(4), bits=8)


def test_error_metrics_match_reference():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 33)).astype(np.float32)
    b = (a + 0.1 * rng.standard_normal((7, 33))).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = np.sum(a64 * b64) / np.sqrt(np.sum(a64 * a64) * np.sum(b64 * b64))
    np.testing.assert_allclose(float(cosine_similarity(a, b)), cos, rtol=1e-5)
    np.testing.assert_allclose(float(mse(a, b)), np.mean((a64 - b64) ** 2), rtol=1e-5)
    sqnr = 10 * np.log10(np.sum(a64**2) / np.sum((a64 - b64) ** 2))
    np.testing.assert_allclose(float(sqnr_db(a, b)), sqnr, rtol=1e-5)


def test_error_metrics_degenerate_inputs_are_finite():
    z = jnp.zeros(8)
    one = jnp.ones(8)
    assert float(cosine_similarity(z, z)) == 1.0
    assert float(cosine_similarity(z, one)) == 0.0
    assert float(mse(one, one)) == 0.0
    exact = float(sqnr_db(one, one))
    assert np.isfinite(exact) and exact > 300
    assert np.isfinite(float(sqnr_db(z, z)))


@pytest.mark.parametrize("fn", [cosine_similarity, mse, sqnr_db])
def test_error_metrics_shape_mismatch_raises(fn):
    with pytest.raises(ValueError, match="same shape"):
        fn(jnp.zeros((2, 3)), jnp.zeros((3, 2)))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_unpacked_codes_are_in_element_order_and_pack_back_to_the_stored_bytes(bits):
    """``unpack_codes`` gives each element's code where the element is (checked against the
    float64 codes of the reference's group parameters), and ``pack_codes`` its stored bytes."""
    x = np.random.default_rng(bits).normal(size=(3, 64)).astype(np.float32)
    q = quantize(jnp.asarray(x), bits=bits, group_size=16)
    codes = unpack_codes(q)
    assert codes.dtype == np.uint8 and codes.shape == (3, 64)
    scale = np.repeat(np.asarray(q.scale, np.float64), 16, axis=-1)
    zero = np.repeat(np.asarray(q.zero_point, np.float64), 16, axis=-1)
    expected = np.clip(np.round(x.astype(np.float64) / scale) + zero, 0, 2**bits - 1)
    np.testing.assert_array_equal(codes, expected)
    np.testing.assert_array_equal(pack_codes(codes, bits=bits, group_size=16), np.asarray(q.codes))
