"""The digits DDPM family: a ``model.json`` folder (the shipped one when ``model.path`` is
unset), or a quantized checkpoint thermojax exported from one (its codes are run as they are,
against the full-precision source's fp32 samples). Its samples are images; it samples with
``ddpm`` (every timestep) or ``ddim``; it exports its quantized weights with the digits
``model.json``; ``act.rotation=hadamard`` gives its residual blocks online rotations; its image
state has the chain's error budget (``thermo.chain_budget``).

Example:
    >>> from thermojax.pipeline.settings import BaselineConfig
    >>> DIGITS.recognises(BaselineConfig()), DIGITS.check(BaselineConfig()).sampling.sampler
    (True, 'ddpm')
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thermojax.core.quant import QTensor
from thermojax.errors import UserInputError
from thermojax.models import checkpoint_format, load_model
from thermojax.pipeline.checkpoint.layout import DIGITS_FORMAT
from thermojax.pipeline.families.base import (
    DiffusionFamily,
    LoadedModel,
    check_export_source,
    check_model,
    export_document,
    export_source,
    load_export,
    register_family,
    with_export_settings,
)
from thermojax.pipeline.measure.sampling import ActParams
from thermojax.pipeline.quality.image import IMAGE
from thermojax.pipeline.settings import BaselineConfig

__all__ = ["DIGITS", "DigitsFamily"]

log = logging.getLogger(__name__)


def _is_export(config: BaselineConfig) -> bool:
    document = export_document(config)
    return document is not None and document.get("model_format") == DIGITS_FORMAT


class DigitsFamily(DiffusionFamily):
    """The digits DDPM (module doc)."""

    name = "digits-ddpm"
    description = "the digits DDPM"
    quality = IMAGE
    sampling_options = ("sampler", "steps", "eta")
    default_sampler = "ddpm"
    weights_format = DIGITS_FORMAT
    exports = True
    rotates = True
    budgets_chain = True

    def recognises(self, config: BaselineConfig) -> bool:
        path = config.model.path
        if checkpoint_format(path) == "quantized":
            return _is_export(config)
        return path is None or (Path(path).expanduser() / "model.json").is_file()

    def check(self, config: BaselineConfig) -> BaselineConfig:
        document = export_document(config)
        if document is not None and document.get("model_format") == DIGITS_FORMAT:
            config = with_export_settings(config, document)
        config = super().check(config)
        if config.model.run == "weight-only":
            raise UserInputError(
                "model.run=weight-only: the digits DDPM is run, not measured weight-only "
                "(that is for Hugging Face folders)"
            )
        return config

    def load(self, config: BaselineConfig) -> LoadedModel:
        if _is_export(config):
            return _exported(config)
        try:
            model = load_model(config.model.path)
        except UserInputError as exc:
            raise UserInputError(f"model.path={config.model.path!r}: {exc}") from None
        check_model(config, model)
        log.info("model %s: T=%d, layers %s", model.name, model.num_timesteps, model.layer_names)
        return LoadedModel(model)

    def rotate(self, model: Any, seed: int) -> Any:
        """An online rotation before each residual block
        (:func:`~thermojax.models.digits.rotation.rotate_digits`), signs from ``seed``."""
        from thermojax.models.digits.rotation import rotate_digits

        return rotate_digits(model, seed=seed)

    def describe_rotation(self, model: Any) -> str:
        return f"online rotation before {', '.join(model.online_rotation)}"

    def export(
        self,
        config: BaselineConfig,
        model: Any,
        qweights: Mapping[str, QTensor],
        act_params: ActParams | None,
    ) -> Path:
        from thermojax.pipeline.checkpoint.export_digits import export_digits

        return export_digits(
            model,
            Path(config.export.path).expanduser(),
            qweights,
            bits=config.bit_width,
            group_size=config.group_size,
            activations=act_params,
            source_path=config.model.path,
            settings={"quant": dataclasses.asdict(config.quant)},
            orbax=config.export.orbax,
        )


def _exported(config: BaselineConfig) -> LoadedModel:
    """A digits DDPM's quantized checkpoint (``model.path``) and the full-precision model it
    was exported from (its ``source``), which the reference samples need.

    Raises:
        UserInputError: the export is unreadable; its source model is missing or is not the
            one it was exported from (fingerprint); ``bit_width`` / ``group_size`` / ``export.path``
            that contradict it; limits the source's T breaks.
    """
    from thermojax.pipeline.cache.stages import model_fingerprint

    exported = load_export(config)
    source = export_source(exported.quantization)
    shown = source.get("path") or "the shipped digits DDPM"
    try:
        model = load_model(source.get("path"))
    except UserInputError as exc:
        raise UserInputError(
            f"model.path={config.model.path!r}: its full-precision source {shown} (needed for "
            f"the reference samples) cannot be loaded: {exc}"
        ) from None
    check_export_source(config, shown, model_fingerprint(model), source.get("fingerprint"))
    check_model(config, model)
    log.info("quantized checkpoint %s of %s (%s)", exported.path, model.name, shown)
    return LoadedModel(model, qtensors=dict(exported.qtensors))


DIGITS = register_family(DigitsFamily(), fallback=True)
"""The digits DDPM family (also the family of a folder no other family claims: its loader
says what the folder lacks)."""
