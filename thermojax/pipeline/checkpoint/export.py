"""Writing and reloading quantized checkpoints: the packed codes themselves, not fake-quantized
floats, in safetensors, with a JSON map of what is where.

An exported folder (a Hugging Face checkpoint, :func:`export_checkpoint`)::

    config.json                        the source's config.json, byte for byte
    tokenizer.json, *.py, ...          the source's other small files a loader reads (the
                                         tokenizer, generation settings, remote code:
                                         COMPANION_PATTERNS), copied as they are
    model.safetensors                  or the source's shards, same names, same tensor -> shard
    model-00001-of-0000N.safetensors   assignment, in the source's order:
                                         NAME.qcodes  uint8, the packed codes of a quantized NAME
                                         NAME.qscale  float32, one scale per group
                                         NAME.qzero   uint8, one zero point per group
                                         NAME         a kept tensor, at its stored dtype
    model.safetensors.index.json       when the source was sharded: every stored tensor's shard
    activations.safetensors            when activation parameters are given: "edges" int32
                                         [S + 1], "scales" float32 [L, S], "zero_points"
                                         float32 [L, S] (S = G time groups, or S = T for a
                                         per-timestep schedule, edges = 0, 1, ..., T)
    orbax/<shard stem>/part-NNN/       the same quantized tensors as Orbax (OCDBT) checkpoints of
                                         {NAME: QTensor}, each at most 256 MiB of one shard's
                                         tensors, since Orbax holds a whole pytree in memory
                                         while it saves (restore_orbax_copy); optional,
                                         reloading never needs it
    quantization.json                  the map (written last)

For the digits DDPM (:func:`export_digits`) the folder holds the digits ``model.json`` instead
of ``config.json`` (with a ``quantization`` entry), the checkpoint's ``classifier.safetensors``
(the same bytes), and one ``model.safetensors`` that
holds each layer's quantized kernel under the layer's name (``block0.qcodes`` ...: the
``[out, in]`` transposed kernel, as :func:`~thermojax.pipeline.weights.quantize.quantize_weights` stores
it) and its bias (``block0/bias``, float32).

A quantized tensor ``NAME`` of shape ``[..., n]`` with ``bits`` and ``group_size`` is
:class:`~thermojax.core.quant.QTensor`'s own storage: ``NAME.qcodes`` is ``[..., n * bits / 8]``,
``p = 8 / bits`` codes per byte, planar within each group (byte ``b`` of a group holds the
codes of the group's elements ``b + k * group_size / p``, element ``k`` in bits
``[k * bits, (k + 1) * bits)``); ``NAME.qscale`` and ``NAME.qzero`` are ``[..., n / group_size]``;
``value = (code - zero) * scale``.

``quantization.json``::

    {"format": "thermojax-quantized", "format_version": 1,
     "model_format": "huggingface-safetensors" | "thermojax-digits-ddpm",
     "config_file": "config.json" | "model.json",
     "source": {"fingerprint": ..., "path": ..., ...} (digits: also "model", "num_parameters";
                "path" null for the shipped model), "bits": 4, "group_size": 64,
     "outlier_sigmas": 6.0,
     "rules": [{"include", "exclude", "bits", "group_size", "text"}, ...] (null for digits),
     "shards": [file, ...], "copied": [file, ...] (the companion files; [] for digits),
     "tensors": {NAME: {"file", "shape", "dtype" (as stored in the source),
                        "bits", "group_size", "symmetric", "rule"     (null when kept),
                        "stored": {"codes"|"scale"|"zero_point"|"values":
                                   {"name", "dtype", "shape"}},
                        "orbax": the Orbax checkpoint holding it (quantized, with orbax),
                        "report": {"cosine", "sqnr_db", "outlier_share",
                                   "source_bytes", "quantized_bytes"},
                        digits kernels also: "source_name" ("block0/kernel"),
                                             "source_shape" ([in, out])}, ...},
     "report": {totals, "blocks": [...]},
     "activations": null | {"file", "bits", "layer_names", "num_layers", "num_params",
                            "num_timesteps", "per_timestep"},
     "orbax": "orbax" | null}

The tensors are listed in the source's order; ``report`` holds the checkpoint's totals and its
per-block figures (:class:`~thermojax.pipeline.weights.stream.WeightOnlyReport` less the per-tensor
list, which is in ``tensors``).

Writing goes into a hidden temporary sibling folder (``.OUT.<random>.tmp``) that is renamed to
``OUT`` only when everything is written and flushed: a killed export leaves at most that hidden
folder, never one named ``OUT``; an existing non-empty ``OUT`` is refused, never overwritten.
:func:`thermojax.pipeline.checkpoint.reload.load_quantized` reloads either kind bit for bit, one shard at a time.

Example:
    >>> import tempfile, pathlib
    >>> from thermojax.models.hf import open_checkpoint, write_dream_like
    >>> from thermojax.pipeline.weights.rules import QuantRule
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> source = open_checkpoint(write_dream_like(root / "m", scale=64, layers=1))
    >>> out, report = export_checkpoint(source, root / "q", [QuantRule()], bits=4,
    ...                                 group_size=8, orbax=False)
    >>> from thermojax.pipeline.checkpoint.reload import load_quantized
    >>> loaded = load_quantized(out)
    >>> loaded.qtensors["model.layers.0.mlp.up_proj.weight"].codes.shape
    (320, 28)
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import shutil
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import jax
import numpy as np

from thermojax.core.quant import ACT_BITS_RANGE, QTensor, storage_bytes
from thermojax.errors import UserInputError, os_errors_as_user_input
from thermojax.files import (
    TEMPORARY_SUFFIX,
    atomic_file,
    atomic_folder,
    atomic_write_bytes,
    atomic_write_text,
)
from thermojax.models.hf import write_index, write_safetensors
from thermojax.models.hf.layouts import DTYPES, INDEX_FILE, SINGLE_FILE
from thermojax.pipeline.measure.sampling import ActParams
from thermojax.pipeline.weights.rules import QuantRule
from thermojax.pipeline.weights.section import TensorRow
from thermojax.pipeline.weights.stream import (
    OUTLIER_SIGMAS,
    CheckpointQuantizer,
    QuantizedTensor,
    TensorSums,
    WeightOnlyReport,
    block_name,
    build_report,
    measure_qtensor,
)

__all__ = [
    "ACTIVATIONS_FILE",
    "COMPANION_PATTERNS",
    "FORMAT",
    "FORMAT_VERSION",
    "HF_FORMAT",
    "ORBAX_DIR",
    "ORBAX_PART_BYTES",
    "QUANTIZATION_FILE",
    "STORED_SUFFIXES",
    "export_checkpoint",
    "export_digits",
    "orbax_item",
    "stored_entries",
]

FORMAT = "thermojax-quantized"
FORMAT_VERSION = 1
QUANTIZATION_FILE = "quantization.json"
ACTIVATIONS_FILE = "activations.safetensors"
ORBAX_DIR = "orbax"
HF_FORMAT = "huggingface-safetensors"
DIGITS_FORMAT = "thermojax-digits-ddpm"
_HF_CONFIG = "config.json"
_DIGITS_CONFIG = "model.json"
_DIGITS_CLASSIFIER = "classifier.safetensors"
STORED_SUFFIXES = {"codes": ".qcodes", "scale": ".qscale", "zero_point": ".qzero"}
COMPANION_PATTERNS = ("*.json", "*.txt", "*.py", "*.model", "*.tiktoken", "*.jinja", "*.md")
"""The source's top-level files an export copies beside the weights (tokenizer files, generation
settings, remote modelling code, the model card): not ``config.json`` (copied anyway), the
safetensors index (written anew) or a ``quantization.json``; weights in other formats never."""
_DTYPE_NAMES = {np.dtype(dtype): name for name, dtype in DTYPES.items()}
_T = TypeVar("_T")


# ----------------------------------------------------------------------------- writing


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserInputError(f"{out_dir}: exists and is not an empty folder; choose a new one")


def _stage_and_publish(out_dir: Path, write: Callable[[Path], _T]) -> _T:
    """``write(staging_folder)``, then the folder renamed to ``out_dir``
    (:func:`thermojax.files.atomic_folder`); removed on failure. Returns what ``write`` returns.

    A staging folder of this export that a killed run left (``.NAME.*.tmp`` beside ``out_dir``)
    is removed first; a full disk or a folder that takes no files is one line
    (:class:`~thermojax.errors.UserInputError`) naming the export."""
    for left in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*{TEMPORARY_SUFFIX}"):
        shutil.rmtree(left, ignore_errors=True)
    try:
        with (
            os_errors_as_user_input(f"the quantized checkpoint {str(out_dir)!r} (export.path)"),
            atomic_folder(out_dir) as staging,
        ):
            return write(staging)
    except FileExistsError as err:
        raise UserInputError(str(err)) from err


def stored_entries(name: str, qtensor_shape: tuple[int, ...], bits: int, group_size: int):
    lead, width = qtensor_shape[:-1], qtensor_shape[-1]
    return {
        "codes": (name + STORED_SUFFIXES["codes"], "U8", (*lead, width * bits // 8)),
        "scale": (name + STORED_SUFFIXES["scale"], "F32", (*lead, width // group_size)),
        "zero_point": (name + STORED_SUFFIXES["zero_point"], "U8", (*lead, width // group_size)),
    }


def _companion_files(source: Path) -> list[str]:
    """The source's companion files (:data:`COMPANION_PATTERNS`), sorted."""
    skip = {_HF_CONFIG, INDEX_FILE, QUANTIZATION_FILE}
    found = {
        path.name
        for pattern in COMPANION_PATTERNS
        for path in source.glob(pattern)
        if path.is_file() and not path.name.startswith(".") and path.name not in skip
    }
    return sorted(found)


