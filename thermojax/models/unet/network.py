"""The forward pass of a diffusers ``UNet2DModel`` in pure JAX.

``params`` is a flat dict keyed by diffusers' tensor names
(:meth:`~thermojax.models.unet.config.UNet2DConfig.tensor_shapes`), each array in diffusers'
layout: convolution kernels stay ``[out, in, kh, kw]`` as stored (``lax.conv_general_dilated``
reads them so, ``"OIHW"``), linear weights ``[out, in]``. Nothing is transposed at load, so a
quantizer sees the tensors exactly as the checkpoint holds them. Activations are NHWC inside
(channels last: group norms and attention reduce over the last axis); :func:`apply` takes and
returns NCHW like diffusers.

What it computes, as diffusers 0.42 does in eval mode (dropout off):

- time: sinusoidal embedding of the timesteps (``Timesteps``: ``exp(-ln(10000) k / (half -
  freq_shift))``, sin then cos, swapped when ``flip_sin_to_cos``) -> ``linear_1`` -> SiLU ->
  ``linear_2``;
- ``conv_in``; down blocks of ``ResnetBlock2D`` (GroupNorm, SiLU, conv, + projected SiLU(time),
  GroupNorm, SiLU, conv, 1x1 shortcut when the width changes) each followed by self-attention in
  ``AttnDownBlock2D``, then a stride-2 conv (``downsample_padding`` on each side; 0 pads right
  and bottom by one as diffusers does); every output kept as a skip connection;
- the middle block: resnet, attention (unless ``add_attention`` is false), resnet, with
  ``mid_block_scale_factor`` dividing each residual sum;
- up blocks: each resnet reads the previous output concatenated with the last unused skip,
  then 2x nearest-neighbour upsampling and a conv;
- GroupNorm, SiLU, ``conv_out``.

Attention (diffusers' ``Attention`` with a group norm, as the UNet2D blocks build it): GroupNorm
over channels, ``to_q`` / ``to_k`` / ``to_v`` per pixel, ``softmax(q k^T / sqrt(head_dim)) v``
per head over all pixels, ``to_out.0``, plus the block's input, divided by the rescale factor.

Example:
    >>> import jax, numpy as np
    >>> from thermojax.models.unet.config import UNet2DConfig
    >>> config = UNet2DConfig.from_dict({"block_out_channels": [8, 16], "norm_num_groups": 4,
    ...     "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "layers_per_block": 1,
    ...     "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "attention_head_dim": 8})
    >>> params = {k: np.zeros(s, np.float32) for k, s in config.tensor_shapes().items()}
    >>> out = jax.jit(apply, static_argnames="config")(params, config, np.ones((2, 3, 8, 8)), 10)
    >>> out.shape, out.dtype
    ((2, 3, 8, 8), dtype('float32'))
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from jax import lax

from thermojax.models.unet.config import UNet2DConfig

__all__ = ["LayerCall", "Params", "apply", "timestep_embedding"]

Params = Mapping[str, jax.Array]
LayerCall = Callable[[str, jax.Array], tuple[jax.Array, jax.Array]]
"""``layer(name, layer_input) -> (layer_input', weight)`` (:func:`apply`'s ``layer``)."""
_MAX_PERIOD = 10_000.0


def timestep_embedding(
    timesteps: jax.Array, dim: int, *, flip_sin_to_cos: bool, freq_shift: float
) -> jax.Array:
    """diffusers' ``get_timestep_embedding``: ``[N]`` timesteps -> ``[N, dim]`` float32."""
    half = dim // 2
    exponent = -math.log(_MAX_PERIOD) * jnp.arange(half, dtype=jnp.float32)
    frequencies = jnp.exp(exponent / (half - freq_shift))
    angles = timesteps.astype(jnp.float32)[:, None] * frequencies[None, :]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def _last_axis(params: Params, name: str, ndim: int) -> jax.Array:
    """A per-channel vector shaped to broadcast over channels-last activations of ``ndim``."""
    return params[name].astype(jnp.float32).reshape((1,) * (ndim - 1) + (-1,))


