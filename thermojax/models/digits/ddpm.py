"""The default model: a small epsilon-prediction DDPM on scikit-learn's 8x8 handwritten digits.

The denoiser is a residual MLP (Flax linen) over the flattened 8x8 image with a sinusoidal
timestep embedding. Its six Dense layers are the quantizable layers; each one's input passes
through an optional activation hook, and each kernel can be replaced (by a dequantized one) at
call time, which is all calibration and quantized sampling need.

:class:`DigitsDDPM` is a pytree (a ``flax.struct`` dataclass) whose leaves are the denoiser's
parameters; its architecture, :class:`NoiseSchedule`, quality reference and metadata are static
fields, so jitted programs take the model as an argument.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from thermojax.core.quant import QTensor
from thermojax.core.rotation import HadamardRotation, randomized_hadamard, rotate
from thermojax.models.base import (
    ActHook,
    Array,
    LayerWeight,
    QualityReference,
    SamplerSpec,
    dense,
    run_sampler,
)

__all__ = [
    "Denoiser",
    "DenoiserConfig",
    "DigitsDDPM",
    "NoiseSchedule",
    "digits_to_model_space",
    "layer_rotation",
    "model_space_to_pixels",
    "timestep_embedding",
]

PIXEL_MAX = 16.0


def digits_to_model_space(pixels: np.ndarray) -> np.ndarray:
    """Pixels 0..16, ``[N, 8, 8]`` or ``[N, 64]`` -> model space [-1, 1], ``[N, 64]`` float32."""
    flat = np.asarray(pixels, np.float32).reshape(len(pixels), -1)
    return flat / (PIXEL_MAX / 2.0) - 1.0


def model_space_to_pixels(x: Array | np.ndarray) -> np.ndarray:
    """Model space ``[N, 64]`` -> pixels ``[N, 8, 8]`` clipped to 0..16, float32."""
    flat = np.asarray(x, np.float32)
    return np.clip((flat + 1.0) * (PIXEL_MAX / 2.0), 0.0, PIXEL_MAX).reshape(-1, 8, 8)


def timestep_embedding(t: Array, dim: int) -> Array:
    """Sinusoidal embedding of integer timesteps: ``t [...]`` -> ``[..., dim]``."""
    half = dim // 2
    freqs = jnp.exp(-jnp.log(10_000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    freqs = freqs.reshape((1,) * jnp.ndim(t) + (half,))
    angles = jnp.expand_dims(jnp.asarray(t, jnp.float32), -1) * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def layer_rotation(seed: int, index: int, width: int) -> HadamardRotation:
    """The randomized Hadamard rotation ``Q`` through which layer ``index`` of a denoiser with
    online rotations (``rotation_seed`` ``seed``) reads its ``width``-channel input: its signs
    from ``fold_in(key(seed), index)``. Traced inside the forward pass, so no array is static."""
    return randomized_hadamard(jax.random.fold_in(jax.random.key(seed), index), width)


@dataclasses.dataclass(frozen=True)
class DenoiserConfig:
    """Architecture of the residual-MLP denoiser (stored in the checkpoint's JSON)."""

    state_size: int = 64
    hidden: int = 256
    time_dim: int = 64
    num_blocks: int = 3

    def layer_names(self) -> tuple[str, ...]:
        """Quantizable layers in forward order."""
        blocks = tuple(f"block{b}" for b in range(self.num_blocks))
        return ("time_embed", "input", *blocks, "output")

    def layer_input_widths(self) -> tuple[int, ...]:
        """Input width of each quantizable layer (its weight quantization group axis)."""
        return (self.time_dim, self.state_size, *([self.hidden] * (self.num_blocks + 1)))


class Denoiser(nn.Module):
    """epsilon-prediction residual MLP.

    ``e = silu(time_embed(sin_emb(t)))``, ``h = input(x) + e``, then per block
    ``h = h + block(silu(h + e))``, and ``eps = output(silu(h))``. A layer named in
    ``online_rotation`` reads its input rotated, ``x Q`` (:func:`layer_rotation` with
    ``rotation_seed``), before it is recorded and hooked.
    """

    config: DenoiserConfig
    online_rotation: tuple[str, ...] = ()
    rotation_seed: int = 0

    @nn.compact
    def __call__(
        self, x: Array, t: Array, act_hook: ActHook | None = None
    ) -> tuple[Array, tuple[Array, ...]]:
        """Predict the noise in ``x [N, state_size]`` at timestep(s) ``t`` (scalar or ``[N]``).

        Returns ``(eps_hat, layer_inputs)`` with each quantizable layer's input before the hook.
        """
        cfg = self.config
        layer_inputs: list[Array] = []

        def dense(name: str, h: Array, width: int) -> Array:
            index = len(layer_inputs)
            if name in self.online_rotation:
                h = rotate(h, layer_rotation(self.rotation_seed, index, h.shape[-1]))
            layer_inputs.append(h)
            if act_hook is not None:
                h = act_hook(index, h, t)
            return nn.Dense(width, name=name)(h)

        emb = timestep_embedding(t, cfg.time_dim)
        emb = jnp.broadcast_to(emb, (x.shape[0], cfg.time_dim))
        e = nn.silu(dense("time_embed", emb, cfg.hidden))
        h = dense("input", x, cfg.hidden) + e
        for b in range(cfg.num_blocks):
            h = h + dense(f"block{b}", nn.silu(h + e), cfg.hidden)
        eps = dense("output", nn.silu(h), cfg.state_size)
        return eps, tuple(layer_inputs)


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """Linear-beta DDPM schedule (Ho et al. 2020) with its derived per-timestep coefficients.

    The schedule is defined by its three numbers, which are all that its equality and hash see:
    it is static metadata of a model pytree (never a leaf), and two schedules with the same
    numbers are interchangeable in a compiled program. The coefficient arrays are float32 ``[T]``,
    computed once (in float64, then rounded) on first use and read-only; ``alpha_bar_prev[0] == 1``.

    Example:
        >>> schedule = NoiseSchedule.linear(num_timesteps=10)
        >>> schedule == NoiseSchedule(10, 1e-4, 0.02), schedule.betas.dtype, schedule.betas.shape
        (True, dtype('float32'), (10,))
    """

    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    ARRAY_NAMES: ClassVar[tuple[str, ...]] = (
        "betas",
        "alphas",
        "alpha_bar",
        "alpha_bar_prev",
        "posterior_variance",
    )

    def __post_init__(self) -> None:
        if isinstance(self.num_timesteps, bool) or int(self.num_timesteps) != self.num_timesteps:
            raise ValueError(f"num_timesteps must be an integer, got {self.num_timesteps!r}")
        if self.num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {self.num_timesteps}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got beta_start={self.beta_start!r}, "
                f"beta_end={self.beta_end!r}"
            )
        # Canonical Python types, so that equal schedules hash alike whatever numbers built them.
        object.__setattr__(self, "num_timesteps", int(self.num_timesteps))
        object.__setattr__(self, "beta_start", float(self.beta_start))
        object.__setattr__(self, "beta_end", float(self.beta_end))

    @classmethod
    def linear(
        cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> NoiseSchedule:
        """The standard linear schedule (same as the constructor; kept for readability)."""
        return cls(num_timesteps, beta_start, beta_end)

    @functools.cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        betas = np.linspace(self.beta_start, self.beta_end, self.num_timesteps, dtype=np.float64)
        alphas = 1.0 - betas
        alpha_bar = np.cumprod(alphas)
        alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
        posterior_variance = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        values = (betas, alphas, alpha_bar, alpha_bar_prev, posterior_variance)
        arrays = {}
        for name, value in zip(self.ARRAY_NAMES, values, strict=True):
            arrays[name] = np.asarray(value, np.float32)
            arrays[name].setflags(write=False)
        return arrays

    def arrays(self) -> dict[str, np.ndarray]:
        """Every coefficient array by name (``ARRAY_NAMES`` order), float32 ``[T]``."""
        return dict(self._arrays)

    @property
    def betas(self) -> np.ndarray:
        """beta_t, float32 ``[T]``."""
        return self._arrays["betas"]

    @property
    def alphas(self) -> np.ndarray:
        """1 - beta_t, float32 ``[T]``."""
        return self._arrays["alphas"]

    @property
    def alpha_bar(self) -> np.ndarray:
        """prod_{s <= t} alpha_s, float32 ``[T]``."""
        return self._arrays["alpha_bar"]

    @property
    def alpha_bar_prev(self) -> np.ndarray:
        """alpha_bar_{t-1} with alpha_bar_{-1} = 1, float32 ``[T]``."""
        return self._arrays["alpha_bar_prev"]

    @property
    def posterior_variance(self) -> np.ndarray:
        """Variance of q(x_{t-1} | x_t, x_0), float32 ``[T]``."""
        return self._arrays["posterior_variance"]


@struct.dataclass(eq=False)
class DigitsDDPM:
    """The trained digits DDPM; implements :class:`thermojax.models.base.DiffusionModel`.

    A pytree whose leaves are exactly the denoiser's parameters (``params``): everything else
    is static (``pytree_node=False``), hashable and compared by content, so that a jitted program
    takes the model as an argument, one compilation serves every model of the same architecture,
    schedule and reference, and no parameter is baked into a program as a constant. Two loads of
    one checkpoint have equal tree structures. Build one with :meth:`create` (or
    :func:`thermojax.models.load_model`); ``model.replace(params=...)`` swaps the parameters.

    Invariant: ``sum(leaf.size for leaf in jax.tree.leaves(model)) == model.num_parameters()``.

    Attributes:
        params: Flax parameters of the denoiser, ``{layer: {"kernel": [in, out], "bias": [out]}}``
            (float32).
        config: denoiser architecture (static).
        schedule: noise schedule, T timesteps (static; equal by its defining numbers).
        reference: real digits + classifier for quality metrics, or ``None`` (static; equal by a
            fingerprint of the classifier's config and parameters).
        metadata_json: the checkpoint's JSON (training settings, measured quality) as canonical
            JSON text (static); :attr:`metadata` gives it as a dict.
        online_rotation: the layers whose input the denoiser rotates (``x Q``,
            :func:`layer_rotation`) before it is recorded and hooked; their kernels must hold
            ``Q^T K`` (:func:`thermojax.models.digits.rotation.rotate_digits`). Static; empty
            (the default) for the model as trained. Not saved in a checkpoint.
        rotation_seed: the seed of the online rotations' signs (static).
    """

    params: dict[str, dict[str, Array]]
    config: DenoiserConfig = struct.field(pytree_node=False)
    schedule: NoiseSchedule = struct.field(pytree_node=False)
    reference: QualityReference | None = struct.field(pytree_node=False, default=None)
    metadata_json: str = struct.field(pytree_node=False, default="{}")
    online_rotation: tuple[str, ...] = struct.field(pytree_node=False, default=())
    rotation_seed: int = struct.field(pytree_node=False, default=0)

    name: ClassVar[str] = "digits-ddpm"
    family: ClassVar[str] = "digits-ddpm"
    data_shape: ClassVar[tuple[int, ...]] = (8, 8)

    @classmethod
    def create(
        cls,
        config: DenoiserConfig,
        schedule: NoiseSchedule,
        params: Mapping[str, Mapping[str, Any]],
        *,
        reference: QualityReference | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> DigitsDDPM:
        """The model from its parts: ``params`` become float32 device arrays, ``metadata``
        canonical JSON text."""
        return cls(
            params=jax.tree.map(
                lambda a: jnp.asarray(a, jnp.float32), {k: dict(v) for k, v in params.items()}
            ),
            config=config,
            schedule=schedule,
            reference=reference,
            metadata_json=json.dumps(dict(metadata or {}), sort_keys=True, separators=(",", ":")),
        )

    def __repr__(self) -> str:
        return (
            f"DigitsDDPM(T={self.num_timesteps}, hidden={self.config.hidden}, "
            f"layers={self.layer_names})"
        )

    @property
    def metadata(self) -> dict[str, Any]:
        """The checkpoint's JSON minus the architecture, as a fresh dict."""
        return json.loads(self.metadata_json)

    @property
    def num_timesteps(self) -> int:
        """T."""
        return self.schedule.num_timesteps

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The quantizable Dense layers, in forward order."""
        return self.config.layer_names()

    @property
    def layer_input_widths(self) -> tuple[int, ...]:
        """Input width of each quantizable layer."""
        return self.config.layer_input_widths()

    @property
    def state_size(self) -> int:
        """Size of the flattened 8x8 state."""
        return self.config.state_size

    def quantizable_weights(self) -> dict[str, Array]:
        """Kernel ``[in, out]`` of each quantizable Dense layer."""
        return {name: self.params[name]["kernel"] for name in self.layer_names}

    def num_parameters(self) -> int:
        """Total number of denoiser parameters (kernels and biases): the model's leaf sizes."""
        return int(sum(np.prod(np.shape(a)) for a in jax.tree.leaves(self.params)))

    def _params_with(self, weights: Mapping[str, LayerWeight], x_t: Array) -> dict[str, Any]:
        """The Dense layers' parameters with ``weights`` as kernels, a packed one dequantized
        here, inside the caller's jitted step (tied to the step's input ``x_t``)."""

        def kernel(name: str, layer: Mapping[str, Array]) -> Array:
            weight = weights.get(name, layer["kernel"])
            if not isinstance(weight, QTensor):
                return weight
            # A QTensor holds the kernel's transpose. The kernel is materialized [in, out], as
            # the dequantize-first path passed it: XLA:CPU folding the transpose into the
            # matmul reads the operand in another order and rounds differently (1e-6 after
            # 1000 steps, measured), and the samples are equal to those bit for bit.
            return jax.lax.optimization_barrier(dense(weight, x_t).T)

        return {
            name: {**layer, "kernel": kernel(name, layer)} for name, layer in self.params.items()
        }

    def denoise(
        self,
        weights: Mapping[str, LayerWeight],
        x_t: Array,
        t: Array,
        *,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """Predicted noise and the quantizable layers' inputs (see the protocol)."""
        module = Denoiser(
            self.config, online_rotation=self.online_rotation, rotation_seed=self.rotation_seed
        )
        return module.apply({"params": self._params_with(weights, x_t)}, x_t, t, act_hook)

    def initial_state(self, key: Array, num_samples: int) -> Array:
        """x_{T-1} ~ N(0, I)."""
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
        """One ancestral step: the posterior q(x_{t-1} | x_t, x0_hat) with x0_hat clipped to [-1, 1]."""
        s = self.schedule
        beta, alpha = jnp.asarray(s.betas)[t], jnp.asarray(s.alphas)[t]
        a_bar, a_bar_prev = jnp.asarray(s.alpha_bar)[t], jnp.asarray(s.alpha_bar_prev)[t]
        eps, layer_inputs = self.denoise(weights, x_t, t, act_hook=act_hook)
        x0_hat = jnp.clip((x_t - jnp.sqrt(1.0 - a_bar) * eps) / jnp.sqrt(a_bar), -1.0, 1.0)
        coef_x0 = beta * jnp.sqrt(a_bar_prev) / (1.0 - a_bar)
        coef_xt = (1.0 - a_bar_prev) * jnp.sqrt(alpha) / (1.0 - a_bar)
        noise = jax.random.normal(key, x_t.shape, jnp.float32)
        std = jnp.sqrt(jnp.asarray(s.posterior_variance)[t])
        return coef_x0 * x0_hat + coef_xt * x_t + std * noise, layer_inputs

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
        """One DDIM step from timestep ``t`` to ``t_prev`` (``-1``: the clean sample).

        ``x_prev = sqrt(a_prev) x0_hat + sqrt(1 - a_prev - sigma^2) eps' + sigma z`` with
        ``sigma^2 = eta^2 (1 - a_prev) / (1 - a_t) (1 - a_t / a_prev)`` (Song et al. 2021, eq. 12
        and 16), ``x0_hat`` clipped to [-1, 1] as in :meth:`step`, and ``eps'`` the noise implied
        by the clipped ``x0_hat`` (diffusers' ``use_clipped_model_output=True``). With
        ``t_prev = t - 1`` and ``eta = 1`` this is exactly the ancestral posterior of
        :meth:`step`.
        """
        alpha_bar = jnp.asarray(self.schedule.alpha_bar)
        a_t = alpha_bar[t]
        a_prev = jnp.where(t_prev >= 0, alpha_bar[jnp.maximum(t_prev, 0)], 1.0)
        eps, layer_inputs = self.denoise(weights, x_t, t, act_hook=act_hook)
        x0_hat = jnp.clip((x_t - jnp.sqrt(1.0 - a_t) * eps) / jnp.sqrt(a_t), -1.0, 1.0)
        eps_clipped = (x_t - jnp.sqrt(a_t) * x0_hat) / jnp.sqrt(1.0 - a_t)
        variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)
        sigma = eta * jnp.sqrt(jnp.maximum(variance, 0.0))
        direction = jnp.sqrt(jnp.maximum(1.0 - a_prev - sigma**2, 0.0)) * eps_clipped
        x_prev = jnp.sqrt(a_prev) * x0_hat + direction
        if eta > 0:
            x_prev = x_prev + sigma * jax.random.normal(key, x_t.shape, jnp.float32)
        return x_prev, layer_inputs

    def sample(
        self,
        weights: Mapping[str, LayerWeight] | None = None,
        *,
        key: Array,
        num_samples: int,
        act_hook: ActHook | None = None,
        sampler: SamplerSpec | None = None,
    ) -> tuple[Array, Array]:
        """Sampling as one ``lax.scan`` (ancestral by default, DDIM with
        ``sampler=SamplerSpec("ddim", steps=S)``); jit it at the call site, with the model as
        an argument."""
        weights = self.quantizable_weights() if weights is None else weights
        x0, trajectory, _ = run_sampler(
            self, weights, key=key, num_samples=num_samples, act_hook=act_hook, sampler=sampler
        )
        return x0, trajectory

    def to_pixels(self, x: Array | np.ndarray) -> np.ndarray:
        """Model space -> ``[N, 8, 8]`` pixels in 0..16."""
        return model_space_to_pixels(x)
