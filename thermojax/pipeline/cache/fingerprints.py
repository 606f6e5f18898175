"""Fingerprints of what a cached stage depends on: the model (its arrays, or its checkpoint's
headers when its linear layers stay in the file), its network, its quality reference and the
quantized weights a run uses (:mod:`thermojax.pipeline.cache.stages` keys its entries with
them)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax

from thermojax.core.quant import QTensor
from thermojax.models.base import DiffusionModel
from thermojax.pipeline.cache.store import arrays_fingerprint, cache_key

__all__ = [
    "checkpoint_model_fingerprint",
    "model_fingerprint",
    "network_fingerprint",
    "qweights_fingerprint",
    "reference_fingerprint",
]


def _named_arrays(tree: Any, prefix: str) -> dict[str, Any]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {f"{prefix}{jax.tree_util.keystr(path)}": leaf for path, leaf in leaves}


def _describe(obj: Any) -> Any:
    """A JSON-ready description of a (dataclass) config object."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _describe(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    if isinstance(obj, list | tuple):
        return [_describe(v) for v in obj]
    return repr(obj)


def _model_parts(model: DiffusionModel) -> dict[str, Any]:
    """What both model fingerprints hash besides the parameters: its class, architecture config,
    timestep count, layer names and data shape."""
    return {
        "kind": "model",
        "type": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": _describe(getattr(model, "config", None)),
        "num_timesteps": int(model.num_timesteps),
        "layer_names": list(model.layer_names),
        "data_shape": list(model.data_shape),
    }


def model_fingerprint(model: DiffusionModel) -> str:
    """A hash of everything about the denoiser that changes its samples or activations.

    All of its parameters (kernels and biases: ``model.params`` when it has them, else its
    quantizable weights), its noise schedule arrays (``schedule.arrays()``), its architecture
    config, class, timestep count, layer names and data shape. Not its path or display name: a
    copy of a checkpoint elsewhere shares the cache, a retrained one does not. (The schedule is
    hashed through its float32 arrays, under the names they have always had, so keys are the same
    as when the schedule stored them as fields.) Parameters laid over several devices add their
    count.
    """
    params = getattr(model, "params", None)
    arrays = _named_arrays(params if params is not None else model.quantizable_weights(), "params")
    # Parameters laid over several devices (model.devices) sum across them in another order:
    # the same numbers to float32 rounding, not bit for bit, so not the same entries.
    spread = max(
        (len(a.sharding.device_set) for a in jax.tree.leaves(params) if isinstance(a, jax.Array)),
        default=1,
    )
    schedule = getattr(model, "schedule", None)
    if callable(getattr(schedule, "arrays", None)):
        arrays.update({f"schedule.{name}": a for name, a in schedule.arrays().items()})
    return cache_key(
        **_model_parts(model),
        arrays=arrays_fingerprint(arrays),
        **({"devices": spread} if spread > 1 else {}),
    )


def checkpoint_model_fingerprint(model: DiffusionModel, path: str, *, dtype: str | None) -> str:
    """:func:`model_fingerprint` of a model whose linear layers stay in its checkpoint until the
    full-precision stages (``model.residency=apart``): the checkpoint's fingerprint (its config
    and every shard's header and size) with each file's modification time and the dtype it is
    held in stand for the arrays, which are not all in memory to hash. Not the same key as the
    same model held whole: such a run has entries of its own (with the same numbers)."""
    from thermojax.models.hf.reader import open_checkpoint

    checkpoint = open_checkpoint(path)
    files = ["config.json", *checkpoint.shards]
    return cache_key(
        **_model_parts(model),
        checkpoint=checkpoint.fingerprint(),
        modified={file: os.stat(Path(checkpoint.path) / file).st_mtime_ns for file in files},
        dtype=dtype,
    )


def network_fingerprint(network: Any, *, linears: Mapping[str, Any] | None = None) -> str:
    """A hash of a network's parameters (``network.params``) and architecture (``config``),
    without the sampler settings a :func:`model_fingerprint` holds: what an exported
    masked-diffusion LM records of its full-precision source, which a run of the export may
    sample with other settings.

    ``linears``: for a network loaded without its linear layers, where to read them (one at a
    time; :class:`~thermojax.models.dream.checkpoint.CheckpointLinears`): the same hash as the
    whole network's.
    """
    arrays: Mapping[str, Any] = _named_arrays(network.params, "params")
    if linears is not None:
        arrays = _NetworkArrays(network, linears)
    return cache_key(
        kind="network",
        type=f"{type(network).__module__}.{type(network).__qualname__}",
        config=_describe(getattr(network, "config", None)),
        arrays=arrays_fingerprint(arrays),
    )


class _NetworkArrays(Mapping[str, Any]):
    """A network's tensors under :func:`_named_arrays`' names, those it lacks read from
    ``linears`` when looked up."""

    def __init__(self, network: Any, linears: Mapping[str, Any]) -> None:
        self._network, self._linears = network, linears
        self._names = {
            f"params{jax.tree_util.keystr((jax.tree_util.DictKey(name),))}": name
            for name in network.config.tensor_shapes()
        }

    def __getitem__(self, key: str) -> Any:
        name = self._names[key]
        params = self._network.params
        return params[name] if name in params else self._linears[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def reference_fingerprint(model: DiffusionModel) -> str | None:
    """A hash of the model's quality reference (classifier parameters and config; a text
    reference's description, which names its held-out windows); ``None`` when it has none."""
    reference = model.reference
    if reference is None:
        return None
    described = getattr(reference, "description", None)
    return cache_key(
        kind="reference",
        type=f"{type(reference).__module__}.{type(reference).__qualname__}",
        config=_describe(getattr(reference, "config", None)),
        arrays=arrays_fingerprint(_named_arrays(getattr(reference, "params", {}), "params")),
        **({} if described is None else {"description": str(described)}),
    )


def qweights_fingerprint(qweights: Mapping[str, QTensor]) -> str:
    """A hash of the quantized weights a run actually uses: each layer's packed codes, scales
    and zero points, with its shape, bits, group size and symmetry.

    Whatever produced them (a weight method and its options, kept bits, an exported checkpoint
    reloaded as it is), equal weights give equal keys and different weights different ones: a
    reload of a GPTQ export never finds the calibration of a minmax run of the same settings.
    """
    arrays, meta = {}, {}
    for name, q in qweights.items():
        arrays |= {f"{name}.{role}": getattr(q, role) for role in ("codes", "scale", "zero_point")}
        meta[name] = [list(q.shape), int(q.bits), int(q.group_size), bool(q.symmetric)]
    return cache_key(kind="qweights", meta=meta, arrays=arrays_fingerprint(arrays))
