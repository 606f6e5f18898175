"""Loading a diffusers ``UNet2DModel`` folder, or a pipeline folder holding one, into JAX.

Two layouts are read:

- a model folder: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (what
  ``UNet2DModel.save_pretrained`` writes);
- a pipeline folder (``DDPMPipeline`` / ``DDIMPipeline.save_pretrained``, or a Hub snapshot of
  e.g. ``google/ddpm-cifar10-32``): ``unet/`` as above and ``scheduler/scheduler_config.json``.

The safetensors header is checked whole before any weight is read
(:func:`~thermojax.models.hf.headers.read_shard`: dtypes, offsets, truncation), then the tensors
are compared with the layout ``config.json`` implies
(:meth:`~thermojax.models.unet.config.UNet2DConfig.tensor_shapes`): a missing, unexpected or
misshapen tensor, an unsupported config value, NaN / Inf weights each end in one
:class:`~thermojax.models.hf.CheckpointError` line (a ``UserInputError``, so a ``ValueError``)
naming the file, the tensor or the config key. Attention tensors saved under diffusers' old
names (``query`` / ``key`` / ``value`` / ``proj_attn``, as in checkpoints converted in 2022)
are renamed as diffusers renames them on load.

Example:
    >>> import json, tempfile, numpy as np
    >>> from thermojax.models.hf import write_safetensors
    >>> config = {"block_out_channels": [8, 16], "norm_num_groups": 4, "layers_per_block": 1,
    ...     "down_block_types": ["DownBlock2D"] * 2, "up_block_types": ["UpBlock2D"] * 2}
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / CONFIG_FILE).write_text(json.dumps(config))
    >>> shapes = UNet2DConfig.from_dict(config).tensor_shapes()
    >>> _ = write_safetensors(folder / WEIGHTS_FILE, [(n, "F32", s) for n, s in shapes.items()],
    ...     lambda name: np.zeros(shapes[name], np.float32))
    >>> unet = load_unet(folder)
    >>> unet.num_parameters(), unet.params["conv_in.weight"].shape, unet.scheduler
    (41899, (8, 3, 3, 3), None)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from thermojax.models.hf.headers import CheckpointError, load_json, read_shard
from thermojax.models.hf.reader import SafetensorsFolder
from thermojax.models.unet.config import UNet2DConfig
from thermojax.models.unet.scheduler import SchedulerConfig

__all__ = [
    "CONFIG_FILE",
    "SCHEDULER_FILE",
    "WEIGHTS_FILE",
    "DiffusersUNet",
    "load_scheduler",
    "load_unet",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
SCHEDULER_FILE = "scheduler_config.json"
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


@dataclasses.dataclass(frozen=True)
class DiffusersUNet:
    """A loaded ``UNet2DModel``: ``apply(unet.params, unet.config, x, t)``.

    Attributes:
        config: the architecture (static).
        params: every tensor by diffusers' name, in diffusers' layout (a flat dict pytree).
        scheduler: the pipeline's schedule, or ``None`` for a bare model folder.
        path: the model folder the weights came from.
    """

    config: UNet2DConfig
    params: dict[str, jnp.ndarray]
    scheduler: SchedulerConfig | None
    path: Path

    def num_parameters(self) -> int:
        return sum(int(np.prod(value.shape)) for value in self.params.values())


def _model_folder(path: Path) -> Path:
    if not path.exists():
        raise CheckpointError(str(path), "no such folder")
    if not path.is_dir():
        raise CheckpointError(str(path), "not a folder (a diffusers model is a folder)")
    if (path / "unet" / CONFIG_FILE).is_file():
        return path / "unet"
    if (path / CONFIG_FILE).is_file():
        return path
    raise CheckpointError(CONFIG_FILE, f"not found in {path} nor in {path / 'unet'}")


def _canonical_name(name: str) -> str:
    """diffusers' rename of the old attention tensors (``_fix_state_dict_keys_on_load``)."""
    head, _, leaf = name.rpartition(".")  # leaf: weight / bias
    prefix, _, module = head.rpartition(".")
    if ".attentions." in f".{prefix}." and module in _LEGACY_ATTENTION:
        return f"{prefix}.{_LEGACY_ATTENTION[module]}.{leaf}"
    return name


