"""Weight quantization report, quantized sampling from the fp32 noise, and quality metrics of the
digits model (every figure on a toy model and the metrics themselves: test_quality_figures.py)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
from quality_reference import assert_sample_figures, sample_figures

from thermojax.core.timegroups import expand_to_timesteps, group_activation_params, uniform_edges
from thermojax.errors import UserInputError
from thermojax.models import load_model
from thermojax.pipeline.measure.calibrate import calibrate
from thermojax.pipeline.measure.sampling import ActParams, sample
from thermojax.pipeline.quality.image import evaluate_image_quality
from thermojax.pipeline.weights.quantize import quantize_weights

N = 32


@pytest.fixture(scope="module")
def model():
    return load_model()


@pytest.fixture(scope="module")
def fp32(model):
    return sample(model, num_samples=N, seed=0)


@pytest.fixture(scope="module")
def by_bits(model, fp32):
    out = {}
    for bits in (8, 4, 2):
        qweights, report = quantize_weights(model, bits=bits)
        quantized = sample(model, weights=qweights, num_samples=N, seed=0)
        out[bits] = evaluate_image_quality(model, fp32, quantized, uniform_edges(1000, 10), report)
    return out


def _fake_quant_np(w: np.ndarray, bits: int, group: int) -> np.ndarray:
    """Float64 per-group affine fake quantization of kernel [in, out] along ``in``."""
    wt = w.T.astype(np.float64).reshape(w.shape[1], -1, group)
    lo = np.minimum(wt.min(-1, keepdims=True), 0)
    hi = np.maximum(wt.max(-1, keepdims=True), 0)
    qmax = 2**bits - 1
    scale = np.where(hi > lo, (hi - lo) / qmax, 1.0)
    zp = np.clip(np.round(-lo / scale), 0, qmax)
    codes = np.clip(np.round(wt / scale) + zp, 0, qmax)
    return ((codes - zp) * scale).reshape(w.shape[1], w.shape[0]).T


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_weight_report_against_numpy(model, bits):
    _, report = quantize_weights(model, bits=bits, group_size=64)
    weights = {n: np.asarray(w, np.float64) for n, w in model.quantizable_weights().items()}
    cos = []
    for name in model.layer_names:
        w, wq = weights[name], _fake_quant_np(weights[name], bits, 64)
        cos.append(np.sum(w * wq) / np.linalg.norm(w) / np.linalg.norm(wq))
    np.testing.assert_allclose(report.layer_cosine, cos, atol=2e-5)
    # Honest size: packed codes + f32 scale + u8 zero point per group, biases stay f32.
    kernels = sum(w.size for w in weights.values())
    biases = sum(int(layer["bias"].size) for layer in model.params.values())
    expected = kernels * bits // 8 + (kernels // 64) * 5 + 4 * biases
    assert report.quantized_bytes == expected
    assert report.fp32_bytes == 4 * (kernels + biases)
    assert report.compression_ratio == pytest.approx(report.fp32_bytes / expected)
    assert report.model_size_mb == pytest.approx(expected / 1e6)
    assert 0 < report.model_cosine <= 1 and np.all(report.layer_sqnr_db > 0)


def test_drift_grows_as_weight_bits_shrink(by_bits):
    drift = {bits: q.drift_mean for bits, q in by_bits.items()}
    final = {bits: q.final_mse for bits, q in by_bits.items()}
    assert drift[8] < drift[4] < drift[2]
    assert final[8] < final[4] < final[2]
    # 8-bit weights: samples are close to fp32 (pixel MSE well under one grey level of 16).
    assert final[8] < 0.5 and drift[8] < 1e-3


def test_quality_fields_against_numpy(model, fp32, by_bits):
    quality = by_bits[4]
    qweights, report = quantize_weights(model, bits=4)
    quantized = sample(model, weights=qweights, num_samples=N, seed=0)
    diff = (quantized.trajectory.astype(np.float64) - fp32.trajectory) ** 2
    per_t = diff.mean(axis=(1, 2))
    np.testing.assert_allclose(quality.drift_per_timestep, per_t, rtol=1e-9)
    edges = uniform_edges(1000, 10)
    per_group = [per_t[a:b].mean() for a, b in itertools.pairwise(edges)]
    np.testing.assert_allclose(quality.drift_per_group, per_group, rtol=1e-9)
    assert quality.final_mse == pytest.approx(np.mean((quantized.x0 - fp32.x0.astype(float)) ** 2))
    assert quality.layer_cosine == dict(
        zip(report.layer_names, report.layer_cosine.tolist(), strict=True)
    )
    payload = json.loads(json.dumps(quality.to_dict()))
    assert len(payload["drift_per_timestep"]) == 1000 and len(payload["drift_per_group"]) == 10
    assert payload["num_samples"] == N
    # Frechet, coverage and confidence from the classifier's own outputs, recomputed in numpy.
    expected = sample_figures(model.reference, fp32.x0, quantized.x0)
    assert_sample_figures(payload, expected, frechet_rtol=1e-6)


def test_quantized_quality_degrades_with_bits(by_bits):
    assert by_bits[8].frechet_quantized < by_bits[2].frechet_quantized
    assert by_bits[8].class_coverage_quantized >= 0.8
    assert by_bits[8].frechet_fp32 == by_bits[2].frechet_fp32


def test_activation_quantization_with_fp32_range_stays_close(model, fp32):
    stats = calibrate(model, bit_width=8, num_samples=16, seed=1, samples_per_step=4)
    edges = np.arange(1001, dtype=np.int32)
    scales, zero_points = group_activation_params(stats.act_min, stats.act_max, edges, bits=8)
    params = ActParams(np.asarray(scales), np.asarray(zero_points), edges, bits=8)
    qweights, report = quantize_weights(model, bits=8)
    quantized = sample(model, weights=qweights, act_params=params, num_samples=N, seed=0)
    quality = evaluate_image_quality(model, fp32, quantized, uniform_edges(1000, 4), report)
    assert quality.final_mse < 1.0 and quality.class_coverage_quantized >= 0.8
    coarse = ActParams(np.asarray(scales), np.asarray(zero_points), edges, bits=3)
    worse = sample(model, weights=qweights, act_params=coarse, num_samples=N, seed=0)
    worse_q = evaluate_image_quality(model, fp32, worse, uniform_edges(1000, 4), report)
    assert worse_q.drift_mean > quality.drift_mean


def test_group_rows_are_picked_per_timestep_inside_jit(model):
    """G-group parameters and the same values expanded to T rows give identical samples."""
    rng = np.random.default_rng(0)
    edges = np.array([0, 100, 400, 1000], np.int32)
    num_layers = len(model.layer_names)
    scales = rng.uniform(0.01, 0.05, size=(num_layers, 3)).astype(np.float32)
    zero_points = np.full((num_layers, 3), 128.0, np.float32)
    group = ActParams(scales, zero_points, edges, bits=8)
    per_t = ActParams(
        np.asarray(expand_to_timesteps(scales, edges)),
        np.asarray(expand_to_timesteps(zero_points, edges)),
        np.arange(1001, dtype=np.int32),
        bits=8,
    )
    a = sample(model, act_params=group, num_samples=4, seed=2)
    b = sample(model, act_params=per_t, num_samples=4, seed=2)
    np.testing.assert_array_equal(a.trajectory, b.trajectory)
    swapped = ActParams(scales[:, ::-1].copy(), zero_points, edges, bits=8)
    c = sample(model, act_params=swapped, num_samples=4, seed=2)
    assert not np.array_equal(a.trajectory, c.trajectory)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"group_size": 48}, "group_size 48 does not divide"),
        ({"group_size": 0}, "got 0"),
        ({"group_size": 128}, "time_embed \\(64\\)"),
        ({"bits": 3}, "got 3"),
    ],
    ids=["group-48", "group-0", "group-128", "bits-3"],
)
def test_bad_weight_options_are_user_errors(model, kwargs, needle):
    args = {"bits": 4, **kwargs}
    with pytest.raises(UserInputError, match=needle) as info:
        quantize_weights(model, **args)
    assert "\n" not in str(info.value)


def test_bad_sample_count_is_a_user_error(model):
    with pytest.raises(UserInputError, match="got 0"):
        sample(model, num_samples=0)


def test_mismatched_act_params_are_rejected(model):
    bad = ActParams(np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32), [0, 1, 2, 1000], 8)
    with pytest.raises(ValueError, match="L=6"):
        sample(model, act_params=bad, num_samples=2)


def test_real_digits_are_scikit_learns_without_importing_it():
    from sklearn.datasets import load_digits

    from thermojax.models.digits.classifier import load_real_digits

    pixels, labels = load_real_digits()
    data = load_digits()
    np.testing.assert_array_equal(pixels, data.images.astype(np.float32))
    np.testing.assert_array_equal(labels, data.target)
    assert pixels.dtype == np.float32 and labels.dtype == np.int32
    # Importing sklearn (scipy.stats with it) costs ~2 s of every run; the data file suffices.
    probe = (
        "import sys; from thermojax.models.digits.classifier import load_real_digits as f; f(); "
    )
    probe += "print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
