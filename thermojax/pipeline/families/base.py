"""What a model family is to the pipeline: one adapter, which the pipeline calls and never inspects.

A family says how its folders are recognised, loaded and checked against the settings, which
kind of sample its models draw (:class:`~thermojax.pipeline.quality.kind.QualityKind`: how its
samples are compared with fp32, graded and shown), how its sampler is described, and how its
quantized checkpoints are written. :func:`thermojax.pipeline.run` asks the registered families
which one claims the configured model (:func:`recognise`) and runs it; the result, the report
and the console then know the samples only by their quality kind. Registration is open: a
family defined anywhere (a test's toy family among them) registers with
:func:`register_family` and runs through the same command.

Example:
    >>> from thermojax.pipeline.settings import BaselineConfig
    >>> recognise(BaselineConfig()).name  # the shipped digits DDPM
    'digits-ddpm'
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thermojax.core.quant import QTensor
from thermojax.core.timegroups import step_edges, uniform_edges
from thermojax.errors import UserInputError
from thermojax.models.base import DiffusionModel, SamplerSpec, SkippingModel
from thermojax.pipeline.families.registry import (
    ModelFamily,
    evaluate_quality,
    families,
    family_of,
    recognise,
    register_family,
)
from thermojax.pipeline.measure.sampling import ActParams
from thermojax.pipeline.quality.kind import QualityKind
from thermojax.pipeline.run.stages import ProgressCallback
from thermojax.pipeline.settings import BaselineConfig, check_model_limits, sampler_specs

if TYPE_CHECKING:
    from thermojax.pipeline.results.schema import Result

__all__ = [
    "MODEL_OPTIONS",
    "DiffusionFamily",
    "LoadedModel",
    "ModelFamily",
    "check_export_source",
    "check_model",
    "check_samplers",
    "evaluate_quality",
    "export_document",
    "export_source",
    "families",
    "family_of",
    "load_export",
    "recognise",
    "refuse_chain_budget",
    "refuse_model_settings",
    "refuse_quant_settings",
    "refuse_rotation",
    "refuse_sampling_settings",
    "refuse_text_data",
    "register_family",
    "with_export_settings",
]

log = logging.getLogger(__name__)

SAMPLING_OPTIONS = (
    "sampler",
    "steps",
    "eta",
    "length",
    "unmasking",
    "temperature",
    "top_p",
    "block_length",
)
"""``sampling.*`` keys that belong to a model's sampler (``num_samples`` belongs to every run);
``prompt`` too, when not empty. A family takes some of them (:attr:`DiffusionFamily.sampling_options`)."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A model to run, and the quantized codes it comes with (an exported checkpoint's, used as
    they are; ``None``: the run quantizes the weights)."""

    model: DiffusionModel
    qtensors: Mapping[str, QTensor] | None = None
    full_precision: Callable[[], DiffusionModel] | None = None
    """``None``, or for a run that holds the two apart (``model.residency``): ``model`` is
    the network without its full-precision linear layers (it quantizes them from the file and
    samples packed), and this reads them in, once the quantized stages are done."""


class DiffusionFamily:
    """A family whose models thermojax samples (:class:`ModelFamily`), with the defaults the
    diffusion run (:func:`thermojax.pipeline.run.diffusion.run_diffusion`) asks for.

    A subclass sets ``name``, ``description`` and ``quality`` and gives :meth:`recognises` and
    :meth:`load`; the rest has defaults: the sampler settings it takes (``sampling_options``)
    and the one ``sampling.sampler=null`` resolves to (``default_sampler``; ``None``: the
    model's own), the format its checkpoints are stored in (``weights_format``, in the
    result's ``weights.source``; the family's name by default), the sampler's description, no
    quantized-checkpoint format (``exports``: whether :meth:`export` writes one), no per-step
    working memory, no rotations (``rotates``: whether :meth:`rotate` gives its models the
    rotations of ``act.rotation=hadamard``), no chain error budget (``budgets_chain``).
    """

    name: str = ""
    description: str = ""
    quality: QualityKind
    sampling_options: tuple[str, ...] = ()
    model_options: tuple[str, ...] = ()
    """Which of ``model.dtype`` and ``model.devices`` (:data:`MODEL_OPTIONS`) it takes."""
    takes_text_data: bool = False
    """Whether it takes ``data.heldout`` and ``data.calibration`` (a language model's text)."""
    default_sampler: str | None = None
    weights_format: str = ""
    exports: bool = False
    export_formats: tuple[str, ...] = ("thermojax",)
    """The ``export.format`` values :meth:`export` writes."""
    rotates: bool = False
    masks_positions: bool = False
    """Whether its models have masked positions (``position_kinds``), for ``act.mask_aware``."""
    budgets_chain: bool = False
    """Whether ``thermo.chain_budget.enabled`` runs on its models (a float state, whose final
    error :func:`~thermojax.pipeline.measure.chain.chain_budget` measures)."""

    def __init__(self) -> None:
        if not self.weights_format:
            self.weights_format = self.name

    def recognises(self, config: BaselineConfig) -> bool:
        raise NotImplementedError

    def load(self, config: BaselineConfig) -> LoadedModel:
        """The model of ``config`` (one-line :class:`UserInputError` naming ``model.path`` when
        it cannot be loaded), checked against the settings that need it (:func:`check_model`)."""
        raise NotImplementedError

    def check(self, config: BaselineConfig) -> BaselineConfig:
        """Refuse sampler settings of other families, ``calibration.stats``, ``export.path``
        without a format to write, and ``act.rotation`` where the family does not rotate or
        ``model.path`` is a quantized checkpoint; fill in the default sampler."""
        if not self.budgets_chain:
            refuse_chain_budget(config, self.description)
        if config.act.mask_aware and not self.masks_positions:
            raise UserInputError(
                f"act.mask_aware=true: {self.description} has no masked positions (a "
                "masked-diffusion LM has; set act.mask_aware=false)"
            )
        if not self.rotates:
            refuse_rotation(config, self.description)
        elif config.act.rotation != "none" and export_document(config) is not None:
            raise UserInputError(
                f"act.rotation={config.act.rotation!r}: model.path={config.model.path!r} is a "
                "quantized checkpoint, whose codes were made without the rotation"
            )
        refuse_sampling_settings(config, self)
        refuse_model_settings(config, self.description, self.model_options)
        if not self.takes_text_data:
            refuse_text_data(config, self.description)
        if config.export.path is not None and not self.exports:
            raise UserInputError(
                f"export.path={config.export.path!r}: {self.description} has no quantized "
                "checkpoint format"
            )
        refuse_export_format(config, self.description, self.export_formats)
        if config.calibration.stats is not None:
            raise UserInputError(
                f"calibration.stats={config.calibration.stats!r}: only for checkpoints thermojax "
                "cannot run; this model is calibrated by running it"
            )
        if config.sampling.sampler is None and self.default_sampler is not None:
            sampling = dataclasses.replace(config.sampling, sampler=self.default_sampler)
            config = dataclasses.replace(config, sampling=sampling)
        return config

    def run(self, config: BaselineConfig, progress: ProgressCallback | None) -> Result:
        from thermojax.pipeline.run.diffusion import run_diffusion

        return run_diffusion(self, config, progress)

    def sampler_record(self, model: Any, spec: SamplerSpec) -> dict[str, Any]:
        """``Result.sampler``'s ``sampler``, ``steps`` (``eta``) and ``description`` of ``spec``
        on ``model``: for a family that takes ``sampling.sampler``, the named sampler's
        (``DDPM, 1000 steps``); else the model's own (``<family> sampler, 20 steps``)."""
        total = int(model.num_timesteps)
        if "sampler" in self.sampling_options:
            return {**spec.to_dict(total), "description": spec.describe(total)}
        steps = spec.num_steps(total)
        return {
            "sampler": self.name,
            "steps": steps,
            "description": f"{self.name} sampler, {steps} steps",
        }

    def export(
        self,
        config: BaselineConfig,
        model: Any,
        qweights: Mapping[str, QTensor],
        act_params: ActParams | None,
    ) -> Path:
        """Write the quantized checkpoint of a run to ``config.export.path``; returns it (a
        family with ``exports`` set gives it). ``act_params`` ``None``: no activation file
        (``act.mode=dynamic``)."""
        raise NotImplementedError

    def step_bytes(self, model: Any, num_samples: int) -> float:
        """Memory one sampler step of ``num_samples`` takes beyond the state (bytes)."""
        return 0.0

    def rotate(self, model: Any, seed: int) -> Any:
        """``model`` with the randomized Hadamard rotations of ``act.rotation=hadamard``, their
        signs from ``seed`` (the same seed, the same model): the same function within float32
        rounding, with activations that quantize better (a family with ``rotates`` set gives
        it)."""
        raise NotImplementedError

    def describe_rotation(self, model: Any) -> str:
        """What :meth:`rotate` did to ``model``, for the run log: which tensors it rotated and
        which layers' inputs get an online transform."""
        raise NotImplementedError


def check_model(config: BaselineConfig, model: DiffusionModel) -> None:
    """The settings that need the model's T: group and window limits, the samplers, the
    phase variants' names (an unknown one fails before any work).

    Raises:
        UserInputError: naming the key and its value.
    """
    from thermojax.pipeline.run.variants import build_variants

    check_model_limits(config, int(model.num_timesteps))
    check_samplers(config, model)
    if config.phases.enabled:
        build_variants(config)


def check_samplers(config: BaselineConfig, model: DiffusionModel) -> None:
    """The run's samplers against the model: DDIM only where the model can skip steps, steps
    within its T, every uniform time group visited by both, windows within the calibration steps.

    Raises:
        UserInputError: naming the key and its value.
    """
    total = int(model.num_timesteps)
    edges = uniform_edges(total, config.num_time_groups)
    for prefix, spec in zip(
        ("sampling", "calibration"), sampler_specs(config.to_dict()), strict=True
    ):
        if spec.name == "ddim" and not isinstance(model, SkippingModel):
            raise UserInputError(
                f"{prefix}.sampler=ddim: {model.name} runs its own sampler (sampling.steps sets "
                "its steps); use the default sampler"
            )
        try:
            steps = spec.timesteps(total)
        except ValueError as exc:
            raise UserInputError(f"{prefix}.{exc}") from None
        if len(steps) == total:
            continue
        try:
            step_edges(edges, steps)
        except ValueError as exc:
            raise UserInputError(
                f"num_time_groups={config.num_time_groups}: {exc} ({prefix}: "
                f"{spec.describe(total)})"
            ) from None
        if prefix == "calibration":
            try:
                check_model_limits(config, len(steps))
            except UserInputError as exc:
                raise UserInputError(f"{exc} (calibration runs {spec.describe(total)})") from None


def refuse_sampling_settings(config: BaselineConfig, family: DiffusionFamily) -> None:
    """A sampler setting ``family`` does not take, given: one line naming it, the families that
    take it, and what this family's sampler takes."""
    sampling = config.sampling
    defaults = type(sampling)()
    given = [
        key
        for key in (*SAMPLING_OPTIONS, "prompt")
        if getattr(sampling, key) != getattr(defaults, key)
    ]
    for key in given:
        if key in family.sampling_options:
            continue
        takers = [
            f.description
            for f in families()
            if key in getattr(f, "sampling_options", ()) and f is not family
        ]
        own = ", ".join(f"sampling.{k}" for k in family.sampling_options) or "no settings"
        raise UserInputError(
            f"sampling.{key}={getattr(sampling, key)!r}: only for "
            f"{' or '.join(takers) or 'other models'}; {family.description} runs its own sampler "
            f"({own})"
        )


MODEL_OPTIONS = ("dtype", "devices", "residency")
"""``model.*`` keys of how a model's parameters are held, which only some families take."""


def refuse_model_settings(config: BaselineConfig, what: str, takes: tuple[str, ...]) -> None:
    """``model.dtype`` or ``model.devices`` given to a family that does not take it (``takes``):
    one line naming it and ``what`` the model is."""
    defaults = type(config.model)()
    for key in MODEL_OPTIONS:
        value = getattr(config.model, key)
        if key not in takes and value != getattr(defaults, key):
            raise UserInputError(
                f"model.{key}={value!r}: only for a masked-diffusion LM run, not {what}"
            )


def refuse_export_format(config: BaselineConfig, what: str, formats: tuple[str, ...]) -> None:
    """An ``export.format`` that ``what`` has no writer for (``formats`` it has), with an
    ``export.path``: one line naming it."""
    chosen = config.export.format
    if config.export.path is not None and chosen not in formats:
        raise UserInputError(
            f"export.format={chosen!r}: {what} has no {chosen} writer (export.format="
            f"{' or '.join(formats)}; compressed-tensors is written for a masked-diffusion LM run "
            "or a Hugging Face checkpoint measured weight-only)"
        )


def refuse_rotation(config: BaselineConfig, what: str) -> None:
    """``act.rotation`` other than ``none`` given to ``what``, which has no rotations: one line
    naming it."""
    if config.act.rotation != "none":
        raise UserInputError(
            f"act.rotation={config.act.rotation!r}: {what} has no rotations (set act.rotation=none)"
        )


def refuse_chain_budget(config: BaselineConfig, what: str) -> None:
    """``thermo.chain_budget.enabled`` given to ``what``, whose final error the budget has no
    measure for: one line naming it, before any work."""
    if config.thermo.chain_budget.enabled:
        raise UserInputError(
            f"thermo.chain_budget.enabled={config.thermo.chain_budget.enabled!r}: {what} has no "
            "chain error budget (it measures a float final state: the digits DDPM's; set "
            "thermo.chain_budget.enabled=false)"
        )


def refuse_text_data(config: BaselineConfig, what: str) -> None:
    """``data.heldout``, ``data.calibration`` or ``data.heldout_windows`` (a language model's
    text) given to ``what``, which takes no text: one line naming it."""
    defaults = type(config.data)()
    for key in ("heldout", "calibration", "heldout_windows"):
        value = getattr(config.data, key)
        if value != getattr(defaults, key):
            raise UserInputError(
                f"data.{key}={value!r}: only for a masked-diffusion LM run, not {what}"
            )


def refuse_quant_settings(config: BaselineConfig, what: str) -> None:
    """``quant.*`` other than the defaults is for models thermojax quantizes and runs."""
    quant = config.quant
    if quant.method != "minmax":
        raise UserInputError(f"quant.method={quant.method!r}: not for {what}")
    if quant.keep_bits:
        raise UserInputError(f"quant.keep_bits={dict(quant.keep_bits)!r}: not for {what}")


def export_document(config: BaselineConfig) -> dict[str, Any] | None:
    """``quantization.json`` of ``model.path`` when it is a quantized checkpoint thermojax
    exported (parsed, not yet checked: :func:`load_export` checks it), else ``None``."""
    from thermojax.files import read_json_file
    from thermojax.models import checkpoint_format
    from thermojax.pipeline.checkpoint.layout import QUANTIZATION_FILE

    if checkpoint_format(config.model.path) != "quantized":
        return None
    try:
        document = read_json_file(Path(config.model.path).expanduser() / QUANTIZATION_FILE)
    except (OSError, ValueError):  # the loader names what is wrong with it
        return None
    return document if isinstance(document, dict) else None


def export_source(document: Mapping[str, Any]) -> dict[str, Any]:
    """The ``source`` record of an export's ``quantization.json`` (``{}`` when missing)."""
    source = document.get("source")
    return dict(source) if isinstance(source, Mapping) else {}


def with_export_settings(config: BaselineConfig, document: Mapping[str, Any]) -> BaselineConfig:
    """``config`` for a run of an exported checkpoint whose codes are used as they are: its own
    ``quant.*`` refused, and the ``quant`` section the export recorded (the settings that made
    its codes: ``source.quant``) filled in, so that the run reports them as the run that wrote
    the export did.

    Raises:
        UserInputError: ``quant.*`` given, or a recorded section that is not one.
    """
    refuse_quant_settings(config, "an exported checkpoint, whose codes are used as they are")
    recorded = export_source(document).get("quant")
    if recorded is None:  # exported before the settings were recorded
        return config
    from thermojax.pipeline.settings import QuantConfig

    try:
        if not isinstance(recorded, Mapping):
            raise TypeError(f"{type(recorded).__name__}, not an object")
        return dataclasses.replace(config, quant=QuantConfig(**recorded))
    except (TypeError, ValueError) as exc:  # UserInputError is a ValueError
        raise UserInputError(
            f"model.path={config.model.path!r}: quantization.json: source.quant is not the "
            f"quant settings of a run ({exc})"
        ) from None


def load_export(config: BaselineConfig) -> Any:
    """The quantized checkpoint of ``model.path``, reloaded bit for bit
    (:func:`~thermojax.pipeline.checkpoint.reload.load_quantized`), checked against the run's
    ``bit_width`` / ``group_size`` (those of the run that wrote it).

    Raises:
        UserInputError: the export is unreadable; ``bit_width`` / ``group_size`` that contradict
            it; an ``export.path`` (it is a quantized checkpoint already).
    """
    from thermojax.pipeline.checkpoint.reload import load_quantized

    where = f"model.path={config.model.path!r}"
    if config.export.path is not None:
        raise UserInputError(
            f"export.path={config.export.path!r}: {where} is already a quantized checkpoint"
        )
    try:
        exported = load_quantized(Path(config.model.path).expanduser())
    except UserInputError as exc:
        raise UserInputError(f"{where}: {exc}") from None
    document = exported.quantization
    bits, group_size = document.get("bits"), document.get("group_size")
    if (config.bit_width, config.group_size) != (bits, group_size):
        raise UserInputError(
            f"bit_width={config.bit_width} group_size={config.group_size}: {where} holds "
            f"{bits}-bit weights in groups of {group_size}; run it with bit_width={bits} "
            f"group_size={group_size}"
        )
    return exported


def check_export_source(config: BaselineConfig, shown: str, found: str, recorded: Any) -> None:
    """The full-precision model an export's reference samples come from must be the one it was
    exported from: its fingerprint ``found`` equal to the ``recorded`` one.

    Raises:
        UserInputError: naming ``model.path`` and the source (``shown``).
    """
    if found != recorded:
        raise UserInputError(
            f"model.path={config.model.path!r}: its full-precision source {shown} is not the "
            "model it was exported from (fingerprints differ); the reference samples need "
            "that model"
        )
