"""Which model a run quantizes, and how it samples and calibrates: ``model.*``, ``sampling.*``,
``calibration.*``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Optional

from thermojax.models.base import SAMPLERS, SamplerSpec
from thermojax.models.masked_diffusion import UNMASKING_RULES
from thermojax.pipeline.settings.checks import (
    MAX_INT32,
    check_choice,
    check_count,
    check_number,
    fail,
)

__all__ = [
    "MAX_DEVICES",
    "MAX_HELDOUT_WINDOWS",
    "MODEL_DTYPES",
    "MODEL_RESIDENCIES",
    "MODEL_RUNS",
    "SHIPPED_MODELS",
    "CalibrationConfig",
    "DataConfig",
    "ModelConfig",
    "SamplingConfig",
    "sampler_specs",
    "samplers_of",
    "validate_model_choice",
]

# OmegaConf resolves the annotations itself; keep Optional (not `X | None`) for its type checker.


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which model to quantize.

    Attributes:
        name: display name in the reports (defaults to the model's own name when empty).
        path: checkpoint path; ``None`` is the shipped model ``shipped`` names.
        shipped: which model shipped with thermojax runs when ``path`` is ``None``:
            ``"digits"`` (the digits DDPM) or ``"pydoc-mdlm"`` (the byte-level masked-diffusion
            LM); ``model=<name>`` on the command line sets it.
        run: ``auto`` runs the digits DDPM and a masked-diffusion LM thermojax trained
            (``training.json`` beside it) and measures any other Hugging Face folder
            weight-only; ``diffusion`` runs a Qwen2 / Dream folder as a masked-diffusion LM
            (its parameters at ``dtype``); ``weight-only`` measures one without running it.
        dtype: the dtype a masked-diffusion LM's parameters are held in: ``bfloat16`` or
            ``float32``; ``None``: as stored in the checkpoint. Matmuls accumulate in float32
            either way.
        devices: local devices (GPUs, TPU cores, forced host devices) the parameters are laid
            over, along their hidden and intermediate axes; 1: one device.
        residency: whether a masked-diffusion LM run holds its full-precision reference and its
            quantized model ``together`` or one ``apart`` from the other (the quantized stages
            first, quantized straight from the checkpoint file, then the reference's): the same
            numbers, the memory of the larger of the two instead of both; ``auto``: together
            when both fit, else apart.
    """

    name: str = ""
    path: Optional[str] = None  # noqa: UP045
    shipped: str = "digits"
    run: str = "auto"
    dtype: Optional[str] = None  # noqa: UP045
    devices: int = 1
    residency: str = "auto"


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """Per-timestep calibration: how many sampler runs and stored values per step.

    Attributes:
        samples, samples_per_step: sampler runs, and values kept per layer and step.
        stats: for a checkpoint thermojax cannot run, a file of per-timestep activation
            statistics (:mod:`thermojax.pipeline.measure.activation_stats`) that gives the Markov metrics.
        sampler, steps, eta: the DDPM's sampler that calibration runs, when it differs from the
            one that samples (``sampling.*``); ``None`` each: the same as sampling's. The
            activation parameters live on the model's T timesteps, so ones calibrated on one
            sampler apply to any other.
    """

    samples: int = 128
    samples_per_step: int = 64
    stats: Optional[str] = None  # noqa: UP045
    sampler: Optional[str] = None  # noqa: UP045
    steps: Optional[int] = None  # noqa: UP045
    eta: Optional[float] = None  # noqa: UP045


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Sampling for the quality section and ``samples.npz`` (fp32 and quantized, same noise).

    Attributes:
        num_samples: N samples of each.
        sampler: ``None``: the model's own sampler (the model family resolves it: ``ddpm`` for
            the digits DDPM; a masked-diffusion LM's unmasking sampler); for a DDPM, ``ddpm``
            (ancestral, every one of the T timesteps) or ``ddim`` (``steps`` of them,
            :class:`thermojax.models.base.SamplerSpec`).
        steps: DDIM's steps S, 1 <= S <= T (``None``: T); a masked-diffusion LM's unmasking
            steps T (``None``: the model's default).
        eta: DDIM's noise, 0 (deterministic given the initial noise) .. 1.
        length: a masked-diffusion LM's sequence length L, prompt included (``None``: its
            default).
        unmasking: the LM's unmasking rule (``random``, ``confidence``, ``margin``,
            ``entropy``); ``None``: the model's default.
        temperature: the LM's sampling temperature (0: the most likely token); ``None``: the
            model's default.
        top_p: the LM's nucleus (``1``: off); ``None``: the model's default.
        prompt: text every LM sample starts with (encoded with the model's tokenizer).
        block_length: the LM's semi-autoregressive blocks (LLaDA's sampler): the generated
            positions are revealed block by block, left to right, each block's share of the
            steps within it; ``None``: one block.
    """

    num_samples: int = 64
    sampler: Optional[str] = None  # noqa: UP045
    steps: Optional[int] = None  # noqa: UP045
    eta: float = 0.0
    length: Optional[int] = None  # noqa: UP045
    unmasking: Optional[str] = None  # noqa: UP045
    temperature: Optional[float] = None  # noqa: UP045
    top_p: Optional[float] = None  # noqa: UP045
    prompt: str = ""
    block_length: Optional[int] = None  # noqa: UP045


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The text a masked-diffusion LM is measured and calibrated on (tokenized by its own
    tokenizer).

    Attributes:
        heldout: a UTF-8 text file whose windows give the held-out bound; ``None``: the held-out
            split of the corpus the shipped LM was trained on.
        calibration: a UTF-8 text file whose passages prompt the calibration runs; ``None``:
            calibration samples from the all-``[MASK]`` start, as sampling does.
        heldout_windows: the most windows of ``sampling.length`` tokens the held-out bound
            scores (each at 16 mask ratios: a 7B model on a CPU wants a few).
    """

    heldout: Optional[str] = None  # noqa: UP045
    calibration: Optional[str] = None  # noqa: UP045
    heldout_windows: int = 32


