"""The digits denoiser with online rotations computes the original's noise predictions and
samples, and each rotated layer reads ``x Q``."""

from __future__ import annotations

import doctest

import digits_reference as ref
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import thermojax.models.digits.rotation as rotation_module
from thermojax.core.rotation import rotate
from thermojax.models.digits import SHIPPED_CHECKPOINT, DigitsDDPM, load_checkpoint
from thermojax.models.digits.ddpm import layer_rotation
from thermojax.models.digits.rotation import rotate_digits

# max |rotated - original| / max |original eps|, float32: 6.0e-7 .. 7.8e-7 measured (seeds
# 0-3); against the float64 reference the original is 5.6e-7 off and the rotated model 4.0e-7 ..
# 5.6e-7. A kernel folded with Q instead of Q^T, or an input left unrotated, moves eps by O(1).
RELATIVE_TOLERANCE = 5e-6

denoise = jax.jit(lambda model, x, t: model.denoise({}, x, t))


def relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


@pytest.fixture(scope="module")
def model() -> DigitsDDPM:
    return load_checkpoint(SHIPPED_CHECKPOINT)


@pytest.fixture(scope="module")
def batch() -> tuple[jax.Array, jax.Array]:
    """Noisy states at timesteps spread over the schedule."""
    x = jax.random.normal(jax.random.key(0), (64, 64), jnp.float32)
    return x, jnp.arange(64, dtype=jnp.int32) * 15


@pytest.mark.parametrize("seed", [0, 3])
def test_rotated_predictions_equal_the_original(model, batch, seed):
    x, t = batch
    rotated = rotate_digits(model, seed=seed, layers=model.layer_names)
    eps, _ = denoise(model, x, t)
    eps_rotated, _ = denoise(rotated, x, t)
    assert relative_error(eps_rotated, eps) <= RELATIVE_TOLERANCE
    for row in (0, 31, 63):  # the float64 reference of the original model, one timestep each
        want, _ = ref.denoiser(model, {}, np.asarray(x[row : row + 1]), int(t[row]))
        assert relative_error(eps_rotated[row : row + 1], want) <= RELATIVE_TOLERANCE


def test_each_rotated_layer_reads_its_input_rotated(model, batch):
    x, t = batch
    layers = ("block0", "output")
    rotated = rotate_digits(model, seed=5, layers=layers)
    assert rotated.online_rotation == layers and rotated.rotation_seed == 5
    _, before = denoise(model, x, t)
    _, after = denoise(rotated, x, t)
    for index, name in enumerate(model.layer_names):
        want = before[index]
        if name in layers:
            want = rotate(want, layer_rotation(5, index, want.shape[-1]))
            assert not np.allclose(after[index], before[index], atol=1e-2)
        scale = float(jnp.max(jnp.abs(before[index])))
        np.testing.assert_allclose(after[index], want, rtol=0, atol=2e-5 * scale)
    for name in model.layer_names:  # only the named kernels change
        changed = not np.array_equal(rotated.params[name]["kernel"], model.params[name]["kernel"])
        assert changed == (name in layers)
        np.testing.assert_array_equal(rotated.params[name]["bias"], model.params[name]["bias"])


def test_by_default_the_residual_blocks_are_rotated(model):
    rotated = rotate_digits(model)
    assert rotated.online_rotation == ("block0", "block1", "block2")
    assert rotated.rotation_seed == 0 and model.online_rotation == ()


def test_the_hook_sees_the_rotated_input(model, batch):
    x, t = batch
    rotated = rotate_digits(model, layers=model.layer_names)
    seen = {}

    def hook(index, h, t):
        seen[index] = h
        return h

    _, inputs = rotated.denoise({}, x, t, act_hook=hook)
    assert sorted(seen) == list(range(len(inputs)))
    for index, h in seen.items():
        np.testing.assert_array_equal(h, inputs[index])


def test_sampling_the_rotated_model_gives_the_same_digits(model):
    sample = jax.jit(lambda m, key: m.sample(key=key, num_samples=16)[0])
    original = sample(model, jax.random.key(1))
    rotated = sample(rotate_digits(model, layers=model.layer_names), jax.random.key(1))
    # 1000 ancestral steps in float32: 2e-5 apart (measured), on samples in [-1, 1].
    np.testing.assert_allclose(rotated, original, rtol=0, atol=2e-4)


def test_mistakes_are_refused(model):
    with pytest.raises(ValueError, match="'block9'.*are not layers"):
        rotate_digits(model, layers=["block9"])
    with pytest.raises(ValueError, match="already has online rotations"):
        rotate_digits(rotate_digits(model), layers=["input"])
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        rotate_digits(model, seed=-1)


def test_module_example_runs():
    failures, tried = doctest.testmod(rotation_module, verbose=False)
    assert tried > 0 and failures == 0
