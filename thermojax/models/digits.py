"""The default model: a small epsilon-prediction DDPM on scikit-learn's 8x8 handwritten digits.

The denoiser is a residual MLP (Flax linen) over the flattened 8x8 image with a sinusoidal
timestep embedding. Its six Dense layers are the quantizable layers; each one's input passes
through an optional activation hook, and each kernel can be replaced (by a dequantized one) at
call time, which is all calibration and quantized sampling need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from thermojax.models.base import ActHook, Array, QualityReference, run_sampler

__all__ = [
    "Denoiser",
    "DenoiserConfig",
    "DigitsDDPM",
    "NoiseSchedule",
    "digits_to_model_space",
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
    ``h = h + block(silu(h + e))``, and ``eps = output(silu(h))``.
    """

    config: DenoiserConfig

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

    Attributes are float32 arrays ``[T]``; ``alpha_bar_prev[0] == 1``.
    """

    betas: np.ndarray
    alphas: np.ndarray
    alpha_bar: np.ndarray
    alpha_bar_prev: np.ndarray
    posterior_variance: np.ndarray

    @classmethod
    def linear(
        cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> NoiseSchedule:
        """The standard linear schedule, computed in float64 then stored as float32."""
        betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
        alphas = 1.0 - betas
        alpha_bar = np.cumprod(alphas)
        alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
        posterior_variance = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        f32 = lambda a: np.asarray(a, np.float32)
        return cls(
            f32(betas), f32(alphas), f32(alpha_bar), f32(alpha_bar_prev), f32(posterior_variance)
        )

    @property
    def num_timesteps(self) -> int:
        """T."""
        return int(self.betas.shape[0])


class DigitsDDPM:
    """The trained digits DDPM; implements :class:`thermojax.models.base.DiffusionModel`.

    Args:
        config: denoiser architecture.
        schedule: noise schedule (T timesteps).
        params: Flax parameters of the denoiser (``{layer: {"kernel", "bias"}}``).
        reference: real digits + classifier for quality metrics, or ``None``.
        metadata: the checkpoint's JSON (training settings, measured quality), for reports.
    """

    name = "digits-ddpm"
    data_shape = (8, 8)

    def __init__(
        self,
        config: DenoiserConfig,
        schedule: NoiseSchedule,
        params: Mapping[str, Mapping[str, Any]],
        reference: QualityReference | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.schedule = schedule
        self.params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), dict(params))
        self.reference = reference
        self.metadata = dict(metadata or {})
        self.num_timesteps = schedule.num_timesteps
        self.layer_names = config.layer_names()
        self.layer_input_widths = config.layer_input_widths()
        self.state_size = config.state_size
        self._module = Denoiser(config)

    def __repr__(self) -> str:
        return (
            f"DigitsDDPM(T={self.num_timesteps}, hidden={self.config.hidden}, "
            f"layers={self.layer_names})"
        )

    def quantizable_weights(self) -> dict[str, Array]:
        """Kernel ``[in, out]`` of each quantizable Dense layer."""
        return {name: self.params[name]["kernel"] for name in self.layer_names}

    def num_parameters(self) -> int:
        """Total number of denoiser parameters (kernels and biases)."""
        return int(sum(np.prod(a.shape) for a in jax.tree.leaves(self.params)))

    def _params_with(self, weights: Mapping[str, Array]) -> dict[str, Any]:
        return {
            name: {**layer, "kernel": weights.get(name, layer["kernel"])}
            for name, layer in self.params.items()
        }

    def denoise(
        self,
        weights: Mapping[str, Array],
        x_t: Array,
        t: Array,
        *,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """Predicted noise and the quantizable layers' inputs (see the protocol)."""
        return self._module.apply({"params": self._params_with(weights)}, x_t, t, act_hook)

    def initial_state(self, key: Array, num_samples: int) -> Array:
        """x_{T-1} ~ N(0, I)."""
        return jax.random.normal(key, (num_samples, self.state_size), jnp.float32)

    def step(
        self,
        weights: Mapping[str, Array],
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

    def sample(
        self,
        weights: Mapping[str, Array] | None = None,
        *,
        key: Array,
        num_samples: int,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, Array]:
        """Full ancestral sampling (one ``lax.scan``); jit it at the call site."""
        weights = self.quantizable_weights() if weights is None else weights
        x0, trajectory, _ = run_sampler(
            self, weights, key=key, num_samples=num_samples, act_hook=act_hook
        )
        return x0, trajectory

    def to_pixels(self, x: Array | np.ndarray) -> np.ndarray:
        """Model space -> ``[N, 8, 8]`` pixels in 0..16."""
        return model_space_to_pixels(x)
