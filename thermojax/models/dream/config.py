"""The architecture of a Dream / Qwen2 or LLaDA checkpoint, parsed and checked from its
``config.json``.

Dream (``Dream-org/Dream-v0-Base-7B``) is Qwen2.5 trained as a masked-diffusion language model:
the same tensors, RMSNorm, rotary embeddings, grouped-query attention with q/k/v biases and
SwiGLU MLP, with bidirectional attention and a ``mask_token_id``. LLaDA
(``GSAI-ML/LLaDA-8B-Base`` / ``-Instruct``) is the same network without biases, under OLMo's
tensor names and config keys (``d_model``, ``n_layers``, ...), and reads the prediction for
token ``i`` at position ``i`` where Dream reads it at ``i - 1``. :class:`DreamConfig` holds what
the forward pass needs and nothing else, the tensor names (a
:class:`~thermojax.models.hf.layouts.TensorLayout`) and the logit shift included; it is frozen
and hashable, the static part of a :class:`~thermojax.models.dream.network.DreamLM` pytree.

Both spellings of the rotary base are read: ``rope_theta`` at the top level (Dream's config,
transformers 4.x) and ``rope_parameters.rope_theta`` (what transformers 5.x saves). Features
this implementation does not have (scaled rotary embeddings, sliding-window layers, another
activation) are refused instead of silently computed wrong.

Example:
    >>> config = DreamConfig.from_hf({"model_type": "qwen2", "hidden_size": 64,
    ...     "num_hidden_layers": 2, "intermediate_size": 128, "num_attention_heads": 4,
    ...     "num_key_value_heads": 2, "vocab_size": 300})
    >>> config.head_dim, config.kv_group_size, config.rope_theta, config.logit_shift
    (16, 2, 10000.0, 1)
    >>> llada = DreamConfig.from_hf({"model_type": "llada", "d_model": 64, "n_layers": 2,
    ...     "n_heads": 4, "mlp_hidden_size": 128, "vocab_size": 300, "block_type": "llama",
    ...     "activation_type": "silu", "layer_norm_type": "rms", "rope": True,
    ...     "weight_tying": False})
    >>> llada.layout.name, llada.attention_bias, llada.logit_shift, llada.rms_norm_eps
    ('llada', False, 0, 1e-05)
    >>> DreamConfig.from_hf({"model_type": "qwen2", "hidden_size": 0})
    Traceback (most recent call last):
    ...
    ValueError: hidden_size must be a positive integer, got 0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from thermojax.models.hf.layouts import (
    LAYOUTS,
    LLADA_LAYOUT,
    QWEN2_LAYOUT,
    TensorLayout,
    expected_shapes,
    layout_of,
    llada_layout_problem,
    llada_sizes,
)

__all__ = ["LOGIT_SHIFT", "DreamConfig"]

LOGIT_SHIFT = 1
"""Dream reads the prediction for token ``i`` from the network's output at position ``i - 1``
(position 0 predicts itself): its sampler shifts the logits right by one place, see
:func:`~thermojax.models.dream.network.shift_logits`. LLaDA's shift is 0."""

_DEFAULT_ROPE_THETA = 10_000.0  # transformers' Qwen2Config default, and LLaDA's
_DEFAULT_RMS_NORM_EPS = 1e-6
_DEFAULT_MAX_POSITIONS = 32_768
_LLADA_RMS_NORM_EPS = 1e-5  # LLaDA's (OLMo's) defaults
_LLADA_MAX_SEQUENCE_LENGTH = 1024


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(key: str, value: object) -> int:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return value


