"""Reading and writing digits-DDPM checkpoints: a folder with ``model.json`` and safetensors.

Layout::

    model.json               format tag, architecture, schedule, training settings, quality
    denoiser.safetensors     "<layer>/kernel", "<layer>/bias" (float32, EMA weights)
    classifier.safetensors   the quality classifier's parameters
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from thermojax.errors import UserInputError
from thermojax.files import atomic_file, atomic_write_text
from thermojax.models.digits.classifier import ClassifierConfig, DigitsReference
from thermojax.models.digits.ddpm import DenoiserConfig, DigitsDDPM, NoiseSchedule
from thermojax.models.hf.headers import nonfinite_problem

__all__ = ["FORMAT", "SHIPPED_CHECKPOINT", "load_checkpoint", "save_checkpoint"]

FORMAT = "thermojax-digits-ddpm"
FORMAT_VERSION = 1
SHIPPED_CHECKPOINT = Path(__file__).parents[1] / "checkpoints" / "digits_ddpm"
_DENOISER_FILE = "denoiser.safetensors"
_CLASSIFIER_FILE = "classifier.safetensors"


def _flatten(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    flat = traverse_util.flatten_dict(dict(params), sep="/")
    return {k: np.ascontiguousarray(np.asarray(v, np.float32)) for k, v in flat.items()}


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def save_checkpoint(
    directory: str | os.PathLike[str],
    *,
    denoiser_config: DenoiserConfig,
    schedule_config: Mapping[str, Any],
    denoiser_params: Mapping[str, Any],
    classifier_config: ClassifierConfig,
    classifier_params: Mapping[str, Any],
    metadata: Mapping[str, Any],
) -> Path:
    """Write a checkpoint folder; each file is published atomically (``thermojax.files``)."""
    directory = Path(directory)
    spec = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "denoiser": dataclasses.asdict(denoiser_config),
        "schedule": dict(schedule_config),
        "classifier": dataclasses.asdict(classifier_config),
        **dict(metadata),
    }
    for name, params in ((_DENOISER_FILE, denoiser_params), (_CLASSIFIER_FILE, classifier_params)):
        with atomic_file(directory / name) as tmp:
            save_file(_flatten(params), str(tmp), metadata={"format": FORMAT})
    # model.json last: a reader that finds it finds the tensors it describes. Strict JSON: a
    # non-finite figure (a diverged loss) is refused here rather than written as NaN.
    text = json.dumps(spec, indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(directory / "model.json", text + "\n")
    return directory


def _read_spec(path: Path) -> tuple[Path, dict[str, Any]]:
    if not path.exists():
        raise UserInputError(f"model checkpoint path does not exist: {str(path)!r}")
    directory = path.parent if path.is_file() and path.name == "model.json" else path
    spec_file = directory / "model.json"
    if not directory.is_dir() or not spec_file.is_file():
        raise UserInputError(
            f"not a {FORMAT} checkpoint (expected a folder with model.json): {str(path)!r}"
        )
    try:
        spec = json.loads(spec_file.read_text(), parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserInputError(f"unreadable model.json in checkpoint {str(path)!r}: {exc}") from exc
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        found = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
        raise UserInputError(f"not a {FORMAT} checkpoint (format {found!r}) at {str(path)!r}")
    return directory, spec


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number (strict JSON has no NaN or Infinity)")


MAX_TIMESTEPS = 1_000_000
"""Most timesteps a checkpoint may declare: the schedule's arrays are made when it loads (5 x T
float64), and a DDPM beyond this is a typo, not a model."""


def _integer(section: Mapping[str, Any], key: str, where: str, *, low: int, high: int) -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bounds = f"= {low}" if low == high else f"in [{low}, {high}]"
        raise ValueError(f"{where}.{key} must be an integer {bounds}, got {value!r}")
    return value


_WIDTH = 1 << 20
"""Widest layer a checkpoint may declare (a typo beyond it would allocate before any check)."""


def _check_spec(spec: Mapping[str, Any]) -> None:
    """The values of ``model.json`` that load and sample, checked before anything is built.

    Raises:
        ValueError: the first value out of range, named as ``section.key`` with its value.
    """
    for section in ("schedule", "denoiser", "classifier"):
        if not isinstance(spec.get(section), Mapping):
            raise TypeError(f"{section} must be an object, got {spec.get(section)!r}")
    schedule = spec["schedule"]
    _integer(schedule, "num_timesteps", "schedule", low=1, high=MAX_TIMESTEPS)
    betas = []
    for key in ("beta_start", "beta_end"):
        value = schedule.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
            raise ValueError(f"schedule.{key} must be a number in (0, 1), got {value!r}")
        betas.append(float(value))
    if betas[0] > betas[1]:
        raise ValueError(
            f"schedule.beta_start={betas[0]!r} must not exceed schedule.beta_end={betas[1]!r}"
        )
    denoiser = spec["denoiser"]
    _integer(denoiser, "state_size", "denoiser", low=64, high=64)  # 8x8 digits
    for key in ("hidden", "time_dim", "num_blocks"):
        _integer(denoiser, key, "denoiser", low=1, high=_WIDTH)
    classifier = spec["classifier"]
    for key in ("hidden", "features"):
        _integer(classifier, key, "classifier", low=1, high=_WIDTH)
    _integer(classifier, "num_classes", "classifier", low=10, high=10)  # the ten digits


def _read_tensors(directory: Path, name: str) -> dict[str, np.ndarray]:
    """Every tensor of ``name``, each float32 with finite values (an all-zero or subnormal
    weight is legal: it samples, if badly; a NaN or Inf would end every sample as NaN)."""
    file = directory / name
    if not file.is_file():  # a FIFO would block the reader, a device feed it forever
        kind = "not a regular file" if file.exists() else "missing"
        raise UserInputError(f"cannot read {name} in checkpoint {str(directory)!r}: {kind}")
    try:
        tensors = load_file(str(file))
    except Exception as exc:  # safetensors raises several types for missing/corrupt files
        raise UserInputError(f"cannot read {name} in checkpoint {str(directory)!r}: {exc}") from exc
    for tensor, array in tensors.items():
        if array.dtype != np.float32:
            problem = f"dtype {array.dtype.name}, the format stores float32"
        else:
            problem = nonfinite_problem(array)
        if problem is not None:
            raise UserInputError(f"checkpoint {str(directory)!r}: {name}: {tensor}: {problem}")
    return tensors


def load_checkpoint(path: str | os.PathLike[str]) -> DigitsDDPM:
    """Load a digits DDPM checkpoint folder (or its ``model.json``).

    Raises:
        UserInputError: the path does not exist, is not a checkpoint of this model, or its
            tensors do not match the architecture in ``model.json``.
    """
    directory, spec = _read_spec(Path(path))
    try:
        _check_spec(spec)
        config = DenoiserConfig(**spec["denoiser"])
        schedule = NoiseSchedule.linear(**spec["schedule"])
        classifier_config = ClassifierConfig(**spec["classifier"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserInputError(f"malformed model.json in checkpoint {str(path)!r}: {exc}") from exc
    params = _unflatten(_read_tensors(directory, _DENOISER_FILE))
    classifier_params = _unflatten(_read_tensors(directory, _CLASSIFIER_FILE))
    for name, tensors, expected in (
        ("denoiser", params, _denoiser_shapes(config)),
        ("classifier", classifier_params, _classifier_shapes(classifier_config)),
    ):
        got = {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tensors, sep="/").items()}
        if got != expected:
            raise UserInputError(
                f"{name} tensors in {str(path)!r} do not match the architecture in model.json"
            )
    metadata = {k: v for k, v in spec.items() if k not in ("denoiser", "schedule", "classifier")}
    return DigitsDDPM.create(
        config,
        schedule,
        params,
        reference=DigitsReference(classifier_config, classifier_params),
        metadata=metadata,
    )


def _dense_shapes(names, widths_in, widths_out) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name, w_in, w_out in zip(names, widths_in, widths_out, strict=True):
        shapes[f"{name}/kernel"] = (w_in, w_out)
        shapes[f"{name}/bias"] = (w_out,)
    return shapes


def _denoiser_shapes(config: DenoiserConfig) -> dict[str, tuple[int, ...]]:
    names = config.layer_names()
    widths_out = [config.hidden] * (len(names) - 1) + [config.state_size]
    return _dense_shapes(names, config.layer_input_widths(), widths_out)


def _classifier_shapes(config: ClassifierConfig) -> dict[str, tuple[int, ...]]:
    return _dense_shapes(
        ("hidden", "features", "logits"),
        (64, config.hidden, config.features),
        (config.hidden, config.features, config.num_classes),
    )
