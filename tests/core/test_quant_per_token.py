"""Dynamic per-token activation fake-quantization against an independent float64 numpy reference."""

from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermojax import fake_quantize_per_token
from thermojax.core import quant

BITS = [2, 3, 4, 5, 6, 7, 8]
SHAPES = [(16, 24), (3, 7, 40), (1, 1)]


def ref_per_token(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """float64 reference: each row's range widened to include zero, ``scale = range / qmax``
    (1 for an all-zero row), zero point rounded, codes clipped; ``(out, scale [..., 1])``."""
    qmax = 2**bits - 1
    x = x.astype(np.float64)
    lo = np.minimum(x.min(axis=-1, keepdims=True), 0.0)
    hi = np.maximum(x.max(axis=-1, keepdims=True), 0.0)
    scale = np.where(hi > lo, (hi - lo) / qmax, 1.0)
    zero_point = np.clip(np.round(-lo / scale), 0, qmax)
    codes = np.clip(np.round(x / scale) + zero_point, 0, qmax)
    return (codes - zero_point) * scale, scale


def rows_of_mixed_ranges(shape, seed: int) -> np.ndarray:
    """Rows of very different ranges and offsets: all-positive, all-negative and straddling."""
    rng = np.random.default_rng(seed)
    size = (*shape[:-1], 1)
    x = rng.standard_normal(shape) * rng.choice([0.01, 1.0, 50.0], size=size)
    return (x + rng.choice([-3.0, 0.0, 3.0], size=size)).astype(np.float32)


@pytest.mark.parametrize("bits", BITS, ids=lambda b: f"A{b}")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_the_float64_reference_row_by_row(shape, bits):
    x = rows_of_mixed_ranges(shape, seed=bits)
    out = np.asarray(fake_quantize_per_token(jnp.asarray(x), bits=bits))
    ref, scale = ref_per_token(x, bits)
    assert out.dtype == np.float32 and out.shape == x.shape
    # Each element within one of its own row's steps (float32 may round a tie the other way)...
    assert np.all(np.abs(out - ref) <= scale * (1 + 1e-5))
    # ...and equal to the reference nearly everywhere.
    close = np.isclose(out, ref, rtol=1e-5, atol=1e-6 * float(scale.max()))
    assert np.mean(close) > 0.99


@pytest.mark.parametrize("bits", BITS, ids=lambda b: f"A{b}")
def test_the_error_of_each_row_is_within_half_its_own_step(bits):
    """A per-tensor range would give the small rows of a mixed batch the step of the largest."""
    x = rows_of_mixed_ranges((64, 32), seed=100 + bits)
    out = np.asarray(fake_quantize_per_token(jnp.asarray(x), bits=bits), np.float64)
    _, scale = ref_per_token(x, bits)
    assert np.all(np.abs(out - x) <= 0.5 * scale * (1 + 1e-4) + 1e-6)


def test_each_row_is_quantized_alone():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    before = np.asarray(fake_quantize_per_token(jnp.asarray(x), bits=4))
    x[2] *= 1000.0  # one token with an outlier range
    after = np.asarray(fake_quantize_per_token(jnp.asarray(x), bits=4))
    np.testing.assert_array_equal(after[[0, 1, 3]], before[[0, 1, 3]])


@pytest.mark.parametrize("bits", BITS, ids=lambda b: f"A{b}")
@pytest.mark.parametrize("value", [0.0, 2.5, -7.0, 1e-30], ids=["zero", "pos", "neg", "tiny"])
def test_constant_rows_are_finite_and_exact(bits, value):
    x = np.full((3, 9), value, np.float32)
    out = np.asarray(fake_quantize_per_token(jnp.asarray(x), bits=bits))
    ref, _ = ref_per_token(x, bits)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    np.testing.assert_allclose(out, x, rtol=1e-6)  # the range ends are on the grid


def test_worked_case_by_hand():
    x = jnp.array([[-1.0, 0.4, 2.0], [0.5, 3.0, 6.0]])
    # Row 0: range [-1, 2], step 1, zero point 1: 0.4 -> 0. Row 1: [0, 6], step 2: 0.5 -> 0,
    # 3.0 -> 2 * round(1.5) = 4 (half to even).
    assert fake_quantize_per_token(x, bits=2).tolist() == [[-1.0, 0.0, 2.0], [0.0, 4.0, 6.0]]


def test_the_docstring_example_runs_as_written():
    runner = doctest.DocTestRunner()
    found = doctest.DocTestFinder().find(fake_quantize_per_token, globs=dict(vars(quant)))
    for example in found:
        runner.run(example)
    assert runner.tries > 0 and runner.failures == 0


def test_works_inside_a_callers_jit_and_vmap():
    x = jnp.asarray(rows_of_mixed_ranges((5, 6, 8), seed=3))
    direct = fake_quantize_per_token(x, bits=4)
    jitted = jax.jit(lambda a: fake_quantize_per_token(a, bits=4))(x)
    mapped = jax.vmap(lambda a: fake_quantize_per_token(a, bits=4))(x)
    np.testing.assert_array_equal(np.asarray(jitted), np.asarray(direct))
    np.testing.assert_array_equal(np.asarray(mapped), np.asarray(direct))


@pytest.mark.parametrize(
    ("x", "bits", "match"),
    [
        (jnp.zeros((2, 3)), 1, "bits"),
        (jnp.zeros((2, 3)), 17, "bits"),
        (jnp.zeros((2, 3)), 4.0, "bits"),
        (jnp.float32(1.0), 8, r"last axis.*\(\)"),
        (jnp.zeros((2, 0)), 8, r"last axis.*\(2, 0\)"),
    ],
    ids=["bits-1", "bits-17", "bits-float", "scalar", "empty-row"],
)
def test_bad_arguments_raise(x, bits, match):
    with pytest.raises(ValueError, match=match):
        fake_quantize_per_token(x, bits=bits)
