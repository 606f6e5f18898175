"""The chain's error budget on the shipped digits DDPM, against chains run by hand.

The references run apart from the budget's switched program: ``sample`` (the packed weights,
the activation parameters through ``ActParams``) for whole chains, and a Python loop over the
sampler's steps calling the model's own DDIM step for chains quantized in one group only. A
DDIM sampler of 20 steps with noise (eta 0.5) keeps it fast and still checks the noise keys.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermojax.core.quant import fake_quantize_activations
from thermojax.core.timegroups import group_activation_params, uniform_edges
from thermojax.models import load_model, shipped_path
from thermojax.models.base import SamplerSpec
from thermojax.models.dream.diffusion import MaskedDiffusionLM
from thermojax.pipeline.measure.calibrate import calibrate
from thermojax.pipeline.measure.chain import chain_budget
from thermojax.pipeline.measure.sampling import ActParams, sample
from thermojax.pipeline.weights.quantize import quantize_weights

N, SEED, ACT_BITS = 8, 2, 4
SAMPLER = SamplerSpec("ddim", steps=20, eta=0.5)


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def qweights(model):
    return quantize_weights(model, bits=4)[0]


@pytest.fixture(scope="module")
def stats(model, qweights):
    return calibrate(
        model, bit_width=4, num_samples=N, seed=SEED, qweights=qweights, sampler=SAMPLER
    )


def act_params(stats, num_groups: int, bits: int = ACT_BITS) -> ActParams:
    edges = uniform_edges(1000, num_groups)
    scales, zero_points = group_activation_params(
        stats.act_min, stats.act_max, stats.step_edges(edges), bits=bits
    )
    return ActParams(np.asarray(scales), np.asarray(zero_points), edges, bits)


def final_error(samples, reference) -> float:
    diff = samples.trajectory[0].astype(np.float64) - reference.trajectory[0].astype(np.float64)
    return float(np.mean(diff**2))


@pytest.fixture(scope="module")
def fp32(model):
    return sample(model, num_samples=N, seed=SEED, sampler=SAMPLER)


@pytest.fixture(scope="module")
def budget(model, qweights, stats, fp32):
    return chain_budget(
        model,
        qweights=qweights,
        act_params=act_params(stats, 4),
        num_samples=N,
        seed=SEED,
        sampler=SAMPLER,
        fp32_final=fp32.trajectory[0],
    )


def test_a_chain_that_quantizes_nothing_has_no_error(model, stats, budget):
    nothing = chain_budget(
        model,
        qweights=None,
        act_params=None,
        edges=uniform_edges(1000, 4),
        num_samples=N,
        seed=SEED,
        sampler=SAMPLER,
    )
    assert nothing.total == 0 and np.isnan(nothing.additivity)
    assert np.all(nothing.per_group == 0) and np.all(nothing.per_boundary == 0)
    # fp32 weights and 16-bit activations over each layer's whole range in every group (so
    # no group clips another's activations): rounding at 1/65535 of the range, carried along
    # the chain (measured: 1.6e-5 of the W4A4 total), and boundaries between equal parameters.
    wide = act_params(stats, 1, bits=16)
    fine = chain_budget(
        model,
        qweights=None,
        act_params=dataclasses.replace(
            wide,
            scales=np.tile(wide.scales, (1, 4)),
            zero_points=np.tile(wide.zero_points, (1, 4)),
            edges=uniform_edges(1000, 4),
        ),
        num_samples=N,
        seed=SEED,
        sampler=SAMPLER,
    )
    assert 0 < fine.total < budget.total * 1e-4
    assert np.all(fine.per_group < budget.total * 1e-4)
    assert np.all(fine.per_boundary == 0)


def test_quantizing_every_step_is_the_fully_quantized_sample(model, qweights, stats, fp32):
    """One group holds every step: its run is the total, and both are ``sample``'s W4A4 chain
    (packed weights, parameters through ActParams) from the same noise."""
    params = act_params(stats, 1)
    whole = chain_budget(
        model, qweights=qweights, act_params=params, num_samples=N, seed=SEED, sampler=SAMPLER
    )
    assert whole.per_group.tolist() == [whole.total] and whole.additivity == 1.0
    assert whole.per_boundary.shape == (0,) and whole.steps_per_group == (20,)
    quantized = sample(
        model, weights=qweights, act_params=params, num_samples=N, seed=SEED, sampler=SAMPLER
    )
    assert whole.total == pytest.approx(final_error(quantized, fp32), rel=1e-5)
    assert whole.total > 0


@pytest.fixture(scope="module")
def steps(model):
    """One DDIM step of the model, quantized (packed weights and A4 activations of one column
    of parameters) or fp32, each compiled once."""

    @jax.jit
    def quantized_step(weights, scales, zero_points, x, t, t_prev, key):
        def hook(layer, h, t):
            return fake_quantize_activations(h, scales[layer], zero_points[layer], bits=ACT_BITS)

        return model.step_between(weights, x, t, t_prev, key, eta=SAMPLER.eta, act_hook=hook)[0]

    @jax.jit
    def fp32_step(weights, x, t, t_prev, key):
        return model.step_between(weights, x, t, t_prev, key, eta=SAMPLER.eta)[0]

    return quantized_step, fp32_step


def by_hand(model, steps, qweights, params: ActParams, group: int) -> np.ndarray:
    """The final state with packed W4 weights and A4 activations at the steps of ``group``
    only, fp32 elsewhere: a Python loop over the sampler's steps (descending timesteps)."""
    quantized_step, fp32_step = steps
    init_key, step_key, _ = jax.random.split(jax.random.PRNGKey(SEED), 3)
    x = model.initial_state(init_key, N)
    fp32_weights = model.quantizable_weights()
    descending = SAMPLER.timesteps(1000)[::-1].tolist()
    for t, t_prev in zip(descending, [*descending[1:], -1], strict=True):
        key = jax.random.fold_in(step_key, t)
        args = (jnp.int32(t), jnp.int32(t_prev), key)
        if params.edges[group] <= t < params.edges[group + 1]:
            column = (params.scales[:, group], params.zero_points[:, group])
            x = quantized_step(qweights, *column, x, *args)
        else:
            x = fp32_step(fp32_weights, x, *args)
    return np.asarray(x, np.float64)


