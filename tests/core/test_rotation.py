"""Hadamard rotations against float64 numpy references built from scipy's Sylvester matrix."""

from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import hadamard

import thermojax.core.rotation as rotation_module
from thermojax.core.rotation import (
    HadamardRotation,
    hadamard_block_size,
    randomized_hadamard,
    rotate,
    rotate_input_side,
    rotate_output_side,
    rotation_matrix,
    unrotate,
    walsh_hadamard,
)

# Float32 transforms against float64 matrices: log2(b) butterfly stages each round once, so
# the error is a few float32 ulps of the inputs' scale (measured: 3e-7 at b = 32 on N(0, 1)).
ATOL = 2e-6

# (width, block the default picks): powers of two, and widths that are not (Dream 7B's hidden
# 3584 = 7 x 512 and MLP 18944 = 37 x 512 have this shape, scaled down), and an odd width.
WIDTHS = [(1, 1), (2, 2), (8, 8), (256, 256), (96, 32), (112, 16), (384, 128), (6, 2), (5, 1)]


def block_hadamard(width: int, block: int) -> np.ndarray:
    """float64 ``blockdiag(H_b, ...) / sqrt(b)``."""
    return np.kron(np.eye(width // block), hadamard(block) / np.sqrt(block))


def reference_q(rotation: HadamardRotation) -> np.ndarray:
    """float64 ``Q = diag(signs) blockdiag(H_b, ...)``."""
    signs = np.asarray(rotation.signs, np.float64)
    return signs[:, None] * block_hadamard(rotation.width, rotation.block_size)


def normal(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.mark.parametrize(("width", "block"), WIDTHS, ids=[f"n{w}-b{b}" for w, b in WIDTHS])
def test_walsh_hadamard_matches_the_sylvester_matrix(width, block):
    x = normal((3, 2, width))
    assert hadamard_block_size(width) == block
    got = np.asarray(walsh_hadamard(x), np.float64)
    want = x.astype(np.float64) @ block_hadamard(width, block)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_dream_7b_widths_get_512_blocks():
    assert hadamard_block_size(3584) == 512 and hadamard_block_size(18944) == 512
    assert hadamard_block_size(4096) == 4096 and hadamard_block_size(12288) == 4096


@pytest.mark.parametrize("block", [1, 4, 32])
def test_an_explicit_smaller_block_is_block_diagonal(block):
    x = normal((4, 64))
    got = np.asarray(walsh_hadamard(x, block_size=block), np.float64)
    np.testing.assert_allclose(got, x @ block_hadamard(64, block), rtol=0, atol=ATOL)


def test_walsh_hadamard_is_its_own_inverse():
    x = normal((5, 128))
    np.testing.assert_allclose(walsh_hadamard(walsh_hadamard(x)), x, rtol=0, atol=ATOL)


@pytest.mark.parametrize(("width", "block"), WIDTHS, ids=[f"n{w}-b{b}" for w, b in WIDTHS])
def test_randomized_rotation_is_orthogonal_and_is_diag_signs_times_hadamard(width, block):
    rotation = randomized_hadamard(jax.random.key(3), width)
    assert rotation.block_size == block and rotation.width == width
    signs = np.asarray(rotation.signs)
    assert signs.dtype == np.float32 and set(np.unique(signs)) <= {-1.0, 1.0}
    q = np.asarray(rotation_matrix(rotation), np.float64)
    np.testing.assert_allclose(q, reference_q(rotation), rtol=0, atol=ATOL)
    np.testing.assert_allclose(q @ q.T, np.eye(width), rtol=0, atol=4 * ATOL)


def test_signs_come_from_the_key():
    a = randomized_hadamard(jax.random.key(0), 256)
    b = randomized_hadamard(jax.random.key(0), 256)
    c = randomized_hadamard(jax.random.key(1), 256)
    np.testing.assert_array_equal(a.signs, b.signs)
    assert np.any(np.asarray(a.signs) != np.asarray(c.signs))
    assert 64 < int(np.sum(np.asarray(a.signs) > 0)) < 192  # both signs, roughly balanced


@pytest.mark.parametrize(("width", "block"), [(64, 64), (96, 32)], ids=["n64", "n96-b32"])
def test_rotate_and_unrotate_are_x_q_and_x_q_transposed(width, block):
    rotation = randomized_hadamard(jax.random.key(7), width)
    q = reference_q(rotation)
    x = normal((2, 3, width), seed=1)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(rotate(x, rotation), x64 @ q, rtol=0, atol=ATOL)
    np.testing.assert_allclose(unrotate(x, rotation), x64 @ q.T, rtol=0, atol=ATOL)
    np.testing.assert_allclose(unrotate(rotate(x, rotation), rotation), x, rtol=0, atol=ATOL)


@pytest.mark.parametrize(("width", "block"), [(64, 64), (96, 32)], ids=["n64", "n96-b32"])
def test_weight_sides_fold_the_rotation_into_a_linear_layer(width, block):
    rotation = randomized_hadamard(jax.random.key(11), width)
    q = reference_q(rotation)
    reader = normal((40, width), seed=2)  # [out, in]: reads the rotated stream
    writer = normal((width, 24), seed=3)  # [out, in]: writes into it
    np.testing.assert_allclose(
        rotate_input_side(reader, rotation), reader.astype(np.float64) @ q, rtol=0, atol=ATOL
    )
    np.testing.assert_allclose(
        rotate_output_side(writer, rotation), q.T @ writer.astype(np.float64), rtol=0, atol=ATOL
    )
    # The identities the folding relies on, in float32 end to end.
    x, z = normal((5, width), seed=4), normal((5, 24), seed=5)
    folded = rotate(x, rotation) @ rotate_input_side(reader, rotation).T
    np.testing.assert_allclose(folded, x @ reader.T, rtol=0, atol=1e-4)
    written = z @ rotate_output_side(writer, rotation).T
    np.testing.assert_allclose(written, rotate(z @ writer.T, rotation), rtol=0, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(
    log_width=st.integers(0, 9),
    odd=st.sampled_from([1, 3, 7]),
    seed=st.integers(0, 2**16),
)
def test_rotation_keeps_every_vector_norm(log_width, odd, seed):
    width = odd << log_width
    rotation = randomized_hadamard(jax.random.key(seed), width)
    x = normal((3, width), seed=seed)
    norms = np.linalg.norm(np.asarray(rotate(x, rotation), np.float64), axis=-1)
    np.testing.assert_allclose(norms, np.linalg.norm(x.astype(np.float64), axis=-1), rtol=1e-5)


def test_a_rotation_is_a_pytree_jit_takes_as_an_argument():
    rotation = randomized_hadamard(jax.random.key(0), 32)
    assert jax.tree.leaves(rotation) == [rotation.signs]
    other = randomized_hadamard(jax.random.key(1), 32)
    apply = jax.jit(rotate)
    x = normal((2, 32))
    np.testing.assert_allclose(apply(x, other), rotate(x, other), rtol=0, atol=1e-6)
    assert apply._cache_size() == 1  # one program for both rotations
    apply(x, rotation)
    assert apply._cache_size() == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: hadamard_block_size(0), "width must be a positive integer"),
        (lambda: randomized_hadamard(jax.random.key(0), 96, block_size=64), "block_size"),
        (lambda: randomized_hadamard(jax.random.key(0), 96, block_size=12), "block_size"),
        (lambda: walsh_hadamard(jnp.ones((2, 96)), block_size=3), "block_size"),
        (lambda: walsh_hadamard(jnp.float32(1.0)), "last axis"),
        (lambda: rotate(jnp.ones((2, 8)), randomized_hadamard(jax.random.key(0), 16)), "16"),
        (
            lambda: rotate_output_side(
                jnp.ones((8, 16)), randomized_hadamard(jax.random.key(0), 16)
            ),
            "[out, in]",
        ),
    ],
    ids=[
        "zero-width",
        "block-not-dividing",
        "block-not-power",
        "wh-block",
        "scalar",
        "width",
        "output-side",
    ],
)
def test_bad_arguments_raise_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()


def test_module_example_runs():
    failures, tried = doctest.testmod(rotation_module, verbose=False)
    assert tried > 0 and failures == 0
