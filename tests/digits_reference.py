"""Independent float64 numpy reference of the digits denoiser and sampler step (test helper)."""

from __future__ import annotations

import numpy as np


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def embedding(t: int, dim: int) -> np.ndarray:
    half = dim // 2
    freqs = np.exp(-np.log(10_000.0) * np.arange(half, dtype=np.float64) / half)
    angles = float(t) * freqs
    return np.concatenate([np.sin(angles), np.cos(angles)])


def denoiser(model, kernels: dict, x: np.ndarray, t: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """eps_hat and the input of each quantizable layer, in float64, from first principles."""
    cfg = model.config
    p = {
        name: {
            "kernel": np.asarray(kernels.get(name, layer["kernel"]), np.float64),
            "bias": np.asarray(layer["bias"], np.float64),
        }
        for name, layer in model.params.items()
    }
    inputs: list[np.ndarray] = []

    def dense(name: str, h: np.ndarray) -> np.ndarray:
        inputs.append(h)
        return h @ p[name]["kernel"] + p[name]["bias"]

    x = np.asarray(x, np.float64)
    emb = np.tile(embedding(t, cfg.time_dim), (x.shape[0], 1))
    e = silu(dense("time_embed", emb))
    h = dense("input", x) + e
    for b in range(cfg.num_blocks):
        h = h + dense(f"block{b}", silu(h + e))
    return dense("output", silu(h)), inputs


def ddpm_schedule(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
    betas = np.linspace(beta_start, beta_end, num_timesteps)
    alpha_bar = np.cumprod(1.0 - betas)
    return betas, alpha_bar


def ancestral_step(model, kernels, x, t, noise):
    """x_{t-1} from the DDPM posterior with x0_hat clipped to [-1, 1] (Ho et al. 2020, eq. 6-7)."""
    betas, alpha_bar = ddpm_schedule(model.num_timesteps)
    a_bar = alpha_bar[t]
    a_bar_prev = alpha_bar[t - 1] if t > 0 else 1.0
    eps, _ = denoiser(model, kernels, x, t)
    x0 = np.clip((x - np.sqrt(1 - a_bar) * eps) / np.sqrt(a_bar), -1, 1)
    mean = (np.sqrt(a_bar_prev) * betas[t] / (1 - a_bar)) * x0 + (
        np.sqrt(1 - betas[t]) * (1 - a_bar_prev) / (1 - a_bar)
    ) * x
    var = betas[t] * (1 - a_bar_prev) / (1 - a_bar)
    return mean + np.sqrt(var) * np.asarray(noise, np.float64)
