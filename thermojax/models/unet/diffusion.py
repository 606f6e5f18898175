"""A diffusers ``UNet2DModel`` folder as a :class:`~thermojax.models.base.DiffusionModel`.

:class:`UNetDiffusion` is a pytree whose leaves are the UNet's tensors (diffusers' names and
layout); its architecture and schedule (:class:`UNetDiffusionConfig`), quality reference and
metadata are static. Its state is the image flattened, ``[N, C * H * W]`` (as the digits DDPM's
``[N, 64]``); ``data_shape`` is ``(H, W)`` for one channel, else ``(C, H, W)``.

Quantizable layers: every convolution but ``conv_in`` (each resnet's ``conv1`` / ``conv2`` /
``conv_shortcut``, the down- and upsampling convs, ``conv_out``) and every linear layer (the
time embedding's two, each resnet's ``time_emb_proj``, attention's ``to_q`` / ``to_k`` /
``to_v`` / ``to_out.0``), named by diffusers' prefix, in the order they run. ``conv_in`` reads
the image's few channels: its width ``in_channels * 9`` (9 for one channel, 27 for RGB) shares
no group size with the rest (``block_out_channels[0]`` wide and multiples of it), so with it no
group size but 1 would divide every layer; it stays float32, as post-training quantization of
diffusion models usually keeps the first layer (Q-Diffusion, PTQ4DM). A linear weight is
offered as ``[in, out]`` (its transpose); a conv kernel ``[out, in, kh, kw]`` in its im2col view
``[in * kh * kw, out]`` (``kernel.reshape(out, -1).T``), so the pipeline's quantizer
(:func:`~thermojax.pipeline.weights.quantize.quantize_weights`, which quantizes the transpose)
groups it per output channel along ``in * kh * kw``, and ``layer_input_widths`` is that width. A
weight given back (array or packed :class:`~thermojax.core.quant.QTensor`) is dequantized and
reshaped to ``[out, in, kh, kw]`` inside the jitted step (:func:`~thermojax.models.base.dense`).

Each layer's input passes through the activation hook: a linear layer's ``[..., in]``, a conv's
input feature map channels last, ``[N, H, W, C]`` (so a per-token quantizer works per pixel). The
recorded ``layer_inputs`` are a linear layer's input and a conv's im2col patches ``[N, H' W',
in * kh * kw]`` (the rows its im2col matmul reads: GPTQ's Hessians take them as they take a
linear layer's; XLA drops them where nothing reads them).

Samplers: diffusers' ``DDPMScheduler.step`` (ancestral, ``fixed_small`` or ``fixed_large``
variance, ``epsilon`` / ``v_prediction`` / ``sample``, ``clip_sample``) and ``DDIMScheduler.step``
(any ``eta``; ``t_prev = -1`` goes to ``alphas_cumprod[0]`` unless ``set_alpha_to_one``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from thermojax.core.quant import QTensor
from thermojax.models.base import (
    ActHook,
    Array,
    LayerWeight,
    QualityReference,
    SamplerSpec,
    dense,
    run_sampler,
)
from thermojax.models.hf.headers import CheckpointError, load_json
from thermojax.models.unet.config import UNet2DConfig
from thermojax.models.unet.loading import SCHEDULER_FILE, load_unet
from thermojax.models.unet.network import apply
from thermojax.models.unet.scheduler import SchedulerConfig, alphas_cumprod, ddim_step

__all__ = [
    "THERMOJAX_FILE",
    "UNetDiffusion",
    "UNetDiffusionConfig",
    "UNetLayer",
    "is_unet_folder",
    "load_unet_diffusion",
    "unet_layers",
]

THERMOJAX_FILE = "thermojax.json"
"""thermojax's record beside a diffusers folder it trained (``"reference": "digits"``: its
samples are graded by the digits DDPM's classifier; training settings; measured quality)."""
VARIANCE_TYPES = ("fixed_small", "fixed_large")
KEPT_LAYERS = ("conv_in",)
"""Layers that stay float32 and are not quantizable (module doc)."""
PIXEL_MAX = 16.0
"""Pixel units of :meth:`UNetDiffusion.to_pixels`: model space [-1, 1] -> 0..16, the digits'
range, which the reports' image grids and the digits classifier read."""


