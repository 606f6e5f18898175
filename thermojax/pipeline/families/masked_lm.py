"""The masked-diffusion LM family: a Qwen2 / Dream or LLaDA Hugging Face folder run as a
masked-diffusion language model (one thermojax trained, with its ``training.json``, or any with
``model.run=diffusion``), or a quantized checkpoint thermojax exported from one (its codes are
run as they are, against the full-precision source's fp32 samples). Its samples are token
sequences; it samples with its own unmasking sampler, set by ``sampling.steps``, ``length``,
``unmasking``, ``temperature``, ``top_p``, ``prompt`` and ``block_length`` (LLaDA's
semi-autoregressive blocks). It exports the codes it sampled in its
source's Hugging Face layout (:mod:`~thermojax.pipeline.checkpoint.export_lm`).
``act.rotation=hadamard`` rotates its residual stream in the weights and gives each MLP down
projection an online Hadamard transform (:func:`~thermojax.models.dream.rotation.rotate_lm`).

Example:
    >>> from thermojax.pipeline.settings import BaselineConfig, ModelConfig
    >>> MASKED_LM.recognises(BaselineConfig())  # the digits DDPM
    False
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thermojax.core.quant import QTensor
from thermojax.errors import UserInputError
from thermojax.models import checkpoint_format, shipped_path
from thermojax.models.base import SamplerSpec
from thermojax.pipeline.checkpoint.compressed_tensors import COMPRESSED_TENSORS
from thermojax.pipeline.checkpoint.layout import HF_FORMAT
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
from thermojax.pipeline.quality.text import TEXT
from thermojax.pipeline.settings import MODEL_DTYPES, BaselineConfig

__all__ = ["MASKED_LM", "MaskedLMFamily"]

log = logging.getLogger(__name__)

_LOGIT_COPIES = 3
"""Per-step ``[N, L, vocab]`` float32 arrays of a masked-diffusion step: logits, softmax, the
sampling's working copy."""


