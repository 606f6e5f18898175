"""thermojax: time-group-aware quantization of diffusion models in JAX.

The names here are the pure-JAX core (quantization kernels, time groups, Markov smoothness
metrics). The pipeline (models, calibration, evaluation, reports) lives in submodules and is
imported explicitly, so ``import thermojax`` stays light: no Hydra, Ray, W&B, Jinja2 or Flax models.
"""

from thermojax.markov import MarkovMetrics, markov_metrics
from thermojax.quant import (
    QTensor,
    activation_params,
    cosine_similarity,
    dequantize,
    fake_quantize,
    fake_quantize_activations,
    fp32_bytes,
    mse,
    quantize,
    sqnr_db,
    storage_bytes,
)
from thermojax.timegroups import (
    expand_to_timesteps,
    group_activation_params,
    group_of,
    group_ranges,
    uniform_edges,
)

__version__ = "0.1.0"

__all__ = [
    "MarkovMetrics",
    "QTensor",
    "activation_params",
    "cosine_similarity",
    "dequantize",
    "expand_to_timesteps",
    "fake_quantize",
    "fake_quantize_activations",
    "fp32_bytes",
    "group_activation_params",
    "group_of",
    "group_ranges",
    "markov_metrics",
    "mse",
    "quantize",
    "sqnr_db",
    "storage_bytes",
    "uniform_edges",
]
