"""GPTQ's kernel: Hessian-aware rounding with error feedback (Frantar et al., 2023).

Columns (input channels) of ``W [out, in]`` are rounded one at a time; each column's rounding error,
scaled by the inverse Hessian's Cholesky factor, is pushed onto the columns not yet rounded, so the
layer's output error ``tr((W - Q) H (W - Q)^T)`` stays small (``H = sum x x^T`` over calibration
inputs). The public entry is :func:`thermojax.core.weight_quant.quantize_weight` with
``method="gptq"``; this module is its jitted kernel.

Standard GPTQ with groups, in float32:

- dead columns (``diag(H) == 0``: inputs that were always zero) get ``H_ii = 1`` and zero weights;
  then ``damp * mean(diag(H))`` is added to the diagonal;
- ``U``: the upper Cholesky factor of ``H^-1`` (``H^-1 = U^T U``), computed as the flipped inverse of
  the Cholesky factor of the flipped ``H`` (one factorization and one triangular inverse);
- blocks of ``block_size`` columns are rounded column by column with the updates inside the block
  applied at once, and the block's errors applied to the remaining columns as one matrix product;
- a group's scale and zero point are computed when the loop reaches its first column, from the
  weights as updated by every column rounded before (the blocks only batch these updates, so the
  result does not depend on ``block_size``, up to float rounding);
- ``act_order``: columns in decreasing ``diag(H)`` order (a stable sort), with each natural group's
  parameters computed from the original weights before the loop ("static groups"), so the result
  still groups consecutive input channels; codes come back in natural column order.

A Hessian that is not positive definite even after damping (the factorization gives non-finite
numbers) falls back to ``U = I``: plain rounding with GPTQ's group parameters, not NaN.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular

from thermojax.core.quant import _group_params, _pack


def effective_block_size(n: int, group_size: int, block_size: int, *, act_order: bool) -> int:
    """The block size the kernel runs with: ``block_size`` capped at ``n``, and without
    ``act_order`` rounded down to a multiple of ``group_size`` (at least ``group_size``) unless it
    divides ``group_size``, so that each group's first column sees all earlier updates."""
    block = min(block_size, n)
    if not act_order and block % group_size and group_size % block:
        block = max(group_size, block // group_size * group_size)
    return block


def _inverse_hessian_factor(h: jax.Array) -> jax.Array:
    """Upper-triangular ``U`` with ``h^-1 = U^T U``, or the identity where ``h`` is not positive
    definite. With ``J`` the flip, ``J h J = L L^T`` gives ``h = R R^T`` for the upper ``R = J L J``,
    so ``h^-1 = R^-T R^-1`` and ``U = R^-1 = J L^-1 J``."""
    lower = jnp.linalg.cholesky(h[::-1, ::-1])
    eye = jnp.eye(h.shape[0], dtype=h.dtype)
    upper = solve_triangular(lower, eye, lower=True)[::-1, ::-1]
    return jnp.where(jnp.all(jnp.isfinite(upper)), upper, eye)


@partial(
    jax.jit,
    static_argnames=("bits", "group_size", "symmetric", "damp", "block_size", "act_order"),
)
def gptq_kernel(
    w: jax.Array,
    hessian: jax.Array,
    *,
    bits: int,
    group_size: int,
    symmetric: bool,
    damp: float,
    block_size: int,
    act_order: bool,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """GPTQ of ``w [out, in]`` given ``hessian [in, in]``.

    ``block_size`` must come from :func:`effective_block_size`. Returns (packed codes
    ``[out, groups, group_size // p]``, float32 scale ``[out, groups]``, uint8 zero point).
    """
    qmax = (1 << bits) - 1
    rows, n = w.shape
    gs, block = group_size, block_size
    w = w.astype(jnp.float32)
    h = hessian.astype(jnp.float32)
    dead = ~(jnp.diagonal(h) > 0)  # NaN or <= 0 counts as dead too
    h = jnp.where(dead[:, None] | dead[None, :], 0.0, h) + jnp.diag(dead.astype(jnp.float32))
    w = jnp.where(dead[None, :], 0.0, w)
    if act_order:
        perm = jnp.argsort(-jnp.diagonal(h), stable=True)
        static_scale, _, static_zero = _group_params(w.reshape(rows, n // gs, gs), qmax, symmetric)
        h = h[perm][:, perm]
        wt = w.T[perm]
    else:
        wt = w.T  # columns as rows: each column's update is a contiguous row
    h = h + (damp * jnp.mean(jnp.diagonal(h))) * jnp.eye(n, dtype=jnp.float32)

    # Pad to whole blocks with decoupled columns (identity Hessian, zero weights): they take and
    # give no error feedback and are dropped at the end.
    pad = -n % block
    n_pad = n + pad
    if pad:
        h = jnp.block([[h, jnp.zeros((n, pad))], [jnp.zeros((pad, n)), jnp.eye(pad)]])
        wt = jnp.concatenate([wt, jnp.zeros((pad, rows), jnp.float32)])
    u = _inverse_hessian_factor(h)
    groups_pad = -(-n_pad // gs)

    def params(columns: jax.Array) -> tuple[jax.Array, jax.Array]:
        scale, _, zero_point = _group_params(columns.T, qmax, symmetric)
        return scale, zero_point

    if act_order:
        col_group = jnp.concatenate([perm // gs, jnp.zeros((pad,), perm.dtype)])
        scale_tab, zero_tab = static_scale.T, static_zero.T  # [groups, out]
    else:
        scale_tab = jnp.ones((groups_pad, rows), jnp.float32)
        zero_tab = jnp.zeros((groups_pad, rows), jnp.float32)

    def store(tabs, start, scale, zero_point):
        g = start // gs
        return (
            lax.dynamic_update_index_in_dim(tabs[0], scale, g, 0),
            lax.dynamic_update_index_in_dim(tabs[1], zero_point, g, 0),
        )

    def block_step(k, carry):
        wt, codes_t, scale_tab, zero_tab, scale, zero_point = carry
        start = k * block
        w1 = lax.dynamic_slice_in_dim(wt, start, block, 0)
        u1 = lax.dynamic_slice(u, (start, start), (block, block))
        if not act_order and gs >= block:  # a group spans whole blocks: set at its first block

            def new_group():
                s, z = params(lax.dynamic_slice_in_dim(wt, start, gs, 0))
                return (*store((scale_tab, zero_tab), start, s, z), s, z)

            scale_tab, zero_tab, scale, zero_point = lax.cond(
                start % gs == 0, new_group, lambda: (scale_tab, zero_tab, scale, zero_point)
            )

        def column_step(i, inner):
            w1, err1, codes1, scale_tab, zero_tab, scale, zero_point = inner
            if act_order:
                g = col_group[start + i]
                scale, zero_point = scale_tab[g], zero_tab[g]
            elif gs < block:  # groups inside the block: set at their first column

                def new_group():
                    s, z = params(lax.dynamic_slice_in_dim(w1, i, gs, 0))
                    return (*store((scale_tab, zero_tab), start + i, s, z), s, z)

                scale_tab, zero_tab, scale, zero_point = lax.cond(
                    i % gs == 0, new_group, lambda: (scale_tab, zero_tab, scale, zero_point)
                )
            column = w1[i]
            code = jnp.clip(jnp.round(column * (1.0 / scale)) + zero_point, 0.0, float(qmax))
            err = (column - (code - zero_point) * scale) / u1[i, i]
            # u1 is upper triangular: the columns before i get exact zeros.
            w1 = w1 - u1[i][:, None] * err[None, :]
            err1 = lax.dynamic_update_index_in_dim(err1, err, i, 0)
            codes1 = lax.dynamic_update_index_in_dim(codes1, code, i, 0)
            return w1, err1, codes1, scale_tab, zero_tab, scale, zero_point

        zeros = jnp.zeros((block, rows), jnp.float32)
        inner = (w1, zeros, zeros, scale_tab, zero_tab, scale, zero_point)
        _, err1, codes1, scale_tab, zero_tab, scale, zero_point = lax.fori_loop(
            0, block, column_step, inner
        )
        # The block's errors onto every column: rows of U below the block are zero before it,
        # and the block's own columns are rounded already, so only the later ones change.
        wt = wt - lax.dynamic_slice_in_dim(u, start, block, 0).T @ err1
        codes_t = lax.dynamic_update_slice_in_dim(codes_t, codes1, start, 0)
        return wt, codes_t, scale_tab, zero_tab, scale, zero_point

    init = (wt, jnp.zeros_like(wt), scale_tab, zero_tab, jnp.ones((rows,)), jnp.zeros((rows,)))
    _, codes_t, scale_tab, zero_tab, _, _ = lax.fori_loop(0, n_pad // block, block_step, init)
    codes_t = codes_t[:n]
    if act_order:
        codes_t = codes_t[jnp.argsort(perm)]
        scale, zero_point = static_scale, static_zero
    else:
        scale, zero_point = scale_tab[: n // gs].T, zero_tab[: n // gs].T
    packed = _pack(codes_t.T.reshape(rows, n // gs, gs), bits)
    return packed, scale, zero_point.astype(jnp.uint8)