def _entry_json(entry: tuple[str, str, tuple[int, ...]]) -> dict[str, Any]:
    name, dtype, shape = entry
    return {"name": name, "dtype": dtype, "shape": list(shape)}


def _figures(report: TensorRow) -> dict[str, Any]:
    return {
        key: getattr(report, key)
        for key in ("cosine", "sqnr_db", "outlier_share", "source_bytes", "quantized_bytes")
    }


def _report_json(report: WeightOnlyReport) -> dict[str, Any]:
    summary = report.to_dict()
    del summary["tensors"]
    return summary


def _activation_arrays(
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


def _write_activations(folder: Path, arrays: Mapping[str, np.ndarray]) -> None:
    entries = [(name, _DTYPE_NAMES[array.dtype], array.shape) for name, array in arrays.items()]
    write_safetensors(folder / ACTIVATIONS_FILE, entries, arrays.__getitem__)


def _memmap_file(path: Path) -> dict[str, np.ndarray]:
    """Read-only memory maps of a safetensors file's tensors (no copy into process memory)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return {
        name: np.memmap(
            path,
            DTYPES[entry["dtype"]],
            "r",
            offset=8 + length + entry["data_offsets"][0],
            shape=tuple(entry["shape"]),
        )
        for name, entry in header.items()
        if math.prod(entry["shape"])  # numpy cannot map zero bytes
    }


ORBAX_PART_BYTES = 256 * 2**20
"""The most stored bytes one Orbax checkpoint of an export holds (a larger tensor goes alone)."""


def orbax_item(file: str, part: int = 0) -> str:
    """One Orbax checkpoint of an export: part ``part`` of shard ``file``'s quantized tensors,
    ``orbax/<shard name stem>/part-<part>``."""
    return f"{ORBAX_DIR}/{Path(file).stem}/part-{part:03d}"


def _stored_bytes(entry: Mapping[str, Any]) -> int:
    return sum(
        math.prod(stored["shape"]) * DTYPES[stored["dtype"]].itemsize
        for stored in entry["stored"].values()
    )


def _plan_orbax(tensors: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Assign each quantized tensor to an Orbax checkpoint (its entry's ``"orbax"``): in
    order, shard by shard, at most :data:`ORBAX_PART_BYTES` per checkpoint. Returns item ->
    tensor names."""
    parts: dict[str, list[str]] = {}
    current: dict[str, tuple[int, int]] = {}  # shard -> (part, bytes in it)
    for name, entry in tensors.items():
        if entry["bits"] is None:
            continue
        size = _stored_bytes(entry)
        part, used = current.get(entry["file"], (0, 0))
        if used and used + size > ORBAX_PART_BYTES:
            part, used = part + 1, 0
        current[entry["file"]] = (part, used + size)
        entry["orbax"] = orbax_item(entry["file"], part)
        parts.setdefault(entry["orbax"], []).append(name)
    return parts


def _write_orbax(folder: Path, tensors: dict[str, dict[str, Any]]) -> None:
    """Save ``{NAME: QTensor}`` with Orbax in parts of at most :data:`ORBAX_PART_BYTES`
    (:func:`_plan_orbax`, which records each tensor's part in its entry).

    Orbax saves a pytree at once and holds about two copies of it while it does (measured: a
    1 GiB tree of memory-mapped leaves peaked at 2 GiB over the process), so a single
    checkpoint of a 7B model would hold the quantized model twice in memory; parts bound that
    to ~0.5 GiB. The leaves are memory maps of the shard just written. Compression is off:
    packed codes hardly compress, and zstd halved the save speed. Each save writes into a
    temporary folder of Orbax's own and renames it when done.
    """
    import orbax.checkpoint as ocp  # only here: Orbax is heavy, and reloading never needs it

    parts = _plan_orbax(tensors)
    handler = ocp.PyTreeCheckpointHandler(save_concurrent_gb=1, use_compression=False)
    checkpointer = ocp.Checkpointer(handler)  # synchronous: the export waits for it anyway
    maps: dict[str, dict[str, np.ndarray]] = {}
    try:
        for item, names in parts.items():
            file = tensors[names[0]]["file"]
            if file not in maps:
                maps = {file: _memmap_file(folder / file)}  # the last shard's maps dropped
            tree = {}
            for name in names:
                entry = tensors[name]
                stored = {
                    role: maps[file][entry["stored"][role]["name"]] for role in STORED_SUFFIXES
                }
                tree[name] = QTensor(
                    **stored,
                    shape=tuple(entry["shape"]),
                    bits=entry["bits"],
                    group_size=entry["group_size"],
                    symmetric=entry["symmetric"],
                )
            checkpointer.save(folder / item, args=ocp.args.PyTreeSave(tree))
            del tree
    finally:
        checkpointer.close()


def _quantization_json(
    *,
    model_format: str,
    config_file: str,
    source: dict[str, Any],
    bits: int,
    group_size: int,
    rules: list[dict[str, Any]] | None,
    shards: Sequence[str],
    copied: Sequence[str],
    tensors: dict[str, dict[str, Any]],
    report: WeightOnlyReport,
    activations: dict[str, Any] | None,
    orbax: bool,
) -> str:
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_format": model_format,
        "config_file": config_file,
        "source": source,
        "bits": int(bits),
        "group_size": int(group_size),
        "outlier_sigmas": OUTLIER_SIGMAS,
        "rules": rules,
        "shards": list(shards),
        "copied": list(copied),
        "tensors": tensors,
        "report": _report_json(report),
        "activations": activations,
        "orbax": ORBAX_DIR if orbax else None,
    }
    return _dump(document)


