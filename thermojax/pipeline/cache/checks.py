"""What a stage-cache entry must look like to be used: checked when it is read, not only parsed.

A checksum-free ``.npz`` that loads can still be the wrong entry for this run: an array of another
shape (a file copied over, a cache shared with an older version), another dtype, NaN, another
model's layers. :func:`check_entry` compares a loaded entry with what the run expects (the model's
layers, T and data shape, the sample count, the calibration's samples per step) and raises
``ValueError`` naming the first mismatch; :func:`thermojax.pipeline.cache.store.get_or_compute` then
logs a warning, deletes the entry and recomputes it, as for an unreadable one.

Example:
    >>> import numpy as np
    >>> _expect_array("x0", np.zeros((2, 8, 8), np.float32), (2, 8, 8), ("float32",))
    >>> _expect_array("x0", np.zeros((3, 8, 8), np.float32), (2, 8, 8), ("float32",))
    Traceback (most recent call last):
    ...
    ValueError: x0 has shape (3, 8, 8), this run needs (2, 8, 8)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from thermojax.models.base import DiffusionModel
from thermojax.pipeline.measure.activation_stats import MAX_MAGNITUDE
from thermojax.pipeline.measure.calibrate import act_rows
from thermojax.pipeline.settings import sampler_specs

__all__ = ["check_entry"]

_SAMPLE_DTYPES = ("float32", "int32")


def _expect_array(
    name: str,
    array: Any,
    shape: Sequence[int | None],
    dtypes: Sequence[str],
) -> None:
    """``array`` is a numpy array of ``shape`` (``None``: any length) and one of ``dtypes``,
    with finite values within +-:data:`MAX_MAGNITUDE` when it is floating point (beyond it a
    range ``max - min`` overflows float32 and the scores made from it are NaN)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} is a {type(array).__name__}, not an array")
    if array.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(array.shape, shape, strict=True)
    ):
        wanted = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{name} has shape {array.shape}, this run needs {wanted}")
    if array.dtype.name not in dtypes:
        raise ValueError(f"{name} has dtype {array.dtype.name}, this run needs {'/'.join(dtypes)}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} holds NaN or infinite values")
        if array.size and float(np.max(np.abs(array))) > MAX_MAGNITUDE:
            raise ValueError(
                f"{name} holds values beyond +-{MAX_MAGNITUDE:.4g} (a range would overflow)"
            )


def _check_samples(value: Any, model: DiffusionModel, num_samples: int) -> None:
    data_shape = tuple(model.data_shape)
    _expect_array("x0", value.x0, (num_samples, *data_shape), _SAMPLE_DTYPES)
    trajectory = value.trajectory
    if not isinstance(trajectory, np.ndarray) or trajectory.ndim < 2:
        raise ValueError("trajectory is not an array [S, N, ...]")
    steps = trajectory.shape[0]
    if not 1 <= steps <= int(model.num_timesteps):
        raise ValueError(f"trajectory has {steps} steps, the model has T={model.num_timesteps}")
    _expect_array(
        "trajectory", trajectory, (steps, num_samples, *trajectory.shape[2:]), _SAMPLE_DTYPES
    )
    timesteps = getattr(value, "timesteps", None)
    if timesteps is not None:
        if np.shape(timesteps) != (steps,):
            raise ValueError(
                f"timesteps has shape {np.shape(timesteps)}, the trajectory {steps} steps"
            )
        timesteps = np.asarray(timesteps, np.int64)
        if (
            np.any(np.diff(timesteps) < 1)
            or timesteps[0] < 0
            or timesteps[-1] >= model.num_timesteps
        ):
            raise ValueError(
                f"timesteps must rise strictly within [0, {model.num_timesteps}), got "
                f"{timesteps[0]}..{timesteps[-1]}"
            )


def _check_calibration(
    value: Any,
    model: DiffusionModel,
    samples_per_step: int,
    steps: int,
    mask_aware: bool,
    channel_groups: int = 1,
) -> None:
    layers = act_rows(tuple(model.layer_names), mask_aware, channel_groups)
    if tuple(value.layer_names) != layers:
        raise ValueError(f"layers {list(value.layer_names)} are not the model's {list(layers)}")
    for name in ("act_min", "act_max", "act_mean", "act_std"):
        _expect_array(name, getattr(value, name), (len(layers), steps), ("float32",))
    _expect_array(
        "act_samples", value.act_samples, (len(layers), steps, samples_per_step), ("float32",)
    )
    if np.any(value.act_min > value.act_max):
        raise ValueError("act_min exceeds act_max")
    if np.any(value.act_std < 0):
        raise ValueError("act_std holds negative values")


def check_entry(name: str, value: Any, *, model: DiffusionModel, config: Mapping[str, Any]) -> Any:
    """``value``, a loaded entry of the stage ``name`` (``calibration``, ``fp32_samples``,
    ``quality``; others pass), when it fits this run.

    Raises:
        ValueError: the first thing that does not fit (shape, dtype, non-finite values, layers).
    """
    num_samples = int(config["sampling"]["num_samples"])
    if name == "calibration":
        # The calibration sampler's steps (every timestep for the full DDPM sampler).
        steps = sampler_specs(config)[1].num_steps(int(model.num_timesteps))
        act = config.get("act") or {}
        mask_aware = bool(act.get("mask_aware", False))
        groups = int(act.get("channel_groups", 8)) if act.get("granularity") == "channel" else 1
        samples_per_step = int(config["calibration"]["samples_per_step"])
        _check_calibration(value, model, samples_per_step, steps, mask_aware, groups)
    elif name == "fp32_samples":
        _check_samples(value, model, num_samples)
    elif name == "quality":
        _expect_array(
            "quantized_x0",
            value.quantized_x0,
            (num_samples, *tuple(model.data_shape)),
            _SAMPLE_DTYPES,
        )
    return value
