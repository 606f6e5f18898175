"""Weight quantization of a model, quantized sampling from the fp32 noise, and quality metrics.

Example:
    >>> from thermojax.models import load_model
    >>> from thermojax.evaluate import quantize_weights, sample, evaluate_quality
    >>> model = load_model()
    >>> qweights, report = quantize_weights(model, bits=4)
    >>> fp32, quant = sample(model, num_samples=64), sample(model, weights=qweights, num_samples=64)
    >>> quality = evaluate_quality(model, fp32, quant, [0, 500, 1000], report)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.errors import UserInputError
from thermojax.models.base import DiffusionModel
from thermojax.quant import (
    QTensor,
    cosine_similarity,
    dequantize,
    fake_quantize_activations,
    quantize,
    sqnr_db,
    storage_bytes,
)
from thermojax.timegroups import group_of

__all__ = [
    "CONFIDENCE_THRESHOLD",
    "ActParams",
    "Quality",
    "Samples",
    "WeightReport",
    "class_coverage",
    "dense_weights",
    "evaluate_quality",
    "frechet_distance",
    "quantize_weights",
    "sample",
    "sample_quality",
]

WEIGHT_BITS = (2, 4, 8)
CONFIDENCE_THRESHOLD = 0.8
"""A class is covered when at least one sample is assigned to it with at least this probability."""


@dataclasses.dataclass(frozen=True)
class ActParams:
    """Activation fake-quantization parameters for each layer and each time group.

    Attributes:
        scales: float32 ``[L, S]`` (> 0).
        zero_points: float32 ``[L, S]``, integer values in ``[0, 2**bits - 1]``.
        edges: int32 ``[S + 1]`` time-group edges (``arange(T + 1)`` for a per-timestep schedule).
        bits: activation bit width.
    """

    scales: np.ndarray
    zero_points: np.ndarray
    edges: np.ndarray
    bits: int


@dataclasses.dataclass(frozen=True)
class WeightReport:
    """How much the quantized weights differ from fp32 and how much smaller the model is.

    Attributes:
        layer_names: the L quantizable layers.
        layer_cosine: float64 ``[L]`` cosine similarity of each dequantized weight with fp32.
        layer_sqnr_db: float64 ``[L]`` signal-to-quantization-noise ratio per layer, dB.
        fp32_bytes: every network parameter at float32.
        quantized_bytes: packed codes + scales + zero points of the quantized weights, plus the
            parameters that stay float32 (biases).
        model_cosine: cosine similarity over all quantizable weights together.
        compression_ratio: ``fp32_bytes / quantized_bytes``.
        model_size_mb: ``quantized_bytes / 1e6``.
    """

    layer_names: tuple[str, ...]
    layer_cosine: np.ndarray
    layer_sqnr_db: np.ndarray
    fp32_bytes: int
    quantized_bytes: int
    model_cosine: float
    compression_ratio: float
    model_size_mb: float


@dataclasses.dataclass(frozen=True)
class Samples:
    """Samples and the sampler trajectory.

    Attributes:
        x0: ``[N, *data_shape]`` (``[N, 8, 8]`` for digits) final samples in pixel range 0..16.
        trajectory: ``[T, N, D]`` model-space state after the step at timestep t
            (``trajectory[0]`` is the final model-space sample).
    """

    x0: np.ndarray
    trajectory: np.ndarray


@dataclasses.dataclass(frozen=True)
class Quality:
    """Quantized sampling compared with fp32 sampling from the same noise, and with real data.

    Attributes:
        drift_per_timestep: float64 ``[T]``, mean squared difference of the model-space states
            after the step at each timestep.
        drift_per_group: float64 ``[G]``, ``drift_per_timestep`` averaged over each time group.
        drift_mean: mean of ``drift_per_timestep``.
        final_mse: mean squared difference of the final samples in pixel units (0..16).
        frechet_fp32, frechet_quantized: Frechet distance to the real digits in the classifier's
            feature space.
        class_coverage_fp32, class_coverage_quantized: fraction of the classes assigned to at
            least one sample with probability >= ``CONFIDENCE_THRESHOLD``.
        classifier_confidence_fp32, classifier_confidence_quantized: mean top-class probability.
        layer_cosine: layer name -> weight cosine similarity.
        model_cosine: weight cosine over all quantizable weights.
        frechet_real_subset: Frechet distance of N real digits (fixed seed) to all real digits,
            the value a perfect generator would get with the same N (small-sample bias).
        num_samples: N.
    """

    drift_per_timestep: np.ndarray
    drift_per_group: np.ndarray
    drift_mean: float
    final_mse: float
    frechet_fp32: float
    frechet_quantized: float
    class_coverage_fp32: float
    class_coverage_quantized: float
    classifier_confidence_fp32: float
    classifier_confidence_quantized: float
    layer_cosine: dict[str, float]
    model_cosine: float = float("nan")
    frechet_real_subset: float = float("nan")
    num_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: arrays become lists of floats, numbers plain floats/ints."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                value = [float(v) for v in value]
            elif isinstance(value, dict):
                value = {str(k): float(v) for k, v in value.items()}
            elif isinstance(value, float | np.floating):
                value = float(value)
            out[field.name] = value
        return out


def _check_weight_options(model: DiffusionModel, bits: int, group_size: int) -> None:
    if isinstance(bits, bool) or bits not in WEIGHT_BITS:
        raise UserInputError(f"weight bit_width must be one of {WEIGHT_BITS}, got {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int | np.integer):
        raise UserInputError(f"group_size must be a positive integer, got {group_size!r}")
    if group_size < 1:
        raise UserInputError(f"group_size must be a positive integer, got {group_size}")
    bad = [
        f"{name} ({width})"
        for name, width in zip(model.layer_names, model.layer_input_widths, strict=True)
        if width % group_size
    ]
    if bad:
        raise UserInputError(
            f"group_size {group_size} does not divide the input width of layer(s) {', '.join(bad)}"
        )
    per_byte = 8 // bits
    if group_size % per_byte:
        raise UserInputError(
            f"group_size {group_size} must be a multiple of {per_byte} for {bits}-bit weights"
        )


@partial(jax.jit, static_argnames=("bits", "group_size"))
def _weights_program(
    kernels: tuple[jax.Array, ...], *, bits: int, group_size: int
) -> tuple[tuple[QTensor, ...], jax.Array, jax.Array, jax.Array]:
    """Every layer quantized and compared with fp32 in one compiled program.

    One program instead of a few eager ops per layer: a fresh process (a sweep worker) pays one
    compilation, which the persistent compilation cache then serves. Layers go in as a tuple
    (not a dict, whose keys a jit would sort) so the outputs keep the model's layer order.

    Returns:
        ``(QTensor of each transposed kernel, cosine [L], SQNR dB [L], model cosine)``.
    """
    qweights = tuple(quantize(w.T, bits=bits, group_size=group_size) for w in kernels)
    deq = tuple(dequantize(q).T for q in qweights)
    cos = jnp.stack([cosine_similarity(w, d) for w, d in zip(kernels, deq, strict=True)])
    sqnr = jnp.stack([sqnr_db(w, d) for w, d in zip(kernels, deq, strict=True)])
    flat_fp32 = jnp.concatenate([w.reshape(-1) for w in kernels])
    flat_deq = jnp.concatenate([d.reshape(-1) for d in deq])
    return qweights, cos, sqnr, cosine_similarity(flat_fp32, flat_deq)


def quantize_weights(
    model: DiffusionModel, *, bits: int, group_size: int = 64
) -> tuple[dict[str, QTensor], WeightReport]:
    """Quantize every quantizable weight per group along its input dimension.

    A Dense kernel ``[in, out]`` is stored as ``quantize(kernel.T)`` (``[out, in]``, groups of
    ``group_size`` input channels).

    Args:
        model: the model.
        bits: weight bit width, 2, 4 or 8.
        group_size: input channels per quantization group; must divide every layer's input width.

    Returns:
        ``(layer name -> QTensor of the transposed kernel, WeightReport)``.

    Raises:
        UserInputError: unsupported ``bits`` or a ``group_size`` that does not divide a layer width.
    """
    _check_weight_options(model, bits, group_size)
    weights = model.quantizable_weights()
    fp32 = {name: weights[name] for name in model.layer_names}
    quantized, cos, sqnr, model_cos = _weights_program(
        tuple(fp32.values()), bits=int(bits), group_size=int(group_size)
    )
    qweights = dict(zip(model.layer_names, quantized, strict=True))
    cos, sqnr = np.asarray(cos, np.float64), np.asarray(sqnr, np.float64)
    total = 4 * int(model.num_parameters())
    quantized_params = sum(int(np.prod(fp32[n].shape)) for n in model.layer_names)
    quantized_bytes = sum(storage_bytes(q) for q in qweights.values()) + (
        total - 4 * quantized_params
    )
    report = WeightReport(
        layer_names=tuple(model.layer_names),
        layer_cosine=cos,
        layer_sqnr_db=sqnr,
        fp32_bytes=total,
        quantized_bytes=int(quantized_bytes),
        model_cosine=float(model_cos),
        compression_ratio=total / max(int(quantized_bytes), 1),
        model_size_mb=quantized_bytes / 1e6,
    )
    return qweights, report


def dense_weights(
    model: DiffusionModel, weights: Mapping[str, QTensor | jax.Array] | None
) -> dict[str, jax.Array]:
    """Per-layer ``[in, out]`` float32 weights: fp32 for ``None``, dequantized for QTensors."""
    if weights is None:
        return dict(model.quantizable_weights())
    missing = [n for n in model.layer_names if n not in weights]
    if missing:
        raise ValueError(f"weights lack layer(s) {missing}; expected {list(model.layer_names)}")
    return {
        n: dequantize(weights[n]).T if isinstance(weights[n], QTensor) else jnp.asarray(weights[n])
        for n in model.layer_names
    }


@partial(jax.jit, static_argnames=("model", "num_samples", "bits"))
def _sample_program(
    model: DiffusionModel,
    weights: dict[str, jax.Array],
    scales: jax.Array | None,
    zero_points: jax.Array | None,
    edges: jax.Array | None,
    key: jax.Array,
    *,
    num_samples: int,
    bits: int,
) -> tuple[jax.Array, jax.Array]:
    act_hook = None
    if scales is not None:

        def act_hook(layer: int, h: jax.Array, t: jax.Array) -> jax.Array:
            g = group_of(t, edges)
            return fake_quantize_activations(h, scales[layer, g], zero_points[layer, g], bits=bits)

    return model.sample(weights, key=key, num_samples=num_samples, act_hook=act_hook)


def _check_act_params(model: DiffusionModel, act_params: ActParams) -> None:
    scales = np.asarray(act_params.scales)
    zero_points = np.asarray(act_params.zero_points)
    edges = np.asarray(act_params.edges)
    num_layers, num_timesteps = len(model.layer_names), model.num_timesteps
    if scales.ndim != 2 or scales.shape[0] != num_layers or scales.shape != zero_points.shape:
        raise ValueError(
            f"act_params scales {scales.shape} and zero_points {zero_points.shape} must both be "
            f"[L={num_layers}, S]"
        )
    if edges.shape != (scales.shape[1] + 1,) or edges[0] != 0 or edges[-1] != num_timesteps:
        raise ValueError(
            f"act_params edges (shape {edges.shape}, first {edges[:1]}, last {edges[-1:]}) must be "
            f"[S+1={scales.shape[1] + 1}] from 0 to T={num_timesteps}"
        )
    if np.any(np.diff(edges) < 1):
        raise ValueError(f"act_params edges must be strictly increasing, got {edges.tolist()}")


def sample(
    model: DiffusionModel,
    *,
    weights: Mapping[str, QTensor | jax.Array] | None = None,
    act_params: ActParams | None = None,
    num_samples: int = 64,
    seed: int = 0,
) -> Samples:
    """Ancestral sampling, fp32 or quantized, as one jitted ``lax.scan``.

    The same ``seed`` gives the same initial and per-step noise whatever the weights and
    activation parameters, so fp32 and quantized trajectories compare step by step.

    Args:
        model: the model.
        weights: ``None`` for fp32, else layer name -> QTensor (from :func:`quantize_weights`) or
            ``[in, out]`` array.
        act_params: per-layer, per-time-group activation fake-quantization (``None``: fp32
            activations); the row is picked with ``group_of(t, edges)`` inside jit.
        num_samples: N >= 1.
        seed: PRNG seed of the noise.

    Returns:
        :class:`Samples` with pixel-space ``x0`` and the model-space trajectory.

    Raises:
        UserInputError: ``num_samples < 1``.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int | np.integer):
        raise UserInputError(f"num_samples must be a positive integer, got {num_samples!r}")
    if num_samples < 1:
        raise UserInputError(f"num_samples must be at least 1, got {num_samples}")
    dense = dense_weights(model, weights)
    scales = zero_points = edges = None
    bits = 0
    if act_params is not None:
        _check_act_params(model, act_params)
        # Each timestep's row, gathered here: the program then sees [L, T] parameters whatever
        # the number of groups, so one compilation serves every num_time_groups of a sweep.
        # The sampler picks exactly the values it would pick with group_of(t, edges).
        num_timesteps = int(model.num_timesteps)
        group = np.searchsorted(act_params.edges, np.arange(num_timesteps), side="right") - 1
        scales = jnp.asarray(np.asarray(act_params.scales, np.float32)[:, group])
        zero_points = jnp.asarray(np.asarray(act_params.zero_points, np.float32)[:, group])
        edges = jnp.arange(num_timesteps + 1, dtype=jnp.int32)
        bits = int(act_params.bits)
    x0, trajectory = _sample_program(
        model,
        dense,
        scales,
        zero_points,
        edges,
        jax.random.PRNGKey(seed),
        num_samples=int(num_samples),
        bits=bits,
    )
    return Samples(x0=model.to_pixels(x0), trajectory=np.asarray(trajectory, np.float32))


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root via ``eigh`` (negative round-off eigenvalues clipped to 0)."""
    vals, vecs = np.linalg.eigh((a + a.T) / 2.0)
    return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets ``[N, F]`` (float64).

    ``|mu_a - mu_b|^2 + tr(C_a) + tr(C_b) - 2 tr((C_a^1/2 C_b C_a^1/2)^1/2)``; the last trace
    equals ``tr((C_a C_b)^1/2)`` and uses only symmetric eigendecompositions.
    """
    a = np.asarray(features_a, np.float64)
    b = np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two [N>=2, F] feature sets, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrtm_psd(cov_a)
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_cross = float(np.sum(np.sqrt(np.clip(cross, 0.0, None))))
    value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_cross)
    return max(value, 0.0)


