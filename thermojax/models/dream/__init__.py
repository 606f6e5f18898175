"""The masked-diffusion language model family: Dream (Qwen2.5 trained as a masked-diffusion LM)
and LLaDA (the same network under OLMo's tensor names, without biases or logit shift).

- :class:`DreamConfig`: the architecture, parsed and checked from ``config.json``.
- :class:`DreamLM`: the model pytree (leaves: the checkpoint's tensors by their Hugging Face
  names); ``logits()`` the raw network output, ``token_logits()`` Dream's shifted predictions,
  ``forward()`` with replaced linear weights, an activation hook and every linear input.
- :func:`load_dream`: a Hugging Face checkpoint folder -> :class:`DreamLM`.
- :func:`shift_logits`, :data:`LOGIT_SHIFT`: Dream's one-position logit shift (LLaDA's is 0).
"""

from thermojax.models.dream.checkpoint import load_dream
from thermojax.models.dream.config import LOGIT_SHIFT, DreamConfig
from thermojax.models.dream.network import (
    LINEAR_SUFFIXES,
    DreamLM,
    LayerInputHook,
    linear_layer_names,
    shift_logits,
)

__all__ = [
    "LINEAR_SUFFIXES",
    "LOGIT_SHIFT",
    "DreamConfig",
    "DreamLM",
    "LayerInputHook",
    "linear_layer_names",
    "load_dream",
    "shift_logits",
]
