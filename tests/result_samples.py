"""Hand-built results for the schema, pattern, report and tracking tests (no model run).

The Markov metrics come from an independent float64 numpy implementation of the
definitions, so these results do not depend on the code they help to test.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from thermojax.cli.config import to_config
from thermojax.core.markov import MarkovMetrics
from thermojax.core.timegroups import uniform_edges
from thermojax.pipeline import build_result
from thermojax.pipeline.quality.image import IMAGE
from thermojax.pipeline.results.schema import (
    BaselineSection,
    EnhancementSection,
    MetricsView,
    OptimizationSection,
    PhaseRow,
    PhasesSection,
    Result,
    Spread,
)
from thermojax.pipeline.settings import BaselineConfig, ModelConfig


def reference_metrics(
    scales: np.ndarray, zero_points: np.ndarray, *, qmax: float, threshold: float
) -> MarkovMetrics:
    """The Markov metrics (README definitions) in float64 numpy, for ``[L, G]`` parameters."""
    s = np.asarray(scales, np.float64)
    z = np.asarray(zero_points, np.float64)
    scale_jumps = np.abs(s[:, 1:] - s[:, :-1]) / s[:, :-1]
    zp_jumps = np.abs(z[:, 1:] - z[:, :-1]) / qmax
    total = scale_jumps + zp_jumps
    num_groups = s.shape[1]
    if num_groups < 2:
        smooth = np.ones(s.shape[0])
    else:
        smooth = 1 - np.minimum(1, total.sum(1) / (2 * (num_groups - 1)))
    violated = scale_jumps > threshold
    level = np.where(scale_jumps > 0.5, 3, np.where(scale_jumps > 0.3, 2, 1))
    return MarkovMetrics(
        scale_jumps=scale_jumps,
        zero_point_jumps=zp_jumps,
        boundary_scores=1 - np.minimum(1, total / 2),
        smoothness_score=smooth,
        violations=violated,
        severity=np.where(violated, level, 0).astype(np.int32),
    )


def make_result(
    *,
    num_layers: int = 3,
    num_groups: int = 4,
    num_timesteps: int = 100,
    model_name: str = "digits-ddpm",
    threshold: float = 0.3,
    seed: int = 0,
    quality_figures: dict[str, float] | None = None,
    **overrides: object,
) -> Result:
    """A realistic ``Result`` with random (seeded) scales, ranges, quality and samples.

    ``quality_figures`` replace quality figures before the result is built, so that its
    interpretation (quality band, verdict) is computed from them; ``overrides`` are config values.
    """
    rng = np.random.default_rng(seed)
    config = to_config(
        dataclasses.replace(
            BaselineConfig(num_time_groups=num_groups, smoothness_threshold=threshold),
            model=ModelConfig(name=model_name),
            **overrides,
        )
    )
    qmax = 2**config.act_bits - 1
    edges = uniform_edges(num_timesteps, num_groups)
    t = np.linspace(0.0, 1.0, num_timesteps)
    spread = rng.uniform(0.5, 3.0, (num_layers, 1))
    act_max = spread * (1 + 1.5 * t**2) + 0.05 * rng.standard_normal((num_layers, num_timesteps))
    act_min = -0.4 * act_max * rng.uniform(0.2, 1.0, (num_layers, 1))
    lo = np.stack([act_min[:, a:b].min(1) for a, b in itertools.pairwise(edges)], 1)
    hi = np.stack([act_max[:, a:b].max(1) for a, b in itertools.pairwise(edges)], 1)
    scales = ((hi - lo) / qmax).astype(np.float32)
    zero_points = np.clip(np.round(-lo / scales), 0, qmax).astype(np.float32)
    metrics = reference_metrics(scales, zero_points, qmax=qmax, threshold=threshold)
    drift = np.geomspace(1e-4, 0.05, num_timesteps)[::-1].copy()
    group_drift = [float(drift[a:b].mean()) for a, b in itertools.pairwise(edges)]
    fp32 = rng.uniform(0, 16, (64, 8, 8)).astype(np.float32)
    quantized = np.clip(fp32 + rng.normal(0, 1, fp32.shape), 0, 16).astype(np.float32)
    names = tuple(f"dense_{i}" for i in range(num_layers))
    cosines = rng.uniform(0.8, 0.99, num_layers)
    quality = {
        "drift_per_timestep": drift.tolist(),
        "drift_per_group": group_drift,
        "drift_mean": float(drift.mean()),
        "final_mse": float(np.mean((fp32 - quantized) ** 2)),
        "frechet_fp32": 3.5,
        "frechet_quantized": 5.25,
        "class_coverage_fp32": 1.0,
        "class_coverage_quantized": 0.9,
        "classifier_confidence_fp32": 0.93,
        "classifier_confidence_quantized": 0.88,
        "layer_cosine": dict(zip(names, cosines.tolist())),
        **(quality_figures or {}),
    }
    return build_result(
        config=config,
        model_name=config.model.name,
        layer_names=names,
        edges=edges,
        scales=scales,
        zero_points=zero_points,
        metrics=metrics,
        act_min=act_min,
        act_max=act_max,
        layer_cosine=cosines,
        model_cosine=float(cosines.mean()),
        compression_ratio=9.5,
        model_size_mb=0.0425,
        quality=quality,
        fp32_x0=fp32,
        quantized_x0=quantized,
        quantization_time_s=1.25,
        timings_s={"calibrate": 1.0, "total": 2.5},
    )


W2_DIGITS_QUALITY = {
    "final_mse": 36.2,
    "frechet_fp32": 23.16,
    "frechet_quantized": 389.3,
    "class_coverage_fp32": 1.0,
    "class_coverage_quantized": 0.5,
}
"""The shipped digits DDPM's quality at INT2 (64 samples, seed 0): destroyed samples."""


