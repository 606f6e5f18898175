"""Weight quantizers behind one option: min-max, MSE clipping, HQQ and GPTQ.

Every method returns the same packed :class:`~thermojax.core.quant.QTensor` as
:func:`~thermojax.core.quant.quantize` (groups of ``group_size`` consecutive input channels along
the last axis, integer uint8 zero points in ``[0, 2**bits - 1]``, float32 scales > 0), so export,
metrics and sampling do not care which method made it. Only the choice of each group's scale and
zero point (and, for GPTQ, of the codes) differs:

- ``minmax``: the group's range widened to include zero (:func:`~thermojax.core.quant.quantize`).
- ``mse_clip``: the range shrunk by the factor of a static grid that minimizes the group's
  reconstruction error (factor 1 is on the grid, so never worse than ``minmax``).
- ``hqq``: half-quadratic optimization of the zero point (HQQ, Badri & Shaji 2023) with a
  sparsity-promoting lp loss; then, since the QTensor's zero point is an integer, the best of the
  two integers around it with a searched and least-squares-refit scale; per group the better of
  that and ``minmax``.
- ``gptq``: Hessian-aware rounding with error feedback (GPTQ, Frantar et al. 2023), from the
  calibration Hessian ``sum x x^T`` of the layer's inputs (:mod:`thermojax.core.gptq`).

Pure JAX, no I/O. Each method is one jitted program over all groups at once; its options are a
frozen dataclass, static in the jit.

Example:
    >>> import jax
    >>> from thermojax import dequantize, mse, quantize_weight
    >>> w = jax.random.normal(jax.random.key(0), (16, 128))  # [out, in]
    >>> errors = {}
    >>> for method in ("minmax", "mse_clip", "hqq"):
    ...     q = quantize_weight(w, method=method, bits=4, group_size=32)
    ...     errors[method] = float(mse(w, dequantize(q)))
    >>> errors["mse_clip"] < errors["minmax"] and errors["hqq"] < errors["minmax"]
    True
    >>> x = jax.random.normal(jax.random.key(1), (256, 128))  # calibration inputs of the layer
    >>> q = quantize_weight(w, method="gptq", bits=4, group_size=32, hessian=x.T @ x)
    >>> q.codes.shape, q.scale.shape, q.zero_point.dtype  # as quantize(w, ...) packs them
    ((16, 64), (16, 4), dtype('uint8'))
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from thermojax.core.gptq import effective_block_size, gptq_kernel
from thermojax.core.quant import (
    _TINY,
    QTensor,
    _check_weight_args,
    _group_params,
    _pack,
    _reshape_owned,
    quantize,
)

WEIGHT_METHODS = ("minmax", "mse_clip", "hqq", "gptq")
"""The weight quantization methods :func:`quantize_weight` knows."""

# Groups are processed in chunks of about this many candidate elements (chunk x candidates x
# group_size), so each chunk's intermediates stay in cache; one pass over all groups at once
# materialized them in memory and ran 3-4x slower on XLA:CPU.
_CHUNK_ELEMENTS = 1 << 20


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _check_real(name: str, value: object, lo: float, hi: float, *, open_lo: bool = False) -> None:
    ok = _is_real(value) and (lo < value if open_lo else lo <= value) and value <= hi
    if not ok:
        bracket = "(" if open_lo else "["
        raise ValueError(f"{name} must be a number in {bracket}{lo}, {hi}], got {name}={value!r}")


def _check_count(name: str, value: object, lo: int) -> None:
    if not _is_int(value) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {name}={value!r}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        # ValueError like every other bad option: the pipeline turns it into a UserInputError.
        raise ValueError(f"{name} must be a bool, got {name}={value!r}")  # noqa: TRY004


@dataclasses.dataclass(frozen=True)
class MseClipOptions:
    """Options of ``method="mse_clip"``.

    Attributes:
        grid_size: shrink factors tried per group, evenly spaced from 1 down to ``min_shrink``.
        min_shrink: the smallest factor, in (0, 1].
        norm: the error minimized is ``sum |x - dequantized|**norm`` per group (2: squared).
    """

    grid_size: int = 20
    min_shrink: float = 0.5
    norm: float = 2.0

    def __post_init__(self) -> None:
        _check_count("grid_size", self.grid_size, 1)
        _check_real("min_shrink", self.min_shrink, 0.0, 1.0, open_lo=True)
        _check_real("norm", self.norm, 0.0, 16.0, open_lo=True)

    @property
    def factors(self) -> np.ndarray:
        """float32 ``[grid_size]`` shrink factors, 1 first (ties go to the widest range)."""
        return np.linspace(1.0, self.min_shrink, self.grid_size, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class HqqOptions:
    """Options of ``method="hqq"`` (defaults as in HQQ).

    Attributes:
        lp_norm: the p < 1 of the sparsity-promoting loss ``|x - dequantized|**p``, in (0, 1].
        beta: initial penalty weight of the half-quadratic splitting.
        kappa: ``beta`` is multiplied by ``kappa`` each iteration (>= 1).
        iters: the most iterations.
        early_stop: stop a group once its squared error stops decreasing (its best iterate is
            kept either way).
        optimize_scale: also refit the scale each iteration (joint least squares of scale and
            zero point on the shrunk target), not only the zero point.
        scale_search: for the integer zero point, scales tried around HQQ's, evenly spaced over
            ``[1 - scale_span, 1 + scale_span]`` times it (an odd count includes HQQ's own).
        scale_span: half-width of that search, relative, in [0, 1).
        refit_steps: then alternations of nearest rounding and the closed-form least-squares
            scale for those codes (neither step can raise the error).
    """

    lp_norm: float = 0.7
    beta: float = 10.0
    kappa: float = 1.01
    iters: int = 20
    early_stop: bool = True
    optimize_scale: bool = False
    scale_search: int = 13
    scale_span: float = 0.1
    refit_steps: int = 2

    def __post_init__(self) -> None:
        _check_real("lp_norm", self.lp_norm, 0.0, 1.0, open_lo=True)
        _check_real("beta", self.beta, 0.0, 1e12, open_lo=True)
        _check_real("kappa", self.kappa, 1.0, 1e3)
        _check_count("iters", self.iters, 1)
        _check_count("scale_search", self.scale_search, 1)
        if not (_is_real(self.scale_span) and 0.0 <= self.scale_span < 1.0):
            raise ValueError(
                f"scale_span must be a number in [0, 1), got scale_span={self.scale_span!r}"
            )
        _check_count("refit_steps", self.refit_steps, 0)
        _check_bool("early_stop", self.early_stop)
        _check_bool("optimize_scale", self.optimize_scale)

    @property
    def scale_factors(self) -> np.ndarray:
        """float32 ``[scale_search]`` factors of HQQ's scale tried with the integer zero point."""
        span = self.scale_span if self.scale_search > 1 else 0.0
        return np.linspace(1.0 - span, 1.0 + span, self.scale_search, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class GptqOptions:
    """Options of ``method="gptq"``.

    Attributes:
        damp: added to the Hessian's diagonal, as a fraction of its mean diagonal, in [0, 1].
        block_size: columns per lazy batched update (speed only, not the result). Without
            ``act_order`` it is rounded to a multiple or a divisor of ``group_size`` where it is
            neither, and capped at the input width.
        act_order: process columns in decreasing ``diag(H)`` order; the groups' parameters then
            come from the original weights of each natural group (static groups), so the
            QTensor still groups consecutive input channels.
    """

    damp: float = 0.01
    block_size: int = 128
    act_order: bool = False

    def __post_init__(self) -> None:
        _check_real("damp", self.damp, 0.0, 1.0)
        _check_count("block_size", self.block_size, 1)
        _check_bool("act_order", self.act_order)


_OPTIONS = {"mse_clip": MseClipOptions, "hqq": HqqOptions, "gptq": GptqOptions}


def _group_sum(v: jax.Array) -> jax.Array:
    """Sum over the last (group) axis as a matrix-vector product: XLA:CPU's reduce loop sums a
    row serially (latency-bound), the dot kernel does not (3x faster here)."""
    return v @ jnp.ones((v.shape[-1],), v.dtype)


def _codes(xg: jax.Array, scale: jax.Array, zero_point: jax.Array, qmax: int) -> jax.Array:
    """Nearest codes ``clip(round(x / scale) + zp, 0, qmax)`` of groups ``xg [..., m, gs]``.

    ``x * (1 / scale)`` as in :func:`~thermojax.core.quant.quantize`, so a group whose
    parameters are min-max ones gets exactly its codes.
    """
    inv = (1.0 / scale)[..., None]
    return jnp.clip(jnp.round(xg * inv) + zero_point[..., None], 0.0, float(qmax))


def _reconstruction_error(
    xg: jax.Array, scale: jax.Array, zero_point: jax.Array, qmax: int, norm: float = 2.0
) -> jax.Array:
    """``sum |x - (codes - zp) * scale|**norm`` per group; NaN counts as inf, so that an argmin
    over candidates never picks one."""
    err = xg - (_codes(xg, scale, zero_point, qmax) - zero_point[..., None]) * scale[..., None]
    total = _group_sum(err * err if norm == 2.0 else jnp.abs(err) ** norm)
    return jnp.where(jnp.isnan(total), jnp.inf, total)


def _map_groups(fn, xg: jax.Array, chunk: int):
    """Apply ``fn`` to ``xg [m, gs]`` in chunks of ``chunk`` groups (padded with zero groups)."""
    m, chunk = xg.shape[0], max(1, chunk)
    if m <= chunk:
        return fn(xg)
    pad = -m % chunk
    if pad:
        xg = jnp.concatenate([xg, jnp.zeros((pad, xg.shape[1]), xg.dtype)])
    out = lax.map(fn, xg.reshape(-1, chunk, xg.shape[1]))
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:])[:m], out)


