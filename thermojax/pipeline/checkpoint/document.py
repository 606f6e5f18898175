"""``quantization.json``: the map of an export (:mod:`~thermojax.pipeline.checkpoint.layout`), one
line per top-level field, per tensor and per block."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from thermojax.pipeline.checkpoint.layout import FORMAT, FORMAT_VERSION, ORBAX_DIR
from thermojax.pipeline.weights.rules import QuantRule
from thermojax.pipeline.weights.section import TensorRow
from thermojax.pipeline.weights.stream import OUTLIER_SIGMAS, CheckpointQuantizer, WeightOnlyReport

__all__ = ["quantization_json", "rules_json", "tensor_entry"]


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


def quantization_json(
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
    export_format: str | None = None,
) -> str:
    """The map's text; ``export_format`` (the layout of the stored tensors, recorded unless it
    is thermojax's own) is ``"compressed-tensors"`` or ``None``."""
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_format": model_format,
        "config_file": config_file,
        **({"export_format": export_format} if export_format is not None else {}),
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


def tensor_entry(item_report: TensorRow, file: str, stored: dict[str, tuple]) -> dict:
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


def rules_json(rules: Sequence[QuantRule], quantizer: CheckpointQuantizer) -> list[dict]:
    texts = {rule.index: rule.text for rule in quantizer.plan.values() if rule is not None}
    return [dataclasses.asdict(rule) | {"text": texts.get(i)} for i, rule in enumerate(rules)]