class MaskedLMFamily(DiffusionFamily):
    """The masked-diffusion LM (module doc)."""

    name = "masked-diffusion-lm"
    description = "a masked-diffusion LM"
    quality = TEXT
    sampling_options = (
        "steps",
        "length",
        "unmasking",
        "temperature",
        "top_p",
        "prompt",
        "block_length",
    )
    model_options = ("dtype", "devices", "residency")
    takes_text_data = True
    weights_format = HF_FORMAT
    exports = True
    export_formats = ("thermojax", COMPRESSED_TENSORS)
    rotates = True
    masks_positions = True

    def recognises(self, config: BaselineConfig) -> bool:
        """A Hugging Face folder (``config.json``) that ``model.run`` runs: ``diffusion``, or
        ``auto`` on a folder thermojax trained (``training.json``); or a quantized checkpoint
        exported from a run of one (not with ``model.run=weight-only``)."""
        from thermojax.models.dream.diffusion import TRAINING_FILE

        if checkpoint_format(config.model.path) == "quantized":
            return config.model.run != "weight-only" and self._export_document(config) is not None
        if checkpoint_format(config.model.path) != "safetensors":
            return False
        if config.model.run != "auto":
            return config.model.run == "diffusion"
        trained_here = (Path(config.model.path).expanduser() / TRAINING_FILE).is_file()
        if not trained_here:
            log.info(
                "model.path=%s: measured weight-only (model.run=diffusion runs a Qwen2 / Dream "
                "or LLaDA checkpoint as a masked-diffusion LM)",
                config.model.path,
            )
        return trained_here

    def _export_document(self, config: BaselineConfig) -> dict[str, Any] | None:
        """``quantization.json`` of ``model.path`` when it is an export of this family's run."""
        document = export_document(config)
        if document is None or document.get("model_format") != HF_FORMAT:
            return None
        return document if export_source(document).get("family") == self.name else None

    def check(self, config: BaselineConfig) -> BaselineConfig:
        document = self._export_document(config)
        if document is not None:
            config = with_export_settings(config, document)
            # The source runs at the dtype of the run that exported it (recorded since
            # model.dtype exists), which its network fingerprint holds (another model.dtype
            # given is refused by that fingerprint).
            recorded = export_source(document).get("dtype")
            if config.model.dtype is None and recorded in MODEL_DTYPES:
                model = dataclasses.replace(config.model, dtype=recorded)
                config = dataclasses.replace(config, model=model)
        return super().check(config)

    def load(self, config: BaselineConfig) -> LoadedModel:
        """The folder as a masked-diffusion LM with the run's sampler settings; for an export,
        its full-precision source with the exported codes."""
        if self._export_document(config) is not None:
            return self._exported(config)
        model = self._load_model(config, config.model.path, "model.path")
        if model.linear_source is None:
            return LoadedModel(model)
        # Held apart: the run quantizes from the file and samples the packed model first, then
        # reads the linear layers in for the full-precision stages.
        return LoadedModel(model, full_precision=model.full_precision)

    def _exported(self, config: BaselineConfig) -> LoadedModel:
        """An exported checkpoint (``model.path``) and the full-precision LM it was exported
        from (its ``source``: the shipped LM by name, else by path), which the reference samples
        need; the exported codes are used as they are.

        Raises:
            UserInputError: the export is unreadable, or contradicts the settings
                (:func:`load_export`); its source is missing, is not the network it was
                exported from (fingerprint), or lacks a layer the export holds.
        """
        from thermojax.pipeline.cache.stages import network_fingerprint

        exported = load_export(config)
        source = export_source(exported.quantization)
        shipped = source.get("shipped") if isinstance(source.get("shipped"), str) else None
        try:
            path = shipped_path(shipped) if shipped else source.get("path")
        except UserInputError:
            path = source.get("path")
        shown = f"the shipped {shipped}" if shipped else str(path)
        where = f"model.path={config.model.path!r}: its full-precision source {shown}"
        if not isinstance(path, str | Path):
            raise UserInputError(f"{where}: quantization.json records no source path")
        model = self._load_model(
            config,
            path,
            f"{where} (needed for the reference samples)",
            together_by=f"model.path={config.model.path!r} (a quantized checkpoint)",
        )
        found = network_fingerprint(model.lm)
        check_export_source(config, shown, found, source.get("network_fingerprint"))
        if set(exported.qtensors) != set(model.layer_names):
            raise UserInputError(
                f"{where}: the export's quantized tensors are not the model's linear layers"
            )
        log.info("quantized checkpoint %s of %s (%s)", exported.path, model.name, shown)
        return LoadedModel(model, qtensors=dict(exported.qtensors))

    def _load_model(
        self, config: BaselineConfig, path: Any, where: str, *, together_by: str | None = None
    ) -> Any:
        """The folder ``path`` as a masked-diffusion LM with the run's sampler settings: whole,
        or without its linear layers when the run holds the reference and the quantized model
        apart (``model.residency``; ``together_by``: a reason it may not, besides the settings
        :func:`_together_by` names).

        Raises:
            UserInputError: it cannot be loaded (``where`` names it), or the settings do not
                fit it.
        """
        from thermojax.models.dream.loading import load_masked_diffusion, trained_length
        from thermojax.models.dream.sharding import model_mesh, shard_lm
        from thermojax.models.dream.text_data import TextDataError
        from thermojax.models.hf.headers import CheckpointError
        from thermojax.pipeline.measure.model_memory import check_lm_memory, plan_checkpoint

        def unreadable(exc: UserInputError) -> UserInputError:
            if where == "model.path":
                return UserInputError(f"model.path={config.model.path!r}: {exc}")
            return UserInputError(f"{where} cannot be loaded: {exc}")

        sampling = config.sampling
        try:  # the headers alone: the run is planned before a weight is read
            plan = plan_checkpoint(
                str(path),
                dtype=config.model.dtype,
                bits=config.bit_width,
                group_size=config.group_size,
                num_samples=int(sampling.num_samples),
                length=sampling.length or trained_length(path),
                heldout_windows=config.data.heldout_windows,
            )
        except CheckpointError as exc:
            raise unreadable(exc) from None
        devices = config.model.devices
        try:
            model_mesh(devices)
        except ValueError as exc:
            raise UserInputError(f"model.{exc}") from None
        # Refuses a run that cannot fit, naming the setting; else says how it holds the models.
        residency = check_lm_memory(
            plan,
            devices=devices,
            residency=config.model.residency,
            together_by=together_by or _together_by(config),
        )
        try:
            model = load_masked_diffusion(
                path,
                steps=sampling.steps,
                length=sampling.length,
                unmasking=sampling.unmasking,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                prompt=sampling.prompt,
                name=config.model.name or None,
                heldout=config.data.heldout,
                calibration=config.data.calibration,
                heldout_windows=config.data.heldout_windows,
                block_length=sampling.block_length,
                dtype=config.model.dtype,
                linear=residency == "together",
            )
        except TextDataError:
            raise  # names its data.* key and file itself
        except UserInputError as exc:
            raise unreadable(exc) from None
        check_model(config, model)
        if devices > 1:
            model = model.replace(lm=shard_lm(model.lm, devices))
            log.info("parameters laid over %d devices (%s)", devices, model_mesh(devices).devices)
        log.info(
            "masked-diffusion LM %s: %d parameters%s, L=%d, T=%d steps, %s unmasking, layers %d",
            model.name,
            model.num_parameters(),
            "" if model.linear_source is None else " in memory (the linear layers read later)",
            model.length,
            model.num_timesteps,
            model.options.unmasking,
            len(model.layer_names),
        )
        if model.reference is not None:
            log.info("held-out text: %s", model.reference.description)
        if model.calibration_prompts is not None:
            log.info("calibration prompted by %s", model.calibration_prompts.describe())
        return model

    def export(
        self,
        config: BaselineConfig,
        model: Any,
        qweights: Mapping[str, QTensor],
        act_params: ActParams | None,
    ) -> Path:
        """The codes the run sampled, in the source's Hugging Face layout
        (:func:`~thermojax.pipeline.checkpoint.export_lm.export_masked_lm`; thermojax's own or
        compressed-tensors', ``export.format``); the source recorded by its shipped name when it
        is a shipped model."""
        from thermojax.pipeline.checkpoint.export_lm import export_masked_lm

        source = Path(config.model.path).expanduser().resolve()
        shipped = config.model.shipped
        is_shipped = shipped != type(config.model)().shipped and source == (
            shipped_path(shipped).resolve()
        )
        return export_masked_lm(
            model,
            Path(config.export.path).expanduser(),
            qweights,
            source_path=source,
            bits=config.bit_width,
            group_size=config.group_size,
            activations=act_params,
            source={
                "shipped": shipped if is_shipped else None,
                "quant": dataclasses.asdict(config.quant),
                "dtype": config.model.dtype,
            },
            orbax=config.export.orbax,
            export_format=config.export.format,
        )

    def rotate(self, model: Any, seed: int) -> Any:
        """The network rotated QuaRot-style (:func:`~thermojax.models.dream.rotation.rotate_lm`:
        norms folded, residual stream rotated, online Hadamard before each MLP down
        projection), with the key ``jax.random.key(seed)``."""
        import jax

        from thermojax.models.dream.rotation import rotate_lm

        return model.replace(lm=rotate_lm(model.lm, key=jax.random.key(seed)))

    def describe_rotation(self, model: Any) -> str:
        online = model.lm.online_hadamard
        return (
            "residual stream rotated in the weights (RMSNorm scales folded), online Hadamard "
            f"before the {len(online)} MLP down projections ({', '.join(online)})"
        )

    def sampler_record(self, model: Any, spec: SamplerSpec) -> dict[str, Any]:
        """Its unmasking sampler: ``masked-diffusion unmasking (random), 64 steps``, or with
        LLaDA's blocks ``masked-diffusion unmasking (low-confidence, blocks of 32), 64 steps``."""
        steps = spec.num_steps(int(model.num_timesteps))
        options = model.options
        blocks = "" if options.block_length is None else f", blocks of {options.block_length}"
        return {
            "sampler": "unmasking",
            "steps": steps,
            "description": (
                f"masked-diffusion unmasking ({options.unmasking}{blocks}), {steps} steps"
            ),
        }

    def step_bytes(self, model: Any, num_samples: int) -> float:
        """The step's logits and their softmax, ``[N, L, vocab]`` float32 each."""
        return _LOGIT_COPIES * 4.0 * num_samples * int(model.state_size) * model.lm.vocab_size


MASKED_LM = register_family(MaskedLMFamily())
"""The masked-diffusion LM family."""


def _together_by(config: BaselineConfig) -> str | None:
    """The setting that needs the reference and the quantized model at once, or ``None``:
    GPTQ (the dense weights beside their Hessians), the enhanced parameters and the phase
    experiment (more quantized sampling after the reference's), parameters laid over devices,
    a rotation (it rewrites every tensor of the network)."""
    if config.act.rotation != "none":
        return f"act.rotation={config.act.rotation}"
    if config.quant.method == "gptq":
        return "quant.method=gptq"
    if config.enhanced:
        return "thermo.* / time_groups.* (the enhanced parameters)"
    if config.phases.enabled:
        return "phases.enabled=true"
    if config.model.devices > 1:
        return f"model.devices={config.model.devices}"
    return None
