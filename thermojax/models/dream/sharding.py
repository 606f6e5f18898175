"""A masked-diffusion LM's parameters laid over a mesh of local devices, for accelerators smaller
than the model (a TPU v5e chip holds 16 GB; Dream 7B in bf16 is 15.2 GB before activations).

One mesh axis, ``"model"``, over ``N`` devices; each tensor is split along the axis that keeps
a block's work local, the layout of tensor-parallel transformers:

- the layers that widen the residual stream (q, k, v, gate, up: :data:`COLUMN`) along their
  output features, their biases with them;
- the layers that narrow it back (o, down: :data:`ROW`) along their input features, so each
  device multiplies the slice of the activations it already holds (XLA adds one sum across
  devices per such layer);
- the output projection along the vocabulary, the embedding along the hidden width;
- the norms, small, on every device.

A tensor whose split axis ``N`` does not divide stays whole on every device. The network's
code does not change: its jitted programs take the sharded arrays as arguments and XLA's
partitioner (GSPMD) follows the layout, so the numbers are the one-device numbers up to the
order of the cross-device sums.

Example:
    >>> import jax
    >>> mesh = model_mesh(1)
    >>> mesh.shape["model"]
    1
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from thermojax.models.dream.network import LINEAR_SUFFIXES, DreamLM

__all__ = ["AXIS", "COLUMN", "ROW", "model_mesh", "parameter_specs", "shard_lm"]

AXIS = "model"
"""The mesh axis the parameters are split along."""
COLUMN = (0, 1, 2, 4, 5)
"""A block's linear layers split along their output features (q, k, v, gate, up: positions in
:data:`~thermojax.models.dream.network.LINEAR_SUFFIXES` order)."""
ROW = (3, 6)
"""A block's linear layers split along their input features (o, down)."""


def model_mesh(devices: int) -> Mesh:
    """A one-axis mesh over the first ``devices`` local devices.

    Raises:
        ValueError: ``devices`` below 1 or above the local device count (naming both, and how
            to have more host devices on a CPU).
    """
    local = jax.local_devices()
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"devices must be a positive integer, got {devices!r}")
    if devices > len(local):
        raise ValueError(
            f"devices={devices}: this process sees {len(local)} local "
            f"{local[0].platform} device{'s' if len(local) != 1 else ''} (on a CPU, "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} makes {devices})"
        )
    return Mesh(np.asarray(local[:devices]), (AXIS,))


def _split(shape: tuple[int, ...], axis: int, devices: int) -> PartitionSpec:
    """``axis`` of ``shape`` along the mesh when ``devices`` divides it, else whole."""
    if not shape or shape[axis] % devices:
        return PartitionSpec()
    spec: list[str | None] = [None] * len(shape)
    spec[axis] = AXIS
    return PartitionSpec(*spec)


def parameter_specs(lm: DreamLM, devices: int) -> dict[str, PartitionSpec]:
    """Each tensor's :class:`PartitionSpec` (module doc), keyed like ``lm.params``; tensors
    are in torch's ``[out, in]`` layout."""
    per_block = len(LINEAR_SUFFIXES)
    names = lm.layer_names
    stored = lm.quantizable_weights()
    weights = {id(stored[name]): index for index, name in enumerate(names)}
    specs: dict[str, PartitionSpec] = {}
    for name, value in lm.params.items():
        shape = tuple(np.shape(value))
        index = weights.get(id(value))
        if index is None:
            bias_of = name.removesuffix(".bias") + ".weight"
            if name.endswith(".bias") and bias_of in names:
                column = names.index(bias_of) % per_block in COLUMN
                specs[name] = _split(shape, 0, devices) if column else PartitionSpec()
            elif len(shape) == 2:  # the embedding [V, H]: its hidden width
                specs[name] = _split(shape, 1, devices)
            else:  # norms
                specs[name] = PartitionSpec()
        elif index == len(names) - 1:  # the output projection [V, H]: its vocabulary
            specs[name] = _split(shape, 0, devices)
        else:
            specs[name] = _split(shape, 0 if index % per_block in COLUMN else 1, devices)
    return specs


def shard_lm(lm: DreamLM, devices: int) -> DreamLM:
    """``lm`` with its parameters laid over :func:`model_mesh` ``(devices)`` (module doc); the
    same model, on one device, for ``devices=1``."""
    if devices == 1:
        return lm
    mesh = model_mesh(devices)
    specs = parameter_specs(lm, devices)
    placed = {
        name: jax.device_put(value, NamedSharding(mesh, specs[name]))
        for name, value in lm.params.items()
    }
    return lm.replace(params=placed)
