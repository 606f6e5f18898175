"""The configurations of the synthetic checkpoints: Dream 7B's and LLaDA 8B's ``config.json``
at full size, and the rule that scales each down (:mod:`thermojax.models.hf.synthetic` writes
the tensors they imply; its module doc gives the scale rule).

Example:
    >>> dream_like_config(scale=4)["hidden_size"], llada_like_config(scale=4)["d_model"]
    (896, 1024)
"""

from __future__ import annotations

import math

from thermojax.errors import UserInputError
from thermojax.models.hf.layouts import FLOAT_DTYPES
from thermojax.models.hf.layouts import MAX_LAYERS as LAYOUT_MAX_LAYERS

__all__ = [
    "DREAM_7B_CONFIG",
    "LLADA_8B_CONFIG",
    "LLADA_SHARD_BYTES",
    "MAX_LAYERS",
    "TORCH_DTYPES",
    "dream_like_config",
    "llada_like_config",
    "positive",
]

DREAM_7B_CONFIG: dict[str, object] = {
    "architectures": ["DreamModel"],
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_dream.DreamConfig",
        "AutoModel": "modeling_dream.DreamModel",
    },
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "mask_token_id": 151666,
    "max_position_embeddings": 131072,
    "max_window_layers": 28,
    "model_type": "Dream",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "pad_token_id": 151643,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.2",
    "use_cache": False,
    "use_sliding_window": False,
    "vocab_size": 152064,
}
"""Dream-v0-Base-7B's ``config.json`` (what ``scale=1`` writes)."""

LLADA_8B_CONFIG: dict[str, object] = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 4096,
    "embedding_dropout": 0.0,
    "embedding_size": 126464,
    "eos_token_id": 126081,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 126336,
    "max_sequence_length": 4096,
    "mlp_hidden_size": 12288,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 32,
    "n_kv_heads": 32,
    "n_layers": 32,
    "pad_token_id": 126081,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": 126464,
    "weight_tying": False,
}
"""LLaDA-8B-Base's (and -Instruct's) ``config.json`` (what ``scale=1`` writes)."""
LLADA_SHARD_BYTES = 3 * 10**9
"""LLaDA 8B's shard size limit: its tensors in their stored order cut greedily at 3 GB are
exactly its six shards."""

_GQA_RATIO = 7  # Dream: 28 query heads per 4 key-value heads
_SPECIAL_TOKENS = ("bos_token_id", "eos_token_id", "mask_token_id", "pad_token_id")
TORCH_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


MAX_LAYERS = LAYOUT_MAX_LAYERS
"""Most layers a synthetic checkpoint may have (Dream has 28; the largest open models ~130): a
count beyond it is a typo, and :func:`~thermojax.models.hf.layouts.expected_shapes` refuses it
too."""


def positive(name: str, value: object, *, high: int | None = None) -> int:
    """``value`` when it is a positive integer (at most ``high``), else one line naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"{name} must be a positive integer, got {value!r}")
    if high is not None and value > high:
        raise UserInputError(f"{name} must be at most {high}, got {value!r}")
    return value


def _round_to(value: float, multiple: int) -> int:
    return multiple * math.floor(value / multiple + 0.5)


def _scaled_64(size: int, scale: int) -> int:
    """``size / scale`` rounded to a multiple of 64, at least 64."""
    return max(64, _round_to(size / scale, 64))


def _checked(scale: object, layers: object, dtype: object, *, default_layers: int):
    """``(scale, layers)`` checked (``layers`` ``None``: ``default_layers``), and ``dtype``."""
    scale = positive("scale", scale)
    layers = positive("layers", default_layers if layers is None else layers, high=MAX_LAYERS)
    if dtype not in FLOAT_DTYPES:
        raise UserInputError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype!r}")
    return scale, layers


def _special_tokens(base: dict[str, object], vocab: int) -> dict[str, int]:
    """``base``'s special token ids in a ``vocab``-token vocabulary.

    They keep their distance from the end of the vocabulary, so that a scaled model can embed
    its mask token (the last id, in a vocabulary too small for that).
    """
    return {
        key: vocab - from_end if from_end <= vocab else vocab - 1
        for key in _SPECIAL_TOKENS
        if key in base
        for from_end in [base["vocab_size"] - base[key]]
    }


def dream_like_config(
    *, scale: int = 1, layers: int | None = None, dtype: str = "BF16"
) -> dict[str, object]:
    """The ``config.json`` :func:`write_dream_like` writes (the scale rule is in the module doc).

    Example:
        >>> config = dream_like_config(scale=4)
        >>> [config[k] for k in ("hidden_size", "intermediate_size", "vocab_size",
        ...                      "num_attention_heads", "num_key_value_heads")]
        [896, 4736, 38016, 7, 1]
    """
    scale, layers = _checked(
        scale, layers, dtype, default_layers=DREAM_7B_CONFIG["num_hidden_layers"]
    )
    kv_heads = max(1, DREAM_7B_CONFIG["num_key_value_heads"] // scale)
    heads = _GQA_RATIO * kv_heads
    head_dim = max(2, _round_to(DREAM_7B_CONFIG["hidden_size"] / scale / heads, 2))
    vocab = _scaled_64(DREAM_7B_CONFIG["vocab_size"], scale)
    return (
        DREAM_7B_CONFIG
        | _special_tokens(DREAM_7B_CONFIG, vocab)
        | {
            "hidden_size": heads * head_dim,
            "intermediate_size": _scaled_64(DREAM_7B_CONFIG["intermediate_size"], scale),
            "vocab_size": vocab,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "num_hidden_layers": layers,
            "max_window_layers": layers,
            "torch_dtype": TORCH_DTYPES[dtype],
        }
    )


def llada_like_config(
    *, scale: int = 1, layers: int | None = None, dtype: str = "BF16"
) -> dict[str, object]:
    """The ``config.json`` :func:`write_llada_like` writes (the scale rule is in the module doc).

    ``dtype`` is checked but not recorded: LLaDA's config names no storage dtype.

    Example:
        >>> config = llada_like_config(scale=4)
        >>> [config[k] for k in ("d_model", "mlp_hidden_size", "vocab_size", "n_heads",
        ...                      "n_kv_heads", "mask_token_id")]
        [1024, 3072, 31616, 8, 8, 31488]
    """
    scale, layers = _checked(scale, layers, dtype, default_layers=LLADA_8B_CONFIG["n_layers"])
    heads = max(1, LLADA_8B_CONFIG["n_heads"] // scale)
    head_dim = max(2, _round_to(LLADA_8B_CONFIG["d_model"] / scale / heads, 2))
    vocab = _scaled_64(LLADA_8B_CONFIG["vocab_size"], scale)
    return (
        LLADA_8B_CONFIG
        | _special_tokens(LLADA_8B_CONFIG, vocab)
        | {
            "d_model": heads * head_dim,
            "mlp_hidden_size": _scaled_64(LLADA_8B_CONFIG["mlp_hidden_size"], scale),
            "vocab_size": vocab,
            "embedding_size": vocab,
            "n_heads": heads,
            "n_kv_heads": heads,
            "n_layers": layers,
        }
    )