def class_coverage(probabilities: np.ndarray) -> tuple[float, float]:
    """``(coverage, confidence)`` of class probabilities ``[N, C]``.

    Coverage: fraction of the C classes that at least one sample is assigned to with probability
    >= ``CONFIDENCE_THRESHOLD``. Confidence: mean top-class probability.
    """
    p = np.asarray(probabilities, np.float64)
    top = p.max(axis=1)
    confident = np.unique(np.argmax(p, axis=1)[top >= CONFIDENCE_THRESHOLD])
    return len(confident) / p.shape[1], float(top.mean())


def sample_quality(model: DiffusionModel, pixels: np.ndarray) -> dict[str, float]:
    """Quality of one set of pixel-space samples against the model's real-data reference.

    Returns ``{"frechet", "class_coverage", "classifier_confidence", "class_histogram"}``
    (NaN / empty when the model has no reference).
    """
    ref = model.reference
    if ref is None:
        nan = float("nan")
        return {"frechet": nan, "class_coverage": nan, "classifier_confidence": nan}
    probs = ref.probabilities(pixels)
    coverage, confidence = class_coverage(probs)
    counts = np.bincount(np.argmax(probs, axis=1), minlength=ref.num_classes)
    return {
        "frechet": frechet_distance(ref.features(pixels), ref.features(ref.real_pixels())),
        "class_coverage": coverage,
        "classifier_confidence": confidence,
        "class_histogram": [int(c) for c in counts],
    }


