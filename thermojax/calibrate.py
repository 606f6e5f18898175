"""Per-timestep activation statistics of every quantizable layer, collected in one jitted scan."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from thermojax.models.base import DiffusionModel

__all__ = ["CalibrationStats", "calibrate"]


@dataclasses.dataclass(frozen=True)
class CalibrationStats:
    """Input-activation statistics of each quantizable layer at each timestep.

    Attributes:
        layer_names: the L layers, in the order of the leading axis.
        act_min, act_max, act_mean, act_std: float32 ``[L, T]`` over all samples and channels.
        act_samples: float32 ``[L, T, K]``, K activation values drawn at random (with replacement)
            from the values each layer saw at each timestep.
    """

    layer_names: tuple[str, ...]
    act_min: np.ndarray
    act_max: np.ndarray
    act_mean: np.ndarray
    act_std: np.ndarray
    act_samples: np.ndarray

    @property
    def num_timesteps(self) -> int:
        """T, the length of the time axis."""
        return int(self.act_min.shape[1])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics to an ``.npz`` file atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(
                    fh,
                    layer_names=np.asarray(self.layer_names, dtype=str),
                    act_min=self.act_min,
                    act_max=self.act_max,
                    act_mean=self.act_mean,
                    act_std=self.act_std,
                    act_samples=self.act_samples,
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CalibrationStats:
        """Read statistics written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            return cls(
                layer_names=tuple(str(n) for n in data["layer_names"]),
                act_min=np.asarray(data["act_min"], np.float32),
                act_max=np.asarray(data["act_max"], np.float32),
                act_mean=np.asarray(data["act_mean"], np.float32),
                act_std=np.asarray(data["act_std"], np.float32),
                act_samples=np.asarray(data["act_samples"], np.float32),
            )


def calibrate(
    model: DiffusionModel,
    *,
    bit_width: int,
    group_size: int = 64,
    num_samples: int = 128,
    seed: int = 0,
    samples_per_step: int = 64,
) -> CalibrationStats:
    """Run the sampler with weights fake-quantized at ``bit_width`` and record layer inputs."""
    raise NotImplementedError
