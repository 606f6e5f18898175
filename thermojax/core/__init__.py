"""The core ring: pure JAX kernels and metrics, arrays and pytrees in, arrays and pytrees out.

Quantization (:mod:`~thermojax.core.quant`), weight quantizers behind one option
(:mod:`~thermojax.core.weight_quant`: min-max, MSE clipping, HQQ, GPTQ with its kernel in
:mod:`~thermojax.core.gptq`), time groups (:mod:`~thermojax.core.timegroups`),
Markov smoothness (:mod:`~thermojax.core.markov`, :mod:`~thermojax.core.schedule_metrics`),
boundary smoothing (:mod:`~thermojax.core.smoothing`), adaptive groups
(:mod:`~thermojax.core.adaptive`) and transition optimization (:mod:`~thermojax.core.transition`).
No file I/O and no Flax, Hydra, OmegaConf, Ray, W&B, Jinja2 or rich; ``tests/core`` holds every
module here to that. The public names are re-exported by :mod:`thermojax`.
"""
