"""What a Hugging Face checkpoint folder holds: its file names, its dtypes, its tensors' shapes.

A folder holds ``config.json`` and either one ``model.safetensors`` or shards named
``model-00001-of-00004.safetensors`` ... listed by ``model.safetensors.index.json``. For the
architectures thermojax knows (Qwen2 and Dream, which is Qwen2 trained as a masked-diffusion
model), :func:`expected_shapes` gives every tensor's name and shape from ``config.json``, so a
checkpoint that disagrees with its own config is caught before any weight is read.

Example:
    >>> shapes = expected_shapes({"model_type": "qwen2", "hidden_size": 64,
    ...     "num_hidden_layers": 1, "intermediate_size": 128, "num_attention_heads": 4,
    ...     "num_key_value_heads": 2, "vocab_size": 256})
    >>> shapes["model.layers.0.self_attn.k_proj.weight"]
    (32, 64)
    >>> len(shapes)  # embed, 12 per layer, final norm, lm_head
    15
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

__all__ = [
    "CONFIG_FILE",
    "DTYPES",
    "FLOAT_DTYPES",
    "INDEX_FILE",
    "QWEN2_MODEL_TYPES",
    "SINGLE_FILE",
    "expected_shapes",
    "shard_file_name",
]

CONFIG_FILE = "config.json"
"""The model's configuration, beside its weights."""
SINGLE_FILE = "model.safetensors"
"""The weights of an unsharded checkpoint."""
INDEX_FILE = "model.safetensors.index.json"
"""The tensor -> shard map of a sharded checkpoint."""

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
}
"""The safetensors dtype codes thermojax writes, with their (little-endian) numpy dtypes."""
FLOAT_DTYPES = ("F32", "F16", "BF16")
"""The dtypes of the users' checkpoints thermojax reads."""

QWEN2_MODEL_TYPES = frozenset({"qwen2", "dream"})
"""``config.json`` ``model_type`` values (compared lower-case) with the Qwen2 tensor layout."""
_QWEN2_ARCHITECTURES = frozenset({"Qwen2ForCausalLM", "Qwen2Model", "DreamModel"})


def shard_file_name(index: int, count: int) -> str:
    """The Hugging Face name of shard ``index`` (0-based) of ``count``.

    Example:
        >>> shard_file_name(1, 4), shard_file_name(0, 1)
        ('model-00002-of-00004.safetensors', 'model.safetensors')
    """
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, {count}), got index={index}")
    if count == 1:
        return SINGLE_FILE
    return f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def _positive_int(config: dict, key: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return value


def _is_qwen2(config: dict) -> bool:
    model_type = config.get("model_type")
    if isinstance(model_type, str):
        return model_type.lower() in QWEN2_MODEL_TYPES
    architectures = config.get("architectures")
    return (
        bool(architectures)
        and isinstance(architectures, list)
        and (architectures[0] in _QWEN2_ARCHITECTURES)
    )


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]] | None:
    """Every tensor name and shape that ``config.json`` implies, or ``None`` if unknown.

    Known: the Qwen2 layout (``model_type`` ``"qwen2"`` or Dream's ``"Dream"``; without a
    ``model_type``, ``architectures[0]`` ``Qwen2ForCausalLM``/``DreamModel``). With ``H`` =
    ``hidden_size``, ``I`` = ``intermediate_size``, ``V`` = ``vocab_size``, ``n`` / ``kv`` the
    query / key-value head counts and ``hd`` = ``head_dim`` (default ``H / n``)::

        model.embed_tokens.weight                      [V, H]
        model.layers.{i}.self_attn.q_proj.weight        [n*hd, H]   (+ .bias [n*hd])
        model.layers.{i}.self_attn.k_proj.weight        [kv*hd, H]  (+ .bias [kv*hd])
        model.layers.{i}.self_attn.v_proj.weight        [kv*hd, H]  (+ .bias [kv*hd])
        model.layers.{i}.self_attn.o_proj.weight        [H, n*hd]
        model.layers.{i}.mlp.gate_proj.weight / up_proj [I, H]
        model.layers.{i}.mlp.down_proj.weight           [H, I]
        model.layers.{i}.input_layernorm.weight         [H]
        model.layers.{i}.post_attention_layernorm.weight [H]
        model.norm.weight                               [H]
        lm_head.weight                                  [V, H]   (absent if tie_word_embeddings)

    for ``i`` in ``range(num_hidden_layers)``, in this order (the order Transformers saves).

    Args:
        config: the parsed ``config.json``.

    Returns:
        ``{name: shape}``, or ``None`` for an architecture this module does not know (then a
        reader can only check the safetensors headers).

    Raises:
        ValueError: a known architecture whose config lacks a size or has an impossible one
            (names the key and the value).

    Example:
        >>> expected_shapes({"model_type": "llama"}) is None
        True
    """
    if not _is_qwen2(config):
        return None
    hidden = _positive_int(config, "hidden_size")
    layers = _positive_int(config, "num_hidden_layers")
    intermediate = _positive_int(config, "intermediate_size")
    heads = _positive_int(config, "num_attention_heads")
    kv_heads = (
        _positive_int(config, "num_key_value_heads")
        if (config.get("num_key_value_heads") is not None)
        else heads
    )
    vocab = _positive_int(config, "vocab_size")
    if config.get("head_dim") is not None:
        head_dim = _positive_int(config, "head_dim")
    elif hidden % heads:
        raise ValueError(f"hidden_size={hidden} is not a multiple of num_attention_heads={heads}")
    else:
        head_dim = hidden // heads
    if heads % kv_heads:
        raise ValueError(
            f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}"
        )
    tied = config.get("tie_word_embeddings", False)
    if type(tied) is not bool:
        raise ValueError(f"tie_word_embeddings must be true or false, got {tied!r}")

    q_width, kv_width = heads * head_dim, kv_heads * head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        layer = f"model.layers.{i}"
        shapes |= {
            f"{layer}.self_attn.q_proj.weight": (q_width, hidden),
            f"{layer}.self_attn.q_proj.bias": (q_width,),
            f"{layer}.self_attn.k_proj.weight": (kv_width, hidden),
            f"{layer}.self_attn.k_proj.bias": (kv_width,),
            f"{layer}.self_attn.v_proj.weight": (kv_width, hidden),
            f"{layer}.self_attn.v_proj.bias": (kv_width,),
            f"{layer}.self_attn.o_proj.weight": (hidden, q_width),
            f"{layer}.mlp.gate_proj.weight": (intermediate, hidden),
            f"{layer}.mlp.up_proj.weight": (intermediate, hidden),
            f"{layer}.mlp.down_proj.weight": (hidden, intermediate),
            f"{layer}.input_layernorm.weight": (hidden,),
            f"{layer}.post_attention_layernorm.weight": (hidden,),
        }
    shapes["model.norm.weight"] = (hidden,)
    if not tied:
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes
