"""Per-timestep calibration: shapes, agreement with a float64 numpy recomputation, persistence."""

from __future__ import annotations

import digits_reference as ref
import numpy as np
import pytest

from thermojax.errors import UserInputError
from thermojax.models import load_model
from thermojax.pipeline.measure.calibrate import CalibrationStats, calibrate
from thermojax.pipeline.measure.sampling import sample
from thermojax.pipeline.weights.quantize import dense_weights, quantize_weights

N, SEED, K = 4, 3, 16


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def stats(model):
    return calibrate(model, bit_width=4, num_samples=N, seed=SEED, samples_per_step=K)


def test_shapes_and_ordering(model, stats):
    num_layers, num_timesteps = len(model.layer_names), model.num_timesteps
    assert stats.layer_names == model.layer_names
    for name in ("act_min", "act_max", "act_mean", "act_std"):
        arr = getattr(stats, name)
        assert arr.shape == (num_layers, num_timesteps) and arr.dtype == np.float32, name
        assert np.all(np.isfinite(arr)), name
    assert stats.act_samples.shape == (num_layers, num_timesteps, K)
    assert np.all(stats.act_min <= stats.act_mean) and np.all(stats.act_mean <= stats.act_max)
    assert np.all(stats.act_std >= 0)
    inside = (stats.act_samples >= stats.act_min[..., None]) & (
        stats.act_samples <= stats.act_max[..., None]
    )
    assert inside.all()


@pytest.mark.parametrize("t", [0, 1, 480, 998])
def test_statistics_match_numpy_recomputation(model, stats, t):
    """Replay the 4-bit sampler (same seed => same noise), recompute layer inputs in float64."""
    qweights, _ = quantize_weights(model, bits=4)
    trajectory = _trajectory(model, qweights)
    kernels = {n: np.asarray(w) for n, w in dense_weights(model, qweights).items()}
    _, inputs = ref.denoiser(model, kernels, trajectory[t + 1], t)
    for i, h in enumerate(inputs):
        assert stats.act_min[i, t] == pytest.approx(h.min(), abs=2e-4)
        assert stats.act_max[i, t] == pytest.approx(h.max(), abs=2e-4)
        assert stats.act_mean[i, t] == pytest.approx(h.mean(), abs=2e-4)
        assert stats.act_std[i, t] == pytest.approx(h.std(), rel=1e-3, abs=2e-4)
        # The random sample consists of values the layer actually saw.
        gap = np.abs(stats.act_samples[i, t][:, None] - h.reshape(1, -1)).min(axis=1)
        assert gap.max() < 2e-4


_TRAJECTORIES: dict[int, np.ndarray] = {}


def _trajectory(model, qweights) -> np.ndarray:
    if id(model) not in _TRAJECTORIES:
        _TRAJECTORIES[id(model)] = sample(
            model, weights=qweights, num_samples=N, seed=SEED
        ).trajectory
    return _TRAJECTORIES[id(model)]


def test_statistics_reflect_the_weight_bit_width(model, stats):
    at_2 = calibrate(model, bit_width=2, num_samples=N, seed=SEED, samples_per_step=K)
    # The first layer sees the raw noise input: identical at every bit width at t = T-1.
    assert at_2.act_min[1, -1] == stats.act_min[1, -1]
    later = np.abs(at_2.act_mean[2:, :500] - stats.act_mean[2:, :500]).max()
    assert later > 1e-3


def test_same_seed_same_statistics(model, stats):
    again = calibrate(model, bit_width=4, num_samples=N, seed=SEED, samples_per_step=K)
    np.testing.assert_array_equal(again.act_max, stats.act_max)
    np.testing.assert_array_equal(again.act_samples, stats.act_samples)


def test_save_load_roundtrip(stats, tmp_path):
    path = tmp_path / "cache" / "stats.npz"
    stats.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["stats.npz"]
    loaded = CalibrationStats.load(path)
    assert loaded.layer_names == stats.layer_names
    for name in ("act_min", "act_max", "act_mean", "act_std", "act_samples"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    assert loaded.num_timesteps == 1000


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"num_samples": 0}, "num_samples must be an integer >= 1, got 0"),
        ({"num_samples": -5}, "got -5"),
        ({"samples_per_step": 0}, "samples_per_step"),
        ({"group_size": 48}, "group_size 48"),
        ({"bit_width": 3}, "got 3"),
    ],
    ids=["zero-samples", "negative-samples", "zero-k", "group-48", "bits-3"],
)
def test_bad_input_is_a_one_line_user_error(model, kwargs, needle):
    args = {"bit_width": 8, "num_samples": 2, **kwargs}
    with pytest.raises(UserInputError, match=needle) as info:
        calibrate(model, **args)
    assert "\n" not in str(info.value)


def test_given_quantized_weights_give_the_same_statistics(model, stats):
    qweights, _ = quantize_weights(model, bits=4)
    given = calibrate(
        model, bit_width=4, num_samples=N, seed=SEED, samples_per_step=K, qweights=qweights
    )
    for name in ("act_min", "act_max", "act_mean", "act_std", "act_samples"):
        np.testing.assert_array_equal(getattr(given, name), getattr(stats, name), err_msg=name)


def test_quantized_weights_at_other_settings_are_rejected(model):
    """Another group size is a mistake; other bits are not (``quant.keep_bits`` keeps some
    layers at more bits than ``bit_width``)."""
    at_2, _ = quantize_weights(model, bits=2)
    by_32, _ = quantize_weights(model, bits=2, group_size=32)
    with pytest.raises(
        ValueError, match=r"group_size=64 \(run at bit_width=2\); got .*group_size=32"
    ):
        calibrate(model, bit_width=2, num_samples=N, qweights=by_32)
    mixed = {**at_2, "output": quantize_weights(model, bits=8)[0]["output"]}
    calibrate(model, bit_width=2, num_samples=N, qweights=mixed)
    partial = dict(list(at_2.items())[:-1])
    with pytest.raises(ValueError, match="lack layer"):
        calibrate(model, bit_width=2, num_samples=N, qweights=partial)