def test_each_group_budget_is_that_groups_steps_quantized_by_hand(
    model, steps, qweights, stats, fp32, budget
):
    """Also catches a step mask off by one group or groups taken in the wrong order: the four
    groups' errors differ far beyond the tolerance."""
    params = act_params(stats, 4)
    reference = fp32.trajectory[0].astype(np.float64)
    expected = [
        np.mean((by_hand(model, steps, qweights, params, g) - reference) ** 2) for g in range(4)
    ]
    np.testing.assert_allclose(budget.per_group, expected, rtol=1e-4)
    assert np.min(np.abs(np.diff(sorted(expected)))) > 1e-2 * max(expected)
    assert budget.steps_per_group == (5, 5, 5, 5) and budget.edges == (0, 250, 500, 750, 1000)
    assert budget.additivity == pytest.approx(np.sum(expected) / budget.total, rel=1e-4)


def test_a_boundary_costs_the_error_change_of_carrying_the_parameters_across(
    model, qweights, stats, fp32, budget
):
    """Boundary b: group b+1 runs with group b's parameters (``sample`` with those columns
    copied), minus the total; a boundary between equal parameters costs exactly 0."""
    params = act_params(stats, 4)
    for b in range(3):
        shared = params.scales.copy(), params.zero_points.copy()
        for array in shared:
            array[:, b + 1] = array[:, b]
        carried = sample(
            model,
            weights=qweights,
            act_params=dataclasses.replace(params, scales=shared[0], zero_points=shared[1]),
            num_samples=N,
            seed=SEED,
            sampler=SAMPLER,
        )
        expected = final_error(carried, fp32) - budget.total
        assert budget.per_boundary[b] == pytest.approx(expected, rel=1e-3, abs=1e-6 * budget.total)
    assert np.all(budget.per_boundary != 0)
    equal = params.scales.copy(), params.zero_points.copy()
    for array in equal:
        array[:, 2] = array[:, 1]
    flat = chain_budget(
        model,
        qweights=qweights,
        act_params=dataclasses.replace(params, scales=equal[0], zero_points=equal[1]),
        num_samples=N,
        seed=SEED,
        sampler=SAMPLER,
        fp32_final=fp32.trajectory[0],
    )
    assert flat.per_boundary[1] == 0.0 and flat.per_boundary[0] != 0 and flat.per_boundary[2] != 0
    assert flat.per_group[0] == budget.per_group[0] and flat.per_group[3] == budget.per_group[3]


def test_what_the_budget_refuses(model, qweights, stats, fp32):
    params = act_params(stats, 4)
    common = {"num_samples": N, "seed": SEED, "sampler": SAMPLER}
    with pytest.raises(ValueError, match="time groups come from act_params, or else edges"):
        chain_budget(model, qweights=qweights, act_params=None, **common)
    with pytest.raises(ValueError, match="mode 'dynamic' has no parameters"):
        chain_budget(
            model,
            qweights=qweights,
            act_params=dataclasses.replace(params, mode="dynamic"),
            **common,
        )
    with pytest.raises(ValueError, match=r"edges \[0, 500\] must run from 0 to T=1000"):
        chain_budget(model, qweights=None, act_params=None, edges=[0, 500], **common)
    with pytest.raises(ValueError, match=r"fp32_final has shape \(4, 64\)"):
        chain_budget(
            model,
            qweights=qweights,
            act_params=params,
            fp32_final=fp32.trajectory[0][:4],
            **common,
        )
    lm = MaskedDiffusionLM.create(
        load_model(shipped_path("pydoc-mdlm")), length=8, steps=2, unmasking="confidence"
    )
    with pytest.raises(ValueError, match="'masked-diffusion-lm' family's state is int32 tokens"):
        chain_budget(lm, qweights=None, act_params=None, edges=[0, lm.num_timesteps], **common)
