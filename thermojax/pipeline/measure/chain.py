"""The chain's error budget: where along the sampler the final error of a quantized run enters.

The Markov smoothness score looks at the activation parameters' jumps between adjacent time
groups; it does not say how much of the final error each stretch of the chain causes. The budget
does, from sampler runs that all start from the fp32 run's noise:

- ``total``: the fully quantized chain (weights and activations at every step) against fp32.
- ``per_group[g]``: quantized weights and activations at the steps of time group ``g`` only,
  fp32 elsewhere: the error injected there and carried to the end.
- ``per_boundary[b]``: how the final error changes when the steps of group ``b + 1`` (the one
  the sampler runs just before crossing into group ``b``) use group ``b``'s activation
  parameters, everything else fully quantized: the chain without the jump at edge ``b + 1``,
  minus the chain with it.
- ``additivity``: ``sum(per_group) / total``. Errors injected at different steps need not add
  up; the ratio says how far they are from it.

Every run is one jitted ``lax.scan`` over the sampler's steps that switches each step between
the quantized and fp32 weights and activations (:func:`_switched_chain_program`); the model and
the parameters are its arguments, so the ``2 G + 1`` runs share one compilation.

The final error is the mean squared difference per element of the final model-space state (the
digits DDPM's state is the image in [-1, 1]), in float64. A token state (masked-diffusion LM)
would need another measure (its final tokens flip all or nothing, and the honest one, the
logits' divergence along the fp32 trajectory, the sampler does not expose), so its models are
refused for now.

Example:
    >>> from thermojax.models import load_model
    >>> from thermojax.models.base import SamplerSpec
    >>> from thermojax.pipeline.weights.quantize import quantize_weights
    >>> model = load_model()
    >>> qweights, _ = quantize_weights(model, bits=4)
    >>> budget = chain_budget(model, qweights=qweights, act_params=None, edges=[0, 500, 1000],
    ...     num_samples=4, seed=0, sampler=SamplerSpec("ddim", steps=10))
    >>> budget.per_group.shape, budget.per_boundary.tolist()
    ((2,), [0.0])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.models.base import DiffusionModel, SamplerSpec, SkippingModel
from thermojax.pipeline.measure.sampling import ActParams, check_act_params, quantize_input
from thermojax.pipeline.weights.quantize import dense_weights

__all__ = ["ChainBudget", "chain_budget"]

FINAL_ERROR = "mean squared difference per element of the final model-space state"
"""What every figure of a :class:`ChainBudget` measures, against the fp32 chain's final state."""


@dataclasses.dataclass(frozen=True)
class ChainBudget:
    """Where the final error of a quantized chain enters, per time group and boundary.

    Every figure is :data:`FINAL_ERROR` against the fp32 chain from the same noise.

    Attributes:
        total: the fully quantized chain's final error.
        per_group: float64 ``[G]``, the final error with only group ``g``'s steps quantized
            (weights and activations), fp32 elsewhere.
        per_boundary: float64 ``[G - 1]``, at edge ``b + 1``: the final error of the fully
            quantized chain whose group ``b + 1`` uses group ``b``'s activation parameters,
            minus ``total`` (positive: the jump lowers the error; 0 without activation
            parameters, or where the two groups' parameters are equal).
        additivity: ``sum(per_group) / total`` (NaN for ``total == 0``).
        edges: the ``G + 1`` time-group edges on the model's T timesteps.
        steps_per_group: how many of the sampler's steps fall in each group.
    """

    total: float
    per_group: np.ndarray
    per_boundary: np.ndarray
    additivity: float
    edges: tuple[int, ...]
    steps_per_group: tuple[int, ...]


def _chain_step(
    model: DiffusionModel,
    spec: SamplerSpec,
    weights: Mapping[str, jax.Array],
    x_t: jax.Array,
    t: jax.Array,
    t_prev: jax.Array,
    key: jax.Array,
    act_hook: Any,
) -> jax.Array:
    """One step of ``spec``, as :func:`~thermojax.models.base.run_sampler` takes it."""
    if spec.name == "ddim":
        x_prev, _ = model.step_between(
            weights, x_t, t, t_prev, key, eta=spec.eta, act_hook=act_hook
        )
    else:
        x_prev, _ = model.step(weights, x_t, t, key, act_hook=act_hook)
    return x_prev


