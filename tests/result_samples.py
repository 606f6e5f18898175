"""Hand-built results for the schema, pattern, report and tracking tests (no model run).

The Markov metrics come from an independent float64 numpy implementation of issue 2's
definitions, so these results do not depend on the code they help to test.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from thermojax.config import BaselineConfig, ModelConfig, to_config
from thermojax.markov import MarkovMetrics
from thermojax.pipeline import build_result
from thermojax.results import Result
from thermojax.timegroups import uniform_edges


def reference_metrics(
    scales: np.ndarray, zero_points: np.ndarray, *, qmax: float, threshold: float
) -> MarkovMetrics:
    """Issue 2's Markov metrics in float64 numpy, for ``[L, G]`` parameters."""
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
    **overrides: object,
) -> Result:
    """A realistic ``Result`` with random (seeded) scales, ranges, quality and samples."""
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
