"""What a Hugging Face checkpoint folder holds: its file names, its dtypes, its tensors' shapes.

A folder holds ``config.json`` and either one ``model.safetensors`` or shards named
``model-00001-of-00004.safetensors`` ... listed by ``model.safetensors.index.json``. For the
architectures thermojax knows, :func:`expected_shapes` gives every tensor's name and shape from
``config.json``, so a checkpoint that disagrees with its own config is caught before any weight
is read:

- Qwen2, and Dream (Qwen2 trained as a masked-diffusion model): :data:`QWEN2_LAYOUT`;
- LLaDA (``GSAI-ML/LLaDA-8B-Base`` / ``-Instruct``, a Llama-like masked-diffusion model with
  OLMo's tensor names): :data:`LLADA_LAYOUT`.

Both are the same network (RMSNorm, rotary attention, SwiGLU MLP) under other names; a
:class:`TensorLayout` says where each layout keeps each tensor, so one implementation runs both.

Example:
    >>> shapes = expected_shapes({"model_type": "qwen2", "hidden_size": 64,
    ...     "num_hidden_layers": 1, "intermediate_size": 128, "num_attention_heads": 4,
    ...     "num_key_value_heads": 2, "vocab_size": 256})
    >>> shapes["model.layers.0.self_attn.k_proj.weight"]
    (32, 64)
    >>> len(shapes)  # embed, 12 per layer, final norm, lm_head
    15
    >>> expected_shapes({"model_type": "llada", "n_layers": 10**9})
    Traceback (most recent call last):
    ...
    ValueError: n_layers must be at most 1000, got 1000000000
"""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np

