"""Models are pytrees: one compiled sampler / calibration program serves every model of the same
architecture and shapes, and parameters are arguments of the program, never constants in it."""

from __future__ import annotations

import collections
import contextlib

import jax
import numpy as np
import pytest

from thermojax.core.timegroups import uniform_edges
from thermojax.models import load_model
from thermojax.pipeline.measure.calibrate import calibrate
from thermojax.pipeline.measure.sampling import ActParams, sample
from thermojax.pipeline.weights.quantize import quantize_weights

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
# Sample counts no other test uses, so the first call in each test compiles its program here.
SAMPLER_N, CALIBRATION_N = 11, 9


@contextlib.contextmanager
def compiles_of(*names: str):
    """Counts XLA compilations (``jax.monitoring`` events) of the jitted functions ``names``."""
    counts: collections.Counter[str] = collections.Counter()

    def listen(event: str, duration: float, **kwargs) -> None:
        name = str(kwargs.get("fun_name", "")).removeprefix("jit(").removesuffix(")")
        if event == BACKEND_COMPILE and name in names:
            counts[name] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


@pytest.fixture(scope="module")
def two_loads():
    return load_model(), load_model()


def _act_params(model) -> ActParams:
    num_layers, groups = len(model.layer_names), 4
    return ActParams(
        scales=np.full((num_layers, groups), 0.05, np.float32),
        zero_points=np.full((num_layers, groups), 128.0, np.float32),
        edges=uniform_edges(model.num_timesteps, groups),
        bits=8,
    )


def test_the_leaves_of_a_model_are_exactly_its_parameters(two_loads):
    first, second = two_loads
    leaves = jax.tree.leaves(first)
    assert sum(leaf.size for leaf in leaves) == first.num_parameters()
    assert all(leaf.dtype == np.float32 for leaf in leaves)
    assert len(leaves) == 2 * len(first.layer_names)  # a kernel and a bias per Dense layer
    assert first is not second
    assert jax.tree.structure(first) == jax.tree.structure(second)
    hash(jax.tree.structure(first))  # static parts are hashable: a jit can key on them


def test_a_second_load_samples_with_the_program_the_first_compiled(two_loads):
    with compiles_of("_sample_program") as counts:
        runs = []
        for model in two_loads:
            qweights, _ = quantize_weights(model, bits=4)
            runs.append(
                sample(
                    model,
                    weights=qweights,
                    act_params=_act_params(model),
                    num_samples=SAMPLER_N,
                    seed=0,
                )
            )
    assert counts["_sample_program"] == 1
    np.testing.assert_array_equal(runs[0].x0, runs[1].x0)
    np.testing.assert_array_equal(runs[0].trajectory, runs[1].trajectory)


def test_parameters_are_arguments_of_the_program_not_constants(two_loads):
    model, _ = two_loads
    qweights, _ = quantize_weights(model, bits=4)
    act_params = _act_params(model)
    base = sample(model, weights=qweights, act_params=act_params, num_samples=SAMPLER_N, seed=0)
    # Same architecture and shapes, other parameter values (the biases are not in ``weights``).
    shifted = model.replace(
        params={
            name: {**layer, "bias": layer["bias"] + 0.1} for name, layer in model.params.items()
        }
    )
    with compiles_of("_sample_program") as counts:
        other = sample(
            shifted, weights=qweights, act_params=act_params, num_samples=SAMPLER_N, seed=0
        )
    assert counts["_sample_program"] == 0
    assert not np.allclose(other.trajectory, base.trajectory)


def test_a_second_load_calibrates_with_the_program_the_first_compiled(two_loads):
    with compiles_of("_calibration_program") as counts:
        stats = [
            calibrate(model, bit_width=4, num_samples=CALIBRATION_N, samples_per_step=2)
            for model in two_loads
        ]
    assert counts["_calibration_program"] == 1
    for name in ("act_min", "act_max", "act_mean", "act_std", "act_samples"):
        np.testing.assert_array_equal(getattr(stats[0], name), getattr(stats[1], name))