def _dump(document: dict[str, Any]) -> str:
    """JSON with one line per top-level field, per tensor and per block: readable and diffable
    for a 7B model's hundreds of tensors (``indent`` would give each shape a line per number)."""

    def compact(value: Any) -> str:
        return json.dumps(value, allow_nan=False)

    def lines(mapping: dict[str, Any], indent: str, expand: tuple[str, ...]) -> str:
        out = []
        for key, value in mapping.items():
            if key in expand and isinstance(value, dict):
                inner = ",\n".join(
                    f"{indent}  {compact(k)}: {compact(v)}" for k, v in value.items()
                )
                out.append(f"{indent}{compact(key)}: {{\n{inner}\n{indent}}}")
            elif key in expand and isinstance(value, list):
                inner = ",\n".join(f"{indent}  {compact(v)}" for v in value)
                out.append(f"{indent}{compact(key)}: [\n{inner}\n{indent}]")
            elif key == "report" and isinstance(value, dict):
                out.append(
                    f"{indent}{compact(key)}: {{\n{lines(value, indent + '  ', ('blocks',))}\n{indent}}}"
                )
            else:
                out.append(f"{indent}{compact(key)}: {compact(value)}")
        return ",\n".join(out)

    return "{\n" + lines(document, " ", ("tensors", "rules")) + "\n}\n"