__all__ = [
    "CONFIG_FILE",
    "DTYPES",
    "FLOAT_DTYPES",
    "INDEX_FILE",
    "LAYOUTS",
    "LLADA_LAYOUT",
    "LLADA_MODEL_TYPES",
    "MAX_LAYERS",
    "QWEN2_LAYOUT",
    "QWEN2_MODEL_TYPES",
    "SINGLE_FILE",
    "TensorLayout",
    "expected_shapes",
    "layout_of",
    "llada_kv_heads",
    "llada_layout_problem",
    "llada_sizes",
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
LLADA_MODEL_TYPES = frozenset({"llada"})
"""``config.json`` ``model_type`` values (compared lower-case) with LLaDA's tensor layout."""
_LLADA_ARCHITECTURES = frozenset({"LLaDAModelLM"})

MAX_LAYERS = 1000
"""The most layers a ``config.json`` may declare (``num_hidden_layers`` / ``n_layers``). The
largest open models have about 130; a layout holds a dozen names per layer, so a count like
10**9 (a typo, or a hostile file) is refused before any of it is built."""


@dataclasses.dataclass(frozen=True)
class TensorLayout:
    """Where a checkpoint of the decoder thermojax runs keeps each tensor: names by role.

    Frozen, hashable and compared by value: static metadata of a model, like its sizes. Block
    ``i``'s tensor with suffix ``s`` is ``f"{block.format(i=i)}.{s}.weight"`` (``.bias`` for a
    bias); the embedding, final norm and head are full names.

    Attributes:
        name: the layout's name (``"qwen2"``, ``"llada"``).
        embed: the token embedding ``[V, H]``.
        block: block ``i``'s name prefix, a format string of ``i``.
        linears: a block's seven linear layers in forward order: query, key, value, attention
            output, MLP gate (through SiLU), MLP up, MLP down.
        attention_norm: the RMSNorm before the attention (a block suffix).
        mlp_norm: the RMSNorm before the MLP (a block suffix).
        final_norm: the RMSNorm after the last block.
        head: the output projection ``[V, H]`` (absent when tied to the embedding).

    Example:
        >>> LLADA_LAYOUT.block_tensor(3, LLADA_LAYOUT.linears[3])
        'model.transformer.blocks.3.attn_out.weight'
        >>> QWEN2_LAYOUT.linear_names(1)[-2:]
        ('model.layers.0.mlp.down_proj.weight', 'lm_head.weight')
    """

    name: str
    embed: str
    block: str
    linears: tuple[str, ...]
    attention_norm: str
    mlp_norm: str
    final_norm: str
    head: str

    def __post_init__(self) -> None:
        if len(self.linears) != 7:
            raise ValueError(
                f"linears must name 7 layers (q, k, v, out, gate, up, down), got {self.linears}"
            )

    def block_tensor(self, layer: int, suffix: str, kind: str = "weight") -> str:
        """The name of block ``layer``'s tensor ``suffix`` (``kind``: ``weight`` or ``bias``)."""
        return f"{self.block.format(i=layer)}.{suffix}.{kind}"

    def linear_names(self, num_layers: int) -> tuple[str, ...]:
        """Every linear layer's weight name in forward order: each block's :attr:`linears`,
        then :attr:`head` (also when it is tied to the embedding)."""
        blocks = tuple(
            self.block_tensor(i, suffix) for i in range(num_layers) for suffix in self.linears
        )
        return (*blocks, self.head)


QWEN2_LAYOUT = TensorLayout(
    name="qwen2",
    embed="model.embed_tokens.weight",
    block="model.layers.{i}",
    linears=(
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ),
    attention_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    final_norm="model.norm.weight",
    head="lm_head.weight",
)
"""Qwen2's (and Dream's) tensor names."""
LLADA_LAYOUT = TensorLayout(
    name="llada",
    embed="model.transformer.wte.weight",
    block="model.transformer.blocks.{i}",
    linears=("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"),
    attention_norm="attn_norm",
    mlp_norm="ff_norm",
    final_norm="model.transformer.ln_f.weight",
    head="model.transformer.ff_out.weight",
)
"""LLaDA's tensor names (``LLaDAModelLM``'s ``model.transformer``, OLMo's names; its MLP is
``ff_out(act(ff_proj(x)) * up_proj(x))``)."""
LAYOUTS: dict[str, TensorLayout] = {layout.name: layout for layout in (QWEN2_LAYOUT, LLADA_LAYOUT)}
"""Every layout by name."""


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


def _positive_int(config: dict, key: str, *, high: int | None = None) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{key} must be at most {high}, got {value!r}")
    return value


def _flag(config: dict, key: str, default: bool | None) -> bool | None:
    value = config.get(key, default)
    if value is not None and type(value) is not bool:
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def layout_of(config: dict) -> TensorLayout | None:
    """The tensor layout of ``config.json``'s architecture, or ``None`` for one not known here.

    By ``model_type`` (compared lower-case: :data:`QWEN2_MODEL_TYPES`,
    :data:`LLADA_MODEL_TYPES`); without one, by ``architectures[0]`` (``Qwen2ForCausalLM``,
    ``Qwen2Model``, ``DreamModel``; ``LLaDAModelLM``).

    Example:
        >>> layout_of({"model_type": "llada"}).name, layout_of({"model_type": "llama"})
        ('llada', None)
    """
    model_type = config.get("model_type")
    if isinstance(model_type, str):
        kind = model_type.lower()
        if kind in QWEN2_MODEL_TYPES:
            return QWEN2_LAYOUT
        return LLADA_LAYOUT if kind in LLADA_MODEL_TYPES else None
    architectures = config.get("architectures")
    if not architectures or not isinstance(architectures, list):
        return None
    if architectures[0] in _QWEN2_ARCHITECTURES:
        return QWEN2_LAYOUT
    return LLADA_LAYOUT if architectures[0] in _LLADA_ARCHITECTURES else None


def llada_layout_problem(config: dict) -> str | None:
    """Why a LLaDA ``config.json`` has tensors other than :data:`LLADA_LAYOUT`'s, or ``None``.

    LLaDA's configuration class (OLMo's) describes more networks than LLaDA 8B: a
    ``block_type`` other than ``"llama"`` fuses q/k/v into one tensor, ``block_group_size > 1``
    renames every block, ``attention_layer_norm`` adds q/k norms, neither ``rope`` nor
    ``alibi`` adds a position embedding, ``layer_norm_with_affine: false`` drops the norm
    weights and the ``swiglu`` activation halves ``ff_out``'s input. A key that is absent takes
    LLaDA's default, as its own code does. The message names the key and its value.

    Example:
        >>> llada_layout_problem({"block_type": "sequential"})
        "block_type must be 'llama' (separate q/k/v and up projections), got 'sequential'"
    """
    block_type = config.get("block_type", "sequential")
    if block_type != "llama":
        return f"block_type must be 'llama' (separate q/k/v and up projections), got {block_type!r}"
    group = config.get("block_group_size", 1)
    if group != 1 or type(group) is not int:
        return f"block_group_size must be 1 (blocks named blocks.i), got {group!r}"
    if config.get("attention_layer_norm", False) is not False:
        return (
            f"attention_layer_norm must be false (no q/k norms), got "
            f"{config['attention_layer_norm']!r}"
        )
    if not (config.get("rope", False) or config.get("alibi", False)):
        return (
            f"rope must be true (no position embedding tensor), got {config.get('rope', False)!r}"
        )
    if config.get("layer_norm_with_affine", True) is not True:
        return (
            f"layer_norm_with_affine must be true (norm weights), got "
            f"{config['layer_norm_with_affine']!r}"
        )
    activation = config.get("activation_type", "swiglu")
    if activation == "swiglu":
        return "activation_type must not be 'swiglu' (the llama block gates with up_proj)"
    return None


def llada_kv_heads(config: dict) -> int:
    """LLaDA's key/value head count: ``n_kv_heads``, else 1 with ``multi_query_attention``,
    else ``n_heads`` (its ``effective_n_kv_heads``).

    Raises:
        ValueError: a bad count, or ``multi_query_attention`` contradicting ``n_kv_heads``.
    """
    heads = _positive_int(config, "n_heads")
    multi_query = _flag(config, "multi_query_attention", None)
    if config.get("n_kv_heads") is None:
        return 1 if multi_query else heads
    kv_heads = _positive_int(config, "n_kv_heads")
    if multi_query is not None and kv_heads != (1 if multi_query else heads):
        raise ValueError(
            f"n_kv_heads={kv_heads} contradicts multi_query_attention={multi_query} "
            f"(n_heads={heads})"
        )
    return kv_heads


def llada_sizes(config: dict) -> dict[str, int]:
    """A LLaDA config's sizes under Qwen2's names: ``hidden_size`` (``d_model``),
    ``num_hidden_layers`` (``n_layers``), ``intermediate_size`` (``mlp_hidden_size``, else
    ``mlp_ratio * d_model``), ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``
    (``d_model / n_heads``) and ``vocab_size`` (the embedding's rows: ``embedding_size``,
    else ``vocab_size``).

    Raises:
        ValueError: a missing or impossible size (naming the key and value).
    """
    layers = _positive_int(config, "n_layers", high=MAX_LAYERS)
    hidden = _positive_int(config, "d_model")
    heads = _positive_int(config, "n_heads")
    kv_heads = llada_kv_heads(config)
    if hidden % heads:
        raise ValueError(f"d_model={hidden} is not a multiple of n_heads={heads}")
    if heads % kv_heads:
        raise ValueError(f"n_heads={heads} is not a multiple of n_kv_heads={kv_heads}")
    if config.get("mlp_hidden_size") is not None:
        intermediate = _positive_int(config, "mlp_hidden_size")
    else:
        intermediate = hidden * _positive_int({"mlp_ratio": 4} | config, "mlp_ratio")
    vocab = _positive_int(config, "vocab_size")
    if config.get("embedding_size") is not None:
        embedding = _positive_int(config, "embedding_size")
        if embedding < vocab:
            raise ValueError(f"embedding_size={embedding} is smaller than vocab_size={vocab}")
        vocab = embedding
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "intermediate_size": intermediate,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "vocab_size": vocab,
    }


