"""The masked-diffusion LM family: a Qwen2 / Dream Hugging Face folder run as a masked-diffusion
language model (one thermojax trained, with its ``training.json``, or any with
``model.run=diffusion``). Its samples are token sequences; it samples with its own unmasking
sampler, set by ``sampling.steps``, ``length``, ``unmasking``, ``temperature``, ``top_p`` and
``prompt``. Its quantized weights are exported by the weight-only run of its folder.

Example:
    >>> from thermojax.pipeline.settings import BaselineConfig, ModelConfig
    >>> MASKED_LM.recognises(BaselineConfig())  # the digits DDPM
    False
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from thermojax.errors import UserInputError
from thermojax.models import checkpoint_format
from thermojax.models.base import SamplerSpec
from thermojax.pipeline.checkpoint.layout import HF_FORMAT
from thermojax.pipeline.families.base import (
    DiffusionFamily,
    LoadedModel,
    check_model,
    register_family,
)
from thermojax.pipeline.quality.text import TEXT
from thermojax.pipeline.settings import BaselineConfig

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
    sampling_options = ("steps", "length", "unmasking", "temperature", "top_p", "prompt")
    weights_format = HF_FORMAT

    def recognises(self, config: BaselineConfig) -> bool:
        """A Hugging Face folder (``config.json``) that ``model.run`` runs: ``diffusion``, or
        ``auto`` on a folder thermojax trained (``training.json``)."""
        from thermojax.models.dream.diffusion import TRAINING_FILE

        if checkpoint_format(config.model.path) != "safetensors":
            return False
        if config.model.run != "auto":
            return config.model.run == "diffusion"
        trained_here = (Path(config.model.path).expanduser() / TRAINING_FILE).is_file()
        if not trained_here:
            log.info(
                "model.path=%s: measured weight-only (model.run=diffusion runs a Qwen2 / Dream "
                "checkpoint as a masked-diffusion LM)",
                config.model.path,
            )
        return trained_here

    def check(self, config: BaselineConfig) -> BaselineConfig:
        if config.export.path is not None:
            raise UserInputError(
                f"export.path={config.export.path!r}: a masked-diffusion LM's quantized "
                "checkpoint is written by the weight-only run of its folder (model.run=weight-only "
                "with export.path)"
            )
        return super().check(config)

    def load(self, config: BaselineConfig) -> LoadedModel:
        """The folder as a masked-diffusion LM with the run's sampler settings."""
        from thermojax.models.dream.diffusion import load_masked_diffusion

        sampling = config.sampling
        try:
            model = load_masked_diffusion(
                config.model.path,
                steps=sampling.steps,
                length=sampling.length,
                unmasking=sampling.unmasking,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                prompt=sampling.prompt,
                name=config.model.name or None,
            )
        except UserInputError as exc:
            raise UserInputError(f"model.path={config.model.path!r}: {exc}") from None
        check_model(config, model)
        log.info(
            "masked-diffusion LM %s: %d parameters, L=%d, T=%d steps, %s unmasking, layers %d",
            model.name,
            model.num_parameters(),
            model.length,
            model.num_timesteps,
            model.options.unmasking,
            len(model.layer_names),
        )
        return LoadedModel(model)

    def sampler_record(self, model: Any, spec: SamplerSpec) -> dict[str, Any]:
        """Its unmasking sampler: ``masked-diffusion unmasking (random), 64 steps``."""
        steps = spec.num_steps(int(model.num_timesteps))
        return {
            "sampler": "unmasking",
            "steps": steps,
            "description": (
                f"masked-diffusion unmasking ({model.options.unmasking}), {steps} steps"
            ),
        }

    def step_bytes(self, model: Any, num_samples: int) -> float:
        """The step's logits and their softmax, ``[N, L, vocab]`` float32 each."""
        return _LOGIT_COPIES * 4.0 * num_samples * int(model.state_size) * model.lm.vocab_size


MASKED_LM = register_family(MaskedLMFamily())
"""The masked-diffusion LM family."""
