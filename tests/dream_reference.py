"""Independent float64 numpy reference of the masked-diffusion LM's network (test helper):
the Qwen2 / LLaDA block from first principles (module doc of ``thermojax.models.dream.network``),
no attention mask, positions ``0 .. L-1``, with the online Hadamard transform of
``DreamLM.online_hadamard`` as an explicit block-diagonal Sylvester matrix."""

from __future__ import annotations

import numpy as np
from scipy.linalg import hadamard


def block_hadamard(width: int) -> np.ndarray:
    """``blockdiag(H_b, ...) / sqrt(b)``, ``b`` the largest power of two dividing ``width``."""
    block = width & -width
    return np.kron(np.eye(width // block), hadamard(block) / np.sqrt(block))


def _rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def logits(lm, tokens: np.ndarray) -> np.ndarray:
    """The raw logits ``[B, L, V]`` of ``lm`` (a ``DreamLM``) on ``tokens``, in float64."""
    c, layout = lm.config, lm.config.layout
    p = {name: np.asarray(value, np.float64) for name, value in lm.params.items()}
    tokens = np.asarray(tokens)
    batch, length = tokens.shape
    heads, kv_heads, head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
    half = head_dim // 2
    inv_freq = 1.0 / c.rope_theta ** (np.arange(0, head_dim, 2) / head_dim)
    angles = np.arange(length)[:, None] * inv_freq[None]
    cos = np.concatenate([np.cos(angles)] * 2, axis=-1)[None, :, None]
    sin = np.concatenate([np.sin(angles)] * 2, axis=-1)[None, :, None]

    def rope(z: np.ndarray) -> np.ndarray:
        return z * cos + np.concatenate([-z[..., half:], z[..., :half]], axis=-1) * sin

    def linear(name: str, h: np.ndarray, bias: str | None = None) -> np.ndarray:
        if name in lm.online_hadamard:
            h = h @ block_hadamard(h.shape[-1])
        y = h @ p[name].T
        return y if bias is None else y + p[bias]

    x = p[layout.embed][tokens]
    for i in range(c.num_hidden_layers):
        q_name, k_name, v_name, o_name, gate, up, down = (
            layout.block_tensor(i, s) for s in layout.linears
        )
        biases = [
            layout.block_tensor(i, s, "bias") if c.attention_bias else None
            for s in layout.linears[:3]
        ]
        h = _rms_norm(x, p[layout.block_tensor(i, layout.attention_norm)], c.rms_norm_eps)
        q = rope(linear(q_name, h, biases[0]).reshape(batch, length, heads, head_dim))
        k = rope(linear(k_name, h, biases[1]).reshape(batch, length, kv_heads, head_dim))
        v = linear(v_name, h, biases[2]).reshape(batch, length, kv_heads, head_dim)
        k = np.repeat(k, heads // kv_heads, axis=2)  # query head j reads kv head j // group
        v = np.repeat(v, heads // kv_heads, axis=2)
        scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(head_dim)
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        attended = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, length, -1)
        x = x + linear(o_name, attended)
        h = _rms_norm(x, p[layout.block_tensor(i, layout.mlp_norm)], c.rms_norm_eps)
        gated = linear(gate, h)
        gated = gated / (1.0 + np.exp(-gated)) * linear(up, h)
        x = x + linear(down, gated)
    h = _rms_norm(x, p[layout.final_norm], c.rms_norm_eps)
    head = p[layout.embed] if c.tie_word_embeddings else p[layout.head]
    return h @ head.T
