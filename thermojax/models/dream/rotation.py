"""A rotated masked-diffusion LM: the same function, activations that quantize better (QuaRot).

Three weight transforms of a :class:`DreamLM` (Qwen2/Dream and LLaDA layouts), each of which
leaves the logits unchanged in real arithmetic, composed by :func:`rotate_lm`:

1. :func:`fold_norms`: each RMSNorm's scale ``s`` moves into the linear layers that read its
   output (``W <- W diag(s)``: q, k, v after the attention norm; gate, up after the MLP norm;
   the head after the final norm) and the scales become 1.
2. :func:`rotate_residual`: with unit norm scales, ``rms_norm(x Q) = rms_norm(x) Q`` for an
   orthogonal ``Q`` (``||x Q|| = ||x||``, and the epsilon is added to the same mean square), so
   the whole residual stream can carry ``x Q`` instead of ``x``: the embedding's rows become
   ``E Q``, every layer reading the stream ``W Q`` (q, k, v, gate, up, head), every layer
   writing it ``Q^T W`` (attention output, MLP down, and their biases if any). Only the input
   side of q/k/v changes, so the heads and their rotary embedding are untouched.
3. :func:`hadamard_down_projections`: the MLP's down projection reads ``g = silu(gate) * up``,
   which is not on the stream. A randomized Hadamard ``Q_d = diag(d) H`` splits in two: the
   signs ``d`` fold into up's rows (``up <- diag(d) up`` gives ``g diag(d)``), and the network
   multiplies down's input by ``H`` online (:attr:`DreamLM.online_hadamard`, a block-diagonal
   Walsh-Hadamard transform, :func:`~thermojax.core.rotation.walsh_hadamard`, ``O(n log n)``)
   before the activation hook; down's weight becomes ``W Q_d``. The signs keep a mean of
   ``g`` from gathering in the Hadamard's all-ones row.

``Q`` is a randomized Hadamard rotation (:func:`~thermojax.core.rotation.randomized_hadamard`)
from an explicit PRNG key. Every tensor keeps its name, shape and stored dtype (the transforms
compute in float32; a bf16 model's rotated weights are rounded back to bf16). A checkpoint with
tied embeddings gets its own head tensor: the final norm's scale folded into the head makes it
differ from the embedding.

What it buys on the shipped byte-level LM (weights fp32, activations fake-quantized to 4 bits
by each tensor's own min-max range, 64 held-out windows): the held-out bound's perplexity goes
from 1.45x fp32 to 1.09x (per-token ranges: 1.14x to 1.02x); the down projections' inputs go
from kurtosis 60-420 to 2-7. The attention output projection's input is not rotated (it is
per head; rotating within each head's values, foldable into v and o, bought nothing there).

Example:
    >>> import tempfile, pathlib, jax, jax.numpy as jnp
    >>> from thermojax.models.dream import load_dream
    >>> from thermojax.models.hf import write_dream_like
    >>> folder = write_dream_like(pathlib.Path(tempfile.mkdtemp()) / "m", scale=112, layers=1,
    ...                           dtype="F32")
    >>> lm = load_dream(folder)
    >>> rotated = rotate_lm(lm, key=jax.random.key(0))
    >>> tokens = jnp.arange(8, dtype=jnp.int32).reshape(1, 8)
    >>> before, after = lm.logits(tokens), rotated.logits(tokens)
    >>> bool(jnp.max(jnp.abs(after - before)) <= 1e-4 * jnp.max(jnp.abs(before)))
    True
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from thermojax.core.rotation import (
    HadamardRotation,
    randomized_hadamard,
    rotate,
    rotate_input_side,
    rotate_output_side,
)
from thermojax.models.dream.network import DreamLM

__all__ = ["fold_norms", "hadamard_down_projections", "rotate_lm", "rotate_residual"]

Array = jax.Array


def _like(new: Array, old: Array) -> Array:
    """``new`` in ``old``'s storage dtype."""
    return jnp.asarray(new).astype(jnp.asarray(old).dtype)


def _check_complete(lm: DreamLM) -> None:
    missing = [name for name in lm.config.tensor_shapes() if name not in lm.params]
    if missing:
        raise ValueError(
            f"rotating needs every tensor in memory; {missing[0]} is missing (a model loaded "
            "with linear=False: complete it with with_linears first)"
        )


def _readers(lm: DreamLM) -> list[tuple[str, list[str]]]:
    """Each RMSNorm's weight name and the linear layers that read its output."""
    c, layout = lm.config, lm.config.layout
    q, k, v, _, gate, up, _ = layout.linears
    pairs = []
    for i in range(c.num_hidden_layers):
        attention = [layout.block_tensor(i, s) for s in (q, k, v)]
        mlp = [layout.block_tensor(i, s) for s in (gate, up)]
        pairs.append((layout.block_tensor(i, layout.attention_norm), attention))
        pairs.append((layout.block_tensor(i, layout.mlp_norm), mlp))
    pairs.append((layout.final_norm, [layout.head]))
    return pairs


def _untied(lm: DreamLM) -> DreamLM:
    """``lm`` with its own head tensor (a copy of the embedding) if the two were tied."""
    if not lm.config.tie_word_embeddings:
        return lm
    layout = lm.config.layout
    config = dataclasses.replace(lm.config, tie_word_embeddings=False)
    params = {**lm.params, layout.head: lm.params[layout.embed]}
    return lm.replace(params={name: params[name] for name in config.tensor_shapes()}, config=config)


