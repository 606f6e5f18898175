"""Per-timestep activation statistics from a file (``calibration.stats=FILE``).

For a checkpoint whose architecture thermojax cannot run, the Markov metrics still need the
per-step activation ranges of its layers; whoever can run the model measures them and hands them
over in this file. The format is one safetensors file holding, for each layer ``NAME`` (any
name; for a Hugging Face model, the module name, e.g. ``model.layers.0.mlp.down_proj``), four
float32 vectors over the model's T denoising steps (index t = 0 is the least noisy step, the one
the sampler runs last):

- ``NAME.min``, ``NAME.max``: the smallest and largest input activation at each step;
- ``NAME.mean``, ``NAME.std``: their mean and standard deviation at each step.

Layers come in name order. :func:`write_activation_stats` writes the format.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "stats.safetensors"
    >>> lo = -np.ones((2, 10), np.float32)
    >>> _ = write_activation_stats(path, ["a", "b"], lo, -lo, 0 * lo, -lo)
    >>> stats = read_activation_stats(path)
    >>> stats.layer_names, stats.num_timesteps
    (('a', 'b'), 10)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from thermojax.errors import UserInputError
from thermojax.files import atomic_file
from thermojax.models.hf.headers import nonfinite_problem

__all__ = [
    "MAX_MAGNITUDE",
    "STAT_KINDS",
    "ActivationStats",
    "read_activation_stats",
    "write_activation_stats",
]

STAT_KINDS = ("min", "max", "mean", "std")
"""The four vectors a layer has in the file, as ``NAME.<kind>``."""


@dataclasses.dataclass(frozen=True)
class ActivationStats:
    """Per-layer, per-step activation statistics.

    Attributes:
        layer_names: the L layers, in name order.
        act_min, act_max, act_mean, act_std: float32 ``[L, T]``, ``act_min <= act_max``.
    """

    layer_names: tuple[str, ...]
    act_min: np.ndarray
    act_max: np.ndarray
    act_mean: np.ndarray
    act_std: np.ndarray

    @property
    def num_timesteps(self) -> int:
        """T."""
        return int(self.act_min.shape[1])


MAX_MAGNITUDE = float(np.finfo(np.float32).max) / 2
"""Largest ``|value|`` a statistics file may hold: any two then differ by a finite float32, so a
range ``max - min`` and the scale and Markov scores made from it stay finite. Beyond it no
activation is real (float16's largest is 65504), and the scores would be NaN."""


def read_activation_stats(
    path: str | os.PathLike[str], *, checkpoint_tensors: Collection[str] | None = None
) -> ActivationStats:
    """Read and check a statistics file.

    Args:
        path: the file.
        checkpoint_tensors: the model's tensor names: each layer ``NAME`` of the file must have
            a tensor ``NAME.weight`` or ``NAME`` there (``None``: not checked).

    Raises:
        UserInputError: one line naming the file (and the tensor): missing or unreadable file,
            a name not of the form ``NAME.min|max|mean|std``, a layer lacking one of the four,
            vectors of different lengths, a non-finite value or one beyond
            :data:`MAX_MAGNITUDE`, ``min > max``, ``std < 0``, a layer the model lacks.
    """
    from safetensors import safe_open

    path = Path(path).expanduser()
    where = f"calibration.stats={str(path)!r}"
    if not path.is_file():
        kind = "not a regular file" if path.exists() else "no such file"
        raise UserInputError(f"{where}: {kind}")
    try:
        with safe_open(str(path), framework="np") as handle:
            arrays = {name: np.asarray(handle.get_tensor(name)) for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001 (safetensors raises several types for corrupt files)
        raise UserInputError(f"{where}: not a safetensors file ({exc})") from None
    layers: dict[str, dict[str, np.ndarray]] = {}
    for name, array in arrays.items():
        layer, _, kind = name.rpartition(".")
        if not layer or kind not in STAT_KINDS:
            raise UserInputError(
                f"{where}: {name}: expected tensors named NAME.min, NAME.max, NAME.mean, NAME.std"
            )
        if array.ndim != 1:
            raise UserInputError(
                f"{where}: {name}: expected a vector over T steps, got {array.shape}"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise UserInputError(f"{where}: {name}: dtype {array.dtype.name}, expected float32")
        problem = nonfinite_problem(array)
        if problem is not None:
            raise UserInputError(f"{where}: {name}: {problem}")
        huge = np.abs(array) > MAX_MAGNITUDE  # before the cast to float32, which would overflow
        if huge.any():
            step = int(np.argmax(huge))
            raise UserInputError(
                f"{where}: {name}: {float(array[step]):.4g} at step {step} is beyond "
                f"+-{MAX_MAGNITUDE:.4g} (a range max - min would overflow float32)"
            )
        array = array.astype(np.float32)
        layers.setdefault(layer, {})[kind] = array
    if not layers:
        raise UserInputError(f"{where}: holds no statistics")
    lengths = set()
    for layer, kinds in layers.items():
        missing = [kind for kind in STAT_KINDS if kind not in kinds]
        if missing:
            raise UserInputError(
                f"{where}: {layer}: lacks {', '.join(f'{layer}.{k}' for k in missing)}"
            )
        lengths |= {len(v) for v in kinds.values()}
        if np.any(kinds["min"] > kinds["max"]):
            raise UserInputError(f"{where}: {layer}.min: exceeds {layer}.max at some steps")
        if np.any(kinds["std"] < 0):
            raise UserInputError(f"{where}: {layer}.std: negative values")
    if len(lengths) != 1:
        raise UserInputError(f"{where}: vectors of different lengths {sorted(lengths)}")
    if checkpoint_tensors is not None:
        known = set(checkpoint_tensors)
        missing = sorted(n for n in layers if n not in known and f"{n}.weight" not in known)
        if missing:
            shown = ", ".join(missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            raise UserInputError(
                f"{where}: {shown}: the model has no such layer (no tensor {missing[0]}.weight "
                f"or {missing[0]})"
            )
    names = tuple(sorted(layers))
    stack = lambda kind: np.stack([layers[n][kind] for n in names])
    return ActivationStats(names, stack("min"), stack("max"), stack("mean"), stack("std"))


def write_activation_stats(
    path: str | os.PathLike[str],
    layer_names: Sequence[str],
    act_min: np.ndarray,
    act_max: np.ndarray,
    act_mean: np.ndarray,
    act_std: np.ndarray,
) -> Path:
    """Write ``[L, T]`` statistics in the format :func:`read_activation_stats` reads (atomically)."""
    from safetensors.numpy import save_file

    arrays = {}
    for i, name in enumerate(layer_names):
        for kind, values in zip(STAT_KINDS, (act_min, act_max, act_mean, act_std), strict=True):
            arrays[f"{name}.{kind}"] = np.ascontiguousarray(np.asarray(values[i], np.float32))
    with atomic_file(path, suffix=".safetensors") as tmp:
        save_file(arrays, str(tmp))
    return Path(path)
