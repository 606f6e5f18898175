"""Independent float64 numpy references of the weight quantizers (tests/core/test_weight_quant.py).

Written from the algorithms' definitions, the plainest way: GPTQ one column at a time over the
whole matrix (no blocks, no lazy updates, ``U`` as the Cholesky factor of ``inv(H)``), MSE
clipping as a loop over the candidate factors.
"""

from __future__ import annotations

import numpy as np


def group_params(x: np.ndarray, bits: int, symmetric: bool = False):
    """quantize's per-group parameters of ``x [..., group_size]``: (scale, zero point) float64."""
    qmax = 2**bits - 1
    x = np.asarray(x, np.float64)
    if symmetric:
        half = 2 ** (bits - 1)
        scale = np.abs(x).max(-1) / (half - 1)
        zero_point = np.full(scale.shape, float(half))
    else:
        lo = np.minimum(x.min(-1), 0.0)
        hi = np.maximum(x.max(-1), 0.0)
        scale = (hi - lo) / qmax
    scale = np.where(scale > 0, scale, 1.0)
    if not symmetric:
        zero_point = np.round(-lo / scale)
    return scale, zero_point


def fake_quant(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, bits: int):
    """(codes, dequantized) of ``x [..., gs]`` with per-group ``scale``/``zero_point [...]``."""
    qmax = 2**bits - 1
    codes = np.clip(np.round(x / scale[..., None]) + zero_point[..., None], 0, qmax)
    return codes, (codes - zero_point[..., None]) * scale[..., None]


def gptq(
    w: np.ndarray,
    h: np.ndarray,
    *,
    bits: int,
    group_size: int,
    damp: float = 0.01,
    act_order: bool = False,
    symmetric: bool = False,
):
    """Unblocked GPTQ in float64: (codes [out, in] int, scale [out, groups], zero [out, groups]).

    Column ``j`` (in processing order) is rounded with its group's parameters, its error divided
    by ``U[j, j]`` and pushed onto columns ``j:`` along ``U[j, j:]``, ``inv(H) = U^T U``. A group's
    parameters come from the current weights at its first column, or (``act_order``) from the
    original weights of each natural group.
    """
    qmax = 2**bits - 1
    w = np.array(w, np.float64)
    h = np.array(h, np.float64)
    rows, n = w.shape
    groups = n // group_size
    dead = ~(np.diag(h) > 0)
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    order = np.arange(n)
    scale = np.ones((rows, groups))
    zero = np.zeros((rows, groups))
    if act_order:
        order = np.argsort(-np.diag(h), kind="stable")
        for g in range(groups):
            scale[:, g], zero[:, g] = group_params(
                w[:, g * group_size : (g + 1) * group_size], bits, symmetric
            )
        w = w[:, order]
        h = h[np.ix_(order, order)]
    h = h + damp * np.mean(np.diag(h)) * np.eye(n)
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    codes = np.zeros((rows, n))
    for j in range(n):
        g = order[j] // group_size
        if not act_order and j % group_size == 0:
            scale[:, g], zero[:, g] = group_params(w[:, j : j + group_size], bits, symmetric)
        column = w[:, j]
        code = np.clip(np.round(column / scale[:, g]) + zero[:, g], 0, qmax)
        err = (column - (code - zero[:, g]) * scale[:, g]) / u[j, j]
        w[:, j:] -= np.outer(err, u[j, j:])
        codes[:, j] = code
    codes = codes[:, np.argsort(order)]
    return codes.astype(np.int64), scale, zero


def dequantize(codes: np.ndarray, scale: np.ndarray, zero: np.ndarray, group_size: int):
    """``(codes - zero) * scale`` per group, float64, ``codes [..., n]``."""
    grouped = codes.reshape(*codes.shape[:-1], -1, group_size).astype(np.float64)
    return ((grouped - zero[..., None]) * scale[..., None]).reshape(codes.shape)


def mse_clip(
    x: np.ndarray,
    *,
    bits: int,
    group_size: int,
    factors: np.ndarray,
    symmetric: bool = False,
    norm: float = 2.0,
):
    """Brute-force MSE clipping: (errors [groups..., K], chosen factor index [groups...]).

    Candidate ``k`` scales the min-max range by ``factors[k]`` (same zero point); its error is
    ``sum |x - dequantized|**norm`` over the group, in float64.
    """
    xg = np.asarray(x, np.float64).reshape(*x.shape[:-1], -1, group_size)
    scale, zero = group_params(xg, bits, symmetric)
    errors = []
    for f in np.asarray(factors, np.float32):
        # The candidate scale as the kernel forms it (a float32 product), then float64 maths.
        s = (scale.astype(np.float32) * f).astype(np.float64)
        _, deq = fake_quant(xg, s, zero, bits)
        errors.append((np.abs(xg - deq) ** norm).sum(-1))
    errors = np.stack(errors, axis=-1)
    return errors, errors.argmin(-1)


def proxy_loss(w: np.ndarray, q: np.ndarray, h: np.ndarray) -> float:
    """GPTQ's objective ``tr((W - Q) H (W - Q)^T)``, float64."""
    d = np.asarray(w, np.float64) - np.asarray(q, np.float64)
    return float(np.einsum("ij,jk,ik->", d, np.asarray(h, np.float64), d))