def expected_shapes(config: dict) -> dict[str, tuple[int, ...]] | None:
    """Every tensor name and shape that ``config.json`` implies, or ``None`` if unknown.

    Known (:func:`layout_of`): the Qwen2 layout and LLaDA's. For Qwen2 (``model_type``
    ``"qwen2"`` or Dream's ``"Dream"``), with ``H`` = ``hidden_size``, ``I`` =
    ``intermediate_size``, ``V`` = ``vocab_size``, ``n`` / ``kv`` the query / key-value head
    counts and ``hd`` = ``head_dim`` (default ``H / n``)::

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

    For LLaDA (``model_type`` ``"llada"``), with ``H`` = ``d_model``, ``I`` =
    ``mlp_hidden_size``, ``V`` = ``embedding_size`` (else ``vocab_size``), ``kv*hd`` =
    ``n_kv_heads * d_model / n_heads`` (:func:`llada_sizes`), each line for every block ``i``
    before the next line::

        model.transformer.wte.weight                    [V, H]
        model.transformer.ln_f.weight                   [H]
        model.transformer.blocks.{i}.attn_out.weight    [H, H]
        model.transformer.ff_out.weight                 [V, H]   (absent if weight_tying)
        model.transformer.blocks.{i}.ff_out.weight      [H, I]
        model.transformer.blocks.{i}.attn_norm.weight, ff_norm.weight  [H]
        model.transformer.blocks.{i}.q_proj.weight      [H, H]
        model.transformer.blocks.{i}.k_proj.weight, v_proj.weight  [kv*hd, H]
        model.transformer.blocks.{i}.ff_proj.weight, up_proj.weight  [I, H]

    the order of LLaDA-8B's shards (grouped by kind; cut into 3 GB shards it gives their six).
    Biases follow their weights: q/k/v's with ``include_bias`` or ``include_qkv_bias``, every
    linear layer's with ``include_bias``, the norms' with ``bias_for_layer_norm`` (default
    ``include_bias``). A LLaDA config of another block structure
    (:func:`llada_layout_problem`) is unknown.

    Args:
        config: the parsed ``config.json``.

    Returns:
        ``{name: shape}``, or ``None`` for an architecture this module does not know (then a
        reader can only check the safetensors headers).

    Raises:
        ValueError: a known architecture whose config lacks a size or has an impossible one,
            or more than :data:`MAX_LAYERS` layers (names the key and the value).

    Example:
        >>> expected_shapes({"model_type": "llama"}) is None
        True
    """
    layout = layout_of(config)
    if layout is LLADA_LAYOUT:
        return _llada_shapes(config)
    if layout is None:
        return None
    hidden = _positive_int(config, "hidden_size")
    layers = _positive_int(config, "num_hidden_layers", high=MAX_LAYERS)
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
    names = QWEN2_LAYOUT
    q, k, v, o, gate, up, down = names.linears
    widths = {
        q: (q_width, hidden),
        k: (kv_width, hidden),
        v: (kv_width, hidden),
        o: (hidden, q_width),
        gate: (intermediate, hidden),
        up: (intermediate, hidden),
        down: (hidden, intermediate),
    }
    shapes: dict[str, tuple[int, ...]] = {names.embed: (vocab, hidden)}
    for i in range(layers):
        for suffix, shape in widths.items():
            shapes[names.block_tensor(i, suffix)] = shape
            if suffix in (q, k, v):
                shapes[names.block_tensor(i, suffix, "bias")] = shape[:1]
        shapes[names.block_tensor(i, names.attention_norm)] = (hidden,)
        shapes[names.block_tensor(i, names.mlp_norm)] = (hidden,)
    shapes[names.final_norm] = (hidden,)
    if not tied:
        shapes[names.head] = (vocab, hidden)
    return shapes


