"""How activations are quantized while the quantized model samples and is scored: ``act.*``.

Each setting is one field of :class:`ActConfig` with a default that keeps the numbers of runs
made before the setting existed; the stage cache leaves a setting out of its quality key while it
holds that value (:data:`thermojax.pipeline.cache.stages.KEYS_ADDED_LATER`), so adding one
re-keys nothing.
"""

from __future__ import annotations

import dataclasses

from thermojax.core.quant import ACT_MODES
from thermojax.pipeline.settings.checks import check_choice, fail

__all__ = ["ACT_MODES", "ActConfig", "validate_act"]


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
    """

    mode: str = "static"


def validate_act(act: ActConfig, *, enhanced: bool, phases: bool) -> None:
    """``act.*``, with what the static parameters' enhancements and experiment need.

    Args:
        enhanced: smoothing, optimization or adaptive groups are on (they reshape the static
            parameters, which ``dynamic`` mode does not sample with).
        phases: the phase experiment is on (it compares static parameter variants).
    """
    check_choice("act.mode", act.mode, ACT_MODES)
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
