"""Orthogonal Hadamard rotations for activation quantization (QuaRot-style), pure JAX.

An orthogonal ``Q`` applied to a layer's input and folded into its weight leaves the layer's
output unchanged, ``(x Q)(W Q)^T = x W^T``, while spreading a few outlier channels over all of
them: the rotated activations are closer to Gaussian (kurtosis near 3, smaller max-to-RMS), so
a 4-bit grid wastes fewer levels. The rotation used here is a randomized Hadamard matrix::

    Q = diag(signs) @ blockdiag(H_b, ..., H_b),   H_b = Sylvester Hadamard / sqrt(b)

with ``signs`` in {-1, +1} drawn from an explicit PRNG key and ``b`` the block size: the
width itself when it is a power of two, otherwise the largest power of two that divides it
(Dream 7B: hidden 3584 = 7 x 512 and MLP 18944 = 37 x 512 both get ``b = 512``). A
block-diagonal Hadamard is orthogonal too but mixes channels only within each block of ``b``;
QuaRot instead multiplies by a known Hadamard matrix of the odd factor (``H_7``, ``H_37``...),
which mixes all channels; the block-diagonal form needs no table of special matrices and
costs the same. A width with no even factor gets ``b = 1``: the signs alone (orthogonal, but
no mixing).

Every transform acts on the last axis in ``O(n log b)`` and no ``[n, n]`` matrix is built, so
a 7B model's weights rotate one tensor at a time. The fast Walsh-Hadamard transform is done as
``H_b = H_f1 (x) H_f2 (x) ...`` with factors of at most 32 channels, each a small matmul along
its own axis: 32 multiply-adds per channel for each factor of 32, about six times the radix-2
butterfly's arithmetic, yet 2-3x faster than the butterfly on a CPU (measured at widths 512,
3584 and 18944); in full float32 precision on every backend.

The conventions, for activations ``x [..., n]`` and torch-layout weights ``W [out, in]``:

- :func:`rotate` ``x -> x Q``; :func:`unrotate` ``x -> x Q^T`` (its inverse);
- :func:`rotate_input_side` ``W -> W Q``: a layer that reads a rotated input ``x Q`` computes
  the same ``x W^T``;
- :func:`rotate_output_side` ``W -> Q^T W``: a layer whose output feeds a rotated stream writes
  ``(x W^T) Q``; its bias ``b -> rotate(b)``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> q = randomized_hadamard(jax.random.key(0), 8)
    >>> x, w = jnp.arange(16.0).reshape(2, 8), jnp.ones((3, 8))
    >>> bool(jnp.allclose(rotate(x, q) @ rotate_input_side(w, q).T, x @ w.T, atol=1e-5))
    True
    >>> bool(jnp.allclose(unrotate(rotate(x, q), q), x, atol=1e-5))
    True
    >>> hadamard_block_size(3584), hadamard_block_size(18944), hadamard_block_size(4096)
    (512, 512, 4096)
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "HadamardRotation",
    "hadamard_block_size",
    "randomized_hadamard",
    "rotate",
    "rotate_input_side",
    "rotate_output_side",
    "rotation_matrix",
    "unrotate",
    "walsh_hadamard",
]

Array = jax.Array


def hadamard_block_size(width: int) -> int:
    """The largest power of two that divides ``width`` (the width itself when it is one).

    Raises:
        ValueError: ``width`` not a positive integer.
    """
    if isinstance(width, bool) or not isinstance(width, int | np.integer) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    width = int(width)
    return width & -width


def _checked_block(width: int, block_size: int | None) -> int:
    largest = hadamard_block_size(width)
    if block_size is None:
        return largest
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, int | np.integer)
        or block_size < 1
        or block_size & (block_size - 1)
        or width % block_size
    ):
        raise ValueError(
            f"block_size must be a power of two dividing the width {width}, got {block_size!r}"
        )
    return int(block_size)


def _float(x: Array) -> Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


_FACTOR = 32
"""The largest Hadamard factor applied as one small matmul (module doc)."""


def _sylvester(size: int) -> np.ndarray:
    """The unnormalized Sylvester Hadamard matrix, ``H[i, j] = (-1)^popcount(i & j)``."""
    h = np.ones((1, 1), np.float32)
    while h.shape[0] < size:
        h = np.block([[h, h], [h, -h]])
    return h


@partial(jax.jit, static_argnames=("block_size",))
def _walsh_hadamard(x: Array, *, block_size: int) -> Array:
    lead, width = x.shape[:-1], x.shape[-1]
    factors = []
    while np.prod(factors, dtype=int) < block_size:
        factors.append(min(_FACTOR, block_size // int(np.prod(factors, dtype=int))))
    # H_b = H_f1 (x) H_f2 (x) ... in Sylvester order, so with the block's channels as the
    # row-major axes [f1, f2, ...], each factor is a small matmul along its own axis.
    y = x.reshape(*lead, width // block_size, *factors)
    first = y.ndim - len(factors)
    for axis, size in enumerate(factors, start=first):
        h = jnp.asarray(_sylvester(size), y.dtype)
        y = jnp.tensordot(y, h, axes=[[axis], [0]], precision=jax.lax.Precision.HIGHEST)
        y = jnp.moveaxis(y, -1, axis)
    return y.reshape(*lead, width) * np.asarray(block_size**-0.5, y.dtype)


def walsh_hadamard(x: Array, *, block_size: int | None = None) -> Array:
    """``x @ blockdiag(H_b, ...)`` along the last axis: the normalized (orthogonal, symmetric,
    its own inverse) fast Walsh-Hadamard transform of each block of ``b`` channels.

    Args:
        x: ``[..., n]``; computed in float32 (float64 stays float64).
        block_size: ``b``, a power of two dividing ``n``; default :func:`hadamard_block_size`.

    Returns:
        An array of ``x``'s shape, float32 (or float64).

    Raises:
        ValueError: ``x`` a scalar, or a bad ``block_size`` (naming it and the width).
    """
    x = _float(x)
    if x.ndim < 1:
        raise ValueError(f"x must have a last axis to transform, got shape {x.shape}")
    block = _checked_block(x.shape[-1], block_size)
    return _walsh_hadamard(x, block_size=block)


@partial(jax.tree_util.register_dataclass, data_fields=["signs"], meta_fields=["block_size"])
@dataclasses.dataclass(frozen=True)
class HadamardRotation:
    """A randomized Hadamard rotation ``Q = diag(signs) @ blockdiag(H_b, ...)`` of ``n``
    channels (module doc); a pytree whose leaf is ``signs``, ``block_size`` static.

    Invariant: ``signs`` is float32 ``[n]`` with values in {-1, +1}, ``block_size`` a power of
    two dividing ``n``; ``Q`` is orthogonal, ``Q Q^T = I``.

    Attributes:
        signs: the diagonal sign flips, float32 ``[n]``.
        block_size: ``b``, the Hadamard blocks' size.
    """

    signs: Array
    block_size: int

    @property
    def width(self) -> int:
        """``n``, the number of channels rotated."""
        return int(self.signs.shape[-1])


def randomized_hadamard(
    key: Array, width: int, *, block_size: int | None = None
) -> HadamardRotation:
    """A randomized Hadamard rotation of ``width`` channels, its signs drawn from ``key``.

    Args:
        key: a JAX PRNG key (the same key, the same rotation).
        width: ``n``.
        block_size: ``b``, a power of two dividing ``width``; default
            :func:`hadamard_block_size` (``width`` itself for a power of two).

    Raises:
        ValueError: a bad ``width`` or ``block_size``.
    """
    block = _checked_block(width, block_size)
    signs = jax.random.rademacher(key, (int(width),), dtype=jnp.float32)
    return HadamardRotation(signs=signs, block_size=block)


def _check(x: Array, rotation: HadamardRotation, axis_name: str) -> Array:
    x = _float(x)
    if x.ndim < 1 or x.shape[-1] != rotation.width:
        raise ValueError(
            f"the rotation has width {rotation.width} but the {axis_name} has shape {x.shape}"
        )
    return x


@partial(jax.jit, static_argnames=("block_size",))
def _rotate(x: Array, signs: Array, *, block_size: int) -> Array:
    signs = signs.astype(x.dtype).reshape((1,) * (x.ndim - 1) + (-1,))
    return _walsh_hadamard(x * signs, block_size=block_size)


@partial(jax.jit, static_argnames=("block_size",))
def _unrotate(x: Array, signs: Array, *, block_size: int) -> Array:
    signs = signs.astype(x.dtype).reshape((1,) * (x.ndim - 1) + (-1,))
    return _walsh_hadamard(x, block_size=block_size) * signs


def rotate(x: Array, rotation: HadamardRotation) -> Array:
    """``x @ Q`` along the last axis (``x [..., n]``); float32 (float64 stays float64)."""
    x = _check(x, rotation, "input")
    return _rotate(x, rotation.signs, block_size=rotation.block_size)


def unrotate(x: Array, rotation: HadamardRotation) -> Array:
    """``x @ Q^T`` along the last axis, the inverse of :func:`rotate`."""
    x = _check(x, rotation, "input")
    return _unrotate(x, rotation.signs, block_size=rotation.block_size)


def rotate_input_side(weight: Array, rotation: HadamardRotation) -> Array:
    """``W @ Q`` for a weight ``[out, in]`` whose layer reads the rotated input ``x Q``:
    ``(x Q) (W Q)^T = x W^T``. Float32 (the caller casts back to a storage dtype)."""
    weight = _check(weight, rotation, "weight's input axis")
    return _rotate(weight, rotation.signs, block_size=rotation.block_size)


def rotate_output_side(weight: Array, rotation: HadamardRotation) -> Array:
    """``Q^T @ W`` for a weight ``[out, in]`` whose output is added to a rotated stream:
    ``x (Q^T W)^T = (x W^T) Q``. A bias ``b [out]`` of the same layer becomes ``rotate(b)``."""
    weight = _float(weight)
    if weight.ndim != 2 or weight.shape[0] != rotation.width:
        raise ValueError(
            f"the rotation has width {rotation.width} but the weight [out, in] has shape "
            f"{weight.shape}"
        )
    return _rotate(weight.T, rotation.signs, block_size=rotation.block_size).T


def rotation_matrix(rotation: HadamardRotation) -> Array:
    """``Q`` itself, float32 ``[n, n]`` (``n^2`` floats: for tests and small widths)."""
    return rotate(jnp.eye(rotation.width, dtype=jnp.float32), rotation)
