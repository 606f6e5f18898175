"""How activations are quantized while the quantized model samples and is scored, and what
rotates them first: ``act.*``.

Each setting is one field of :class:`ActConfig` with a default that keeps the numbers of runs
made before the setting existed; the stage cache leaves a setting out of its quality key while it
holds that value (:data:`thermojax.pipeline.cache.stages.KEYS_ADDED_LATER`), so adding one
re-keys nothing.
"""

from __future__ import annotations

import dataclasses

from thermojax.core.quant import ACT_MODES
from thermojax.errors import UserInputError
from thermojax.pipeline.settings.checks import check_choice, fail

__all__ = ["ACT_GRANULARITIES", "ACT_MODES", "ACT_ROTATIONS", "ActConfig", "validate_act"]

ACT_GRANULARITIES = ("tensor", "channel")
"""What one activation scale and zero point covers within a layer and time group: the layer's
whole input (``tensor``) or one of ``act.channel_groups`` blocks of its input channels
(``channel``)."""

ACT_ROTATIONS = ("none", "hadamard")
"""What the model's activations are rotated by before they are quantized: ``none`` or
``hadamard`` (randomized Hadamard rotations, QuaRot-style; :class:`ActConfig`)."""


@dataclasses.dataclass(frozen=True)
class ActConfig:
    """Activation quantization at ``act_bits``, the baseline's and the alternatives'.

    Attributes:
        mode: ``static`` (each layer's input fake-quantized with the scale and zero point of the
            step's time group, calibrated: what thermojax is for) or ``dynamic`` (each token, a
            row over the last axis, with its own min/max range measured inside the sampler step:
            no calibrated parameters, no time groups; the usual LLM practice, run as the
            baseline to beat). Calibration, the time groups and their Markov metrics are still
            computed and reported in ``dynamic`` mode: they describe the static parameters,
            which then do not sample.
        rotation: ``none``, or ``hadamard``: the loaded model is replaced by one with
            randomized Hadamard rotations that compute the same function (within float32
            rounding) from activations with fewer outliers, before anything else sees it, so
            the weight quantizer (GPTQ included), calibration, the fp32 reference samples and
            the quantized samples all run the rotated model. On a masked-diffusion LM the
            residual stream is rotated in the weights (RMSNorm scales folded into the layers
            reading them, :func:`~thermojax.models.dream.rotation.rotate_lm`) and each MLP down
            projection's input gets an online Hadamard transform; on the digits DDPM each
            residual block's input gets an online rotation
            (:func:`~thermojax.models.digits.rotation.rotate_digits`). The signs come from the
            run's ``seed``: the same config and seed, the same model. Not for a family that
            does not rotate, an exported checkpoint (``model.path``, whose codes were made
            without it, or ``export.path``, which does not record it yet), parameters held
            apart (``model.residency=apart``) or laid over devices (``model.devices>1``).
        mask_aware: a masked-diffusion LM's masked and unmasked positions get their own scale
            and zero point in each time group and layer (their inputs differ within a step:
            the mask embedding's hidden states against the tokens'): calibrated apart, chosen
            per position at every step (the sampler knows which positions are masked), and
            reported as ``2 L`` rows (each layer, then each layer's masked positions, named
            ``"<layer> [masked]"``) with Markov metrics over all of them. Static mode only; not
            with the enhancements, the phase experiment or an export (they hold one parameter
            set per layer), and only for a family with masked positions.
        granularity: ``tensor`` (one scale and zero point per layer and time group) or
            ``channel``: one per block of ``channel_groups`` equal blocks of each layer's input
            channels (contiguous; ``channel_groups`` equal to the input width is one per
            channel), calibrated per block and reported as ``K L`` rows
            (``"<layer> [channels k/K]"``), the Markov metrics over all of them. Static mode
            only; not with ``mask_aware``, the enhancements, the phase experiment or an export.
        channel_groups: K, the blocks of ``granularity=channel``; it must divide every layer's
            input width.
    """

    mode: str = "static"
    rotation: str = "none"
    mask_aware: bool = False
    granularity: str = "tensor"
    channel_groups: int = 8


def validate_act(
    act: ActConfig,
    *,
    enhanced: bool,
    phases: bool,
    export_path: str | None = None,
    devices: int = 1,
) -> None:
    """``act.*``, with what the static parameters' enhancements and experiment need, and what
    a rotation cannot be combined with yet.

    Args:
        enhanced: smoothing, optimization or adaptive groups are on (they reshape the static
            parameters, which ``dynamic`` mode does not sample with).
        phases: the phase experiment is on (it compares static parameter variants).
        export_path: ``export.path`` (an export does not record a rotation yet).
        devices: ``model.devices`` (a rotation is untested on parameters laid over devices).
    """
    check_choice("act.mode", act.mode, ACT_MODES)
    check_choice("act.rotation", act.rotation, ACT_ROTATIONS)
    if not isinstance(act.mask_aware, bool):
        raise fail("act.mask_aware", act.mask_aware, "must be true or false")
    check_choice("act.granularity", act.granularity, ACT_GRANULARITIES)
    groups = act.channel_groups
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise fail("act.channel_groups", groups, "must be an integer >= 1")
    # Both split a layer's parameters into several sets, which only static sampling uses.
    splits = [("act.granularity=channel", act.granularity == "channel")]
    splits.append(("act.mask_aware=true", act.mask_aware))
    for setting, on in splits:
        why = None
        if not on:
            continue
        if act.mode != "static":
            why = f"act.mode={act.mode} has no calibrated parameters (set act.mode=static)"
        elif act.granularity == "channel" and act.mask_aware:
            why = "not with both act.granularity=channel and act.mask_aware=true yet"
        elif enhanced:
            why = "thermo.* and time_groups.strategy=adaptive reshape one parameter set per layer"
        elif phases:
            why = "the phase experiment compares one parameter set per layer"
        elif export_path is not None:
            why = "exports hold one parameter set per layer (leave export.path unset)"
        if why is not None:
            raise UserInputError(f"{setting}: {why}")
    if act.rotation != "none" and export_path is not None:
        raise fail(
            "act.rotation",
            act.rotation,
            "exports do not record the rotation yet (leave export.path unset)",
        )
    if act.rotation != "none" and devices > 1:
        raise fail(
            "act.rotation",
            act.rotation,
            f"not with parameters laid over devices (model.devices={devices}; use 1)",
        )
    if act.mode == "dynamic" and (enhanced or phases):
        what = (
            "the phase experiment compares"
            if phases
            else "thermo.* and time_groups.strategy=adaptive reshape"
        )
        raise fail(
            "act.mode",
            act.mode,
            f"{what} static time-group parameters, which dynamic per-token quantization does "
            "not use (set act.mode=static)",
        )