def _tensor_entry(item_report: TensorRow, file: str, stored: dict[str, tuple]) -> dict:
    quantized = item_report.bits is not None
    return {
        "file": file,
        "shape": list(item_report.shape),
        "dtype": item_report.dtype,
        "bits": item_report.bits,
        "group_size": item_report.group_size,
        "symmetric": False if quantized else None,
        "rule": item_report.rule,
        "stored": {role: _entry_json(entry) for role, entry in stored.items()},
        "report": _figures(item_report),
    }


def _rules_json(rules: Sequence[QuantRule], quantizer: CheckpointQuantizer) -> list[dict]:
    texts = {rule.index: rule.text for rule in quantizer.plan.values() if rule is not None}
    return [dataclasses.asdict(rule) | {"text": texts.get(i)} for i, rule in enumerate(rules)]


def export_checkpoint(
    ckpt: Any,
    out_dir: str | os.PathLike[str],
    rules: Sequence[QuantRule],
    *,
    bits: int,
    group_size: int,
    activations: ActParams | None = None,
    layer_names: Sequence[str] | None = None,
    source: Mapping[str, Any] | None = None,
    orbax: bool = True,
    progress: Callable[[TensorRow], None] | None = None,
) -> tuple[Path, WeightOnlyReport]:
    """Quantize a Hugging Face checkpoint and write the quantized checkpoint (module doc).

    The source is streamed once: each tensor is read, quantized, measured and written before
    the next is read. Nothing named ``out_dir`` exists until the export is complete.

    Args:
        ckpt: the source (:func:`thermojax.models.hf.open_checkpoint`).
        out_dir: the folder to create; it must not exist or be empty.
        rules: the quantization rules, in order.
        bits: the run's bit width, for rules without one.
        group_size: the run's group size, for rules without one.
        activations: activation parameters to ship with the weights (an :class:`ActParams`,
            or anything with its ``scales``, ``zero_points``, ``edges``, ``bits``), or ``None``.
        layer_names: the names of the activation parameters' L layers, or ``None``.
        source: extra JSON-ready provenance recorded in ``quantization.json`` (the run's
            settings, say), beside the source's fingerprint and path.
        orbax: also save the quantized tensors as an Orbax checkpoint (``orbax/``).
        progress: called with each tensor's :class:`TensorRow` once it is quantized, just
            before it is written (a command's progress line).

    Returns:
        ``(out_dir, WeightOnlyReport)``.

    Raises:
        UserInputError: ``out_dir`` is not empty; a bad rule, bit width or group size, or bad
            activation parameters (all before anything is read); a CheckpointError from the
            source (NaN/Inf values, a file changed while reading).
    """
    out_dir = Path(out_dir)
    _check_target(out_dir)
    quantizer = CheckpointQuantizer(ckpt, rules, bits=bits, group_size=group_size)
    act_arrays = act_entry = None
    if activations is not None:
        try:
            act_arrays, act_entry = _activation_arrays(activations, layer_names, None)
        except ValueError as err:
            raise UserInputError(f"activations: {err}") from err
    provenance = {"fingerprint": ckpt.fingerprint(), "path": str(ckpt.path)}
    provenance |= dict(source or {})
    json.dumps(provenance)  # a TypeError now, not after the whole export

    companions = _companion_files(Path(ckpt.path))
    # What each shard holds, in the source's order (the order the stream reads them in).
    layout: dict[str, list[tuple[str, str, dict[str, tuple]]]] = {file: [] for file in ckpt.shards}
    owner: dict[str, tuple[str, str]] = {}
    for info in ckpt.tensors.values():
        rule = quantizer.plan[info.name]
        if rule is None:
            stored = {"values": (info.name, info.dtype, tuple(info.shape))}
        else:
            stored = stored_entries(info.name, tuple(info.shape), rule.bits, rule.group_size)
        layout[info.file].append((info.name, info.file, stored))
        for role, (entry_name, _, _) in stored.items():
            if entry_name in owner:
                raise UserInputError(
                    f"{info.file}: {entry_name}: the quantized tensors of "
                    f"{owner[entry_name][0]} would overwrite this tensor; rename or keep it"
                )
            owner[entry_name] = (info.name, role)

    def write(folder: Path) -> WeightOnlyReport:
        atomic_write_bytes(folder / _HF_CONFIG, ckpt.config_text.encode("utf-8"))
        for file in companions:
            shutil.copyfile(Path(ckpt.path) / file, folder / file)
        stream = iter(quantizer)
        current: list[QuantizedTensor | None] = [None]
        entries_json: dict[str, dict[str, Any]] = {}

        def produce(entry_name: str) -> np.ndarray:
            tensor, role = owner[entry_name]
            item = current[0]
            if item is None or item.info.name != tensor:
                current[0] = item = None  # drop the last tensor before reading the next
                item = next(stream)
                if item.info.name != tensor:  # the stream and the layout disagree: a bug
                    raise RuntimeError(f"expected {tensor}, the stream gave {item.info.name}")
                current[0] = item
                if progress is not None:
                    progress(item.report)
            if role == "values":
                return item.array
            return np.asarray(getattr(item.qtensor, role))

        weight_map: dict[str, str] = {}
        for file, members in layout.items():
            entries = [entry for _, _, stored in members for entry in stored.values()]
            write_safetensors(folder / file, entries, produce, metadata={"format": FORMAT})
            for _, _, stored in members:
                weight_map |= {entry[0]: file for entry in stored.values()}
        current[0] = None
        if next(stream, None) is not None:  # finishes the pass (and its clock)
            raise RuntimeError("the stream has tensors the layout does not")
        report = quantizer.report()
        reports = {t.name: t for t in report.tensors}
        for members in layout.values():
            for name, file, stored in members:
                entries_json[name] = _tensor_entry(reports[name], file, stored)
        if tuple(ckpt.shards) != (SINGLE_FILE,):
            stored_bytes = sum(
                math.prod(shape) * DTYPES[dtype].itemsize
                for members in layout.values()
                for _, _, stored in members
                for _, dtype, shape in stored.values()
            )
            write_index(folder, weight_map, stored_bytes)
        if act_arrays is not None:
            _write_activations(folder, act_arrays)
        with_orbax = orbax and report.model_cosine is not None  # Orbax refuses an empty tree
        if with_orbax:
            _write_orbax(folder, entries_json)
        text = _quantization_json(
            model_format=HF_FORMAT,
            config_file=_HF_CONFIG,
            source=provenance,
            bits=bits,
            group_size=group_size,
            rules=_rules_json(rules, quantizer),
            shards=list(ckpt.shards),
            copied=companions,
            tensors=entries_json,
            report=report,
            activations=act_entry,
            orbax=with_orbax,
        )
        atomic_write_text(folder / QUANTIZATION_FILE, text)
        return report

    return out_dir, _stage_and_publish(out_dir, write)