MAX_HELDOUT_WINDOWS = 4096
"""``data.heldout_windows``: the most held-out windows a bound scores."""


SHIPPED_MODELS = ("digits", "pydoc-mdlm", "digits-unet")
"""The models that ship with thermojax (``model.shipped``; ``model=<name>``)."""

MODEL_RUNS = ("auto", "diffusion", "weight-only")
"""``model.run``: how a checkpoint is measured (:class:`ModelConfig`)."""

MODEL_DTYPES = ("bfloat16", "float32")
"""``model.dtype``: the dtypes a masked-diffusion LM's parameters are held in."""
MODEL_RESIDENCIES = ("auto", "together", "apart")
"""``model.residency``: how a masked-diffusion LM run holds its reference and quantized model."""
MAX_DEVICES = 4096
"""``model.devices``: the most devices a run lays its parameters over."""


def samplers_of(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sampling and the calibration sampler of a resolved config dict, each
    ``{"sampler", "steps", "eta"}`` (``steps`` None: every timestep).

    Calibration takes ``calibration.*`` where given, else sampling's; a different sampler named
    there resets what it does not give (a ``ddpm`` calibration of a DDIM run runs every timestep).

    Example:
        >>> samplers_of({"sampling": {"sampler": "ddim", "steps": 50, "eta": 0.0},
        ...              "calibration": {"sampler": "ddpm", "steps": None, "eta": None}})[1]
        {'sampler': 'ddpm', 'steps': None, 'eta': 0.0}
    """
    sampling, calibration = config.get("sampling", {}), config.get("calibration", {})
    own = {
        # None, the model's own sampler, is its step at every timestep: SamplerSpec's ddpm.
        "sampler": sampling.get("sampler") or "ddpm",
        "steps": sampling.get("steps"),
        "eta": float(sampling.get("eta", 0.0)),
    }
    name = calibration.get("sampler")
    base = (
        own
        if name is None or name == own["sampler"]
        else {"sampler": name, "steps": None, "eta": 0.0}
    )
    steps, eta = calibration.get("steps"), calibration.get("eta")
    return own, {
        "sampler": base["sampler"],
        "steps": base["steps"] if steps is None else steps,
        "eta": base["eta"] if eta is None else float(eta),
    }


def sampler_specs(config: Mapping[str, Any]) -> tuple[SamplerSpec, SamplerSpec]:
    """The sampling and the calibration :class:`~thermojax.models.base.SamplerSpec` of a
    resolved config dict (:func:`samplers_of`)."""
    return tuple(SamplerSpec(s["sampler"], s["steps"], s["eta"]) for s in samplers_of(config))  # type: ignore[return-value]


def validate_model_choice(
    model: ModelConfig, sampling: SamplingConfig, calibration: CalibrationConfig
) -> None:
    """The shipped model's name and the samplers' settings (``model.*``, ``sampling.*``,
    ``calibration.*``)."""
    check_choice("model.shipped", model.shipped, SHIPPED_MODELS)
    check_choice("model.run", model.run, MODEL_RUNS)
    if model.dtype is not None:
        check_choice("model.dtype", model.dtype, MODEL_DTYPES)
    check_choice("model.residency", model.residency, MODEL_RESIDENCIES)
    check_count(
        "model.devices", model.devices, at_most=MAX_DEVICES, why="devices a run lays its model over"
    )
    if sampling.block_length is not None:
        check_count(
            "sampling.block_length",
            sampling.block_length,
            at_most=MAX_INT32,
            why="int32 positions",
        )
    for key in ("steps", "length"):
        value = getattr(sampling, key)
        if value is not None and value < (2 if key == "length" else 1):
            raise fail(f"sampling.{key}", value, f"must be >= {2 if key == 'length' else 1}")
    if sampling.unmasking is not None:
        check_choice("sampling.unmasking", sampling.unmasking, UNMASKING_RULES)
    if sampling.temperature is not None:
        check_number("sampling.temperature", sampling.temperature)
    top_p = sampling.top_p
    if top_p is not None and not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise fail("sampling.top_p", top_p, "must be in (0, 1]")
    for prefix, name, eta in (
        ("sampling", sampling.sampler, sampling.eta),
        ("calibration", calibration.sampler, calibration.eta),
    ):
        if name is not None:
            check_choice(f"{prefix}.sampler", name, SAMPLERS)
        if eta is not None and not (math.isfinite(eta) and 0.0 <= eta <= 1.0):
            raise fail(f"{prefix}.eta", eta, "must be in [0, 1]")
    if calibration.steps is not None and calibration.steps < 1:
        raise fail("calibration.steps", calibration.steps, "must be >= 1")
    for prefix, steps in (("sampling", sampling.steps), ("calibration", calibration.steps)):
        if steps is not None and steps > MAX_INT32:
            raise fail(f"{prefix}.steps", steps, f"must be <= {MAX_INT32} (int32 timesteps)")
    resolved = {
        "sampling": dataclasses.asdict(sampling),
        "calibration": dataclasses.asdict(calibration),
    }
    for prefix, spec in zip(("sampling", "calibration"), samplers_of(resolved), strict=True):
        if spec["sampler"] == "ddpm" and spec["eta"] != 0.0:
            raise fail(f"{prefix}.eta", spec["eta"], "is DDIM's noise: needs sampler=ddim")