def _llada_shapes(config: dict) -> dict[str, tuple[int, ...]] | None:
    """LLaDA's layout (:func:`expected_shapes`), ``None`` for a block structure it is not."""
    _positive_int(config, "n_layers", high=MAX_LAYERS)  # before anything else is read
    if llada_layout_problem(config) is not None:
        return None
    sizes = llada_sizes(config)
    hidden, intermediate = sizes["hidden_size"], sizes["intermediate_size"]
    vocab, layers = sizes["vocab_size"], sizes["num_hidden_layers"]
    kv_width = sizes["num_key_value_heads"] * sizes["head_dim"]
    tied = _flag(config, "weight_tying", True)  # LLaDA's default
    linear_bias = _flag(config, "include_bias", False)
    qkv_bias = linear_bias or bool(_flag(config, "include_qkv_bias", False))
    norm_bias = _flag(config, "bias_for_layer_norm", None)
    norm_bias = linear_bias if norm_bias is None else norm_bias

    names = LLADA_LAYOUT
    q, k, v, out, gate, up, down = names.linears
    shapes: dict[str, tuple[int, ...]] = {}

    def add(name: str, shape: tuple[int, ...], bias: bool) -> None:
        shapes[name] = shape
        if bias:
            shapes[name.removesuffix(".weight") + ".bias"] = shape[:1]

    def each_block(suffix: str, shape: tuple[int, ...], bias: bool) -> None:
        for i in range(layers):
            add(names.block_tensor(i, suffix), shape, bias)

    add(names.embed, (vocab, hidden), False)
    add(names.final_norm, (hidden,), norm_bias)
    each_block(out, (hidden, hidden), linear_bias)
    if not tied:
        add(names.head, (vocab, hidden), linear_bias)
    each_block(down, (hidden, intermediate), linear_bias)
    for i in range(layers):
        add(names.block_tensor(i, names.attention_norm), (hidden,), norm_bias)
        add(names.block_tensor(i, names.mlp_norm), (hidden,), norm_bias)
    each_block(q, (hidden, hidden), qkv_bias)
    each_block(k, (kv_width, hidden), qkv_bias)
    each_block(v, (kv_width, hidden), qkv_bias)
    each_block(gate, (intermediate, hidden), linear_bias)
    each_block(up, (intermediate, hidden), linear_bias)
    return shapes