def _real_subset_frechet(model: DiffusionModel, num_samples: int) -> float:
    ref = model.reference
    if ref is None or num_samples < 2:
        return float("nan")
    real = ref.real_pixels()
    idx = np.random.default_rng(0).choice(
        len(real), size=min(num_samples, len(real)), replace=False
    )
    return frechet_distance(ref.features(real[idx]), ref.features(real))


def evaluate_quality(
    model: DiffusionModel,
    fp32: Samples,
    quantized: Samples,
    edges: Sequence[int] | np.ndarray,
    weight_report: WeightReport,
) -> Quality:
    """Drift, final MSE, Frechet distances, class coverage and weight cosine.

    Args:
        model: the model both sample sets came from.
        fp32: samples with fp32 weights.
        quantized: samples with quantized weights (and activations) from the same seed.
        edges: int ``[G+1]`` time-group edges for ``drift_per_group``.
        weight_report: from :func:`quantize_weights`.

    Raises:
        ValueError: the two sample sets or the edges do not match the model.
    """
    traj_f = np.asarray(fp32.trajectory, np.float64)
    traj_q = np.asarray(quantized.trajectory, np.float64)
    if traj_f.shape != traj_q.shape or traj_f.shape[0] != model.num_timesteps:
        raise ValueError(
            f"fp32 trajectory {traj_f.shape} and quantized trajectory {traj_q.shape} must both be "
            f"[T={model.num_timesteps}, N, D]"
        )
    edges = np.asarray(edges, np.int64)
    if edges.ndim != 1 or len(edges) < 2 or edges[0] != 0 or edges[-1] != model.num_timesteps:
        raise ValueError(f"edges must run from 0 to T={model.num_timesteps}, got {edges.tolist()}")
    if np.any(np.diff(edges) < 1):
        raise ValueError(f"edges must be strictly increasing, got {edges.tolist()}")
    drift = np.mean((traj_q - traj_f) ** 2, axis=(1, 2))
    # Group means via cumulative sums: one vectorized pass however many groups there are.
    csum = np.concatenate([[0.0], np.cumsum(drift)])
    drift_per_group = (csum[edges[1:]] - csum[edges[:-1]]) / np.diff(edges)
    q_f = sample_quality(model, fp32.x0)
    q_q = sample_quality(model, quantized.x0)
    x0_f = np.asarray(fp32.x0, np.float64)
    x0_q = np.asarray(quantized.x0, np.float64)
    return Quality(
        drift_per_timestep=drift,
        drift_per_group=drift_per_group,
        drift_mean=float(drift.mean()),
        final_mse=float(np.mean((x0_q - x0_f) ** 2)),
        frechet_fp32=q_f["frechet"],
        frechet_quantized=q_q["frechet"],
        class_coverage_fp32=q_f["class_coverage"],
        class_coverage_quantized=q_q["class_coverage"],
        classifier_confidence_fp32=q_f["classifier_confidence"],
        classifier_confidence_quantized=q_q["classifier_confidence"],
        layer_cosine={
            n: float(c)
            for n, c in zip(weight_report.layer_names, weight_report.layer_cosine, strict=True)
        },
        model_cosine=float(weight_report.model_cosine),
        frechet_real_subset=_real_subset_frechet(model, len(x0_f)),
        num_samples=len(x0_f),
    )
