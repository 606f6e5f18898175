"""The samplers: DDIM against the ancestral sampler and a float64 numpy reference, its timestep
spacing, and time groups that live on the model's timesteps whatever steps a sampler runs."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thermojax import step_edges, timestep_edges, uniform_edges
from thermojax.models import SamplerSpec, load_model, run_sampler
from thermojax.pipeline.measure.calibrate import calibrate
from thermojax.pipeline.measure.sampling import sample
from thermojax.pipeline.run.diffusion import _group_parameters
from thermojax.pipeline.settings import BaselineConfig
from thermojax.pipeline.weights.quantize import quantize_weights


@pytest.fixture(scope="module")
def model():
    return load_model()


def ddim_reference(x_t, eps, a_t, a_prev, eta, noise):
    """Song et al. 2021 eq. 12 in float64, x0 clipped to [-1, 1] and eps re-derived from it."""
    x_t, eps, noise = (np.asarray(a, np.float64) for a in (x_t, eps, noise))
    x0 = np.clip((x_t - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t), -1, 1)
    eps = (x_t - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
    sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    return np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma**2) * eps + sigma * noise


@pytest.mark.parametrize(("t", "t_prev", "eta"), [(999, 979, 0.0), (500, 250, 0.5), (20, -1, 1.0)])
def test_ddim_step_matches_a_float64_reference(model, t, t_prev, eta):
    weights = model.quantizable_weights()
    x_t = jax.random.normal(jax.random.PRNGKey(1), (32, model.state_size))
    key = jax.random.PRNGKey(2)
    got, _ = model.step_between(weights, x_t, t, t_prev, key, eta=eta)
    eps, _ = model.denoise(weights, x_t, np.int32(t))
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    a_prev = 1.0 if t_prev < 0 else alpha_bar[t_prev]
    noise = jax.random.normal(key, x_t.shape) if eta > 0 else np.zeros(x_t.shape)
    want = ddim_reference(x_t, eps, alpha_bar[t], a_prev, eta, noise)
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=2e-5)


def test_ddim_eta0_ignores_the_step_noise(model):
    weights = model.quantizable_weights()
    x_t = jax.random.normal(jax.random.PRNGKey(1), (8, model.state_size))
    a, _ = model.step_between(weights, x_t, 700, 650, jax.random.PRNGKey(3), eta=0.0)
    b, _ = model.step_between(weights, x_t, 700, 650, jax.random.PRNGKey(4), eta=0.0)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c, _ = model.step_between(weights, x_t, 700, 650, jax.random.PRNGKey(4), eta=1.0)
    assert not np.allclose(np.asarray(a), np.asarray(c))


def test_ddim_with_every_step_and_eta1_is_the_ancestral_sampler(model):
    """Same noise, same update: the trajectories agree to float32 rounding, and so do the final
    samples' statistics."""
    ancestral = sample(model, num_samples=128, seed=5)
    ddim = sample(model, num_samples=128, seed=5, sampler=SamplerSpec("ddim", eta=1.0))
    assert ddim.trajectory.shape == ancestral.trajectory.shape == (1000, 128, 64)
    np.testing.assert_allclose(ddim.trajectory, ancestral.trajectory, atol=2e-3)
    for stat in (np.mean, np.std):
        assert abs(stat(ddim.x0) - stat(ancestral.x0)) < 1e-3


def test_ddim_eta0_is_deterministic_and_runs_the_requested_steps(model):
    spec = SamplerSpec("ddim", steps=50)
    a = sample(model, num_samples=16, seed=7, sampler=spec)
    b = sample(model, num_samples=16, seed=7, sampler=spec)
    np.testing.assert_array_equal(a.x0, b.x0)
    assert a.trajectory.shape == (50, 16, 64)
    np.testing.assert_array_equal(a.timesteps, spec.timesteps(1000))
    # From the same initial noise (the seed), DDIM 50 lands near the ancestral samples' range.
    assert 0.0 <= a.x0.min() and a.x0.max() <= 16.0


@pytest.mark.parametrize(
    ("total", "steps", "expected"),
    [(10, 3, [2, 6, 9]), (1000, 4, [249, 499, 749, 999]), (5, 5, [0, 1, 2, 3, 4]), (7, 1, [6])],
)
def test_ddim_timesteps_are_trailing_spaced(total, steps, expected):
    """diffusers' ``timestep_spacing="trailing"``: ``round(arange(T, 0, -T / S)) - 1``."""
    got = SamplerSpec("ddim", steps=steps).timesteps(total)
    assert got.tolist() == expected
    reference = np.sort(np.round(np.arange(total, 0, -total / steps)).astype(int) - 1)
    assert got.tolist() == reference.tolist()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "plms"}, "sampler must be one of"),
        ({"name": "ddim", "steps": 0}, "steps must be an integer >= 1"),
        ({"name": "ddim", "eta": 1.5}, r"eta must be in \[0, 1\]"),
        ({"name": "ddpm", "eta": 0.5}, "ddpm sampler has none"),
    ],
)
def test_bad_sampler_specs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplerSpec(**kwargs)