def _digits_spec(model: Any, bits: int, group_size: int) -> dict[str, Any]:
    """The digits ``model.json`` of ``model`` (as ``save_checkpoint`` writes it), plus where its
    quantized weights are described."""
    reference = model.reference
    return {
        **model.metadata,
        "denoiser": dataclasses.asdict(model.config),
        "schedule": dataclasses.asdict(model.schedule),
        "classifier": None if reference is None else dataclasses.asdict(reference.config),
        "quantization": {
            "format": FORMAT,
            "file": QUANTIZATION_FILE,
            "bits": int(bits),
            "group_size": int(group_size),
        },
    }


def _write_classifier(folder: Path, model: Any) -> None:
    """The digits checkpoint's ``classifier.safetensors``, as its writer writes it (same bytes)."""
    from flax import traverse_util
    from safetensors.numpy import save_file

    flat = traverse_util.flatten_dict(dict(model.reference.params), sep="/")
    arrays = {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()}
    with atomic_file(folder / _DIGITS_CLASSIFIER) as tmp:
        save_file(arrays, str(tmp), metadata={"format": DIGITS_FORMAT})


def export_digits(
    model: Any,
    out_dir: str | os.PathLike[str],
    qweights: Mapping[str, QTensor],
    *,
    bits: int,
    group_size: int,
    activations: ActParams | None = None,
    source_path: str | os.PathLike[str] | None = None,
    orbax: bool = True,
) -> Path:
    """Write the digits DDPM's quantized weights as a quantized checkpoint (module doc).

    ``quantization.json``'s ``source`` records the full-precision checkpoint (its path, ``null``
    for the shipped one, and :func:`~thermojax.pipeline.cache.stages.model_fingerprint`): a
    baseline run from the export samples the exported codes against that model's fp32 samples.

    Args:
        model: the digits model (:func:`thermojax.models.load_model`).
        out_dir: the folder to create; it must not exist or be empty.
        qweights: layer name -> QTensor of the transposed kernel, as
            :func:`~thermojax.pipeline.weights.quantize.quantize_weights` returns them.
        bits: their bit width.
        group_size: their group size.
        activations: the run's activation parameters (:class:`ActParams`, ``[L, S]`` for the
            model's layers), or ``None``.
        source_path: the folder ``model`` was loaded from, ``None`` for the shipped model.
        orbax: also save the QTensors as an Orbax checkpoint (``orbax/``).

    Returns:
        ``out_dir``.

    Raises:
        UserInputError: ``out_dir`` is not empty, or bad activation parameters.
        ValueError: ``qweights`` do not match the model's layers (a bug of the caller).
    """
    out_dir = Path(out_dir)
    _check_target(out_dir)
    names = tuple(model.layer_names)
    if set(qweights) != set(names):
        raise ValueError(f"qweights has layers {sorted(qweights)}, the model {list(names)}")
    kernels = model.quantizable_weights()
    for name in names:
        q, kernel_shape = qweights[name], tuple(np.shape(kernels[name]))
        if (q.shape, q.bits, q.group_size) != (kernel_shape[::-1], bits, group_size):
            raise ValueError(
                f"qweights[{name!r}] is shape {q.shape} at {q.bits} bits, group {q.group_size}; "
                f"expected {kernel_shape[::-1]} (the transposed kernel) at {bits}, {group_size}"
            )
    act_arrays = act_entry = None
    if activations is not None:
        try:
            act_arrays, act_entry = _activation_arrays(activations, names, model.num_timesteps)
        except ValueError as err:
            raise UserInputError(f"activations: {err}") from err

    from thermojax.pipeline.cache.stages import model_fingerprint

    source = {
        "model": model.name,
        "num_parameters": int(model.num_parameters()),
        "path": None if source_path is None else str(Path(source_path).expanduser().resolve()),
        "fingerprint": model_fingerprint(model),
    }
    reports, sums, arrays, tensors_json, entries = [], [], {}, {}, []
    for name in names:
        q = jax.tree.map(np.asarray, qweights[name])
        weight = np.asarray(kernels[name], np.float32).T
        tensor_sums = measure_qtensor(weight, q)
        source_name = f"{name}/kernel"
        report = TensorRow(
            name=name,
            shape=q.shape,
            dtype="F32",
            rule=f"digits: every layer's kernel, {bits} bits, group {group_size}",
            bits=bits,
            group_size=group_size,
            cosine=tensor_sums.cosine,
            sqnr_db=tensor_sums.sqnr_db,
            outlier_share=tensor_sums.outlier_share,
            source_bytes=4 * weight.size,
            quantized_bytes=storage_bytes(q),
            block=block_name(name),
        )
        stored = stored_entries(name, q.shape, bits, group_size)
        arrays |= {stored[role][0]: getattr(q, role) for role in STORED_SUFFIXES}
        bias_name = f"{name}/bias"
        bias = np.ascontiguousarray(np.asarray(model.params[name]["bias"], np.float32))
        bias_report = TensorRow(
            bias_name, bias.shape, "F32", None, None, None, None, None, None, bias.nbytes,
            bias.nbytes, block_name(bias_name),
        )  # fmt: skip
        arrays[bias_name] = bias
        bias_stored = {"values": (bias_name, "F32", bias.shape)}
        entries += [*stored.values(), *bias_stored.values()]
        tensors_json[name] = _tensor_entry(report, SINGLE_FILE, stored) | {
            "source_name": source_name,
            "source_shape": list(weight.shape[::-1]),
        }
        tensors_json[bias_name] = _tensor_entry(bias_report, SINGLE_FILE, bias_stored)
        reports += [report, bias_report]
        sums += [tensor_sums, TensorSums(0.0, 0.0, 0.0, 0, 0)]
    report = build_report(reports, sums, 0.0)

    def write(folder: Path) -> None:
        spec = _digits_spec(model, bits, group_size)
        text = json.dumps(spec, indent=2, sort_keys=True) + "\n"
        atomic_write_text(folder / _DIGITS_CONFIG, text)
        if model.reference is not None:
            _write_classifier(folder, model)
        write_safetensors(
            folder / SINGLE_FILE, entries, arrays.__getitem__, metadata={"format": FORMAT}
        )
        if act_arrays is not None:
            _write_activations(folder, act_arrays)
        if orbax:
            _write_orbax(folder, tensors_json)
        document = _quantization_json(
            model_format=DIGITS_FORMAT,
            config_file=_DIGITS_CONFIG,
            source=source,
            bits=bits,
            group_size=group_size,
            rules=None,
            shards=[SINGLE_FILE],
            copied=[],
            tensors=tensors_json,
            report=report,
            activations=act_entry,
            orbax=orbax,
        )
        atomic_write_text(folder / QUANTIZATION_FILE, document)

    _stage_and_publish(out_dir, write)
    return out_dir
