"""Every figure of :func:`evaluate_image_quality` on a toy model (numpy classifier, T = 12), and the
sample metrics it uses, against an independent float64 recomputation.

No sampling here, so each test takes milliseconds: these are the tests ``make mutate`` runs
against every mutant of the quality and metrics modules (tests/pipeline/test_quality.py runs
the digits model).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
from quality_reference import (
    ToyModel,
    ToyReference,
    assert_sample_figures,
    coverage_and_confidence,
    drift_figures,
    frechet,
    sample_figures,
)

from thermojax.core.sample_metrics import CONFIDENCE_THRESHOLD, class_coverage, frechet_distance
from thermojax.pipeline.measure.sampling import Samples
from thermojax.pipeline.quality.image import evaluate_image_quality
from thermojax.pipeline.weights.quantize import WeightReport

TOY_SEED = 34
"""A toy case whose fp32 and quantized sets differ in every figure and straddle the threshold."""


@pytest.fixture(scope="module")
def toy():
    """A toy model (numpy classifier, T=12) with fp32 and quantized samples and trajectories."""
    model = ToyModel(reference=ToyReference(TOY_SEED))
    rng = np.random.default_rng(TOY_SEED + 100)
    fp32_x0 = model.reference.real_pixels()[:12] + rng.normal(0, 0.5, (12, 2, 3))
    quantized_x0 = np.clip(fp32_x0 + rng.normal(0, 4.0, fp32_x0.shape), 0, 16)
    trajectory = rng.normal(size=(model.num_timesteps, 12, 6)).astype(np.float32)
    # Drift that differs in every step and grows towards t = 0, as in a real run.
    noise = (
        rng.normal(size=trajectory.shape)
        * np.linspace(2.0, 0.1, model.num_timesteps)[:, None, None]
    )
    fp32 = Samples(x0=fp32_x0.astype(np.float32), trajectory=trajectory)
    quantized = Samples(
        x0=quantized_x0.astype(np.float32), trajectory=(trajectory + noise).astype(np.float32)
    )
    report = WeightReport(
        layer_names=("a", "b"),
        layer_cosine=np.array([0.9, 0.75]),
        layer_sqnr_db=np.array([10.0, 5.0]),
        fp32_bytes=100,
        quantized_bytes=20,
        model_cosine=0.8,
        compression_ratio=5.0,
        model_size_mb=2e-5,
    )
    return model, fp32, quantized, report


def test_toy_case_tells_fp32_from_quantized_and_straddles_the_threshold(toy):
    """Preconditions of the toy tests: a figure swapped between the two sets, or a threshold
    moved from 0.8 to 0.9, changes what they see."""
    model, fp32, quantized, _ = toy
    expected = sample_figures(model.reference, fp32.x0, quantized.x0)
    for name in ("frechet", "class_coverage", "classifier_confidence"):
        assert expected[f"{name}_fp32"] != expected[f"{name}_quantized"], name
    for samples in (fp32, quantized):
        probs = model.reference.probabilities(samples.x0)
        top = np.argmax(probs, axis=1)
        best = [
            probs[top == c, c].max() for c in range(model.reference.num_classes) if any(top == c)
        ]
        assert any(0.8 <= b < 0.9 for b in best)  # covered at 0.8, not at 0.9


def test_quality_figures_match_an_independent_float64_recomputation(toy):
    model, fp32, quantized, report = toy
    edges = [0, 3, 4, 9, 12]
    quality = evaluate_image_quality(model, fp32, quantized, edges, report)
    drift = drift_figures(fp32.trajectory, quantized.trajectory, edges)
    np.testing.assert_allclose(quality.drift_per_timestep, drift["drift_per_timestep"], rtol=1e-12)
    np.testing.assert_allclose(quality.drift_per_group, drift["drift_per_group"], rtol=1e-12)
    assert quality.drift_mean == pytest.approx(drift["drift_mean"], rel=1e-12, abs=0)
    assert_sample_figures(
        quality.to_dict(),
        sample_figures(model.reference, fp32.x0, quantized.x0),
        frechet_rtol=1e-8,
    )
    assert quality.layer_cosine == {"a": 0.9, "b": 0.75} and quality.model_cosine == 0.8
    assert quality.num_samples == 12
    # N real samples (seed 0) against all real samples: the small-sample floor.
    real = model.reference.real_pixels()
    subset = real[np.random.default_rng(0).choice(len(real), size=12, replace=False)]
    want = frechet(model.reference.features(subset), model.reference.features(real))
    assert quality.frechet_real_subset == pytest.approx(want, rel=1e-8)


def test_quality_to_dict_is_the_figures_as_plain_json(toy):
    model, fp32, quantized, report = toy
    quality = evaluate_image_quality(model, fp32, quantized, [0, 6, 12], report)
    payload = json.loads(json.dumps(quality.to_dict()))
    assert payload["kind"] == "image"
    assert payload["drift_per_timestep"] == list(quality.drift_per_timestep)
    assert payload["drift_per_group"] == list(quality.drift_per_group)
    for name in (
        "drift_mean",
        "final_mse",
        "frechet_fp32",
        "frechet_quantized",
        "class_coverage_fp32",
        "class_coverage_quantized",
        "classifier_confidence_fp32",
        "classifier_confidence_quantized",
        "model_cosine",
        "frechet_real_subset",
    ):
        assert payload[name] == getattr(quality, name), name
    assert payload["layer_cosine"] == {"a": 0.9, "b": 0.75} and payload["num_samples"] == 12


def test_one_group_averages_every_step_and_one_step_groups_are_the_steps(toy):
    model, fp32, quantized, report = toy
    whole = evaluate_image_quality(model, fp32, quantized, [0, 12], report)
    steps = evaluate_image_quality(model, fp32, quantized, list(range(13)), report)
    assert list(whole.drift_per_group) == pytest.approx([whole.drift_mean], rel=1e-12)
    np.testing.assert_allclose(steps.drift_per_group, steps.drift_per_timestep, rtol=1e-12)


def test_a_model_without_reference_has_unknown_sample_figures(toy):
    _, fp32, quantized, report = toy
    quality = evaluate_image_quality(ToyModel(reference=None), fp32, quantized, [0, 12], report)
    for name in ("frechet", "class_coverage", "classifier_confidence"):
        assert np.isnan(getattr(quality, f"{name}_fp32")), name
        assert np.isnan(getattr(quality, f"{name}_quantized")), name
    assert np.isnan(quality.frechet_real_subset)
    assert quality.final_mse == pytest.approx(
        np.mean((quantized.x0.astype(np.float64) - fp32.x0) ** 2), rel=1e-12
    )


@pytest.mark.parametrize(
    ("edges", "needle"),
    [
        ([0, 6], "edges must run from 0 to T=12"),
        ([1, 12], "edges must run from 0 to T=12"),
        ([0], "edges must run from 0 to T=12"),
        ([0, 6, 6, 12], "strictly increasing"),
        ([[0, 6], [6, 12]], "edges must run from 0 to T=12"),
    ],
    ids=["short", "not-from-0", "one-edge", "empty-group", "two-dimensional"],
)
def test_bad_edges_are_rejected(toy, edges, needle):
    model, fp32, quantized, report = toy
    with pytest.raises(ValueError, match=needle):
        evaluate_image_quality(model, fp32, quantized, edges, report)


def test_trajectories_of_another_shape_are_rejected(toy):
    model, fp32, quantized, report = toy
    short = Samples(x0=quantized.x0, trajectory=quantized.trajectory[:-1])
    with pytest.raises(ValueError, match="ran different steps"):
        evaluate_image_quality(model, fp32, short, [0, 12], report)
    with pytest.raises(ValueError, match="T=12"):
        evaluate_image_quality(model, short, short, [0, 12], report)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(80, 6))
    b = rng.normal(size=(120, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = scipy.linalg.sqrtm(ca @ cb).real
    want = np.sum((mu_a - mu_b) ** 2) + np.trace(ca + cb - 2 * cross)
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_coverage_threshold_is_the_documented_0_8():
    assert CONFIDENCE_THRESHOLD == 0.8


@pytest.mark.parametrize(
    ("top", "covered"),
    [(0.8, True), (np.nextafter(0.8, 0.0), False), (0.85, True), (0.79, False)],
    ids=["at-0.8", "just-below", "0.85", "0.79"],
)
def test_class_coverage_threshold_at_its_boundary(top, covered):
    """Probability >= 0.8 covers a class; anything below does not (0.85 would not at 0.9)."""
    probs = np.zeros((2, 5))
    probs[0, :2] = [top, 1.0 - top]
    probs[1, 4] = 1.0
    coverage, confidence = class_coverage(probs)
    assert coverage == (2 if covered else 1) / 5
    assert confidence == (top + 1.0) / 2
    assert (coverage, confidence) == coverage_and_confidence(probs)


def test_class_coverage_counts_confident_classes():
    probs = np.full((4, 10), 0.01)
    probs[0, 3] = probs[1, 3] = 0.91
    probs[2, 5] = 0.91
    probs[3, 7] = 0.5
    coverage, confidence = class_coverage(probs)
    assert coverage == pytest.approx(0.2)
    assert confidence == pytest.approx((0.91 * 3 + 0.5) / 4)


@pytest.mark.parametrize(
    ("shape_a", "shape_b"),
    [((10,), (10, 3)), ((10, 3), (10,)), ((10, 3), (10, 4)), ((1, 3), (10, 3)), ((10, 3), (1, 3))],
    ids=["a-1d", "b-1d", "features-differ", "a-one-row", "b-one-row"],
)
def test_frechet_distance_rejects_what_is_not_two_feature_sets(shape_a, shape_b):
    a, b = np.ones(shape_a), np.ones(shape_b)
    with pytest.raises(ValueError, match=r"need two \[N>=2, F\] feature sets, got \("):
        frechet_distance(a, b)


def test_frechet_distance_of_two_rows_each_is_defined():
    a = np.array([[0.0, 1.0], [2.0, 0.0]])
    b = np.array([[1.0, 1.0], [0.0, 3.0]])
    assert frechet_distance(a, b) == pytest.approx(frechet(a, b), rel=1e-10)


def test_frechet_distance_computes_in_float64_whatever_the_input():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(50, 4)).astype(np.float32)
    b = (rng.normal(size=(60, 4)) * 1.5 + 0.25).astype(np.float32)
    want = frechet(a.astype(np.float64), b.astype(np.float64))
    assert frechet_distance(a, b) == pytest.approx(want, rel=1e-11)


def test_frechet_distance_of_rank_deficient_features_is_finite():
    """Duplicated and constant features: singular covariances, whose eigenvalues come out as
    tiny negatives in floating point; they count as zero, not as NaN."""
    rng = np.random.default_rng(4)
    base = rng.normal(size=(30, 3))
    a = np.concatenate([base, base[:, :1], np.zeros((30, 1))], axis=1)
    other = rng.normal(size=(40, 3)) + 0.5
    b = np.concatenate([other, other[:, :1], np.zeros((40, 1))], axis=1)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value == pytest.approx(frechet(a, b), rel=1e-6)


def test_class_coverage_computes_in_float64_whatever_the_input():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(33, 6)) * 3
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    coverage, confidence = class_coverage(probs)
    assert confidence == float(np.mean(probs.astype(np.float64).max(axis=1)))
    assert coverage == coverage_and_confidence(probs.astype(np.float64))[0]


def test_real_subset_frechet_needs_two_samples(toy):
    from thermojax.pipeline.quality.image import _real_subset_frechet

    model = toy[0]
    real = model.reference.real_pixels()
    pair = real[np.random.default_rng(0).choice(len(real), size=2, replace=False)]
    want = frechet(model.reference.features(pair), model.reference.features(real))
    assert _real_subset_frechet(model, 2) == pytest.approx(want, rel=1e-8)
    assert np.isnan(_real_subset_frechet(model, 1))
    assert np.isnan(_real_subset_frechet(ToyModel(reference=None), 12))
    # More samples than real data: all of them, in a permuted order.
    whole = frechet(model.reference.features(real), model.reference.features(real))
    assert _real_subset_frechet(model, 1000) == pytest.approx(whole, abs=1e-9)