ARROWQUANT_KEYS = {
    "model_name",
    "bit_width",
    "num_time_groups",
    "smoothness_score",
    "violation_count",
    "violations",
    "boundary_scores",
    "cosine_similarity",
    "compression_ratio",
    "model_size_mb",
    "quantization_time_s",
    "min_boundary_score",
    "max_boundary_score",
    "mean_boundary_score",
    "std_boundary_score",
    "common_violation_patterns",
}


ADDED_KEYS = {
    "schema_version",
    "act_bits",
    "smoothness_threshold",
    "time_groups",
    "layers",
    "quality",
    "interpretation",
    "config",
}


def check_model_level_figures(data: dict) -> None:
    """Recompute every model-level figure of a baseline_metrics.json dict from its ``layers``.

    Shared with the end-to-end test, which applies it to the real command's output.
    """
    layers = data["layers"]
    qmax = 2 ** data["act_bits"] - 1
    threshold = data["smoothness_threshold"]
    num_groups = data["num_time_groups"]
    assert len(data["time_groups"]) == num_groups
    starts = [a for a, _ in data["time_groups"]]
    ends = [b for _, b in data["time_groups"]]
    assert starts[0] == 0 and starts[1:] == ends[:-1]
    scores = np.array([layer["smoothness_score"] for layer in layers], np.float64)
    np.testing.assert_allclose(data["smoothness_score"], scores.mean(), rtol=0, atol=1e-12)
    per_layer = np.array([layer["boundary_scores"] for layer in layers], np.float64)
    per_layer = per_layer.reshape(len(layers), num_groups - 1)
    boundary = per_layer.mean(axis=0)
    np.testing.assert_allclose(data["boundary_scores"], boundary, rtol=0, atol=1e-12)
    if num_groups > 1:
        np.testing.assert_allclose(
            [
                data["min_boundary_score"],
                data["max_boundary_score"],
                data["mean_boundary_score"],
                data["std_boundary_score"],
            ],
            [boundary.min(), boundary.max(), boundary.mean(), boundary.std(ddof=0)],
            rtol=0,
            atol=1e-12,
        )
    expected = []
    for layer in layers:
        assert LAYER_KEYS <= set(layer)
        s = np.asarray(layer["scales"], np.float64)
        z = np.asarray(layer["zero_points"], np.float64)
        assert s.shape == z.shape == (num_groups,)
        assert np.all(s > 0) and np.all((z >= 0) & (z <= qmax) & (z == np.round(z)))
        jumps = np.abs(np.diff(s)) / s[:-1]
        zp_jumps = np.abs(np.diff(z)) / qmax
        np.testing.assert_allclose(layer["scale_jumps"], jumps, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(layer["zero_point_jumps"], zp_jumps, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            layer["boundary_scores"], 1 - np.minimum(1, (jumps + zp_jumps) / 2), atol=1e-5
        )
        smooth = (
            1.0 if num_groups < 2 else 1 - min(1, (jumps + zp_jumps).sum() / (2 * (num_groups - 1)))
        )
        np.testing.assert_allclose(layer["smoothness_score"], smooth, atol=1e-5)
        for b, jump in enumerate(layer["scale_jumps"]):
            if jump > threshold:
                severity = "high" if jump > 0.5 else "medium" if jump > 0.3 else "low"
                expected.append((layer["name"], b, severity))
    got = [(v["layer"], v["boundary_idx"], v["severity"]) for v in data["violations"]]
    assert sorted(got) == sorted(expected)
    assert data["violation_count"] == len(expected)
    for v in data["violations"]:
        assert set(v) == VIOLATION_KEYS
        layer = next(layer for layer in layers if layer["name"] == v["layer"])
        assert v["scale_jump"] == layer["scale_jumps"][v["boundary_idx"]]
        assert v["zero_point_jump"] == layer["zero_point_jumps"][v["boundary_idx"]]


def enhanced_result(*, loss_history=((4.0, 3.0, 2.5), (8.0, 6.0))) -> Result:
    """A plain sample result turned into an enhanced one with known baseline figures."""
    result = make_result(num_layers=2, num_groups=4, threshold=0.05)
    base_quality = dataclasses.replace(result.quality, final_mse=2.5, frechet_quantized=7.125)
    layers = len(loss_history)
    optimization = OptimizationSection(
        target="timesteps",
        settings={"markov_weight": 1.0},
        iterations=tuple(len(h) for h in loss_history),
        converged=(True,) + (False,) * (layers - 1),
        initial_loss=tuple(h[0] for h in loss_history),
        final_loss=tuple(h[-1] for h in loss_history),
        quant_error_before=(1.0,) * layers,
        quant_error_after=(0.5,) * layers,
        markov_penalty_before=(0.25,) * layers,
        markov_penalty_after=(0.125,) * layers,
        loss_history=tuple(tuple(h) for h in loss_history),
    )
    view = MetricsView(
        smoothness_score=0.5,
        violation_count=7,
        boundary_scores=(0.5, 0.5, 0.5),
        scale_jumps=((0.1, 0.2, 0.3),) * 2,
    )
    return dataclasses.replace(
        result,
        baseline=BaselineSection(
            time_groups=result.time_groups,
            scales=tuple(layer.scales for layer in result.layers),
            zero_points=tuple(layer.zero_points for layer in result.layers),
            metrics=view,
            quality=base_quality,
        ),
        enhancement=EnhancementSection(
            description="cubic blend, window 5 timesteps; Phase 3",
            strategy="uniform",
            lam=0.0,
            smoothing={"method": "cubic", "window": 5},
            per_timestep=True,
            schedule_scales=None,
            schedule_zero_points=None,
            group_view=dataclasses.replace(view, smoothness_score=0.75, violation_count=2),
            max_step_scale_jump=(0.01, 0.02),
            optimization=optimization,
            parameter_time_s=0.5,
        ),
    )


FRECHET_DELTAS = (0.0, 2.0, -1.5, 0.5, -3.0, 1.0, 4.0, -0.5, 3.0, float("nan"))


def phases_result() -> Result:
    rows = [phase_row("baseline", "baseline", 0.0, 0)]
    rows += [
        phase_row(f"variant-{i}", "phase 2", delta, i)
        for i, delta in enumerate(FRECHET_DELTAS[1:], start=1)
    ]
    section = PhasesSection(
        seeds=(0, 1, 2),
        num_samples=16,
        bit_width=2,
        act_bits=8,
        num_time_groups=4,
        smoothness_threshold=0.05,
        drift_group_edges=(0, 25, 50, 75, 100),
        rows=tuple(rows),
        total_time_s=12.5,
        fp32={
            "frechet_fp32": Spread(mean=3.0, std=0.25),
            "class_coverage_fp32": Spread(mean=1.0, std=0.0),
        },
    )
    return dataclasses.replace(make_result(num_layers=2, threshold=0.05), phases=section)


LAYER_KEYS = {
    "name",
    "scales",
    "zero_points",
    "smoothness_score",
    "boundary_scores",
    "cosine_similarity",
}


VIOLATION_KEYS = {"layer", "boundary_idx", "scale_jump", "zero_point_jump", "severity"}


def phase_row(variant: str, phase: str, frechet_delta: float, index: int) -> PhaseRow:
    spread = Spread(mean=1.0 + index, std=0.5)
    paired = {name: Spread(mean=0.0, std=0.0) for name in IMAGE.compared}
    if phase != "baseline":
        paired["final_mse"] = Spread(mean=-0.25 * index, std=0.125)
        paired["frechet_quantized"] = Spread(mean=frechet_delta, std=0.375)
    return PhaseRow(
        variant=variant,
        phase=phase,
        description=f"{variant} described",
        edges=(0, 25, 50, 75, 100),
        num_seeds=3,
        smoothness_score=Spread(mean=0.5 + 0.03125 * index, std=0.0),
        violation_count=Spread(mean=float(10 - index), std=0.0),
        drift_mean=spread,
        sampling_time_s=spread,
        drift_per_group=(spread,) * 4,
        drift_per_timestep=(0.0,) * 100,
        paired_delta=paired,
        param_time_s=0.01,
        param_compile_s=0.1,
        param_extra_s=0.001 * index,
        sampling_ratio=1.0 + 0.01 * index,
        figures={
            "final_mse": spread,
            "frechet_quantized": spread,
            "class_coverage_quantized": Spread(mean=0.9, std=0.05),
        },
    )
