"""Per-group affine quantization kernels, packed storage and error metrics.

Pure JAX: arrays in, arrays and pytrees out, no I/O. Every kernel is jitted with its shape-changing
options (``bits``, ``group_size``, ``symmetric``) static, and stays usable inside a caller's ``jit``.

Example:
    >>> import jax.numpy as jnp
    >>> from thermojax import quantize, dequantize, cosine_similarity
    >>> w = jnp.linspace(-1.0, 1.0, 256, dtype=jnp.float32).reshape(2, 128)
    >>> q = quantize(w, bits=4, group_size=64)
    >>> q.codes.shape, q.scale.shape  # two 4-bit codes per byte, one scale per group
    ((2, 64), (2, 2))
    >>> bool(cosine_similarity(w, dequantize(q)) > 0.99)
    True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

WEIGHT_BITS = (2, 4, 8)
"""The weight bit widths the packed :class:`QTensor` supports (whole codes per byte)."""
ACT_BITS_RANGE = (2, 16)
"""The smallest and largest activation bit width, inclusive."""
ACT_MODES = ("static", "dynamic")
"""How activations get their range: ``static`` from given (calibrated) scales and zero points
(:func:`fake_quantize_activations`), ``dynamic`` from each token's own values while the model
runs (:func:`fake_quantize_per_token`)."""
_TINY = float(np.finfo(np.float32).tiny)


@partial(
    jax.tree_util.register_dataclass,
    data_fields=["codes", "scale", "zero_point"],
    meta_fields=["shape", "bits", "group_size", "symmetric"],
)
@dataclasses.dataclass(frozen=True)
class QTensor:
    """A per-group affine-quantized array with packed integer codes.

    Invariant: ``x ~= (unpack(codes) - zero_point) * scale``, group by group along the last axis,
    with error at most one quantization step (``scale``) per element.

    Attributes:
        codes: uint8 ``[..., n // (8 // bits)]``, ``p = 8 // bits`` codes per byte, planar within each
            group: byte ``b`` of a group (``b < group_size // p``) holds the codes of the group's
            elements ``b + k * group_size // p`` for ``k < p``, element ``k`` in bits
            ``[k * bits, (k + 1) * bits)``. (Planar lanes keep the packing loop's loads contiguous,
            which XLA:CPU vectorizes; interleaved lanes ran ~2.5x slower.)
        scale: float32 ``[..., n // group_size]``, > 0.
        zero_point: uint8 ``[..., n // group_size]``, in ``[0, 2**bits - 1]``.
        shape: the original array shape (static metadata, not a leaf).
        bits: code width, 2, 4 or 8 (static).
        group_size: elements per group along the last axis (static).
        symmetric: whether the zero point is fixed at ``2**(bits-1)`` (static).
    """

    codes: jax.Array
    scale: jax.Array
    zero_point: jax.Array
    shape: tuple[int, ...]
    bits: int
    group_size: int
    symmetric: bool = False

    @property
    def qmax(self) -> int:
        """Largest code value, ``2**bits - 1``."""
        return (1 << self.bits) - 1

    @property
    def num_groups(self) -> int:
        """Groups along the last axis."""
        return self.shape[-1] // self.group_size


def _check_weight_args(shape: Sequence[int], bits: int, group_size: int) -> None:
    if isinstance(bits, bool) or bits not in WEIGHT_BITS:
        raise ValueError(f"bits must be one of {WEIGHT_BITS}, got bits={bits!r}")
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, int | np.integer)
        or group_size < 1
    ):
        raise ValueError(f"group_size must be a positive integer, got group_size={group_size!r}")
    if len(shape) == 0:
        raise ValueError("x must have at least one axis to group along, got a scalar")
    n = shape[-1]
    if n % group_size != 0:
        raise ValueError(
            f"last axis length {n} of x (shape {tuple(shape)}) is not a multiple of "
            f"group_size={group_size}"
        )
    per_byte = 8 // bits
    if group_size % per_byte != 0:
        raise ValueError(
            f"group_size={group_size} must be a multiple of {per_byte} (codes per byte at bits={bits})"
        )


def check_act_bits(bits: int) -> None:
    """Raise ``ValueError`` unless ``bits`` is an integer activation bit width in ``ACT_BITS_RANGE``."""
    lo, hi = ACT_BITS_RANGE
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not lo <= bits <= hi:
        raise ValueError(f"activation bits must be an integer in [{lo}, {hi}], got bits={bits!r}")


def _group_params(
    xg: jax.Array, qmax: int, symmetric: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Scale, its reciprocal and zero point per group of ``xg [..., n_groups, group_size]``."""
    if symmetric:
        half = (qmax + 1) // 2
        absmax = jnp.max(jnp.abs(xg), axis=-1)
        # Symmetric codes span zero_point +- (half - 1); int2 has just -1, 0, +1 around zero.
        raw = absmax / (half - 1)
        zero_point = jnp.full_like(absmax, half)
    else:
        # One variadic reduce reads each group once for both ends (two reductions read it twice).
        lo, hi = lax.reduce(
            (xg, xg),
            (np.float32(np.inf), np.float32(-np.inf)),
            lambda a, b: (jnp.minimum(a[0], b[0]), jnp.maximum(a[1], b[1])),
            (xg.ndim - 1,),
        )
        lo = jnp.minimum(lo, 0.0)
        hi = jnp.maximum(hi, 0.0)
        span = hi - lo
        # Near the float32 maximum hi - lo overflows to inf; divide before subtracting there.
        raw = jnp.where(jnp.isfinite(span), span / qmax, hi / qmax - lo / qmax)
    # All-zero groups have no range: any positive scale reconstructs them exactly (codes = zero point).
    scale = jnp.where(raw > 0, jnp.maximum(raw, _TINY), 1.0)
    inv_scale = 1.0 / scale
    if not symmetric:
        # lo <= 0 and -lo <= hi - lo = scale * qmax, so this is already in [0, qmax]; no clamp,
        # because XLA fuses this per-group chain into the packing loop and a clamp slows it down.
        zero_point = jnp.round(-lo * inv_scale)
    return scale, inv_scale, zero_point


def _codes(xg: jax.Array, inv_scale: jax.Array, zero_point: jax.Array, qmax: int) -> jax.Array:
    """Integer-valued float codes ``clip(round(x / scale) + zero_point, 0, qmax)``, grouped.

    Only the upper clip is needed: affine, ``x >= lo`` gives ``round(x / scale) >= round(lo / scale)
    = -zero_point`` (rounding is monotone and odd); symmetric, ``|x| / scale <= 2**(bits-1) - 1``.
    Dropping the lower bound keeps XLA:CPU from emitting a ``clamp``, which made the packing loop
    ~2x slower than a plain ``minimum``. ``x * (1 / scale)`` instead of ``x / scale``: a multiply
    per element instead of a divide (it can flip an exact .5 tie; the error bound is unchanged).
    """
    return jnp.minimum(jnp.round(xg * inv_scale[..., None]) + zero_point[..., None], float(qmax))


def _pack(codes: jax.Array, bits: int) -> jax.Array:
    """Pack grouped integer-valued codes ``[..., groups, group_size]`` into planar uint8 bytes.

    Returns ``[..., groups, group_size * bits // 8]``: byte ``b`` holds the codes of elements
    ``b + k * lane`` (``lane = group_size * bits // 8``) at bit ``k * bits``. Summing
    ``code * 2**(k * bits)`` in float32 (exact: at most 255) and converting once is faster on
    XLA:CPU than per-code uint8 conversion with shifts and ors.
    """
    per_byte = 8 // bits
    if per_byte == 1:
        return codes.astype(jnp.uint8)
    lane = codes.shape[-1] // per_byte
    packed = codes[..., :lane]
    for k in range(1, per_byte):
        packed = packed + codes[..., k * lane : (k + 1) * lane] * np.float32(1 << (k * bits))
    return packed.astype(jnp.uint8)


def _unpack(packed: jax.Array, bits: int) -> jax.Array:
    """Inverse of :func:`_pack`: uint8 ``[..., groups, lane]`` -> uint8 ``[..., groups, lane * p]``."""
    per_byte = 8 // bits
    if per_byte == 1:
        return packed
    shifts = (jnp.arange(per_byte, dtype=jnp.uint8) * np.uint8(bits)).reshape(
        (1,) * (packed.ndim - 1) + (per_byte, 1)
    )
    lanes = (packed[..., None, :] >> shifts) & np.uint8((1 << bits) - 1)
    return lanes.reshape(*packed.shape[:-1], packed.shape[-1] * per_byte)


@partial(jax.jit, static_argnames=("bits", "group_size", "symmetric"))
def _quantize_grouped(
    x: jax.Array, *, bits: int, group_size: int, symmetric: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The fused kernel: (packed codes ``[..., groups, group_size // p]``, scale, zero point).

    Two passes over ``x``: one variadic min/max reduce, one loop computing and packing codes.
    The codes keep their group axis here on purpose: reshaping them to ``[..., n // p]`` inside the
    jit fuses that reshape into the packing loop, whose index math then defeats vectorization on
    XLA:CPU (2.4x slower at 32M elements); reshaping the small packed result afterwards is cheap.
    """
    qmax = (1 << bits) - 1
    x = x.astype(jnp.float32)
    xg = x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)
    scale, inv_scale, zero_point = _group_params(xg, qmax, symmetric)
    packed = _pack(_codes(xg, inv_scale, zero_point, qmax), bits)
    return packed, scale, zero_point.astype(jnp.uint8)


@partial(jax.jit, static_argnames=("shape",), donate_argnums=0)
def _reshape_owned(packed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Reshape a kernel output we own; donating it lets XLA alias the buffer (no 8-32 MB copy)."""
    return packed.reshape(shape)


def quantize(x: jax.Array, *, bits: int, group_size: int, symmetric: bool = False) -> QTensor:
    """Affine per-group quantization along the last axis, with packed codes.

    Per group of ``group_size`` consecutive elements of the last axis: the range is widened to
    include zero (``lo = min(x_min, 0)``, ``hi = max(x_max, 0)``), ``scale = (hi - lo) / qmax``,
    ``zero_point = clip(round(-lo / scale), 0, qmax)`` and
    ``code = clip(round(x / scale) + zero_point, 0, qmax)`` with ``qmax = 2**bits - 1``. With
    ``symmetric=True`` the zero point is ``2**(bits-1)`` and ``scale = max|x| / (2**(bits-1) - 1)``.
    All-zero groups get scale 1 (no division by zero).

    Args:
        x: array ``[..., n]``, converted to float32; ``n`` must be a multiple of ``group_size``.
        bits: 2, 4 or 8 (static).
        group_size: elements per group (static); a multiple of ``8 // bits``.
        symmetric: fix the zero point at mid-range (static).

    Returns:
        A :class:`QTensor` with ``8 // bits`` codes per byte.

    Raises:
        ValueError: unsupported ``bits``, or ``n`` not a multiple of ``group_size``.
    """
    _check_weight_args(jnp.shape(x), bits, group_size)
    shape = tuple(jnp.shape(x))
    packed, scale, zero_point = _quantize_grouped(
        x, bits=int(bits), group_size=int(group_size), symmetric=bool(symmetric)
    )
    return QTensor(
        codes=_reshape_owned(packed, (*shape[:-1], packed.shape[-2] * packed.shape[-1])),
        scale=scale,
        zero_point=zero_point,
        shape=shape,
        bits=int(bits),
        group_size=int(group_size),
        symmetric=bool(symmetric),
    )


def unpack_codes(q: QTensor) -> np.ndarray:
    """``q``'s integer codes in element order, uint8 of ``q.shape`` (its storage is planar within
    each group: :func:`pack_codes` is the inverse)."""
    packed = jnp.asarray(q.codes).reshape(*q.shape[:-1], q.num_groups, -1)
    return np.asarray(_unpack(packed, q.bits)).reshape(q.shape)


def pack_codes(codes: np.ndarray, *, bits: int, group_size: int) -> np.ndarray:
    """Integer codes ``[..., n]`` in element order -> the planar uint8 bytes a :class:`QTensor`
    stores, ``[..., n * bits // 8]`` (inverse of :func:`unpack_codes`)."""
    codes = np.asarray(codes)
    grouped = codes.reshape(*codes.shape[:-1], codes.shape[-1] // group_size, group_size)
    packed = _pack(jnp.asarray(grouped, jnp.float32), bits)
    return np.asarray(packed).reshape(*codes.shape[:-1], codes.shape[-1] * bits // 8)


@jax.jit
def dequantize(q: QTensor) -> jax.Array:
    """Reconstruct the float32 array of shape ``q.shape``: ``(codes - zero_point) * scale``.

    Args:
        q: a :class:`QTensor` from :func:`quantize`.

    Returns:
        float32 array of the original shape.
    """
    packed = q.codes.reshape(*q.shape[:-1], q.num_groups, -1)
    codes = _unpack(packed, q.bits).astype(jnp.float32)
    zero_point = q.zero_point.astype(jnp.float32)[..., None]
    return ((codes - zero_point) * q.scale[..., None]).reshape(q.shape)


@partial(jax.jit, static_argnames=("bits", "group_size", "symmetric"))
def _fake_quantize(x: jax.Array, *, bits: int, group_size: int, symmetric: bool) -> jax.Array:
    qmax = (1 << bits) - 1
    x = x.astype(jnp.float32)
    xg = x.reshape(*x.shape[:-1], x.shape[-1] // group_size, group_size)
    scale, inv_scale, zero_point = _group_params(xg, qmax, symmetric)
    codes = _codes(xg, inv_scale, zero_point, qmax)
    return ((codes - zero_point[..., None]) * scale[..., None]).reshape(x.shape)


def fake_quantize(
    x: jax.Array, *, bits: int, group_size: int, symmetric: bool = False
) -> jax.Array:
    """Quantize and dequantize in one pass, without packing: ``dequantize(quantize(x))``.

    Args and errors as for :func:`quantize`; returns a float32 array of ``x``'s shape.
    """
    _check_weight_args(jnp.shape(x), bits, group_size)
    return _fake_quantize(x, bits=int(bits), group_size=int(group_size), symmetric=bool(symmetric))


@partial(jax.jit, static_argnames=("bits",))
def _activation_params(
    x_min: jax.Array, x_max: jax.Array, *, bits: int
) -> tuple[jax.Array, jax.Array]:
    qmax = (1 << bits) - 1
    lo = jnp.minimum(jnp.asarray(x_min, jnp.float32), 0.0)
    hi = jnp.maximum(jnp.asarray(x_max, jnp.float32), 0.0)
    raw = (hi - lo) / qmax
    scale = jnp.where(raw > 0, jnp.maximum(raw, _TINY), 1.0)
    zero_point = jnp.clip(jnp.round(-lo / scale), 0, qmax)
    return scale, zero_point


def activation_params(
    x_min: jax.Array, x_max: jax.Array, *, bits: int
) -> tuple[jax.Array, jax.Array]:
    """Elementwise affine activation parameters from a range, widened to include zero.

    ``scale = (max(x_max, 0) - min(x_min, 0)) / qmax`` (1 where that range is zero) and
    ``zero_point = clip(round(-min(x_min, 0) / scale), 0, qmax)``, ``qmax = 2**bits - 1``.

    Args:
        x_min: lower range ends, any shape.
        x_max: upper range ends, broadcastable against ``x_min``.
        bits: activation bit width in [2, 16] (static).

    Returns:
        ``(scale, zero_point)``, float32; ``zero_point`` holds integers in ``[0, qmax]`` (float so it
        can be optimized later).

    Raises:
        ValueError: ``bits`` outside [2, 16], or ``x_min`` and ``x_max`` shapes differ.
    """
    check_act_bits(bits)
    if jnp.shape(x_min) != jnp.shape(x_max):
        raise ValueError(
            f"x_min and x_max must have the same shape, got {jnp.shape(x_min)} and "
            f"{jnp.shape(x_max)}"
        )
    return _activation_params(x_min, x_max, bits=int(bits))


@partial(jax.jit, static_argnames=("bits",))
def _fake_quantize_activations(
    x: jax.Array, scale: jax.Array, zero_point: jax.Array, *, bits: int
) -> jax.Array:
    qmax = (1 << bits) - 1
    scale = jnp.asarray(scale, jnp.float32)
    zero_point = jnp.asarray(zero_point, jnp.float32)
    safe_scale = jnp.where(scale > 0, scale, 1.0)
    codes = jnp.clip(jnp.round(x / safe_scale) + zero_point, 0, qmax)
    # A zero scale reconstructs to zero rather than NaN.
    return ((codes - zero_point) * scale).astype(jnp.float32)


def fake_quantize_activations(
    x: jax.Array, scale: jax.Array, zero_point: jax.Array, *, bits: int
) -> jax.Array:
    """Fake-quantize activations: ``(clip(round(x / scale) + zp, 0, qmax) - zp) * scale``.

    Args:
        x: activations, any shape.
        scale: scalar or array broadcastable against ``x`` at equal rank (e.g. ``[..., 1]``).
        zero_point: like ``scale``; integer-valued floats in ``[0, qmax]``.
        bits: activation bit width in [2, 16] (static).

    Returns:
        float32 array of ``x``'s shape.

    Raises:
        ValueError: ``bits`` outside [2, 16].
    """
    check_act_bits(bits)
    return _fake_quantize_activations(x, scale, zero_point, bits=int(bits))


@partial(jax.jit, static_argnames=("bits",))
def _fake_quantize_per_token(x: jax.Array, *, bits: int) -> jax.Array:
    x = jnp.asarray(x, jnp.float32)
    # The static formula with each row's own range: keepdims keeps x's rank for broadcasting.
    scale, zero_point = _activation_params(
        jnp.min(x, axis=-1, keepdims=True), jnp.max(x, axis=-1, keepdims=True), bits=bits
    )
    return _fake_quantize_activations(x, scale, zero_point, bits=bits)


def fake_quantize_per_token(x: jax.Array, *, bits: int) -> jax.Array:
    """Dynamic activation fake-quantization: each row over the last axis (a token of ``[N, L, C]``,
    a sample of ``[N, C]``) gets its own affine range, computed from its values.

    Per row, :func:`activation_params` of the row's ``(min, max)`` (widened to include zero; a
    constant zero row gets scale 1, so nothing divides by zero), then
    :func:`fake_quantize_activations`. No calibration: the range is measured at every call,
    inside the caller's ``jit``.

    Args:
        x: activations ``[..., C]`` with ``C >= 1``.
        bits: activation bit width in [2, 16] (static).

    Returns:
        float32 array of ``x``'s shape.

    Raises:
        ValueError: ``bits`` outside [2, 16], or ``x`` a scalar or with an empty last axis.

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[-1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [4.0, 4.0, 4.0]])
        >>> fake_quantize_per_token(x, bits=2).tolist()  # ranges 3, none and 4: steps 1, -, 4/3
        [[-1.0, 0.0, 2.0], [0.0, 0.0, 0.0], [4.0, 4.0, 4.0]]
    """
    check_act_bits(bits)
    shape = jnp.shape(x)
    if len(shape) == 0 or shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last axis (one row per token), got {shape}")
    return _fake_quantize_per_token(x, bits=int(bits))


def _check_same_shape(name_a: str, a: jax.Array, name_b: str, b: jax.Array) -> None:
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {jnp.shape(a)} and {jnp.shape(b)}"
        )


@jax.jit
def _cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    a = jnp.ravel(a).astype(jnp.float32)
    b = jnp.ravel(b).astype(jnp.float32)
    norm_a = jnp.sqrt(jnp.sum(a * a))
    norm_b = jnp.sqrt(jnp.sum(b * b))
    cosine = jnp.sum(a * b) / jnp.maximum(norm_a * norm_b, _TINY)
    both_zero = (norm_a == 0) & (norm_b == 0)
    return jnp.where(both_zero, 1.0, jnp.clip(cosine, -1.0, 1.0))


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine similarity of two arrays, flattened: a float32 scalar in [-1, 1].

    Two all-zero arrays count as identical (1.0); one all-zero array gives 0.0.

    Raises:
        ValueError: the shapes differ.
    """
    _check_same_shape("a", a, "b", b)
    return _cosine_similarity(a, b)


@jax.jit
def _mse(a: jax.Array, b: jax.Array) -> jax.Array:
    diff = jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32)
    return jnp.mean(diff * diff)


def mse(a: jax.Array, b: jax.Array) -> jax.Array:
    """Mean squared error of two same-shape arrays, a float32 scalar.

    Raises:
        ValueError: the shapes differ.
    """
    _check_same_shape("a", a, "b", b)
    return _mse(a, b)


@jax.jit
def _sqnr_db(reference: jax.Array, approx: jax.Array) -> jax.Array:
    reference = jnp.asarray(reference, jnp.float32)
    noise = reference - jnp.asarray(approx, jnp.float32)
    signal_power = jnp.maximum(jnp.sum(reference * reference), _TINY)
    noise_power = jnp.maximum(jnp.sum(noise * noise), _TINY)
    return 10.0 * (jnp.log10(signal_power) - jnp.log10(noise_power))


def sqnr_db(reference: jax.Array, approx: jax.Array) -> jax.Array:
    """Signal-to-quantization-noise ratio ``10 log10(sum(ref^2) / sum((ref - approx)^2))`` in dB.

    Both powers are floored at the float32 ``tiny`` so an exact reconstruction gives a large finite
    value (not inf or NaN).

    Raises:
        ValueError: the shapes differ.
    """
    _check_same_shape("reference", reference, "approx", approx)
    return _sqnr_db(reference, approx)


def storage_bytes(q: QTensor) -> int:
    """True storage of a :class:`QTensor`: packed codes + float32 scales + uint8 zero points."""
    return sum(
        math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
        for leaf in (q.codes, q.scale, q.zero_point)
    )


def fp32_bytes(shape: Sequence[int]) -> int:
    """Bytes of a float32 array of ``shape``."""
    return 4 * math.prod(tuple(shape))
