"""diffusers' DDPM / DDIM noise schedules: ``scheduler_config.json`` parsed, the betas and
``alphas_cumprod``, the DDIM inference timesteps, and one deterministic DDIM step in JAX.

:class:`SchedulerConfig` reads a ``DDPMScheduler`` or ``DDIMScheduler`` config (a DDPM model's
scheduler is routinely sampled with DDIM: diffusers' ``DDIMScheduler.from_config``), with
diffusers' defaults for missing keys and a ``ValueError`` naming any key whose value this module
does not implement (``trained_betas``, ``thresholding``, ``rescale_betas_zero_snr``, learned
variances, other schedules, spacings or prediction types).

:func:`betas` / :func:`alphas_cumprod` are float64 numpy. diffusers computes them in float32
torch (``torch.linspace``, ``torch.cumprod``); the two agree to float32 rounding (the tests
compare them at ``rtol=1e-5``). :func:`inference_timesteps` is diffusers' ``set_timesteps``
(``linspace``, ``leading`` plus ``steps_offset``, ``trailing``), exactly.

:func:`ddim_alphas` gives, per inference step, ``alpha_prod_t`` and ``alpha_prod_t_prev`` as
``DDIMScheduler.step`` picks them: the previous timestep is always ``t - T // steps`` (whatever
the spacing), and below 0 it is ``final_alpha_cumprod`` (1 with ``set_alpha_to_one``, else
``alphas_cumprod[0]``). :func:`ddim_step` is the update with ``eta = 0``.

Example:
    >>> config = SchedulerConfig.from_dict({"_class_name": "DDPMScheduler",
    ...     "beta_schedule": "linear", "num_train_timesteps": 1000})
    >>> inference_timesteps(config, 5).tolist()
    [800, 600, 400, 200, 0]
    >>> round(float(alphas_cumprod(config)[-1]), 8)
    4.036e-05
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thermojax.models.unet.config import read_json

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "TIMESTEP_SPACINGS",
    "SchedulerConfig",
    "alphas_cumprod",
    "betas",
    "ddim_alphas",
    "ddim_step",
    "inference_timesteps",
]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
_CLASSES = ("DDPMScheduler", "DDIMScheduler")
_VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")
_MAX_BETA = 0.999  # diffusers' betas_for_alpha_bar cap


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """A DDPM / DDIM schedule (diffusers' defaults; see the module docstring).

    Attributes:
        class_name: ``"DDPMScheduler"`` or ``"DDIMScheduler"`` (the file's ``_class_name``).
        clip_sample_range: predicted clean samples are clipped to ``[-r, r]`` when
            ``clip_sample``.
        set_alpha_to_one: DDIM's last step goes to ``alpha = 1`` (else ``alphas_cumprod[0]``).
        steps_offset: added to ``leading`` timesteps.
    """

    class_name: str = "DDIMScheduler"
    num_train_timesteps: int = 1000
    beta_start: float = 0.0001
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    timestep_spacing: str = "leading"
    set_alpha_to_one: bool = True
    steps_offset: int = 0

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> SchedulerConfig:
        """Parse a ``scheduler_config.json`` object, refusing what is not implemented."""
        if not isinstance(config, Mapping):
            raise ValueError(f"a scheduler config must be a JSON object, got {config!r}")  # noqa: TRY004 (a bad value -> UserInputError)
        name = config.get("_class_name", "DDIMScheduler")
        if name not in _CLASSES:
            raise ValueError(
                f"_class_name is not supported (only {', '.join(_CLASSES)}), got {name!r}"
            )
        for key, default in (
            ("trained_betas", None),
            ("thresholding", False),
            ("rescale_betas_zero_snr", False),
        ):
            value = config.get(key, default)
            if value != default:
                raise ValueError(
                    f"{key} is not supported (only {json.dumps(default)}), got {value!r}"
                )
        variance = config.get("variance_type", "fixed_small")
        if variance not in _VARIANCE_TYPES:
            raise ValueError(
                f"variance_type is not supported (only {', '.join(_VARIANCE_TYPES)}), got {variance!r}"
            )
        base = cls()

        def get(key: str) -> Any:
            return config.get(key, getattr(base, key))

        def choice(key: str, allowed: tuple[str, ...]) -> str:
            value = get(key)
            if value not in allowed:
                raise ValueError(
                    f"{key} is not supported (only {', '.join(allowed)}), got {value!r}"
                )
            return value

        def number(key: str) -> float:
            value = get(key)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{key} must be a positive number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{key} must be finite, got {value!r}")
            return float(value)

        def flag(key: str) -> bool:
            value = get(key)
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")  # noqa: TRY004 (a bad value -> UserInputError)
            return value

        steps = get("num_train_timesteps")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ValueError(f"num_train_timesteps must be an integer >= 2, got {steps!r}")
        offset = get("steps_offset")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"steps_offset must be a non-negative integer, got {offset!r}")
        parsed = cls(
            class_name=name,
            num_train_timesteps=steps,
            beta_start=number("beta_start"),
            beta_end=number("beta_end"),
            beta_schedule=choice("beta_schedule", BETA_SCHEDULES),
            prediction_type=choice("prediction_type", PREDICTION_TYPES),
            clip_sample=flag("clip_sample"),
            clip_sample_range=number("clip_sample_range"),
            timestep_spacing=choice("timestep_spacing", TIMESTEP_SPACINGS),
            set_alpha_to_one=flag("set_alpha_to_one"),
            steps_offset=offset,
        )
        if parsed.beta_schedule != "squaredcos_cap_v2" and not parsed.beta_end < 1:
            raise ValueError(f"beta_end must be below 1, got {parsed.beta_end!r}")
        return parsed

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> SchedulerConfig:
        """Parse a ``scheduler_config.json`` file (errors as :func:`read_json`)."""
        return cls.from_dict(read_json(path))


def betas(config: SchedulerConfig) -> np.ndarray:
    """``[T]`` float64 betas of ``config.beta_schedule``."""
    steps = config.num_train_timesteps
    if config.beta_schedule == "linear":
        return np.linspace(config.beta_start, config.beta_end, steps, dtype=np.float64)
    if config.beta_schedule == "scaled_linear":
        root = np.linspace(config.beta_start**0.5, config.beta_end**0.5, steps, dtype=np.float64)
        return root**2
    # squaredcos_cap_v2 (GLIDE's cosine): 1 - alpha_bar(t + 1/T) / alpha_bar(t), capped
    t = np.arange(steps + 1, dtype=np.float64) / steps
    alpha_bar = np.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], _MAX_BETA)


def alphas_cumprod(config: SchedulerConfig) -> np.ndarray:
    """``[T]`` float64 ``prod_{s <= t} (1 - beta_s)``."""
    return np.cumprod(1.0 - betas(config))


def inference_timesteps(config: SchedulerConfig, num_steps: int) -> np.ndarray:
    """The ``[num_steps]`` int64 timesteps diffusers' ``set_timesteps(num_steps)`` gives,
    descending."""
    train = config.num_train_timesteps
    if isinstance(num_steps, bool) or not isinstance(num_steps, int | np.integer):
        raise ValueError(f"num_steps must be an integer, got {num_steps!r}")  # noqa: TRY004 (a bad value -> UserInputError)
    if not 1 <= num_steps <= train:
        raise ValueError(
            f"num_steps must be in [1, {train}] (num_train_timesteps), got {num_steps}"
        )
    if config.timestep_spacing == "linspace":
        return np.linspace(0, train - 1, num_steps).round()[::-1].astype(np.int64)
    if config.timestep_spacing == "leading":
        ratio = train // num_steps
        timesteps = (np.arange(num_steps) * ratio).round()[::-1].astype(np.int64)
        return timesteps + config.steps_offset
    ratio = train / num_steps  # trailing
    return np.round(np.arange(train, 0, -ratio)).astype(np.int64) - 1


def ddim_alphas(
    config: SchedulerConfig, num_steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(timesteps, alpha_prod_t, alpha_prod_t_prev)`` of each DDIM step, as
    ``DDIMScheduler.step`` looks them up (float64)."""
    timesteps = inference_timesteps(config, num_steps)
    cumprod = alphas_cumprod(config)
    if timesteps.max() >= config.num_train_timesteps:
        raise ValueError(
            f"steps_offset={config.steps_offset} puts timestep {int(timesteps.max())} beyond "
            f"num_train_timesteps={config.num_train_timesteps}"
        )
    final = 1.0 if config.set_alpha_to_one else cumprod[0]
    previous = timesteps - config.num_train_timesteps // num_steps
    alpha_prev = np.where(previous >= 0, cumprod[np.maximum(previous, 0)], final)
    return timesteps, cumprod[timesteps], alpha_prev


def ddim_step(
    model_output: jax.Array,
    sample: jax.Array,
    alpha_prod_t: jax.Array | float,
    alpha_prod_t_prev: jax.Array | float,
    *,
    prediction_type: str,
    clip_range: float | None,
) -> jax.Array:
    """One DDIM update with ``eta = 0``: ``x_{t_prev}`` from ``x_t`` and the model's output.

    ``x0 = (x - sqrt(1 - a) eps) / sqrt(a)`` (``epsilon``), the output itself (``sample``) or
    ``sqrt(a) x - sqrt(1 - a) v`` (``v_prediction``); ``x0`` clipped to ``[-r, r]`` when
    ``clip_range`` is set; the noise ``eps`` is recomputed from the unclipped prediction as
    diffusers does (``use_clipped_model_output`` off); then
    ``sqrt(a_prev) x0 + sqrt(1 - a_prev) eps``.
    """
    a = jnp.asarray(alpha_prod_t, jnp.float32)
    a_prev = jnp.asarray(alpha_prod_t_prev, jnp.float32)
    root_a, root_b = jnp.sqrt(a), jnp.sqrt(1.0 - a)
    if prediction_type == "epsilon":
        x0 = (sample - root_b * model_output) / root_a
        eps = model_output
    elif prediction_type == "sample":
        x0 = model_output
        eps = (sample - root_a * x0) / root_b
    elif prediction_type == "v_prediction":
        x0 = root_a * sample - root_b * model_output
        eps = root_a * model_output + root_b * sample
    else:
        raise ValueError(
            f"prediction_type must be one of {', '.join(PREDICTION_TYPES)}, got {prediction_type!r}"
        )
    if clip_range is not None:
        x0 = jnp.clip(x0, -clip_range, clip_range)
    return jnp.sqrt(a_prev) * x0 + jnp.sqrt(1.0 - a_prev) * eps