def _positive_float(key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{key} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{key} must be finite, got {value!r}")
    return float(value)


def _token_id(key: str, value: object) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer or null, got {value!r}")
    return value


def _rope_theta(config: Mapping[str, Any]) -> float:
    """The rotary base, refusing any rotary scaling (only the original RoPE is implemented)."""
    scaling = config.get("rope_scaling")
    if scaling is not None and (
        not isinstance(scaling, Mapping)
        or scaling.get("rope_type", scaling.get("type")) not in (None, "default")
    ):
        raise ValueError(f"rope_scaling is not supported (only default RoPE), got {scaling!r}")
    parameters = config.get("rope_parameters")
    if parameters is None:
        return _positive_float("rope_theta", config.get("rope_theta", _DEFAULT_ROPE_THETA))
    if not isinstance(parameters, Mapping):
        # a bad config.json value, like every check here: ValueError (-> UserInputError)
        raise ValueError(f"rope_parameters must be an object, got {parameters!r}")  # noqa: TRY004
    if parameters.get("rope_type", "default") != "default":
        raise ValueError(
            f"rope_parameters.rope_type must be 'default', got {parameters['rope_type']!r}"
        )
    theta = parameters.get("rope_theta", config.get("rope_theta", _DEFAULT_ROPE_THETA))
    return _positive_float("rope_parameters.rope_theta", theta)


def _unsupported_attention(config: Mapping[str, Any]) -> None:
    if config.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act must be 'silu', got {config['hidden_act']!r}")
    if config.get("use_sliding_window", False):
        raise ValueError(
            f"use_sliding_window is not supported, got {config['use_sliding_window']!r}"
        )
    layer_types = config.get("layer_types")
    if layer_types is not None and (
        not isinstance(layer_types, list) or any(t != "full_attention" for t in layer_types)
    ):
        raise ValueError(f"layer_types must all be 'full_attention', got {layer_types!r}")


# LLaDA's config keys that change the computation, with its code's default and the value this
# implementation computes (its forward pass: a llama block, RMSNorm, SiLU gate, RoPE).
_LLADA_COMPUTATION = {
    "activation_type": ("swiglu", "silu"),
    "layer_norm_type": ("default", "rms"),
    "alibi": (False, False),
    "rope": (False, True),
    "scale_logits": (False, False),
    "input_emb_norm": (False, False),
    "include_bias": (False, False),
}


def _unsupported_llada(config: Mapping[str, Any]) -> None:
    """Refuse a LLaDA config whose tensors or computation this implementation does not have."""
    problem = llada_layout_problem(dict(config))
    if problem is not None:
        raise ValueError(problem)
    for key, (default, implemented) in _LLADA_COMPUTATION.items():
        value = config.get(key, default)
        if value != implemented or type(value) is not type(implemented):
            raise ValueError(f"{key} must be {implemented!r}, got {value!r}")
    if config.get("bias_for_layer_norm") not in (None, False):
        raise ValueError(
            f"bias_for_layer_norm must be false (RMSNorm without bias), got "
            f"{config['bias_for_layer_norm']!r}"
        )


def _llada_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`DreamConfig`'s fields from a LLaDA ``config.json`` (checked)."""
    _unsupported_llada(config)
    qkv_bias = config.get("include_qkv_bias", False)
    if qkv_bias is not None and type(qkv_bias) is not bool:
        raise ValueError(f"include_qkv_bias must be true or false, got {qkv_bias!r}")
    return llada_sizes(dict(config)) | {
        "rms_norm_eps": config.get("rms_norm_eps", _LLADA_RMS_NORM_EPS),
        "rope_theta": _rope_theta(config),
        "max_position_embeddings": config.get("max_sequence_length", _LLADA_MAX_SEQUENCE_LENGTH),
        "tie_word_embeddings": config.get("weight_tying", True),
        "mask_token_id": config.get("mask_token_id"),
        "pad_token_id": config.get("pad_token_id"),
        "bos_token_id": config.get("bos_token_id"),
        "eos_token_id": config.get("eos_token_id"),
        "layout": LLADA_LAYOUT,
        "attention_bias": bool(qkv_bias),
        "logit_shift": 0,
    }


@dataclasses.dataclass(frozen=True)
class DreamConfig:
    """The architecture of a bidirectional Qwen2-like network, as Dream and LLaDA use it.

    Field names are Qwen2's ``config.json`` keys (a LLaDA config's are translated by
    :meth:`from_hf`). Invariants (checked on construction, each failure a ``ValueError`` naming
    the key and value): sizes positive, ``num_attention_heads`` a multiple of
    ``num_key_value_heads``, ``head_dim`` even, ``rms_norm_eps`` and ``rope_theta`` positive,
    token ids non-negative or ``None``, ``logit_shift`` 0 or 1, and the Qwen2 layout with its
    q/k/v biases.

    ``mask_token_id`` is not required to be below ``vocab_size``: the scaled synthetic
    checkpoints keep Dream's id (151666) with a smaller vocabulary. Code that embeds the mask
    token checks it (:meth:`checked_mask_token_id`).

    Attributes:
        hidden_size: H, the residual stream's width.
        num_hidden_layers: the number of decoder blocks.
        intermediate_size: I, the SwiGLU MLP's width.
        num_attention_heads: n, query heads.
        num_key_value_heads: kv, key/value heads (grouped-query attention: ``n / kv`` queries
            share each).
        vocab_size: V.
        head_dim: per-head width (``config.json``'s ``head_dim``, else ``H / n``).
        rms_norm_eps: RMSNorm's epsilon.
        rope_theta: the rotary embedding base.
        max_position_embeddings: the longest sequence the checkpoint was trained for.
        tie_word_embeddings: the output projection reuses ``model.embed_tokens.weight`` (no
            ``lm_head.weight`` tensor).
        mask_token_id: Dream's ``[MASK]`` token, or ``None`` for a plain Qwen2 config.
        pad_token_id, bos_token_id: or ``None``.
        eos_token_id: one id, a tuple of ids (a list in ``config.json``), or ``None``.
        layout: the checkpoint's tensor names (Qwen2's or LLaDA's: a ``LAYOUTS`` value).
        attention_bias: q, k and v have biases (Qwen2's do, LLaDA 8B's do not).
        logit_shift: the position that predicts token ``i`` is ``i - logit_shift`` (Dream 1,
            LLaDA 0; see :func:`~thermojax.models.dream.network.shift_logits`).
    """

    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    head_dim: int
    rms_norm_eps: float = _DEFAULT_RMS_NORM_EPS
    rope_theta: float = _DEFAULT_ROPE_THETA
    max_position_embeddings: int = _DEFAULT_MAX_POSITIONS
    tie_word_embeddings: bool = False
    mask_token_id: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    layout: TensorLayout = QWEN2_LAYOUT
    attention_bias: bool = True
    logit_shift: int = LOGIT_SHIFT

    def __post_init__(self) -> None:
        for key in (
            "hidden_size",
            "num_hidden_layers",
            "intermediate_size",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
            "head_dim",
            "max_position_embeddings",
        ):
            _positive_int(key, getattr(self, key))
        heads, kv_heads = self.num_attention_heads, self.num_key_value_heads
        if heads % kv_heads:
            raise ValueError(
                f"num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even (rotary pairs), got {self.head_dim}")
        object.__setattr__(self, "rms_norm_eps", _positive_float("rms_norm_eps", self.rms_norm_eps))
        object.__setattr__(self, "rope_theta", _positive_float("rope_theta", self.rope_theta))
        if type(self.tie_word_embeddings) is not bool:
            raise ValueError(
                f"tie_word_embeddings must be true or false, got {self.tie_word_embeddings!r}"
            )
        for key in ("mask_token_id", "pad_token_id", "bos_token_id"):
            _token_id(key, getattr(self, key))
        eos = self.eos_token_id
        if isinstance(eos, list | tuple):
            eos = tuple(_token_id("eos_token_id", i) for i in eos)
            if None in eos:
                raise ValueError(f"eos_token_id must not contain null, got {self.eos_token_id!r}")
        else:
            eos = _token_id("eos_token_id", eos)
        object.__setattr__(self, "eos_token_id", eos)
        if self.layout not in LAYOUTS.values():  # tensor_shapes() knows these layouts
            raise ValueError(
                f"layout must be one of {', '.join(LAYOUTS)} (a TensorLayout), got {self.layout!r}"
            )
        if type(self.attention_bias) is not bool:
            raise ValueError(f"attention_bias must be true or false, got {self.attention_bias!r}")
        if self.layout == QWEN2_LAYOUT and not self.attention_bias:
            raise ValueError("attention_bias must be true for the Qwen2 layout (q/k/v biases)")
        if (
            self.layout == LLADA_LAYOUT
            and self.head_dim * self.num_attention_heads != self.hidden_size
        ):
            raise ValueError(
                f"head_dim={self.head_dim} must be hidden_size / num_attention_heads in LLaDA's "
                f"layout ({self.hidden_size} / {self.num_attention_heads})"
            )
        if self.logit_shift not in (0, 1) or type(self.logit_shift) is not int:
            raise ValueError(f"logit_shift must be 0 or 1, got {self.logit_shift!r}")

    @classmethod
    def from_hf(cls, config: Mapping[str, Any]) -> DreamConfig:
        """Parse a Qwen2 / Dream or LLaDA ``config.json`` (as a dict).

        A LLaDA config's keys take LLaDA's defaults where absent (``weight_tying`` true,
        ``rms_norm_eps`` 1e-5, ``max_sequence_length`` 1024); ``vocab_size`` is the
        embedding's rows (``embedding_size``, else ``vocab_size``), the width of the logits.

        Args:
            config: the parsed ``config.json``; keys this model does not use are ignored.

        Raises:
            ValueError: not a Qwen2 or LLaDA config (``model_type``), a missing or impossible
                size, or a feature not implemented here; the message names the key and value.
        """
        config = dict(config)
        layout = layout_of(config)
        if layout == LLADA_LAYOUT:
            return cls(**_llada_fields(config))
        if layout is None or expected_shapes(config) is None:
            raise ValueError(
                f"model_type {config.get('model_type')!r} (architectures "
                f"{config.get('architectures')!r}) is not a Qwen2 / Dream or LLaDA model"
            )
        _unsupported_attention(config)
        sizes = {
            key: _positive_int(key, config.get(key))
            for key in (
                "hidden_size",
                "num_hidden_layers",
                "intermediate_size",
                "num_attention_heads",
                "vocab_size",
            )
        }
        heads = sizes["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads")
        head_dim = config.get("head_dim")
        if head_dim is None:
            if sizes["hidden_size"] % heads:
                raise ValueError(
                    f"hidden_size={sizes['hidden_size']} is not a multiple of "
                    f"num_attention_heads={heads}"
                )
            head_dim = sizes["hidden_size"] // heads
        return cls(
            **sizes,
            num_key_value_heads=heads if kv_heads is None else kv_heads,
            head_dim=head_dim,
            rms_norm_eps=config.get("rms_norm_eps", _DEFAULT_RMS_NORM_EPS),
            rope_theta=_rope_theta(config),
            max_position_embeddings=config.get("max_position_embeddings", _DEFAULT_MAX_POSITIONS),
            tie_word_embeddings=config.get("tie_word_embeddings", False),
            mask_token_id=config.get("mask_token_id"),
            pad_token_id=config.get("pad_token_id"),
            bos_token_id=config.get("bos_token_id"),
            eos_token_id=config.get("eos_token_id"),
        )

    @property
    def kv_group_size(self) -> int:
        """Query heads per key/value head, ``n / kv``."""
        return self.num_attention_heads // self.num_key_value_heads

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every checkpoint tensor's name and shape, in the order transformers saves them.

        The layout is :func:`thermojax.models.hf.layouts.expected_shapes`'s (the one the
        checkpoint reader checks), so the two never disagree.
        """
        return expected_shapes(self._hf_layout_config())

    def _hf_layout_config(self) -> dict[str, Any]:
        """The ``config.json`` keys that decide this architecture's tensors."""
        if self.layout == LLADA_LAYOUT:
            return {
                "model_type": "llada",
                "block_type": "llama",
                **{key: implemented for key, (_, implemented) in _LLADA_COMPUTATION.items()},
                "d_model": self.hidden_size,
                "n_layers": self.num_hidden_layers,
                "mlp_hidden_size": self.intermediate_size,
                "n_heads": self.num_attention_heads,
                "n_kv_heads": self.num_key_value_heads,
                "vocab_size": self.vocab_size,
                "weight_tying": self.tie_word_embeddings,
                "include_qkv_bias": self.attention_bias,
            }
        return {
            "model_type": "qwen2",
            **{
                key: getattr(self, key)
                for key in (
                    "hidden_size",
                    "num_hidden_layers",
                    "intermediate_size",
                    "num_attention_heads",
                    "num_key_value_heads",
                    "vocab_size",
                    "head_dim",
                    "tie_word_embeddings",
                )
            },
        }

    def checked_mask_token_id(self) -> int:
        """``mask_token_id``, checked to be a token of the vocabulary.

        Raises:
            ValueError: no ``mask_token_id``, or one not below ``vocab_size``.
        """
        if self.mask_token_id is None:
            raise ValueError("mask_token_id is not set in config.json (not a Dream checkpoint?)")
        if self.mask_token_id >= self.vocab_size:
            raise ValueError(
                f"mask_token_id={self.mask_token_id} is not below vocab_size={self.vocab_size}"
            )
        return self.mask_token_id