@dataclasses.dataclass(frozen=True)
class _Net:
    """What every layer reads: the tensors, the matmul precision, and the optional
    :data:`LayerCall` that sees each linear / conv layer's input and gives its weight."""

    params: Params
    precision: lax.Precision | str | None
    layer: LayerCall | None

    def weighted(self, name: str, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(input, weight)`` of the layer ``name`` (``{name}.weight`` unless :attr:`layer`)."""
        if self.layer is None:
            return x, self.params[f"{name}.weight"]
        return self.layer(name, x)


def _linear(net: _Net, name: str, x: jax.Array) -> jax.Array:
    x, weight = net.weighted(name, x)
    weight = weight.astype(jnp.float32)
    return jnp.matmul(x, weight.T, precision=net.precision) + _last_axis(
        net.params, f"{name}.bias", x.ndim
    )


def _conv(
    net: _Net,
    name: str,
    x: jax.Array,
    *,
    stride: int = 1,
    padding: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> jax.Array:
    """A conv with a stored ``[out, in, kh, kw]`` kernel on NHWC activations; 'same' padding
    (``k // 2`` each side) unless ``padding`` is given."""
    x, kernel = net.weighted(name, x)
    kernel = kernel.astype(jnp.float32)
    if padding is None:
        pad = kernel.shape[2] // 2
        padding = ((pad, pad), (pad, pad))
    y = lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=padding,
        dimension_numbers=("NHWC", "OIHW", "NHWC"),
        precision=net.precision,
    )
    return y + _last_axis(net.params, f"{name}.bias", 4)


def _group_norm(params: Params, name: str, x: jax.Array, groups: int, eps: float) -> jax.Array:
    """torch ``GroupNorm`` on channels-last ``x`` (``[..., C]``, statistics over every axis but
    the batch within each group of ``C / groups`` channels, biased variance)."""
    shape = x.shape
    grouped = x.reshape(shape[0], -1, groups, shape[-1] // groups)
    mean = grouped.mean(axis=(1, 3), keepdims=True)
    variance = jnp.square(grouped - mean).mean(axis=(1, 3), keepdims=True)
    normed = ((grouped - mean) * lax.rsqrt(variance + eps)).reshape(shape)
    return normed * _last_axis(params, f"{name}.weight", x.ndim) + _last_axis(
        params, f"{name}.bias", x.ndim
    )


def _resnet(
    net: _Net,
    name: str,
    x: jax.Array,
    temb: jax.Array,
    config: UNet2DConfig,
    *,
    output_scale: float = 1.0,
) -> jax.Array:
    groups, eps, params = config.norm_num_groups, config.norm_eps, net.params
    h = jax.nn.silu(_group_norm(params, f"{name}.norm1", x, groups, eps))
    h = _conv(net, f"{name}.conv1", h)
    h = h + _linear(net, f"{name}.time_emb_proj", jax.nn.silu(temb))[:, None, None]
    h = jax.nn.silu(_group_norm(params, f"{name}.norm2", h, groups, eps))
    h = _conv(net, f"{name}.conv2", h)
    if f"{name}.conv_shortcut.weight" in params:
        x = _conv(net, f"{name}.conv_shortcut", x)
    return (x + h) / output_scale


def _attention(
    net: _Net,
    name: str,
    x: jax.Array,
    config: UNet2DConfig,
    *,
    groups: int,
    output_scale: float = 1.0,
) -> jax.Array:
    batch, height, width, channels = x.shape
    heads = config.attention_heads(channels)
    h = _group_norm(net.params, f"{name}.group_norm", x, groups, config.norm_eps)
    h = h.reshape(batch, height * width, channels)

    def project(part: str) -> jax.Array:
        y = _linear(net, f"{name}.{part}", h)
        return y.reshape(batch, height * width, heads, -1)

    q, k, v = project("to_q"), project("to_k"), project("to_v")
    scale = math.sqrt(q.shape[-1])
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=net.precision) / scale
    weights = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=net.precision)
    out = _linear(net, f"{name}.to_out.0", out.reshape(batch, height * width, -1))
    return (out.reshape(x.shape) + x) / output_scale


def _downsample(net: _Net, name: str, x: jax.Array, padding: int) -> jax.Array:
    pads = ((padding, padding), (padding, padding)) if padding else ((0, 1), (0, 1))
    return _conv(net, name, x, stride=2, padding=pads)


def _upsample(net: _Net, name: str, x: jax.Array) -> jax.Array:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return _conv(net, name, x)


