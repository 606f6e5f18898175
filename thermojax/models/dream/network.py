"""Dream's and LLaDA's network in JAX: a Qwen2 / Llama decoder stack with bidirectional
attention, and its model pytree.

Per block (``x`` the residual stream, ``[B, L, H]``)::

    h = rms_norm(x) * input_layernorm
    q, k, v = h @ q_proj.T + q_bias, h @ k_proj.T + k_bias, h @ v_proj.T + v_bias
    q, k = rope(q), rope(k)                      # positions 0..L-1, HF's rotate_half pairing
    a = softmax(q k^T / sqrt(head_dim) [+ mask]) v   # every query sees every key (no causal mask)
    x = x + a @ o_proj.T
    h = rms_norm(x) * post_attention_layernorm
    x = x + (silu(h @ gate_proj.T) * (h @ up_proj.T)) @ down_proj.T

then ``logits = (rms_norm(x) * norm) @ lm_head.T``. These are Qwen2's (Dream's) tensor names;
a LLaDA checkpoint has the same network without q/k/v biases under other names (``attn_norm``,
``q_proj`` ... ``attn_out``, ``ff_norm``, ``ff_proj`` (the gate), ``up_proj``, ``ff_out`` (down),
``ln_f``, ``ff_out``), which the config's :class:`~thermojax.models.hf.layouts.TensorLayout`
gives, so one implementation runs both. Weights stay in the checkpoint's layout
(torch ``Linear``: ``[out, in]``) and dtype; every weight is upcast to float32 where it is used,
so the whole computation is float32 whatever the storage (:func:`load_dream
<thermojax.models.dream.checkpoint.load_dream>` upcasts on load by default, or keeps bf16 to
halve the memory).

The blocks are a Python loop, not a ``lax.scan``: every linear layer's activation hook then gets
a static Python layer index (as :data:`thermojax.models.base.ActHook` promises), and the
parameters stay one array per checkpoint tensor, never copied into stacked ``[layers, ...]``
arrays (15 GB more for Dream 7B). The price, compile time growing with depth, is small: about a second
for 28 layers on a CPU.

The 2-D weights of the linear layers are the quantizable layers (:attr:`DreamLM.layer_names`,
by their checkpoint names: per block q, k, v, o, gate, up, down, then the head);
:meth:`DreamLM.forward` runs with any of them replaced and returns each one's input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from thermojax.core.rotation import walsh_hadamard
from thermojax.models.base import LayerWeight, dense
from thermojax.models.dream.config import LOGIT_SHIFT, DreamConfig
from thermojax.models.hf.layouts import QWEN2_LAYOUT, TensorLayout

__all__ = [
    "LINEAR_SUFFIXES",
    "DreamLM",
    "LayerInputHook",
    "linear_layer_names",
    "shift_logits",
]

Array = jax.Array

LayerInputHook = Callable[[int, Array], Array]
"""``hook(layer_index, layer_input) -> layer_input'``, applied to the input of each linear layer
(``layer_index`` a static Python int in :attr:`DreamLM.layer_names` order; q, k and v each get
their own call on the same input). ``None`` means full precision."""

LINEAR_SUFFIXES = QWEN2_LAYOUT.linears
"""The linear layers of one Qwen2 block, in forward order (a LLaDA block's are
``LLADA_LAYOUT.linears``)."""


def linear_layer_names(num_layers: int, layout: TensorLayout = QWEN2_LAYOUT) -> tuple[str, ...]:
    """The weight name of every linear layer: per block ``layout.linears``, then the head.

    Example:
        >>> names = linear_layer_names(2)
        >>> len(names), names[0], names[-1]
        (15, 'model.layers.0.self_attn.q_proj.weight', 'lm_head.weight')
        >>> from thermojax.models.hf.layouts import LLADA_LAYOUT
        >>> linear_layer_names(1, LLADA_LAYOUT)[-2:]
        ('model.transformer.blocks.0.ff_out.weight', 'model.transformer.ff_out.weight')
    """
    return layout.linear_names(num_layers)


def shift_logits(logits: Array, shift: int = LOGIT_SHIFT) -> Array:
    """A logit convention: ``out[:, i] = logits[:, i - shift]`` for ``i >= shift``, ``out[:, i]
    = logits[:, i]`` before; Dream's ``shift`` is 1, LLaDA's 0 (the logits as they are).

    Dream was trained, like the autoregressive Qwen2.5 it started from, to predict token ``i``
    at position ``i - 1``; its sampler reads the distribution of a masked token at position
    ``i`` from ``shift_logits(logits)[:, i]``. Position 0 is never masked (a prompt starts the
    sequence) and keeps its own logits. LLaDA predicts token ``i`` at position ``i``.

    Args:
        logits: raw network output ``[B, L, V]``.
        shift: 1 (Dream's) or 0.

    Returns:
        The shifted logits, same shape and dtype.

    Example:
        >>> shift_logits(jnp.arange(4.0).reshape(1, 4, 1))[0, :, 0]
        Array([0., 0., 1., 2.], dtype=float32)
        >>> shift_logits(jnp.arange(4.0).reshape(1, 4, 1), shift=0)[0, :, 0]
        Array([0., 1., 2., 3.], dtype=float32)
    """
    if logits.ndim != 3:
        raise ValueError(f"logits must be [B, L, V], got shape {logits.shape}")
    if shift not in (0, 1) or type(shift) is not int:
        raise ValueError(f"shift must be 0 or 1, got {shift!r}")
    if shift == 0:
        return logits
    return jnp.concatenate([logits[:, :shift], logits[:, :-shift]], axis=1)


def _f32(a: Array) -> Array:
    return jnp.asarray(a).astype(jnp.float32)


def _embed(table: Array, tokens: Array) -> Array:
    """The rows of ``table [V, H]`` for ``tokens`` as float32 (NaN rows for an id outside).

    A half-precision table is gathered as its 16-bit patterns and converted after: gathered as
    it is, XLA:CPU turned the conversion of the gathered rows into one of the whole table (a
    float32 copy of the embedding inside the step: 2.2 GB for Dream 7B). The same bits either
    way."""
    if table.dtype == jnp.float32:
        return jnp.take(table, tokens, axis=0, mode="fill", fill_value=jnp.nan)
    nan = np.asarray(np.nan, dtype=table.dtype).view(np.uint16).item()
    patterns = jax.lax.bitcast_convert_type(table, jnp.uint16)
    rows = jnp.take(patterns, tokens, axis=0, mode="fill", fill_value=nan)
    return _f32(jax.lax.bitcast_convert_type(rows, table.dtype))


def _trailing(vector: Array, ndim: int) -> Array:
    """``vector [D]`` reshaped to broadcast along the last axis of an ``ndim`` array."""
    return vector.reshape((1,) * (ndim - 1) + (-1,))


def _rms_norm(x: Array, weight: Array, eps: float) -> Array:
    variance = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(variance + eps) * _trailing(_f32(weight), x.ndim)


def _rotary(positions: Array, config: DreamConfig) -> tuple[Array, Array]:
    """``(cos, sin)``, each ``[B, L, 1, head_dim]`` (broadcast over heads)."""
    half = config.head_dim // 2
    # The frequencies are config constants; computed in float64 then rounded, like HF's float32.
    exponents = np.arange(0, config.head_dim, 2, dtype=np.float64) / config.head_dim
    inv_freq = jnp.asarray(1.0 / config.rope_theta**exponents, jnp.float32)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq.reshape(1, 1, half)
    # cos and sin of the half, then the halves joined (HF's cat(freqs, freqs), the same
    # values): XLA:CPU otherwise fuses cos/sin into every q and k rotation and recomputes them
    # for each head, per layer (measured: 2.4 -> 0.7 ms a layer at B=2, L=256, 16/4 heads).
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    cos = jnp.concatenate([cos, cos], axis=-1)[:, :, None, :]
    sin = jnp.concatenate([sin, sin], axis=-1)[:, :, None, :]
    return cos, sin


def _rotate(x: Array, cos: Array, sin: Array) -> Array:
    """HF's rotary convention: dimension ``d`` pairs with ``d + head_dim / 2`` (rotate_half)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def _key_mask(attention_mask: Array | None, batch: int, length: int) -> Array | None:
    """The mask as ``[B, 1, 1, Lq or 1, Lk]`` booleans (True: attend), broadcastable to scores."""
    if attention_mask is None:
        return None
    mask = jnp.asarray(attention_mask)
    if mask.shape == (batch, length):
        return mask.astype(bool)[:, None, None, None, :]
    if mask.shape == (batch, length, length):
        return mask.astype(bool)[:, None, None, :, :]
    raise ValueError(
        f"attention_mask must be [B, L] or [B, L, L] = {(batch, length)} or "
        f"{(batch, length, length)}, got shape {mask.shape}"
    )


def _precision(name: str) -> jax.lax.Precision:
    try:
        return jax.lax.Precision[name.upper()]
    except KeyError:
        choices = ", ".join(p.name.lower() for p in jax.lax.Precision)
        raise ValueError(f"matmul_precision must be one of {choices}, got {name!r}") from None


@struct.dataclass(eq=False)
class DreamLM:
    """A Dream / Qwen2 or LLaDA masked-diffusion language model: parameters plus static
    architecture.

    A pytree whose leaves are exactly the checkpoint's tensors, ``params``, keyed by their
    Hugging Face names (Qwen2's ``model.embed_tokens.weight``, ``model.layers.{i}.self_attn.
    q_proj.weight`` / ``.bias``, ..., ``model.norm.weight``, ``lm_head.weight``; LLaDA's
    ``model.transformer.wte.weight``, ...: ``config.layout``), in torch's ``[out, in]`` layout,
    float32 or the stored bf16/f16 (upcast to float32 where used). The :class:`DreamConfig` and
    the matmul precision are static fields, so jitted programs take the model as an argument and
    no parameter is baked into a program as a constant.

    Invariant: ``params`` holds exactly ``config.tensor_shapes()``, with those shapes, so
    ``sum(leaf.size for leaf in jax.tree.leaves(model)) == model.num_parameters()``.

    Attributes:
        params: tensor name -> array.
        config: the architecture (static).
        matmul_precision: ``jax.lax.Precision`` name for every matmul (static). ``"highest"``
            (the default) is true float32 on every backend; ``"default"`` lets GPUs and TPUs use
            TF32 / bf16 passes, faster and less exact.
        online_hadamard: the linear layers (by :attr:`layer_names`) whose input is multiplied
            by the normalized block-diagonal Hadamard matrix
            (:func:`~thermojax.core.rotation.walsh_hadamard`) in the forward pass, before it is
            recorded and before the activation hook, so the quantized input is the transformed
            one; their weights must hold ``W H`` (:func:`thermojax.models.dream.rotation.
            rotate_lm`). Static; empty (the default) for a checkpoint as trained.
    """

    params: dict[str, Array]
    config: DreamConfig = struct.field(pytree_node=False)
    matmul_precision: str = struct.field(pytree_node=False, default="highest")
    online_hadamard: tuple[str, ...] = struct.field(pytree_node=False, default=())

    name: ClassVar[str] = "dream"

    @classmethod
    def create(
        cls,
        config: DreamConfig,
        params: Mapping[str, Array | np.ndarray],
        *,
        dtype: jnp.dtype | str | None = jnp.float32,
    ) -> DreamLM:
        """The model from its architecture and tensors (checked against ``config``).

        Args:
            config: the architecture.
            params: every tensor ``config.tensor_shapes()`` names, with that shape.
            dtype: convert every tensor to this dtype; ``None`` keeps each as given.

        Raises:
            ValueError: a tensor missing, unexpected, or of the wrong shape (named).
        """
        expected = config.tensor_shapes()
        missing = [name for name in expected if name not in params]
        unexpected = [name for name in params if name not in expected]
        if missing or unexpected:
            raise ValueError(
                f"params do not match the config: missing {missing[:3]}"
                f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                f"{'...' if len(unexpected) > 3 else ''}"
            )
        for name, shape in expected.items():
            if tuple(np.shape(params[name])) != shape:
                raise ValueError(
                    f"{name}: shape {list(np.shape(params[name]))} but the config implies "
                    f"{list(shape)}"
                )
        convert = (lambda a: jnp.asarray(a)) if dtype is None else (lambda a: jnp.asarray(a, dtype))
        return cls(params={name: convert(params[name]) for name in expected}, config=config)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"DreamLM(hidden={c.hidden_size}, layers={c.num_hidden_layers}, "
            f"heads={c.num_attention_heads}/{c.num_key_value_heads}, vocab={c.vocab_size})"
        )

    # ---------------------------------------------------------------- conventions

    @property
    def logit_shift(self) -> int:
        """See :func:`shift_logits`: the prediction for position ``i`` is output ``i -
        logit_shift`` (Dream 1, LLaDA 0)."""
        return self.config.logit_shift

    @property
    def mask_token_id(self) -> int | None:
        """Dream's ``[MASK]`` token id (``config.json``'s ``mask_token_id``), or ``None``."""
        return self.config.mask_token_id

    @property
    def vocab_size(self) -> int:
        """V."""
        return self.config.vocab_size

    # ---------------------------------------------------------------- quantizable layers

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The linear layers' weight names in forward order (the hook's ``layer_index`` order).

        The last is the output projection (``"lm_head.weight"``; LLaDA's
        ``"model.transformer.ff_out.weight"``), also for a checkpoint with tied embeddings
        (where its weight is the embedding's).
        """
        return linear_layer_names(self.config.num_hidden_layers, self.config.layout)

    @property
    def layer_input_widths(self) -> tuple[int, ...]:
        """Each linear layer's input width (``in`` of its ``[out, in]`` weight)."""
        c = self.config
        attention_width = c.num_attention_heads * c.head_dim
        block = (c.hidden_size,) * 3 + (attention_width, c.hidden_size, c.hidden_size)
        return (*block, c.intermediate_size) * c.num_hidden_layers + (c.hidden_size,)

    def quantizable_weights(self) -> dict[str, Array]:
        """Each linear layer's weight ``[out, in]`` as stored, keyed by :attr:`layer_names`."""
        names = self.config.layout
        weights = {name: self.params[name] for name in self.layer_names[:-1]}
        tied = self.config.tie_word_embeddings
        weights[names.head] = self.params[names.embed if tied else names.head]
        return weights

    def num_parameters(self) -> int:
        """Every parameter of the network (the sizes of the model's leaves)."""
        return int(sum(np.prod(np.shape(a)) for a in jax.tree.leaves(self.params)))

    # ---------------------------------------------------------------- forward

    def forward(
        self,
        weights: Mapping[str, LayerWeight] | None,
        tokens: Array,
        *,
        attention_mask: Array | None = None,
        positions: Array | None = None,
        act_hook: LayerInputHook | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """The raw logits with some linear weights replaced, and every linear layer's input.

        Args:
            weights: layer name -> ``[out, in]`` weight to use instead of the model's, or a
                packed QTensor of one (dequantized where the layer uses it), for any subset of
                :attr:`layer_names`; ``None`` for none.
            tokens: int ``[B, L]`` token ids in ``[0, V)`` (an id outside gives NaN logits).
            attention_mask: optional; ``[B, L]`` (False/0 at padding keys, which no query then
                sees) or ``[B, L, L]`` (query x key). Without it every position sees every
                other. A query that sees no key at all averages all values, like transformers'
                additive ``finfo.min`` masks (finite, not NaN).
            positions: optional int ``[B, L]`` rotary positions (default ``0 .. L-1``; Dream's
                sampler gives left-padded rows ``cumsum(mask) - 1``).
            act_hook: optional transform of each linear layer's input.

        Returns:
            ``(logits, layer_inputs)``: float32 ``[B, L, V]`` raw network output (not shifted,
            see :func:`shift_logits`), and ``layer_inputs[j]`` the input of layer ``j`` before
            the hook (after the transform of an :attr:`online_hadamard` layer), float32
            ``[B, L, layer_input_widths[j]]``.

        Raises:
            ValueError: a weight name that is not a linear layer, or a shape mismatch.
        """
        weights = dict(weights or {})
        names = self.layer_names
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise ValueError(f"weights: {unknown[:3]} are not linear layers of the model")
        strange = sorted(set(self.online_hadamard) - set(names))
        if strange:
            raise ValueError(f"online_hadamard: {strange[:3]} are not linear layers of the model")
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens must be integer [B, L], got {tokens.dtype} {tokens.shape}")
        batch, length = tokens.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32)[None], (batch, length))
        else:
            positions = jnp.asarray(positions)
            if positions.shape != (batch, length) or not jnp.issubdtype(
                positions.dtype, jnp.integer
            ):
                raise ValueError(
                    f"positions must be integer {(batch, length)}, got {positions.dtype} "
                    f"{positions.shape}"
                )
        mask = _key_mask(attention_mask, batch, length)

        c, p = self.config, self.params
        layout = c.layout  # the tensors' names
        precision = _precision(self.matmul_precision)
        layer_inputs: list[Array] = []

        def linear(index: int, x: Array, bias: str | None = None) -> Array:
            name = names[index]
            if name in self.online_hadamard:
                x = walsh_hadamard(x)
            layer_inputs.append(x)
            if act_hook is not None:
                x = act_hook(index, x)
            weight = weights.get(name)
            if weight is None:
                weight = p[layout.embed if name == layout.head and c.tie_word_embeddings else name]
            # Packed or bf16 weights become float32 here, one layer at a time inside the
            # caller's jit (base.dense), so every matmul is float32 whatever the storage: a
            # bf16 checkpoint gives the numbers of its float32 upcast bit for bit, and the
            # dequantized (float32) weights are measured against a reference computed alike.
            # bf16 operands accumulating in float32 (preferred_element_type) are faster where
            # there are bf16 matmul units (4.7x on an AMX CPU, measured; tensor cores) but
            # round every activation to bf16 too: an error beside the quantization measured.
            # On accelerators matmul_precision="default" is the speed knob instead.
            y = jnp.einsum("bli,oi->blo", x, dense(weight, x), precision=precision)
            return y if bias is None else y + _trailing(_f32(p[bias]), 3)

        x = _embed(p[layout.embed], tokens)
        cos, sin = _rotary(positions, c)
        heads, kv_heads, head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        for i in range(c.num_hidden_layers):
            first = len(layout.linears) * i
            h = _rms_norm(x, p[layout.block_tensor(i, layout.attention_norm)], c.rms_norm_eps)
            biases = [
                layout.block_tensor(i, suffix, "bias") if c.attention_bias else None
                for suffix in layout.linears[:3]
            ]
            q, k, v = (linear(first + j, h, biases[j]) for j in range(3))
            q = _rotate(q.reshape(batch, length, heads, head_dim), cos, sin)
            k = _rotate(k.reshape(batch, length, kv_heads, head_dim), cos, sin)
            v = v.reshape(batch, length, kv_heads, head_dim)
            # Heads first ([B, kv, group, L, D] queries, [B, kv, L, D] keys and values), so both
            # contractions are batched matmuls over leading batch dims: on XLA:CPU about half
            # the time of the same einsums on the [B, L, heads, D] layout (measured: 10 -> 5 ms
            # a layer at B=2, L=256, 16/4 heads of 64, one core). Query head h reads key/value
            # head h // group (transformers' repeat_kv order); k and v are never repeated.
            q = q.reshape(batch, length, kv_heads, c.kv_group_size, head_dim)
            q = q.transpose(0, 2, 3, 1, 4)
            k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
            scores = jnp.einsum("bkgqd,bksd->bkgqs", q, k, precision=precision)
            scores = scores * (head_dim**-0.5)
            if mask is not None:
                scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
            probs = jax.nn.softmax(scores, axis=-1)
            attended = jnp.einsum("bkgqs,bksd->bkgqd", probs, v, precision=precision)
            attended = attended.transpose(0, 3, 1, 2, 4).reshape(batch, length, heads * head_dim)
            x = x + linear(first + 3, attended)
            h = _rms_norm(x, p[layout.block_tensor(i, layout.mlp_norm)], c.rms_norm_eps)
            gated = jax.nn.silu(linear(first + 4, h)) * linear(first + 5, h)
            x = x + linear(first + 6, gated)
        h = _rms_norm(x, p[layout.final_norm], c.rms_norm_eps)
        logits = linear(len(names) - 1, h)
        return logits, tuple(layer_inputs)

    def logits(
        self,
        tokens: Array,
        *,
        attention_mask: Array | None = None,
        positions: Array | None = None,
    ) -> Array:
        """The raw network output, float32 ``[B, L, V]``: position ``i``'s logits are the
        network's output at ``i`` (for Dream's predictions use :meth:`token_logits`).

        Example:
            >>> import jax
            >>> logits = jax.jit(lambda m, t: m.logits(t))  # the model is an argument
        """
        return self.forward(None, tokens, attention_mask=attention_mask, positions=positions)[0]

    def token_logits(
        self,
        tokens: Array,
        *,
        attention_mask: Array | None = None,
        positions: Array | None = None,
    ) -> Array:
        """The predicted distribution of each position's token, the checkpoint's way:
        ``shift_logits(self.logits(tokens), self.logit_shift)``, so for Dream ``[:, i]`` is
        the network's output at ``i - 1`` (``[:, 0]`` its own), for LLaDA at ``i``."""
        logits = self.logits(tokens, attention_mask=attention_mask, positions=positions)
        return shift_logits(logits, self.logit_shift)