@dataclasses.dataclass(frozen=True)
class UNetDiffusionConfig:
    """The architecture and the noise schedule (static; hashed into the stage cache's key)."""

    unet: UNet2DConfig
    scheduler: SchedulerConfig
    variance_type: str = "fixed_small"

    def __post_init__(self) -> None:
        if self.variance_type not in VARIANCE_TYPES:
            raise ValueError(
                f"variance_type {self.variance_type!r} is not supported (only "
                f"{', '.join(VARIANCE_TYPES)})"
            )

    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one sample."""
        size = self.unet.sample_size
        if size is None:
            raise ValueError("config.json has no sample_size: the image size is unknown")
        height, width = (size, size) if isinstance(size, int) else size
        return (self.unet.in_channels, int(height), int(width))


@dataclasses.dataclass(frozen=True)
class UNetLayer:
    """One quantizable layer: its diffusers prefix, kind, weight shape, conv stride / padding."""

    name: str
    kind: str  # "conv" | "linear"
    shape: tuple[int, ...]
    stride: int = 1
    padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))

    @property
    def width(self) -> int:
        """The input width its weight is grouped along: ``in`` or ``in * kh * kw``."""
        return int(np.prod(self.shape[1:]))


def _conv_geometry(
    config: UNet2DConfig, name: str, shape: tuple[int, ...]
) -> tuple[int, tuple[tuple[int, int], tuple[int, int]]]:
    """The stride and padding :func:`~thermojax.models.unet.network.apply` runs conv ``name``
    with (a downsampler: stride 2, ``downsample_padding`` or diffusers' (0, 1); else 'same')."""
    if name.endswith("downsamplers.0.conv"):
        pad = config.downsample_padding
        return 2, ((pad, pad), (pad, pad)) if pad else ((0, 1), (0, 1))
    half = shape[2] // 2
    return 1, ((half, half), (half, half))


@functools.lru_cache(maxsize=32)
def unet_layers(config: UNet2DConfig, image_shape: tuple[int, int, int]) -> tuple[UNetLayer, ...]:
    """The quantizable linear and conv layers of ``config`` (all but :data:`KEPT_LAYERS`) in the
    order :func:`apply` runs them (traced once with abstract values: nothing is computed)."""
    shapes = config.tensor_shapes()
    seen: list[str] = []

    def record(name: str, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        seen.append(name)
        return x, jnp.zeros(shapes[f"{name}.weight"], jnp.float32)

    params = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}
    sample = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    jax.eval_shape(lambda p, x: apply(p, config, x, jnp.zeros((1,)), layer=record), params, sample)
    layers = []
    for name in seen:
        if name in KEPT_LAYERS:
            continue
        shape = tuple(shapes[f"{name}.weight"])
        if len(shape) == 4:
            stride, padding = _conv_geometry(config, name, shape)
            layers.append(UNetLayer(name, "conv", shape, stride, padding))
        else:
            layers.append(UNetLayer(name, "linear", shape))
    return tuple(layers)


@functools.lru_cache(maxsize=32)
def _alphas_cumprod(scheduler: SchedulerConfig) -> np.ndarray:
    """float32 ``[T]``, read-only (computed in float64, as diffusers' float32 to rounding)."""
    values = np.asarray(alphas_cumprod(scheduler), np.float32)
    values.setflags(write=False)
    return values


def _patches(layer: UNetLayer, x: Array) -> Array:
    """A conv's im2col rows ``[N, H' W', in * kh * kw]`` from its NHWC input, features in the
    kernel's ``reshape(out, -1)`` order (input channel major, then kernel row, column)."""
    patches = jax.lax.conv_general_dilated_patches(
        x,
        filter_shape=layer.shape[2:],
        window_strides=(layer.stride, layer.stride),
        padding=layer.padding,
        dimension_numbers=("NHWC", "OIHW", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return patches.reshape(x.shape[0], -1, patches.shape[-1])


@struct.dataclass(eq=False)
class UNetDiffusion:
    """A diffusers ``UNet2DModel`` with its DDPM / DDIM schedule (module doc); implements
    :class:`~thermojax.models.base.DiffusionModel` and ``SkippingModel``.

    Invariant: ``sum(leaf.size for leaf in jax.tree.leaves(model)) == model.num_parameters()``.

    Attributes:
        params: every tensor by diffusers' name, diffusers' layout, float32.
        config: the architecture and the schedule (static).
        reference: real data + classifier for quality metrics, or ``None`` (static).
        name: the model's display name (static; the folder's name).
        metadata_json: ``thermojax.json`` as canonical JSON text (static), ``{}`` without one.
    """

    params: dict[str, Array]
    config: UNetDiffusionConfig = struct.field(pytree_node=False)
    reference: QualityReference | None = struct.field(pytree_node=False, default=None)
    name: str = struct.field(pytree_node=False, default="diffusers-unet")
    metadata_json: str = struct.field(pytree_node=False, default="{}")

    family: ClassVar[str] = "diffusers-unet"

    def __repr__(self) -> str:
        return f"UNetDiffusion({self.name}, T={self.num_timesteps}, {len(self.layer_names)} layers)"

    @property
    def metadata(self) -> dict[str, Any]:
        """``thermojax.json`` as a fresh dict."""
        return json.loads(self.metadata_json)

    @property
    def num_timesteps(self) -> int:
        """T, the scheduler's ``num_train_timesteps``."""
        return self.config.scheduler.num_train_timesteps

    @property
    def layers(self) -> tuple[UNetLayer, ...]:
        """The quantizable layers in forward order."""
        return unet_layers(self.config.unet, self.config.image_shape())

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def layer_input_widths(self) -> tuple[int, ...]:
        """``in`` of a linear layer, ``in * kh * kw`` of a conv (its im2col width)."""
        return tuple(layer.width for layer in self.layers)

    @property
    def data_shape(self) -> tuple[int, ...]:
        channels, height, width = self.config.image_shape()
        return (height, width) if channels == 1 else (channels, height, width)

    @property
    def state_size(self) -> int:
        return int(np.prod(self.config.image_shape()))

    def quantizable_weights(self) -> dict[str, Array]:
        """Each layer's weight ``[in, out]``: a conv kernel as ``kernel.reshape(out, -1).T``."""
        return {
            layer.name: self.params[f"{layer.name}.weight"].reshape(layer.shape[0], -1).T
            for layer in self.layers
        }

    def num_parameters(self) -> int:
        return int(sum(np.prod(np.shape(a)) for a in jax.tree.leaves(self.params)))

    def denoise(
        self,
        weights: Mapping[str, LayerWeight],
        x_t: Array,
        t: Array,
        *,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """The network's output (noise, v or sample, as the scheduler's ``prediction_type``)
        ``[N, state_size]`` and each layer's recorded input (module doc)."""
        layers = {layer.name: (i, layer) for i, layer in enumerate(self.layers)}
        recorded: list[Array | None] = [None] * len(layers)

        def visit(name: str, h: Array) -> tuple[Array, Array]:
            if name not in layers:  # KEPT_LAYERS
                return h, self.params[f"{name}.weight"]
            index, layer = layers[name]
            recorded[index] = _patches(layer, h) if layer.kind == "conv" else h
            if act_hook is not None:
                h = act_hook(index, h, t)
            given = weights.get(name)
            if given is None:
                return h, self.params[f"{name}.weight"]
            matrix = dense(given, h)  # [out, in*kh*kw] from a QTensor, else [in*kh*kw, out]
            if not isinstance(given, QTensor):
                matrix = matrix.T
            # Materialized in the layer's own layout, as the digits DDPM does: a transpose
            # folded into the conv would read the operand in another order.
            return h, jax.lax.optimization_barrier(matrix.reshape(layer.shape))

        image = x_t.reshape(x_t.shape[0], *self.config.image_shape())
        out = apply(self.params, self.config.unet, image, t, layer=visit)
        return out.reshape(x_t.shape[0], -1), tuple(recorded)

    def _clean_and_noise(self, output: Array, x_t: Array, a_t: Array) -> tuple[Array, Array]:
        """``(x0_hat, eps_hat)`` from the network's output, x0 not yet clipped (diffusers)."""
        kind = self.config.scheduler.prediction_type
        root_a, root_b = jnp.sqrt(a_t), jnp.sqrt(1.0 - a_t)
        if kind == "epsilon":
            return (x_t - root_b * output) / root_a, output
        if kind == "sample":
            return output, (x_t - root_a * output) / root_b
        return root_a * x_t - root_b * output, root_a * output + root_b * x_t  # v_prediction

    def _clip(self, x0: Array) -> Array:
        scheduler = self.config.scheduler
        if not scheduler.clip_sample:
            return x0
        return jnp.clip(x0, -scheduler.clip_sample_range, scheduler.clip_sample_range)

    def initial_state(self, key: Array, num_samples: int) -> Array:
        """x_{T-1} ~ N(0, I), ``[num_samples, state_size]``."""
        return jax.random.normal(key, (num_samples, self.state_size), jnp.float32)

    def step(
        self,
        weights: Mapping[str, LayerWeight],
        x_t: Array,
        t: Array,
        key: Array,
        *,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """``DDPMScheduler.step`` from ``t`` to ``t - 1``: the posterior mean of the clipped
        x0 prediction plus ``fixed_small`` (posterior) or ``fixed_large`` (beta) noise, none at
        ``t = 0``."""
        cumprod = jnp.asarray(_alphas_cumprod(self.config.scheduler))
        a_t = cumprod[t]
        a_prev = jnp.where(t > 0, cumprod[jnp.maximum(t - 1, 0)], 1.0)
        current_alpha = a_t / a_prev
        current_beta = 1.0 - current_alpha
        output, layer_inputs = self.denoise(weights, x_t, t, act_hook=act_hook)
        x0, _ = self._clean_and_noise(output, x_t, a_t)
        x0 = self._clip(x0)
        coef_x0 = jnp.sqrt(a_prev) * current_beta / (1.0 - a_t)
        coef_xt = jnp.sqrt(current_alpha) * (1.0 - a_prev) / (1.0 - a_t)
        mean = coef_x0 * x0 + coef_xt * x_t
        if self.config.variance_type == "fixed_small":
            variance = jnp.maximum((1.0 - a_prev) / (1.0 - a_t) * current_beta, 1e-20)
        else:
            variance = current_beta
        std = jnp.where(t > 0, jnp.sqrt(variance), 0.0)
        return mean + std * jax.random.normal(key, x_t.shape, jnp.float32), layer_inputs

    def step_between(
        self,
        weights: Mapping[str, LayerWeight],
        x_t: Array,
        t: Array,
        t_prev: Array,
        key: Array,
        *,
        eta: float,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """``DDIMScheduler.step`` from ``t`` to ``t_prev`` (below 0: ``alphas_cumprod[0]``, or 1
        with ``set_alpha_to_one``): the clipped x0, the noise from the unclipped prediction
        (``use_clipped_model_output`` off), ``sigma = eta sqrt((1 - a_prev) / (1 - a_t) (1 -
        a_t / a_prev))``; with ``eta = 0`` it is :func:`~thermojax.models.unet.scheduler.ddim_step`."""
        scheduler = self.config.scheduler
        cumprod = jnp.asarray(_alphas_cumprod(self.config.scheduler))
        final = 1.0 if scheduler.set_alpha_to_one else cumprod[0]
        a_t = cumprod[t]
        a_prev = jnp.where(t_prev >= 0, cumprod[jnp.maximum(t_prev, 0)], final)
        output, layer_inputs = self.denoise(weights, x_t, t, act_hook=act_hook)
        clip = scheduler.clip_sample_range if scheduler.clip_sample else None
        if eta == 0:
            x_prev = ddim_step(
                output, x_t, a_t, a_prev, prediction_type=scheduler.prediction_type, clip_range=clip
            )
            return x_prev, layer_inputs
        x0, eps = self._clean_and_noise(output, x_t, a_t)
        x0 = self._clip(x0)
        variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
        sigma = eta * jnp.sqrt(jnp.maximum(variance, 0.0))
        direction = jnp.sqrt(jnp.maximum(1.0 - a_prev - sigma**2, 0.0)) * eps
        noise = jax.random.normal(key, x_t.shape, jnp.float32)
        return jnp.sqrt(a_prev) * x0 + direction + sigma * noise, layer_inputs

    def sample(
        self,
        weights: Mapping[str, LayerWeight] | None = None,
        *,
        key: Array,
        num_samples: int,
        act_hook: ActHook | None = None,
        sampler: SamplerSpec | None = None,
    ) -> tuple[Array, Array]:
        """The whole sampler as one ``lax.scan`` (ancestral by default)."""
        weights = self.quantizable_weights() if weights is None else weights
        x0, trajectory, _ = run_sampler(
            self, weights, key=key, num_samples=num_samples, act_hook=act_hook, sampler=sampler
        )
        return x0, trajectory

    def to_pixels(self, x: Array | np.ndarray) -> np.ndarray:
        """Model space ``[N, state_size]`` -> ``[N, *data_shape]`` in 0..16 (:data:`PIXEL_MAX`)."""
        flat = np.asarray(x, np.float32)
        pixels = (flat + 1.0) * np.float32(PIXEL_MAX / 2.0)
        return np.clip(pixels, 0.0, PIXEL_MAX).reshape(len(flat), *self.data_shape)


def is_unet_folder(path: str | os.PathLike[str] | None) -> bool:
    """A diffusers ``UNet2DModel`` folder (``config.json`` with that ``_class_name``) or a
    pipeline folder with ``unet/config.json`` (looks at ``config.json`` only)."""
    if path is None:
        return False
    folder = Path(path).expanduser()
    for candidate in (folder / "config.json", folder / "unet" / "config.json"):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text("utf-8"))
            except (OSError, ValueError):
                return False
            return isinstance(data, dict) and data.get("_class_name") == "UNet2DModel"
    return False


def _reference(folder: Path, metadata: Mapping[str, Any], data_shape: tuple[int, ...]):
    wanted = metadata.get("reference")
    if wanted is None:
        return None
    if wanted != "digits":
        raise CheckpointError(THERMOJAX_FILE, f"reference {wanted!r} is unknown (only 'digits')")
    if tuple(data_shape) != (8, 8):
        raise CheckpointError(
            THERMOJAX_FILE, f"reference 'digits' grades 8x8 images, not {list(data_shape)}"
        )
    from thermojax.models.digits.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint

    return load_checkpoint(SHIPPED_CHECKPOINT).reference


def load_unet_diffusion(path: str | os.PathLike[str]) -> UNetDiffusion:
    """A diffusers model or pipeline folder as a :class:`UNetDiffusion` (float32).

    The schedule is the folder's ``scheduler/scheduler_config.json`` (a pipeline folder's, or
    one beside a model folder's ``config.json``). ``thermojax.json`` (in the folder given) may
    name a quality reference.

    Raises:
        CheckpointError: no scheduler, an unsupported option, a bad tensor (one line naming it).
    """
    root = Path(path).expanduser()
    unet = load_unet(root)
    if unet.scheduler is None:
        raise CheckpointError(
            "scheduler/scheduler_config.json",
            f"not found in {root}: a model folder alone has no noise schedule",
        )
    # SchedulerConfig reads the DDIM update's keys; the DDPM step's variance is read here.
    scheduler_folder = (
        root / "scheduler" if (root / "scheduler" / SCHEDULER_FILE).is_file() else root
    )
    raw, _ = load_json(scheduler_folder, SCHEDULER_FILE)
    try:
        config = UNetDiffusionConfig(
            unet.config, unet.scheduler, str(raw.get("variance_type") or "fixed_small")
        )
        config.image_shape()
    except ValueError as err:
        raise CheckpointError(f"scheduler/{SCHEDULER_FILE}", str(err)) from err
    metadata: dict[str, Any] = {}
    if (root / THERMOJAX_FILE).is_file():
        metadata, _ = load_json(root, THERMOJAX_FILE)
        if not isinstance(metadata, dict):
            raise CheckpointError(THERMOJAX_FILE, "not a JSON object")
    channels, height, width = config.image_shape()
    shape = (height, width) if channels == 1 else (channels, height, width)
    return UNetDiffusion(
        params={k: jnp.asarray(v, jnp.float32) for k, v in unet.params.items()},
        config=config,
        reference=_reference(root, metadata, shape),
        name=root.resolve().name,
        metadata_json=json.dumps(metadata, sort_keys=True, separators=(",", ":")),
    )