def test_sampler_steps_the_model_cannot_run_raise():
    with pytest.raises(ValueError, match="steps=2000: exceeds the model's T=1000"):
        SamplerSpec("ddim", steps=2000).timesteps(1000)
    with pytest.raises(ValueError, match="steps=50: the ddpm sampler runs all T=1000"):
        SamplerSpec("ddpm", steps=50).timesteps(1000)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_property_a_step_finds_its_group_on_any_subset(data):
    """For any step subset and any groups, ``step_edges`` puts each step in the group that
    ``searchsorted`` finds for its timestep, and ``timestep_edges`` gives groups that put every
    step back in the same group."""
    total = data.draw(st.integers(2, 200))
    steps = np.array(
        sorted(data.draw(st.sets(st.integers(0, total - 1), min_size=1, max_size=total)))
    )
    groups = data.draw(st.integers(1, min(len(steps), 12)))
    chosen = np.sort(data.draw(st.permutations(list(range(1, len(steps)))))[: groups - 1])
    edges_on_steps = np.concatenate([[0], chosen, [len(steps)]]).astype(np.int32)
    edges = timestep_edges(edges_on_steps, steps, total)
    assert edges[0] == 0 and edges[-1] == total and np.all(np.diff(edges) > 0)
    want = np.searchsorted(edges, steps, side="right") - 1
    got = np.searchsorted(step_edges(edges, steps), np.arange(len(steps)), side="right") - 1
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(step_edges(edges, steps), edges_on_steps)


def test_a_group_no_step_visits_is_an_error():
    with pytest.raises(ValueError, match=r"time group 1 \[3, 6\) holds none of the sampler's 2"):
        step_edges(uniform_edges(10, 3), np.array([1, 8]))


def test_parameters_calibrated_with_ddpm_apply_to_ddim(model):
    """Groups on the model's timesteps: a DDPM-1000 calibration drives a DDIM-50 sampler (and
    the reverse) with finite samples, and each DDIM step uses its timestep's group row."""
    qweights, _ = quantize_weights(model, bits=8)
    config = BaselineConfig(num_time_groups=4, act_bits=8)
    ddpm_stats = calibrate(model, bit_width=8, num_samples=8, samples_per_step=8, qweights=qweights)
    ddim = SamplerSpec("ddim", steps=50)
    ddim_stats = calibrate(
        model, bit_width=8, num_samples=8, samples_per_step=8, qweights=qweights, sampler=ddim
    )
    assert ddim_stats.act_min.shape == (6, 50) and ddpm_stats.act_min.shape == (6, 1000)
    np.testing.assert_array_equal(ddim_stats.timesteps, ddim.timesteps(1000))
    for stats in (ddpm_stats, ddim_stats):
        params = _group_parameters(stats, config)
        assert params.edges.tolist() == [0, 250, 500, 750, 1000]
        for spec in (None, ddim):
            out = sample(
                model,
                weights=qweights,
                act_params=params.act_params(8),
                num_samples=8,
                seed=0,
                sampler=spec,
            )
            assert np.all(np.isfinite(out.x0))
    # A DDIM calibration's group takes the min/max over the DDIM steps inside it.
    params = _group_parameters(ddim_stats, config)
    inside = (ddim.timesteps(1000) >= 250) & (ddim.timesteps(1000) < 500)
    lo, hi = ddim_stats.act_min[:, inside].min(1), ddim_stats.act_max[:, inside].max(1)
    ref_scale = (np.maximum(hi, 0) - np.minimum(lo, 0)) / 255
    np.testing.assert_allclose(params.scales[:, 1], ref_scale, rtol=1e-5)


def test_run_sampler_observes_the_steps_that_run(model):
    spec = SamplerSpec("ddim", steps=5)
    _, trajectory, observed = run_sampler(
        model,
        model.quantizable_weights(),
        key=jax.random.PRNGKey(0),
        num_samples=2,
        observe=lambda t, inputs, key, x_t: t,
        sampler=spec,
    )
    assert trajectory.shape == (5, 2, 64)
    assert np.asarray(observed).tolist() == spec.timesteps(1000).tolist()
