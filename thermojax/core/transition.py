"""Phase 3: transition optimization of activation quantization parameters with ``jax.grad`` and Optax.

Each layer's per-group (``S = G``) or per-timestep (``S = T``) scales and zero points are tuned to
minimize the fake-quantization error of the calibration activation samples of their own timesteps, plus
a Markov smoothness penalty on consecutive parameters. Layers are independent problems: the whole
optimization (loss, clipping, Adam, early stop) is ``vmap``-ed over layers inside one ``jit``, so every
layer has its own gradient clipping, convergence test and iteration count, and all run in one program.

The loss of one layer with samples ``x[t, k]`` (``t`` in ``[0, T)``, ``k`` in ``[0, K)``), group
``g(t)`` of timestep ``t``, parameters ``s = exp(log_s)`` and ``z = clip(round(z_param), 0, qmax)``::

    x_hat[t, k] = (clip(round(x[t, k] / s[g(t)]) + z[g(t)], 0, qmax) - z[g(t)]) * s[g(t)]
    quant       = mean_{t,k} (x - x_hat)^2 / mse_start          (1.0 at the starting point)
    markov      = mean_i (log s[i+1] - log s[i])^2 + ((z[i+1] - z[i]) / qmax)^2     (0 if S = 1)
    kl          = mean_t KL(N(mu_x[t], var_x[t]) || N(mu_xhat[t], var_xhat[t]))
    entropy     = mean_t min(log(qmax + 1), 0.5 * log(2 pi e var_x[t] / s[g(t)]^2)) / log(qmax + 1)
    loss        = quant + markov_weight * markov + kl_weight * kl - entropy_weight * entropy

Rounding uses the straight-through estimator (identity gradient) and clipping passes the gradient on
the closed range ``[0, qmax]`` only, so scales get the LSQ gradient and zero points get gradient only
through clipped codes and the penalties. ``mse_start`` (the layer's error at the
starting point, floored to avoid a division by zero) makes the quantization term scale-free, so one
``markov_weight`` means the same trade-off for every layer and bit width: a weight of 1 prices a squared
log-jump of 1 like the whole starting quantization error. ``kl`` is ArrowQuant V2's Gaussian transition
statistics term (per-timestep mean and variance of the fp32 versus the fake-quantized samples, variances
floored). ``entropy`` is a Gaussian estimate of the code entropy (nats, as a fraction of its
``log(qmax + 1)`` maximum); a positive ``entropy_weight`` rewards using more quantization levels.

The returned parameters are the best iterate seen (lowest loss), with zero points rounded: with
``markov_weight = kl_weight = entropy_weight = 0`` the quantization error never ends above the starting
point's. A layer stops once its best loss improved by less than ``convergence_threshold`` over the last
``patience`` steps, or after ``max_iterations``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import Array

from thermojax.core.quant import check_act_bits

_TINY = 1e-30


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "scales",
        "zero_points",
        "iterations",
        "converged",
        "loss_history",
        "initial_loss",
        "final_loss",
        "quant_error_before",
        "quant_error_after",
        "markov_penalty_before",
        "markov_penalty_after",
    ],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class TransitionResult:
    """Outcome of :func:`optimize_transitions` (a pytree; per-layer arrays have a leading ``[L]``).

    Attributes:
        scales: ``[L, S]`` optimized scales (> 0).
        zero_points: ``[L, S]`` optimized zero points, integer-valued float32 in ``[0, qmax]``.
        iterations: ``[L]`` int32, loss evaluations (= gradient steps) each layer ran.
        converged: ``[L]`` bool, the layer stopped because its best loss improved by less than
            ``convergence_threshold`` over the last ``patience`` steps.
        loss_history: ``[L, max_iterations]`` loss at each step, NaN after the layer stopped.
        initial_loss: ``[L]`` loss at the starting point.
        final_loss: ``[L]`` loss of the returned parameters.
        quant_error_before: ``[L]`` mean squared fake-quantization error at the starting point.
        quant_error_after: ``[L]`` the same for the returned parameters.
        markov_penalty_before: ``[L]`` the smoothness penalty (``markov`` above) at the start.
        markov_penalty_after: ``[L]`` the same for the returned parameters.
    """

    scales: Array
    zero_points: Array
    iterations: Array
    converged: Array
    loss_history: Array
    initial_loss: Array
    final_loss: Array
    quant_error_before: Array
    quant_error_after: Array
    markov_penalty_before: Array
    markov_penalty_after: Array


def optimize_transitions(
    act_samples: Array,
    scales: Array,
    zero_points: Array,
    edges: Array,
    *,
    bits: int,
    markov_weight: float,
    learning_rate: float = 0.01,
    max_iterations: int = 200,
    convergence_threshold: float = 1e-4,
    patience: int = 20,
    grad_clip: float = 1.0,
    kl_weight: float = 0.0,
    entropy_weight: float = 0.0,
) -> TransitionResult:
    """Optimize every layer's scales and zero points at once (see the module docstring for the loss).

    Args:
        act_samples: ``[L, T, K]`` calibration activation samples per layer and timestep.
        scales: ``[L, S]`` starting scales, positive (``S = G`` groups or ``S = T`` timesteps).
        zero_points: ``[L, S]`` starting zero points (rounded and clipped to ``[0, qmax]`` on entry).
        edges: int ``[S + 1]`` with ``edges[0] = 0``, ``edges[S] = T``.
        bits: activation bit width, 2..16 (``qmax = 2**bits - 1``).
        markov_weight: weight of the smoothness penalty, >= 0.
        learning_rate: Adam step size (> 0), in log-scale units for scales and integer units for zero
            points.
        max_iterations: most gradient steps per layer (static: sets the history length).
        convergence_threshold: stop a layer once its best loss improved by less than this over the
            last ``patience`` steps (>= 0; 0 runs all ``max_iterations``). The loss is relative to the
            starting error, so ``1e-4`` means 0.01% of it. The best loss is tested rather than the
            last step's change because the straight-through loss jumps by a few percent whenever a
            code or a rounded zero point flips: a single-step ``|loss_i - loss_{i-1}|`` test stops
            at random.
        patience: steps over which the improvement is measured (static, >= 1; 1 compares
            consecutive steps).
        grad_clip: per-layer global gradient-norm clip (> 0).
        kl_weight: weight of the Gaussian KL term, >= 0.
        entropy_weight: weight of the code-entropy reward, >= 0.

    Returns:
        A :class:`TransitionResult`.

    Raises:
        ValueError: naming the offending argument and value.
    """
    act_samples, scales, zero_points, group_index = _check_problem(
        act_samples, scales, zero_points, edges, bits=bits
    )
    for name, value in (
        ("markov_weight", markov_weight),
        ("kl_weight", kl_weight),
        ("entropy_weight", entropy_weight),
        ("convergence_threshold", convergence_threshold),
    ):
        if not (math.isfinite(float(value)) and float(value) >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {name}={value!r}")
    for name, value in (("learning_rate", learning_rate), ("grad_clip", grad_clip)):
        if not (math.isfinite(float(value)) and float(value) > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {name}={value!r}")
    if not isinstance(max_iterations, int | np.integer) or max_iterations < 1:
        raise ValueError(f"max_iterations must be an integer >= 1, got {max_iterations!r}")
    if not isinstance(patience, int | np.integer) or patience < 1:
        raise ValueError(f"patience must be an integer >= 1, got patience={patience!r}")
    weights = jnp.asarray(
        [markov_weight, kl_weight, entropy_weight, learning_rate, convergence_threshold, grad_clip],
        jnp.float32,
    )
    return _optimize(
        act_samples,
        scales,
        zero_points,
        group_index,
        weights,
        qmax=2**bits - 1,
        max_iterations=int(max_iterations),
        patience=int(patience),
    )


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["mse", "markov", "kl", "entropy"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class TransitionTerms:
    """Raw per-layer loss terms of :func:`transition_terms` (each ``[L]``), see the module docstring."""

    mse: Array
    markov: Array
    kl: Array
    entropy: Array


def transition_terms(
    act_samples: Array, scales: Array, zero_points: Array, edges: Array, *, bits: int
) -> TransitionTerms:
    """The loss terms of given parameters, differentiable with the optimizer's straight-through rules.

    ``mse`` is the plain mean squared fake-quantization error of each layer's samples (zero points
    rounded and clipped as applied); ``markov``, ``kl`` and ``entropy`` are as in the module docstring.
    Use it to score any parameters (baseline, smoothed, optimized) on the optimizer's own terms, or to
    take ``jax.grad`` through them.

    Args:
        act_samples: ``[L, T, K]`` activation samples.
        scales: ``[L, S]`` positive scales.
        zero_points: ``[L, S]`` zero points.
        edges: int ``[S + 1]`` from 0 to T (concrete).
        bits: activation bit width, 2..16.

    Returns:
        A :class:`TransitionTerms` of ``[L]`` arrays.
    """
    act_samples, scales, zero_points, group_index = _check_problem(
        act_samples, scales, zero_points, edges, bits=bits
    )
    qmax = 2**bits - 1
    terms = jax.vmap(lambda x, s, z: _layer_terms(jnp.log(s), z, x, group_index, qmax=qmax))(
        act_samples, scales, zero_points
    )
    return TransitionTerms(*terms)


def _check_problem(act_samples, scales, zero_points, edges, *, bits):
    """Validate the arrays; returns them as float32 plus the int32 group of each timestep."""
    act_samples = jnp.asarray(act_samples, jnp.float32)
    scales = jnp.asarray(scales, jnp.float32)
    zero_points = jnp.asarray(zero_points, jnp.float32)
    if act_samples.ndim != 3:
        raise ValueError(
            f"act_samples must be [layers, timesteps, samples], got {act_samples.shape}"
        )
    num_layers, num_timesteps, _ = act_samples.shape
    if scales.ndim != 2 or scales.shape != zero_points.shape or scales.shape[0] != num_layers:
        raise ValueError(
            f"scales and zero_points must both be [{num_layers}, S]; got scales{tuple(scales.shape)}"
            f" and zero_points{tuple(zero_points.shape)}"
        )
    num_params = scales.shape[1]
    edges = np.asarray(edges)
    if (
        edges.shape != (num_params + 1,)
        or edges[0] != 0
        or edges[-1] != num_timesteps
        or np.any(np.diff(edges) < 1)
    ):
        raise ValueError(
            f"edges must be {num_params + 1} strictly rising values from 0 to T={num_timesteps}, "
            f"got {edges.tolist()}"
        )
    check_act_bits(bits)
    if not isinstance(scales, jax.core.Tracer) and not bool(
        jnp.all(jnp.isfinite(scales) & (scales > 0))
    ):
        raise ValueError(f"scales must be finite and > 0, got min scale {float(jnp.min(scales))}")
    group_index = np.searchsorted(edges, np.arange(num_timesteps), side="right") - 1
    return act_samples, scales, zero_points, jnp.asarray(group_index, jnp.int32)


def _round_ste(x: Array) -> Array:
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def _clip(x: Array, qmax: int) -> Array:
    """clip(x, 0, qmax) whose gradient is 1 on the closed range and 0 outside.

    ``jnp.clip`` passes half the gradient when ``x`` sits exactly on a bound, which integer codes and
    zero points do all the time (a zero point of 0, a code of qmax).
    """
    inside = (x >= 0) & (x <= qmax)
    return jnp.where(inside, x, jax.lax.stop_gradient(jnp.clip(x, 0, qmax)))


def _layer_terms(log_scales, zero_points, samples, group_index, *, qmax):
    """Raw loss terms of one layer: (mse, markov, kl, entropy)."""
    scales = jnp.exp(log_scales)
    zps = _clip(_round_ste(zero_points), qmax)
    s_t = scales[group_index][:, None]
    z_t = zps[group_index][:, None]
    codes = _clip(_round_ste(samples / s_t) + z_t, qmax)
    approx = (codes - z_t) * s_t
    mse = jnp.mean(jnp.square(samples - approx))
    if scales.shape[0] > 1:
        markov = jnp.mean(jnp.square(jnp.diff(log_scales)) + jnp.square(jnp.diff(zps) / qmax))
    else:
        markov = jnp.zeros(())
    power = jnp.mean(jnp.square(samples))
    var_floor = 1e-6 * power + _TINY
    mu_x = jnp.mean(samples, axis=1)
    mu_q = jnp.mean(approx, axis=1)
    var_x = jnp.var(samples, axis=1) + var_floor
    var_q = jnp.var(approx, axis=1) + var_floor
    kl = jnp.mean(0.5 * (jnp.log(var_q / var_x) + (var_x + jnp.square(mu_x - mu_q)) / var_q - 1.0))
    max_entropy = math.log(qmax + 1)
    entropy_t = 0.5 * jnp.log(2 * math.pi * math.e * var_x / jnp.square(s_t[:, 0]))
    entropy = jnp.mean(jnp.minimum(entropy_t, max_entropy)) / max_entropy
    return mse, markov, kl, entropy


def _layer_loss(params, samples, group_index, mse_norm, weights, *, qmax):
    mse, markov, kl, entropy = _layer_terms(*params, samples, group_index, qmax=qmax)
    return (
        mse / mse_norm + weights[0] * markov + weights[1] * kl - weights[2] * entropy,
        (mse, markov),
    )


@functools.partial(jax.jit, static_argnames=("qmax", "max_iterations", "patience"))
def _optimize(
    act_samples, scales, zero_points, group_index, weights, *, qmax, max_iterations, patience
):
    learning_rate, threshold, grad_clip = weights[3], weights[4], weights[5]
    optimizer = optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(learning_rate))

    def one_layer(samples, layer_scales, layer_zps):
        start = (jnp.log(layer_scales), jnp.clip(jnp.round(layer_zps), 0.0, qmax))
        mse0 = _layer_terms(*start, samples, group_index, qmax=qmax)[0]
        mse_norm = mse0 + 1e-12 * jnp.mean(jnp.square(samples)) + _TINY
        loss_fn = functools.partial(
            _layer_loss,
            samples=samples,
            group_index=group_index,
            mse_norm=mse_norm,
            weights=weights,
            qmax=qmax,
        )
        value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

        def cond(state):
            step, *_, done = state
            return (step < max_iterations) & ~done

        def body(state):
            step, params, opt_state, best, best_loss, history, _ = state
            (loss, _), grads = value_and_grad(params)
            history = history.at[step].set(loss)
            better = loss < best_loss
            best = jax.tree.map(lambda b, p: jnp.where(better, p, b), best, params)
            best_loss = jnp.where(better, loss, best_loss)
            # Best loss as it stood `patience` steps ago (inf before that).
            earlier = jnp.where(jnp.arange(max_iterations) <= step - patience, history, jnp.inf)
            done = (step >= patience) & (jnp.min(earlier) - best_loss < threshold)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return step + 1, params, opt_state, best, best_loss, history, done

        init = (
            jnp.zeros((), jnp.int32),
            start,
            optimizer.init(start),
            start,
            jnp.array(jnp.inf, jnp.float32),
            jnp.full((max_iterations,), jnp.nan, jnp.float32),
            jnp.zeros((), bool),
        )
        steps, _, _, best, best_loss, history, done = jax.lax.while_loop(cond, body, init)
        initial_loss, (_, markov0) = loss_fn(start)
        _, (mse1, markov1) = loss_fn(best)
        return TransitionResult(
            scales=jnp.exp(best[0]),
            zero_points=jnp.clip(jnp.round(best[1]), 0.0, qmax),
            iterations=steps,
            converged=done,
            loss_history=history,
            initial_loss=initial_loss,
            final_loss=best_loss,
            quant_error_before=mse0,
            quant_error_after=mse1,
            markov_penalty_before=markov0,
            markov_penalty_after=markov1,
        )

    return jax.vmap(one_layer)(act_samples, scales, zero_points)