def fold_norms(lm: DreamLM) -> DreamLM:
    """``lm`` with every RMSNorm's scale folded into the linear layers reading its output.

    ``rms_norm(x) * s @ W^T = rms_norm(x) @ (W diag(s))^T``: each reader's weight becomes
    ``W * s`` (its input axis scaled), the norm's scale becomes 1. A tied head is untied first
    (module doc).

    Raises:
        ValueError: a model without its linear layers in memory.
    """
    _check_complete(lm)
    lm = _untied(lm)
    params = dict(lm.params)
    for norm, readers in _readers(lm):
        scale = params[norm].astype(jnp.float32)
        for name in readers:
            weight = params[name].astype(jnp.float32)
            params[name] = _like(weight * scale.reshape(1, -1), params[name])
        params[norm] = jnp.ones_like(params[norm])
    return lm.replace(params=params)


def rotate_residual(lm: DreamLM, rotation: HadamardRotation) -> DreamLM:
    """``lm`` with its residual stream rotated by ``Q`` (module doc, step 2).

    Args:
        lm: a model whose RMSNorm scales are all 1 (:func:`fold_norms`).
        rotation: ``Q``, of width ``hidden_size``.

    Raises:
        ValueError: a norm scale that is not 1 (naming it), a rotation of another width, or a
            model without its linear layers in memory.
    """
    _check_complete(lm)
    c, layout = lm.config, lm.config.layout
    if rotation.width != c.hidden_size:
        raise ValueError(
            f"the rotation has width {rotation.width}, the residual stream {c.hidden_size}"
        )
    for norm, _ in _readers(lm):
        if not bool(jnp.all(lm.params[norm] == 1)):
            raise ValueError(
                f"{norm} is not 1: an RMSNorm scale does not commute with the rotation "
                "(fold_norms first)"
            )
    q, k, v, out, gate, up, down = layout.linears
    params = dict(lm.params)

    def update(name: str, new: Array) -> None:
        params[name] = _like(new, params[name])

    update(layout.embed, rotate(params[layout.embed], rotation))
    for i in range(c.num_hidden_layers):
        for suffix in (q, k, v, gate, up):
            name = layout.block_tensor(i, suffix)
            update(name, rotate_input_side(params[name], rotation))
        for suffix in (out, down):
            name = layout.block_tensor(i, suffix)
            update(name, rotate_output_side(params[name], rotation))
            bias = layout.block_tensor(i, suffix, "bias")
            if bias in params:
                update(bias, rotate(params[bias], rotation))
    if not c.tie_word_embeddings:  # a tied head reads the rotated embedding: E Q is W Q
        update(layout.head, rotate_input_side(params[layout.head], rotation))
    return lm.replace(params=params)


def hadamard_down_projections(lm: DreamLM, *, key: Array) -> DreamLM:
    """``lm`` with an online Hadamard transform before every MLP down projection (module doc,
    step 3): block ``i``'s rotation ``Q_d = diag(d) H`` has its signs from ``fold_in(key, i)``;
    up's weight (and bias) becomes ``diag(d) W_up``, down's ``W_down Q_d``, and down's name
    joins :attr:`DreamLM.online_hadamard`, so down reads ``(g diag(d)) H = g Q_d`` and computes
    ``(g Q_d)(W_down Q_d)^T = g W_down^T``.

    Raises:
        ValueError: a down projection that already has the transform, or a model without its
            linear layers in memory.
    """
    _check_complete(lm)
    c, layout = lm.config, lm.config.layout
    up, down = layout.linears[5], layout.linears[6]
    downs = tuple(layout.block_tensor(i, down) for i in range(c.num_hidden_layers))
    again = sorted(set(downs) & set(lm.online_hadamard))
    if again:
        raise ValueError(f"{again[0]} already has an online Hadamard transform")
    params = dict(lm.params)
    for i in range(c.num_hidden_layers):
        rotation = randomized_hadamard(jax.random.fold_in(key, i), c.intermediate_size)
        for kind in ("weight", "bias"):  # diag(d) W_up: up's output channel j times d_j
            name = layout.block_tensor(i, up, kind)
            if name in params:
                tensor = params[name]
                signs = rotation.signs.reshape((-1,) + (1,) * (tensor.ndim - 1))
                params[name] = _like(tensor.astype(jnp.float32) * signs, tensor)
        name = layout.block_tensor(i, down)
        params[name] = _like(rotate_input_side(params[name], rotation), params[name])
    return lm.replace(params=params, online_hadamard=(*lm.online_hadamard, *downs))


def rotate_lm(
    lm: DreamLM, *, key: Array, online_down: bool = True, block_size: int | None = None
) -> DreamLM:
    """The rotated model (QuaRot-style): :func:`fold_norms`, then :func:`rotate_residual` by a
    randomized Hadamard ``Q`` drawn from ``key``, then (``online_down``)
    :func:`hadamard_down_projections` (``key`` split between the two). Same class, same
    tensor names and shapes (a tied head untied); its float32 logits equal ``lm``'s within
    float32 rounding (2e-5 of the largest logit, tested; the original's own float32 error
    against float64 is as large). The new tensors are built beside ``lm``'s: twice the
    model's memory until the caller drops ``lm``.

    Args:
        lm: the model (every tensor in memory).
        key: the PRNG key of ``Q``'s signs (the same key, the same model).
        online_down: also transform the down projections' inputs online.
        block_size: ``Q``'s Hadamard block size; default the largest power of two dividing
            ``hidden_size`` (:func:`~thermojax.core.rotation.hadamard_block_size`).

    Raises:
        ValueError: a model without its linear layers in memory, a bad ``block_size``.
    """
    residual_key, down_key = jax.random.split(key)
    rotation = randomized_hadamard(residual_key, lm.config.hidden_size, block_size=block_size)
    rotated = rotate_residual(fold_norms(lm), rotation)
    return hadamard_down_projections(rotated, key=down_key) if online_down else rotated