def apply(
    params: Params,
    config: UNet2DConfig,
    sample: jax.Array,
    timesteps: jax.Array | float,
    *,
    precision: lax.Precision | str | None = None,
    layer: LayerCall | None = None,
) -> jax.Array:
    """The ``UNet2DModel`` output for ``sample`` at ``timesteps``.

    Args:
        params: the network's tensors by diffusers' names (a pytree: jit takes them as
            arguments, nothing is baked in); any float dtype, computed in float32.
        config: the architecture (static under ``jit``: ``static_argnames="config"``).
        sample: ``[N, in_channels, H, W]``, H and W divisible by ``2 ** (blocks - 1)``.
        timesteps: a scalar or ``[N]`` (float or integer), broadcast over the batch.
        precision: matmul / conv precision (``"highest"`` for float32 parity on GPUs, whose
            default rounds inputs to TF32); static.
        layer: ``None``, or called with each linear and conv layer's name (diffusers' prefix,
            ``down_blocks.0.resnets.0.conv1``) and input (channels last), in the order the
            layers run; it returns the input and the weight (diffusers' layout) the layer uses.
            The quantized model (:mod:`thermojax.models.unet.diffusion`) observes, hooks and
            swaps layers through it; ``None`` computes exactly as before.

    Returns:
        ``[N, out_channels, H, W]`` float32.
    """
    sample = jnp.asarray(sample, jnp.float32)
    if sample.ndim != 4 or sample.shape[1] != config.in_channels:
        raise ValueError(
            f"sample must be [N, {config.in_channels}, H, W], got shape {sample.shape}"
        )
    factor = 2 ** (len(config.block_out_channels) - 1)
    if sample.shape[2] % factor or sample.shape[3] % factor:
        raise ValueError(
            f"sample height and width must be divisible by {factor}, got {sample.shape[2:]}"
        )
    timesteps = jnp.asarray(timesteps)
    if timesteps.ndim > 1 or (
        timesteps.ndim == 1 and timesteps.shape[0] not in (1, sample.shape[0])
    ):
        raise ValueError(
            f"timesteps must be a scalar or [{sample.shape[0]}], got shape {timesteps.shape}"
        )
    timesteps = jnp.broadcast_to(timesteps.reshape(-1), (sample.shape[0],))

    net = _Net(params, precision, layer)
    if config.center_input_sample:
        sample = 2.0 * sample - 1.0
    emb = timestep_embedding(
        timesteps,
        config.block_out_channels[0],
        flip_sin_to_cos=config.flip_sin_to_cos,
        freq_shift=config.freq_shift,
    )
    emb = _linear(net, "time_embedding.linear_1", emb)
    temb = _linear(net, "time_embedding.linear_2", jax.nn.silu(emb))

    x = _conv(net, "conv_in", jnp.transpose(sample, (0, 2, 3, 1)))
    skips = [x]
    for i, (_, _, attn, down) in enumerate(config.down_blocks()):
        for j in range(config.layers_per_block):
            x = _resnet(net, f"down_blocks.{i}.resnets.{j}", x, temb, config)
            if attn:
                x = _attention(
                    net,
                    f"down_blocks.{i}.attentions.{j}",
                    x,
                    config,
                    groups=config.attention_groups(mid=False),
                )
            skips.append(x)
        if down:
            name = f"down_blocks.{i}.downsamplers.0.conv"
            x = _downsample(net, name, x, config.downsample_padding)
            skips.append(x)

    if config.mid_block_type is not None:
        scale = config.mid_block_scale_factor
        x = _resnet(net, "mid_block.resnets.0", x, temb, config, output_scale=scale)
        if config.add_attention:
            x = _attention(
                net,
                "mid_block.attentions.0",
                x,
                config,
                groups=config.attention_groups(mid=True),
                output_scale=scale,
            )
        x = _resnet(net, "mid_block.resnets.1", x, temb, config, output_scale=scale)

    for i, (resnets, attn, up) in enumerate(config.up_blocks()):
        for j in range(len(resnets)):
            x = jnp.concatenate([x, skips.pop()], axis=-1)
            x = _resnet(net, f"up_blocks.{i}.resnets.{j}", x, temb, config)
            if attn:
                x = _attention(
                    net,
                    f"up_blocks.{i}.attentions.{j}",
                    x,
                    config,
                    groups=config.attention_groups(mid=False),
                )
        if up:
            x = _upsample(net, f"up_blocks.{i}.upsamplers.0.conv", x)

    x = jax.nn.silu(
        _group_norm(params, "conv_norm_out", x, config.norm_num_groups, config.norm_eps)
    )
    x = _conv(net, "conv_out", x)
    return jnp.transpose(x, (0, 3, 1, 2))