def load_scheduler(path: str | os.PathLike[str]) -> SchedulerConfig | None:
    """The schedule of a pipeline folder (``scheduler/scheduler_config.json``) or of a folder
    holding ``scheduler_config.json`` itself; ``None`` when there is none.

    Raises:
        CheckpointError: the file is not JSON or holds an unsupported value (named).
    """
    folder = Path(path)
    for candidate in (folder / "scheduler", folder):
        if (candidate / SCHEDULER_FILE).is_file():
            data, _ = load_json(candidate, SCHEDULER_FILE)
            try:
                return SchedulerConfig.from_dict(data)
            except ValueError as err:
                raise CheckpointError(f"scheduler/{SCHEDULER_FILE}", str(err)) from err
    return None


def load_unet(
    path: str | os.PathLike[str], *, dtype: str | None = "float32", check_finite: bool = True
) -> DiffusersUNet:
    """Load a ``UNet2DModel`` (model or pipeline folder; see the module docstring).

    Args:
        path: the folder.
        dtype: ``"float32"`` (default) upcasts every tensor; ``"bfloat16"`` / ``"float16"``
            store them so (the forward pass still computes in float32); ``None`` keeps each
            tensor's stored dtype.
        check_finite: refuse tensors with NaN or Inf values.

    Raises:
        CheckpointError: one line naming the file and the tensor or config key at fault.
        ValueError: an unknown ``dtype``.
    """
    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)} or None, got {dtype!r}")
    root = Path(path)
    folder = _model_folder(root)
    raw, raw_bytes = load_json(folder, CONFIG_FILE)
    try:
        config = UNet2DConfig.from_dict(raw)
    except ValueError as err:
        raise CheckpointError(CONFIG_FILE, str(err)) from err
    if not (folder / WEIGHTS_FILE).is_file():
        found = sorted(p.name for p in folder.iterdir() if p.name.startswith("diffusion_pytorch"))
        also = f" (found {', '.join(found)}: only one safetensors file is read)" if found else ""
        raise CheckpointError(WEIGHTS_FILE, f"not found in {folder}{also}")
    checkpoint = SafetensorsFolder(
        folder, raw, raw_bytes, {WEIGHTS_FILE: read_shard(folder, WEIGHTS_FILE)}
    )

    expected = config.tensor_shapes()
    names: dict[str, str] = {}
    for stored, info in checkpoint.tensors.items():
        name = _canonical_name(stored)
        if name not in expected:
            raise CheckpointError(WEIGHTS_FILE, "not a tensor of this UNet2DModel config", stored)
        if name in names:
            raise CheckpointError(WEIGHTS_FILE, f"stored twice (also as {names[name]})", stored)
        if info.shape != expected[name]:
            raise CheckpointError(
                WEIGHTS_FILE,
                f"shape {list(info.shape)} but config.json implies {list(expected[name])}",
                stored,
            )
        names[name] = stored
    missing = [name for name in expected if name not in names]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(WEIGHTS_FILE, f"missing (needed by config.json){more}", missing[0])

    target = None if dtype is None else _DTYPES[dtype]
    canonical = {stored: name for name, stored in names.items()}
    params = {}
    for info, array in checkpoint.iter_tensors(check_finite=check_finite):
        value = array if target is None else np.asarray(array, target)
        params[canonical[info.name]] = jnp.asarray(value)
    params = {name: params[name] for name in expected}
    scheduler = load_scheduler(root)
    return DiffusersUNet(config=config, params=params, scheduler=scheduler, path=folder)
