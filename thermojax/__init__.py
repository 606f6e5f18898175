"""thermojax: time-group-aware quantization of diffusion models in JAX.

The names here are the pure-JAX core (:mod:`thermojax.core`: quantization kernels, weight
quantizers, time groups, Markov smoothness metrics, smoothing, adaptive groups, transition
optimization). The other rings are imported explicitly, so ``import thermojax`` stays light (no
Hydra, Ray, W&B, Jinja2 or Flax):

- :mod:`thermojax.models`: the model protocol, the model families and their checkpoints;
- :mod:`thermojax.pipeline`: settings in, a typed ``Result`` out (``run``);
- :mod:`thermojax.report`: the HTML report and the comparison page, from a saved ``Result``;
- :mod:`thermojax.cli`: the commands (Hydra, rich, W&B, Ray).
"""

from typing import Any

from thermojax.core.adaptive import adaptive_edges, segmentation_objective
from thermojax.core.markov import MarkovMetrics, markov_metrics
from thermojax.core.quant import (
    QTensor,
    activation_params,
    cosine_similarity,
    dequantize,
    fake_quantize,
    fake_quantize_activations,
    fake_quantize_per_token,
    fp32_bytes,
    mse,
    quantize,
    sqnr_db,
    storage_bytes,
)
from thermojax.core.schedule_metrics import ScheduleMetrics, schedule_metrics
from thermojax.core.smoothing import smooth_boundaries, smooth_groups
from thermojax.core.timegroups import (
    expand_to_timesteps,
    group_activation_params,
    group_of,
    group_ranges,
    step_edges,
    timestep_edges,
    uniform_edges,
)
from thermojax.core.weight_quant import (
    WEIGHT_METHODS,
    GptqOptions,
    HqqOptions,
    MseClipOptions,
    quantize_weight,
)

__version__ = "0.1.0"

# Phase 3 needs optax, and reloading a quantized checkpoint the pipeline's file formats: both load
# on first use so `import thermojax` stays light (the core only).
_LAZY = {
    "load_quantized": "thermojax.pipeline.checkpoint.reload",
    "optimize_transitions": "thermojax.core.transition",
    "transition_terms": "thermojax.core.transition",
    "TransitionResult": "thermojax.core.transition",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'thermojax' has no attribute {name!r}")


__all__ = [
    "WEIGHT_METHODS",
    "GptqOptions",
    "HqqOptions",
    "MarkovMetrics",
    "MseClipOptions",
    "QTensor",
    "ScheduleMetrics",
    "TransitionResult",
    "activation_params",
    "adaptive_edges",
    "cosine_similarity",
    "dequantize",
    "expand_to_timesteps",
    "fake_quantize",
    "fake_quantize_activations",
    "fake_quantize_per_token",
    "fp32_bytes",
    "group_activation_params",
    "group_of",
    "group_ranges",
    "load_quantized",
    "markov_metrics",
    "mse",
    "optimize_transitions",
    "quantize",
    "quantize_weight",
    "schedule_metrics",
    "segmentation_objective",
    "smooth_boundaries",
    "smooth_groups",
    "sqnr_db",
    "step_edges",
    "storage_bytes",
    "timestep_edges",
    "transition_terms",
    "uniform_edges",
]