@partial(jax.jit, static_argnames=("num_samples", "bits", "sampler", "channel_groups"))
def _switched_chain_program(
    model: DiffusionModel,
    fp32: dict[str, jax.Array],
    quantized: dict[str, jax.Array],
    weights_on: jax.Array,
    scales: jax.Array | None,
    zero_points: jax.Array | None,
    acts_on: jax.Array,
    key: jax.Array,
    *,
    num_samples: int,
    bits: int,
    sampler: SamplerSpec | None,
    channel_groups: int = 1,
) -> jax.Array:
    """The final state of the sampler whose step at timestep ``t`` runs the ``quantized``
    weights where ``weights_on[t]`` (fp32 elsewhere) and fake-quantizes every layer's input
    with ``scales[:, t]``, ``zero_points[:, t]`` where ``acts_on[t]`` (``scales=None``: fp32
    activations everywhere). The noise is :func:`~thermojax.models.base.run_sampler`'s for
    ``key``: the initial state from its first split, each step's from the second, folded
    with ``t``."""
    spec = SamplerSpec() if sampler is None else sampler
    init_key, step_key, _ = jax.random.split(key, 3)
    x_init = model.initial_state(init_key, num_samples)

    def body(x_t: jax.Array, pair: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        t, t_prev = pair
        weights = jax.tree.map(lambda q, f: jnp.where(weights_on[t], q, f), quantized, fp32)
        act_hook = None
        if scales is not None:
            num_layers = len(model.layer_names)

            def act_hook(layer: int, h: jax.Array, t: jax.Array, kinds=None) -> jax.Array:
                q = quantize_input(
                    h,
                    scales,
                    zero_points,
                    layer,
                    t,
                    bits=bits,
                    num_layers=num_layers,
                    channel_groups=channel_groups,
                )
                return jnp.where(acts_on[t], q, h)

        noise = jax.random.fold_in(step_key, t)
        return _chain_step(model, spec, weights, x_t, t, t_prev, noise, act_hook), None

    descending = spec.timesteps(model.num_timesteps)[::-1]
    following = np.concatenate([descending[1:], [-1]]).astype(np.int32)
    pairs = (jnp.asarray(descending, jnp.int32), jnp.asarray(following, jnp.int32))
    x0, _ = jax.lax.scan(body, x_init, pairs)
    return x0


def _final_error(state: jax.Array, reference: np.ndarray) -> float:
    """:data:`FINAL_ERROR`, in float64."""
    diff = np.asarray(state, np.float64) - np.asarray(reference, np.float64)
    return float(np.mean(diff**2))


def _check_chain(
    model: DiffusionModel, sampler: SamplerSpec | None, edges: np.ndarray, num_samples: int
) -> None:
    state = jax.eval_shape(lambda: model.initial_state(jax.random.PRNGKey(0), 1))
    if not jnp.issubdtype(state.dtype, jnp.floating):
        raise ValueError(
            f"chain budget: the {model.family!r} family's state is {state.dtype} tokens; the "
            "budget measures a float state's squared error and has no token measure yet"
        )
    if sampler is not None and sampler.name == "ddim" and not isinstance(model, SkippingModel):
        raise ValueError(f"sampler=ddim: {type(model).__name__} has no DDIM step (step_between)")
    if edges.ndim != 1 or len(edges) < 2 or edges[0] != 0 or edges[-1] != model.num_timesteps:
        raise ValueError(
            f"chain budget edges {edges.tolist()} must run from 0 to T={model.num_timesteps}"
        )
    if np.any(np.diff(edges) < 1):
        raise ValueError(f"chain budget edges must be strictly increasing, got {edges.tolist()}")
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")


def chain_budget(
    model: DiffusionModel,
    *,
    qweights: Mapping[str, Any] | None,
    act_params: ActParams | None,
    num_samples: int,
    seed: int,
    sampler: SamplerSpec | None = None,
    edges: Sequence[int] | None = None,
    fp32_final: np.ndarray | None = None,
) -> ChainBudget:
    """The chain's error budget of ``qweights`` and ``act_params`` (see the module).

    Args:
        model: the model (a float state: the digits DDPM).
        qweights: layer name -> QTensor or ``[in, out]`` array, the run's quantized weights
            (``None``: fp32 weights, so only the activations are budgeted).
        act_params: the run's static activation parameters per layer and time group (``None``:
            fp32 activations, only the weights are budgeted, and every boundary costs 0).
        num_samples, seed: the chains' size and noise (``sample``'s for the same values).
        sampler: the reverse process and its steps (``None``: the model's own).
        edges: the time groups ``[G + 1]`` on the model's T timesteps: only without
            ``act_params``, whose own edges are the groups otherwise.
        fp32_final: the fp32 chain's final model-space state ``[N, D]`` from the same noise
            (``sample(...).trajectory[0]``); ``None``: run it here, with the switched program.

    Returns:
        The :class:`ChainBudget`.

    Raises:
        ValueError: a token-state model, ``act_params`` in ``dynamic`` mode or malformed, bad
            ``edges`` or ``num_samples``, ``fp32_final`` of the wrong shape, or DDIM on a model
            without it.
    """
    if (edges is None) == (act_params is None):
        raise ValueError("chain budget: the time groups come from act_params, or else edges")
    if edges is None:
        edges = act_params.edges
    edges = np.asarray(edges, np.int64)
    _check_chain(model, sampler, edges, num_samples)
    num_timesteps, num_groups = int(model.num_timesteps), len(edges) - 1
    timesteps = (SamplerSpec() if sampler is None else sampler).timesteps(num_timesteps)
    group = np.searchsorted(edges, np.arange(num_timesteps), side="right") - 1
    scales = zero_points = None
    bits = 0
    if act_params is not None:
        check_act_params(model, act_params)
        if act_params.mode != "static":
            raise ValueError(
                f"chain budget: act_params mode {act_params.mode!r} has no parameters to budget "
                "(static only)"
            )
        bits = int(act_params.bits)
        scales = np.asarray(act_params.scales, np.float32)
        zero_points = np.asarray(act_params.zero_points, np.float32)
    fp32 = dense_weights(model, None)
    quantized = fp32 if qweights is None else dense_weights(model, qweights)
    key = jax.random.PRNGKey(seed)

    def run(weights_on: np.ndarray, acts_on: np.ndarray, columns: np.ndarray = group):
        """The final state; ``columns``: the activation group each timestep takes (gathered
        to ``[L, T]`` as ``sample`` does, so one compilation serves every number of groups)."""
        return _switched_chain_program(
            model,
            fp32,
            quantized,
            jnp.asarray(weights_on),
            None if scales is None else jnp.asarray(scales[:, columns]),
            None if zero_points is None else jnp.asarray(zero_points[:, columns]),
            jnp.asarray(acts_on),
            key,
            num_samples=int(num_samples),
            bits=bits,
            sampler=sampler,
            channel_groups=1 if act_params is None else int(act_params.channel_groups),
        )

    everywhere = np.ones(num_timesteps, bool)
    if fp32_final is None:
        fp32_final = np.asarray(run(~everywhere, ~everywhere))
    quantized_final = run(everywhere, everywhere)
    if np.shape(fp32_final) != quantized_final.shape:
        raise ValueError(
            f"fp32_final has shape {np.shape(fp32_final)}; the chain's final state is "
            f"{quantized_final.shape}"
        )
    total = _final_error(quantized_final, fp32_final)
    per_group = np.asarray(
        [_final_error(run(group == g, group == g), fp32_final) for g in range(num_groups)],
        np.float64,
    )
    per_boundary = np.zeros(num_groups - 1, np.float64)
    if scales is not None:
        for b in range(num_groups - 1):
            # Group b+1 (run just before edge b+1 is crossed) takes group b's parameters.
            shared = np.where(group == b + 1, b, group)
            per_boundary[b] = _final_error(run(everywhere, everywhere, shared), fp32_final) - total
    steps = np.bincount(group[timesteps], minlength=num_groups)
    return ChainBudget(
        total=total,
        per_group=per_group,
        per_boundary=per_boundary,
        additivity=float(np.sum(per_group) / total) if total > 0 else float("nan"),
        edges=tuple(int(e) for e in edges),
        steps_per_group=tuple(int(s) for s in steps),
    )