def _finish(
    xg: jax.Array, scale: jax.Array, zero_point: jax.Array, qmax: int, bits: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(packed codes, scale, uint8 zero point) of groups ``xg [m, gs]`` with given parameters."""
    packed = _pack(_codes(xg, scale, zero_point, qmax), bits)
    return packed, scale, zero_point.astype(jnp.uint8)


# ---------------------------------------------------------------------------------- mse_clip


def _mse_clip_chunk(
    xg: jax.Array, *, bits: int, symmetric: bool, options: MseClipOptions
) -> tuple[jax.Array, jax.Array, jax.Array]:
    qmax = (1 << bits) - 1
    scale, _, zero_point = _group_params(xg, qmax, symmetric)
    # Shrinking lo and hi by one factor leaves the zero point round(-lo / scale) unchanged: only
    # the scale moves. Factor 1 is exactly the min-max scale (1.0 * s == s); the floor keeps a
    # shrunk tiny scale from flushing to zero (1 / 0 would make NaN codes).
    factors = jnp.asarray(options.factors)[:, None]
    scales = jnp.maximum(factors * scale[None], _TINY)
    errors = _reconstruction_error(xg[None], scales, zero_point[None], qmax, options.norm)
    best = jnp.argmin(errors, axis=0)  # the first minimum: the widest range on ties
    best_scale = jnp.take_along_axis(scales, best[None], axis=0)[0]
    return _finish(xg, best_scale, zero_point, qmax, bits)


# ------------------------------------------------------------------------------------ hqq


def _shrink_lp(err: jax.Array, beta: jax.Array, p: float) -> jax.Array:
    """The proximal step of ``|e|**p / beta``: generalized soft thresholding (HQQ's shrink)."""
    magnitude = jnp.abs(err)
    if p == 1.0:
        threshold = 1.0 / beta
    else:  # exp(log) instead of **: XLA:CPU's pow is ~5x slower
        threshold = jnp.exp((p - 1.0) * jnp.log(magnitude + 1e-8)) / beta
    return jnp.sign(err) * jnp.maximum(magnitude - threshold, 0.0)


def _shrink_is_zero(err: jax.Array, beta: jax.Array, p: float) -> jax.Array:
    """Whether :func:`_shrink_lp` is exactly zero on all of ``err``: it is nonzero only where
    ``|e| > beta**(-1 / (2 - p))``, and no element comes within 1e-4 of that. HQQ's beta suits
    LLM-sized weights, whose errors stay below it: then the transcendentals are skipped."""
    return jnp.max(jnp.abs(err)) < beta ** (-1.0 / (2.0 - p)) * (1.0 - 1e-4)


def _hqq_float(
    xg: jax.Array, *, bits: int, symmetric: bool, options: HqqOptions
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """HQQ's iterations with a float zero point: (scale, float zero point, squared error) of each
    group's best iterate, started from the min-max parameters (range widened to include zero).

    Each iteration: nearest codes ``q`` for the current parameters, the reconstruction error
    ``e``, its sparse part ``shrink(e)`` (half-quadratic splitting of the lp loss), then the
    closed-form least-squares zero point (and with ``optimize_scale`` the scale too) that maps the
    codes onto the target ``x - shrink(e)``: ``z' = mean(q - (x - shrink(e)) / s)``, which is
    ``z - mean(e - shrink(e)) / s``. ``beta`` grows by ``kappa``. A group stops (with
    ``early_stop``) once its squared error does not decrease; its best iterate is returned.
    """
    qmax = (1 << bits) - 1
    p = options.lp_norm
    scale0, _, zero_point0 = _group_params(xg, qmax, symmetric)
    if not symmetric:
        zero_point0 = -jnp.minimum(jnp.min(xg, axis=-1), 0.0) / scale0  # unrounded, as HQQ
    fit_scale = options.optimize_scale or symmetric
    n = xg.shape[-1]

    def fit_zero(err, err_sum, scale, zero_point, beta):
        sparse_sum = lax.cond(
            _shrink_is_zero(err, beta, p),
            lambda: jnp.zeros_like(err_sum),
            lambda: _group_sum(_shrink_lp(err, beta, p)),
        )
        return scale, zero_point - (err_sum - sparse_sum) / (n * scale)

    def fit_both(codes, err, scale, zero_point, beta):
        sparse = lax.cond(
            _shrink_is_zero(err, beta, p), jnp.zeros_like, partial(_shrink_lp, beta=beta, p=p), err
        )
        target = xg - sparse
        if symmetric:
            centred, target_c = codes - zero_point[:, None], target
        else:
            centred = codes - (_group_sum(codes) / n)[:, None]
            target_c = target - (_group_sum(target) / n)[:, None]
        num = _group_sum(centred * target_c)
        den = _group_sum(centred * centred)
        ok = (num > 0) & (den > 0)
        new_scale = jnp.where(ok, jnp.maximum(num / jnp.where(ok, den, 1.0), _TINY), scale)
        if symmetric:
            return new_scale, zero_point
        new_zero = (_group_sum(codes) - _group_sum(target) / new_scale) / n
        return new_scale, jnp.where(ok, new_zero, zero_point)

    def cond(state):
        it, _, _, _, _, _, _, active = state
        return (it < options.iters) & jnp.any(active)

    def body(state):
        it, beta, scale, zero_point, best_scale, best_zero, best_err, active = state
        inv = (1.0 / scale)[:, None]
        codes = jnp.clip(jnp.round(xg * inv + zero_point[:, None]), 0.0, float(qmax))
        err = xg - (codes - zero_point[:, None]) * scale[:, None]
        err_sum, sq_err = _group_sum(jnp.stack([err, err * err]))
        improved = active & (sq_err < best_err)
        best_scale = jnp.where(improved, scale, best_scale)
        best_zero = jnp.where(improved, zero_point, best_zero)
        best_err = jnp.where(improved, sq_err, best_err)
        if options.early_stop:
            active = improved
        if fit_scale:
            new_scale, new_zero = fit_both(codes, err, scale, zero_point, beta)
        else:
            new_scale, new_zero = fit_zero(err, err_sum, scale, zero_point, beta)
        scale = jnp.where(active, new_scale, scale)
        zero_point = jnp.where(active, new_zero, zero_point)
        return (
            it + 1,
            beta * options.kappa,
            scale,
            zero_point,
            best_scale,
            best_zero,
            best_err,
            active,
        )

    inf = jnp.full(scale0.shape, jnp.inf, jnp.float32)
    state = (0, jnp.float32(options.beta), scale0, zero_point0, scale0, zero_point0, inf)
    state = lax.while_loop(cond, body, (*state, jnp.ones(scale0.shape, bool)))
    return state[4], state[5], state[6]


def _hqq_chunk(
    xg: jax.Array, *, bits: int, symmetric: bool, options: HqqOptions
) -> tuple[jax.Array, jax.Array, jax.Array]:
    qmax = (1 << bits) - 1
    scale_mm, _, zero_mm = _group_params(xg, qmax, symmetric)
    scale_f, zero_f, _ = _hqq_float(xg, bits=bits, symmetric=symmetric, options=options)
    # QTensor stores an integer zero point: the better of the two integers around HQQ's float
    # one at HQQ's scale, then scales around HQQ's with it (the integer grid must contain 0, so
    # the scale is the freedom left), then alternately nearest codes and their least-squares
    # scale (neither step can raise the error); finally per group the better of that and min-max.
    if symmetric:
        zero_point = zero_f
    else:
        zeros = jnp.clip(jnp.floor(zero_f)[None] + jnp.array([[0.0], [1.0]]), 0.0, float(qmax))
        scales = jnp.broadcast_to(scale_f[None], zeros.shape)
        best = jnp.argmin(_reconstruction_error(xg[None], scales, zeros, qmax), axis=0)[None]
        zero_point = jnp.take_along_axis(zeros, best, axis=0)[0]
    scales = jnp.maximum(jnp.asarray(options.scale_factors)[:, None] * scale_f[None], _TINY)
    zeros = jnp.broadcast_to(zero_point[None], scales.shape)
    best = jnp.argmin(_reconstruction_error(xg[None], scales, zeros, qmax), axis=0)[None]
    scale = jnp.take_along_axis(scales, best, axis=0)[0]
    for _ in range(options.refit_steps):
        steps = _codes(xg, scale, zero_point, qmax) - zero_point[:, None]
        num = _group_sum(steps * xg)
        den = _group_sum(steps * steps)
        ok = (num > 0) & (den > 0)
        scale = jnp.where(ok, jnp.maximum(num / jnp.where(ok, den, 1.0), _TINY), scale)
    all_scales = jnp.stack([scale_mm, scale])
    all_zeros = jnp.stack([zero_mm, zero_point])
    errors = _reconstruction_error(xg[None], all_scales, all_zeros, qmax)
    best = jnp.argmin(errors, axis=0)[None]  # min-max first: it wins ties
    scale = jnp.take_along_axis(all_scales, best, axis=0)[0]
    zero_point = jnp.take_along_axis(all_zeros, best, axis=0)[0]
    return _finish(xg, scale, zero_point, qmax, bits)


# ------------------------------------------------------------------------------ the program


@partial(jax.jit, static_argnames=("method", "bits", "group_size", "symmetric", "options"))
def _quantize_groups(
    w: jax.Array, *, method: str, bits: int, group_size: int, symmetric: bool, options
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(packed codes ``[m, group_size // p]``, scale ``[m]``, zero point ``[m]``) of every group."""
    xg = w.astype(jnp.float32).reshape(-1, group_size)
    if method == "mse_clip":
        fn = partial(_mse_clip_chunk, bits=bits, symmetric=symmetric, options=options)
        candidates = options.grid_size
    else:
        fn = partial(_hqq_chunk, bits=bits, symmetric=symmetric, options=options)
        candidates = options.scale_search + 2
    return _map_groups(fn, xg, _CHUNK_ELEMENTS // (candidates * group_size))


@partial(jax.jit, static_argnames=("bits", "group_size", "symmetric", "options"))
def _hqq_float_zero_error(
    w: jax.Array, *, bits: int, group_size: int, symmetric: bool, options: HqqOptions
) -> jax.Array:
    """Squared error per group of HQQ with its float zero point (no integer step, no min-max
    fallback): what the integer zero point of ``method="hqq"`` is measured against."""
    xg = w.astype(jnp.float32).reshape(-1, group_size)
    fn = partial(_hqq_float, bits=bits, symmetric=symmetric, options=options)
    return _map_groups(lambda c: fn(c)[2], xg, _CHUNK_ELEMENTS // (4 * group_size))


def _check_options(method: str, options: object):
    if method == "minmax":
        if options is not None:
            raise ValueError(f"method='minmax' takes no options, got options={options!r}")
        return None
    cls = _OPTIONS[method]
    if options is None:
        return cls()
    if not isinstance(options, cls):
        raise ValueError(  # noqa: TRY004 (a user's option, checked like the others: ValueError)
            f"options of method={method!r} must be a {cls.__name__} or None, "
            f"got options={options!r}"
        )
    return options


def _check_hessian(hessian: object, shape: tuple[int, ...]) -> None:
    if hessian is None:
        raise ValueError(
            "method='gptq' needs hessian, the [in, in] sum of x x^T over calibration inputs; "
            "got hessian=None"
        )
    if len(shape) != 2:
        raise ValueError(f"method='gptq' quantizes a matrix [out, in], got w of shape {shape}")
    n = shape[-1]
    if tuple(jnp.shape(hessian)) != (n, n):
        raise ValueError(
            f"hessian must have shape ({n}, {n}) for w of shape {shape}, "
            f"got hessian of shape {tuple(jnp.shape(hessian))}"
        )


def quantize_weight(
    w: jax.Array,
    *,
    method: str = "minmax",
    bits: int,
    group_size: int,
    symmetric: bool = False,
    hessian: jax.Array | None = None,
    options: MseClipOptions | HqqOptions | GptqOptions | None = None,
) -> QTensor:
    """Quantize a weight matrix ``[out, in]`` per group of input channels with ``method``.

    Args:
        w: weights ``[..., in]`` (``[out, in]`` for ``gptq``), converted to float32; ``in`` a
            multiple of ``group_size``. Groups are ``group_size`` consecutive elements of the last
            axis, as in :func:`~thermojax.core.quant.quantize`.
        method: one of :data:`WEIGHT_METHODS` (static).
        bits: 2, 4 or 8 (static).
        group_size: input channels per group (static); a multiple of ``8 // bits``.
        symmetric: zero point fixed at ``2**(bits-1)`` (static); ``hqq`` then fits the scale only.
        hessian: ``gptq`` only (ignored otherwise): float32 ``[in, in]``, the sum of ``x x^T``
            over calibration inputs ``x`` of the layer.
        options: the method's options dataclass (:class:`MseClipOptions`, :class:`HqqOptions`,
            :class:`GptqOptions`), static; ``None`` for its defaults. ``minmax`` has none.

    Returns:
        A :class:`~thermojax.core.quant.QTensor` packed exactly as
        :func:`~thermojax.core.quant.quantize` packs it.

    Raises:
        ValueError: an unknown ``method``, options of another method or out of range, bad
            ``bits``/``group_size``/shape, or a missing or misshapen ``hessian`` for ``gptq``.
    """
    if method not in WEIGHT_METHODS:
        raise ValueError(f"method must be one of {WEIGHT_METHODS}, got method={method!r}")
    shape = tuple(jnp.shape(w))
    _check_weight_args(shape, bits, group_size)
    options = _check_options(method, options)
    bits, group_size, symmetric = int(bits), int(group_size), bool(symmetric)
    if method == "minmax":
        return quantize(w, bits=bits, group_size=group_size, symmetric=symmetric)
    if method == "gptq":
        _check_hessian(hessian, shape)
        block = effective_block_size(
            shape[-1], group_size, options.block_size, act_order=options.act_order
        )
        packed, scale, zero_point = gptq_kernel(
            w,
            hessian,
            bits=bits,
            group_size=group_size,
            symmetric=symmetric,
            damp=float(options.damp),
            block_size=block,
            act_order=options.act_order,
        )
    else:
        packed, scale, zero_point = _quantize_groups(
            w, method=method, bits=bits, group_size=group_size, symmetric=symmetric, options=options
        )
    groups = (*shape[:-1], shape[-1] // group_size)
    return QTensor(
        codes=_reshape_owned(packed, (*shape[:-1], shape[-1] * bits // 8)),
        scale=scale.reshape(groups),
        zero_point=zero_point.reshape(groups),
        shape=shape,
        bits=bits,
        group_size=group_size,
        symmetric=symmetric,
    )
