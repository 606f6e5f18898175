"""The activation parameters an export ships with the weights: checked, and written as
``activations.safetensors`` with their ``quantization.json`` entry
(:mod:`~thermojax.pipeline.checkpoint.layout`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thermojax.core.quant import ACT_BITS_RANGE
from thermojax.errors import UserInputError
from thermojax.models.hf import write_safetensors
from thermojax.models.hf.layouts import DTYPES
from thermojax.pipeline.checkpoint.layout import ACTIVATIONS_FILE

__all__ = ["activation_arrays", "checked_codes", "write_activations"]

_DTYPE_NAMES = {np.dtype(dtype): name for name, dtype in DTYPES.items()}


def checked_codes(
    qweights: Mapping[str, Any],
    shapes: Mapping[str, tuple[int, ...]],
    *,
    group_size: int,
    what: str,
    activations: Any,
    num_timesteps: int,
) -> tuple[dict[str, np.ndarray] | None, dict[str, Any] | None]:
    """An export's codes against its model's layers, and its activation arrays and entry.

    Args:
        qweights: the run's QTensors by layer name.
        shapes: the shape each layer's QTensor must have, by layer name (in layer order).
        group_size: the run's weight group size.
        what: how ``shapes`` are meant, for the message (``the stored weight``).
        activations: the run's :class:`ActParams` (or ``None``: no activation file).
        num_timesteps: the model's T.

    Returns:
        ``(arrays, entry)`` of :func:`activation_arrays`, or ``(None, None)``.

    Raises:
        ValueError: codes that do not match the layers (a bug of the caller).
        UserInputError: bad activation parameters.
    """
    names = tuple(shapes)
    if set(qweights) != set(names):
        raise ValueError(f"qweights has layers {sorted(qweights)}, the model {list(names)}")
    for name, shape in shapes.items():
        q = qweights[name]
        if (tuple(q.shape), q.group_size) != (tuple(shape), group_size):
            raise ValueError(
                f"qweights[{name!r}] is shape {q.shape} in groups of {q.group_size}; expected "
                f"{tuple(shape)} ({what}) in groups of {group_size}"
            )
    if activations is None:
        return None, None
    try:
        return activation_arrays(activations, names, num_timesteps)
    except ValueError as err:
        raise UserInputError(f"activations: {err}") from err


def activation_arrays(
    activations: Any, layer_names: Sequence[str] | None, num_timesteps: int | None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and the JSON entry of ``activations`` (anything with ActParams' fields)."""
    try:
        scales = np.asarray(activations.scales, np.float32)
        zero_points = np.asarray(activations.zero_points, np.float32)
        edges = np.asarray(activations.edges)
        bits = activations.bits
    except AttributeError as err:
        raise ValueError(f"activations must have scales, zero_points, edges, bits: {err}") from err
    lo, hi = ACT_BITS_RANGE
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not lo <= bits <= hi:
        raise ValueError(f"activation bits must be an integer in [{lo}, {hi}], got {bits!r}")
    if scales.ndim != 2 or scales.shape != zero_points.shape:
        raise ValueError(
            f"activation scales {scales.shape} and zero_points {zero_points.shape} must both be "
            "[L, S]"
        )
    num_layers, num_params = scales.shape
    if edges.shape != (num_params + 1,) or not np.issubdtype(edges.dtype, np.integer):
        raise ValueError(f"activation edges must be integers [S+1={num_params + 1}], got {edges}")
    if edges[0] != 0 or np.any(np.diff(edges) < 1):
        raise ValueError(f"activation edges must rise strictly from 0, got {edges.tolist()}")
    if num_timesteps is not None and edges[-1] != num_timesteps:
        raise ValueError(f"activation edges must end at T={num_timesteps}, got {edges[-1]}")
    if layer_names is not None:
        layer_names = [str(name) for name in layer_names]
        if len(layer_names) != num_layers:
            raise ValueError(
                f"{len(layer_names)} layer names for activation parameters of {num_layers} layers"
            )
    arrays = {"edges": edges.astype(np.int32), "scales": scales, "zero_points": zero_points}
    entry = {
        "file": ACTIVATIONS_FILE,
        "bits": int(bits),
        "layer_names": layer_names,
        "num_layers": num_layers,
        "num_params": num_params,
        "num_timesteps": int(edges[-1]),
        "per_timestep": bool(num_params == edges[-1]),
    }
    return arrays, entry


def write_activations(folder: Path, arrays: Mapping[str, np.ndarray]) -> None:
    entries = [(name, _DTYPE_NAMES[array.dtype], array.shape) for name, array in arrays.items()]
    write_safetensors(folder / ACTIVATIONS_FILE, entries, arrays.__getitem__)
