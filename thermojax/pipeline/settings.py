"""The typed settings of a run: frozen dataclasses, validated when they are made.

A :class:`BaselineConfig` that exists is valid: ``__post_init__`` checks every value that the
types alone do not constrain and raises :class:`~thermojax.errors.UserInputError` with one line
naming the key and the value. The checks that need the model's T (:func:`check_model_limits`)
run once the model is loaded. Nothing here knows Hydra or OmegaConf: ``thermojax.cli.config``
turns a composed config or a plain mapping into these objects.

Example:
    >>> cfg = BaselineConfig(bit_width=4, calibration=CalibrationConfig(samples=16))
    >>> cfg.bit_width, cfg.calibration.samples, cfg.num_time_groups
    (4, 16, 4)
    >>> BaselineConfig(bit_width=3)
    Traceback (most recent call last):
    ...
    thermojax.errors.UserInputError: bit_width=3: weight bits must be 2, 4 or 8

The YAML / command-line key ``time_groups.lambda`` is a Python keyword, so the typed object calls it
``time_groups.lam``; :meth:`BaselineConfig.to_dict` writes it back as ``lambda``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, List, Optional  # noqa: UP035 (OmegaConf reads typing.List)

from thermojax.core.quant import ACT_BITS_RANGE, WEIGHT_BITS
from thermojax.errors import UserInputError
from thermojax.models.base import SAMPLERS, SamplerSpec
from thermojax.models.masked_diffusion import UNMASKING_RULES
from thermojax.pipeline.weights.rules import DEFAULT_RULES, QuantRule, validate_rules

__all__ = [
    "HESSIAN_WEIGHTINGS",
    "MODEL_RUNS",
    "SEGMENTATION_COSTS",
    "SHIPPED_MODELS",
    "SMOOTHING_LEVELS",
    "SMOOTHING_METHODS",
    "SUPPORTED_BIT_WIDTHS",
    "TIME_GROUP_STRATEGIES",
    "WANDB_MODES",
    "WEIGHT_METHOD_NAMES",
    "BaselineConfig",
    "CalibrationConfig",
    "ExportConfig",
    "InterpretationConfig",
    "ModelConfig",
    "OptimizationConfig",
    "PhasesConfig",
    "QuantConfig",
    "SamplingConfig",
    "SmoothingConfig",
    "ThermoConfig",
    "TimeGroupsConfig",
    "WandbConfig",
    "WeightsConfig",
    "check_model_limits",
    "validate_config",
]

SUPPORTED_BIT_WIDTHS = WEIGHT_BITS  # the core quantizer's rule, not a copy of it
_BIT_WIDTHS_TEXT = ", ".join(map(str, WEIGHT_BITS[:-1])) + f" or {WEIGHT_BITS[-1]}"
WANDB_MODES = ("offline", "online", "disabled")
SMOOTHING_METHODS = ("linear", "cubic", "sigmoid")
SMOOTHING_LEVELS = ("timestep", "group")
TIME_GROUP_STRATEGIES = ("uniform", "adaptive")
SEGMENTATION_COSTS = ("range", "mse")

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
            (it must fit in memory at float32); ``weight-only`` measures one without running it.
    """

    name: str = ""
    path: Optional[str] = None  # noqa: UP045
    shipped: str = "digits"
    run: str = "auto"


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
class WeightsConfig:
    """Which tensors of a checkpoint are quantized, and how (:mod:`thermojax.pipeline.weights.rules`).

    Attributes:
        rules: ordered rules; the first whose ``include`` matches (and ``exclude`` does not)
            takes a 2-D tensor, with its ``bits`` / ``group_size`` or the run's. The default
            quantizes every linear weight and keeps embeddings, norms and ``lm_head``. The digits
            DDPM quantizes its six layers at ``bit_width`` / ``group_size`` whatever the rules.
    """

    rules: List[QuantRule] = dataclasses.field(  # noqa: UP006
        default_factory=lambda: list(DEFAULT_RULES)
    )


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """Write the quantized checkpoint (:mod:`thermojax.pipeline.checkpoint.export`).

    Attributes:
        path: the folder to create (it must not exist, or be empty); ``None``: no export.
        orbax: also save the quantized tensors as Orbax checkpoints (``orbax/``); reloading
            never needs them, and without them an export writes each quantized byte once.
    """

    path: Optional[str] = None  # noqa: UP045
    orbax: bool = True


WEIGHT_METHOD_NAMES = ("minmax", "mse_clip", "hqq", "gptq")
"""``quant.method`` values (:data:`thermojax.core.weight_quant.WEIGHT_METHODS`)."""

HESSIAN_WEIGHTINGS = ("uniform", "sensitivity")
"""``quant.hessian``: how GPTQ's Hessian weighs the denoising steps (:class:`QuantConfig`)."""


@dataclasses.dataclass(frozen=True)
class QuantConfig:
    """How the weights of a model thermojax runs are quantized (:mod:`thermojax.core.weight_quant`).

    Attributes:
        method: ``minmax`` (round to nearest on each group's range), ``mse_clip`` (per-group
            search over shrunk ranges for the least squared error), ``hqq`` (half-quadratic
            zero-point optimization, integer zero points) or ``gptq`` (Hessian-aware rounding
            with error feedback, from per-step calibration inputs).
        clip_grid, clip_min_shrink: ``mse_clip``'s shrink factors (``clip_grid`` of them, from 1
            down to ``clip_min_shrink``).
        hqq_iters: ``hqq``'s most iterations.
        hessian: ``gptq``: ``uniform`` sums every step's ``x x^T`` alike; ``sensitivity`` (the
            default) weighs each time group's mean ``x x^T`` by how far minmax-quantized weights
            used in that group alone move the final sample (measured, one sampler run per
            group). On the digits DDPM at W2 it lowered the Frechet distance on each of 5 seeds
            (-20.6 +- 6.1 against uniform) and tied at W4 and W8 (README).
        damp, block_size, act_order: ``gptq``'s dampening (fraction of the mean diagonal), lazy
            update width and decreasing-``diag(H)`` column order.
        hessian_samples: ``gptq``: samples of the fp32 sampler whose layer inputs build the
            Hessians (and of each sensitivity run).
        keep_bits: layer-name pattern (``fnmatch``, e.g. ``output`` or ``*lm_head*``) -> bits
            for those layers instead of ``bit_width`` (mixed precision).
    """

    method: str = "minmax"
    clip_grid: int = 20
    clip_min_shrink: float = 0.5
    hqq_iters: int = 20
    hessian: str = "sensitivity"
    damp: float = 0.01
    block_size: int = 128
    act_order: bool = False
    hessian_samples: int = 64
    keep_bits: Dict[str, int] = dataclasses.field(default_factory=dict)  # noqa: UP006


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Sampling for the quality section and ``samples.npz`` (fp32 and quantized, same noise).

    Attributes:
        num_samples: N samples of each.
        sampler: the DDPM's reverse process, ``ddpm`` (ancestral, every one of the T timesteps)
            or ``ddim`` (``steps`` of them, :class:`thermojax.models.base.SamplerSpec`); a
            masked-diffusion LM has its own unmasking sampler (``ddpm`` only).
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
    """

    num_samples: int = 64
    sampler: str = "ddpm"
    steps: Optional[int] = None  # noqa: UP045
    eta: float = 0.0
    length: Optional[int] = None  # noqa: UP045
    unmasking: Optional[str] = None  # noqa: UP045
    temperature: Optional[float] = None  # noqa: UP045
    top_p: Optional[float] = None  # noqa: UP045
    prompt: str = ""


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases tracking: ``offline`` (default, no network), ``online`` or ``disabled``."""

    mode: str = "offline"
    project: str = "thermojax"
    group: Optional[str] = None  # noqa: UP045


@dataclasses.dataclass(frozen=True)
class InterpretationConfig:
    """The smoothness band and the quality band of a run, and their limits.

    **Smoothness band** (ArrowQuant V2's values, which it derived for Dream 7B at INT2): ``poor``
    below ``poor_below``, ``excellent`` above ``excellent_above``, ``good`` in between; the
    ``*_violations``, ``*_boundary_score`` and ``*_cosine`` fields are its criteria. It says how
    much the activation parameters jump between time groups, not how good the samples are.

    **Quality band**: the quantized samples against the fp32 samples of the same noise. Each
    figure the run has is ``good`` within its ``good_*`` limit, ``poor`` past its ``poor_*``
    limit, ``fair`` in between; the band is the worst of them
    (:func:`~thermojax.pipeline.results.verdict.quality_band`). The defaults, set on the shipped models
    (README's tables: 64 or 256 digits; 16 LM samples, 3 seeds):

    - ``*_frechet_ratio``: Frechet distance quantized / fp32 (digits DDPM). W8 scores 0.93-0.98x,
      W4 3.6x (64 samples) to 7.2x (256), W2 17-36x: 3x lies between W8 and W4 with room for
      the seed spread (about 25% at 64 samples). Fewer samples pull the ratio towards 1 (both
      distances carry the same small-sample floor).
    - ``*_coverage_drop``: fp32's class coverage minus the quantized one (fractions of the 10
      digits). One lost class (0.1) is within the seed spread at 64 samples; W2 loses 0.4-0.6.
    - ``*_final_mse``: mean squared difference of the final samples from their fp32 twins, pixel
      units (0..16). W8 0.05, W4 7.4-8.1, W2 36, which is what two unrelated real digits score
      (37.6): 18 is half of that.
    - ``*_perplexity_ratio``: the masked-diffusion LM's held-out perplexity bound quantized /
      fp32; without held-out text the generative perplexity ratio, counted either way (samples
      that fp32 finds much more predictable are usually more repetitive, not better). W8A8 and
      W4A8 stay within 1.2% (7.21 vs 7.15), W2A8 costs 17%, every A4 row 37% or more.
    - ``*_token_agreement``: fraction of final tokens equal to fp32's. W8A8 0.84-0.88, W4A8
      0.76-0.82, W2A8 0.45-0.52, W2A4 (held-out bound +85%) 0.20-0.28.
    """

    poor_below: float = 0.65
    excellent_above: float = 0.78
    good_max_violations: int = 3
    excellent_max_violations: int = 1
    excellent_min_boundary_score: float = 0.70
    good_min_boundary_score: float = 0.60
    poor_boundary_score: float = 0.50
    excellent_min_cosine: float = 0.75
    good_min_cosine: float = 0.70
    good_max_frechet_ratio: float = 1.5
    poor_above_frechet_ratio: float = 3.0
    good_max_coverage_drop: float = 0.1
    poor_above_coverage_drop: float = 0.3
    good_max_final_mse: float = 2.0
    poor_above_final_mse: float = 18.0
    good_max_perplexity_ratio: float = 1.05
    poor_above_perplexity_ratio: float = 1.25
    good_min_token_agreement: float = 0.7
    poor_below_token_agreement: float = 0.3


@dataclasses.dataclass(frozen=True)
class SmoothingConfig:
    """Phase 2: blend activation parameters across time-group boundaries.

    Attributes:
        enabled: apply smoothing.
        method: blend curve, ``linear``, ``cubic`` (smoothstep) or ``sigmoid``.
        window: ``level=timestep``: timesteps blended on each side of a boundary (1..smallest
            group); ``level=group``: neighbouring groups averaged on each side (1..G-1).
        level: ``timestep`` (a per-timestep schedule ``[L, T]``) or ``group`` (ArrowQuant V2's
            variant: each group blended with its neighbours, stays ``[L, G]``).
        steepness: slope of the ``sigmoid`` blend (> 0).
    """

    enabled: bool = False
    method: str = "linear"
    window: int = 25
    level: str = "timestep"
    steepness: float = 10.0


@dataclasses.dataclass(frozen=True)
class OptimizationConfig:
    """Phase 3: gradient-based transition optimization of scales and zero points (Optax Adam).

    Attributes:
        enabled: run the optimization (on the groups, or on the smoothed schedule when smoothing
            is on at timestep level).
        markov_weight: weight of the smoothness penalty on consecutive parameters (>= 0).
        learning_rate: Adam step (> 0).
        max_iterations: most steps per layer (>= 1).
        convergence_threshold: stop once the best loss improved by less than this over the last
            ``patience`` steps (>= 0).
        patience: steps of that window (>= 1).
        grad_clip: per-layer gradient-norm clip (> 0).
        kl_weight: weight of a Gaussian transition KL term (ArrowQuant V2's) (>= 0).
        entropy_weight: weight of the code-entropy reward (>= 0).
    """

    enabled: bool = False
    markov_weight: float = 1.0
    learning_rate: float = 0.01
    max_iterations: int = 200
    convergence_threshold: float = 1e-4
    patience: int = 20
    grad_clip: float = 1.0
    kl_weight: float = 0.0
    entropy_weight: float = 0.0


@dataclasses.dataclass(frozen=True)
class ThermoConfig:
    """The enhancements beyond the baseline: Phase 2 smoothing and Phase 3 optimization."""

    smoothing: SmoothingConfig = dataclasses.field(default_factory=SmoothingConfig)
    optimization: OptimizationConfig = dataclasses.field(default_factory=OptimizationConfig)


@dataclasses.dataclass(frozen=True)
class TimeGroupsConfig:
    """How the T timesteps are cut into ``num_time_groups`` groups.

    Attributes:
        strategy: ``uniform`` (equal widths) or ``adaptive`` (dynamic programming over the
            calibration statistics, :func:`thermojax.core.adaptive.adaptive_edges`).
        lam: the YAML key ``lambda``: weight of the boundary jumps in the adaptive objective (>= 0).
        cost: within-group cost of the adaptive objective, ``range`` or ``mse``.
        min_group_size: smallest adaptive group in timesteps (1..T//G).
    """

    strategy: str = "uniform"
    lam: float = 0.05
    cost: str = "range"
    min_group_size: int = 1


@dataclasses.dataclass(frozen=True)
class PhasesConfig:
    """The phase experiment (``experiment=phases``): every variant on one shared calibration.

    Attributes:
        enabled: run the phase table after the single run.
        seeds: sampling seeds per variant (``seed``, ``seed + 1``, ...).
        methods: Phase 2 blend methods (timestep level).
        windows: Phase 2 windows in timesteps (each method at each window).
        group_windows: windows of the group-level (ArrowQuant V2) variant, in groups.
        markov_weights: Phase 3 weights (optimization on the groups).
        lambdas: adaptive-grouping weights.
        min_group_size: smallest adaptive group in the table's adaptive variants.
        combinations: add adaptive + smoothing, smoothing + Phase 3, and all three.
        variants: keep only these variant names (empty: all; ``baseline`` is always run).
    """

    enabled: bool = False
    seeds: int = 5
    methods: List[str] = dataclasses.field(  # noqa: UP006
        default_factory=lambda: ["linear", "cubic", "sigmoid"]
    )
    windows: List[int] = dataclasses.field(default_factory=lambda: [25, 100])  # noqa: UP006
    group_windows: List[int] = dataclasses.field(default_factory=lambda: [1])  # noqa: UP006
    markov_weights: List[float] = dataclasses.field(  # noqa: UP006
        default_factory=lambda: [0.1, 1.0, 10.0]
    )
    lambdas: List[float] = dataclasses.field(default_factory=lambda: [0.01, 0.1])  # noqa: UP006
    min_group_size: int = 50
    combinations: bool = True
    variants: List[str] = dataclasses.field(default_factory=list)  # noqa: UP006


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """The whole configuration of ``python -m thermojax.baseline``.

    Attributes:
        bit_width: weight bits (2, 4 or 8).
        act_bits: activation bits (2..16, fake-quantized per time group).
        num_time_groups: G, contiguous groups of the model's T timesteps (1 <= G <= T).
        smoothness_threshold: a scale jump above this at a boundary is a violation.
        group_size: weight quantization group size along the input dimension.
        seed: seeds calibration and sampling noise (same seed, same numbers).
        thermo: Phase 2 smoothing and Phase 3 optimization (off by default).
        time_groups: uniform or adaptive group boundaries.
        phases: the phase experiment (off by default; ``experiment=phases``).
    """

    bit_width: int = 2
    act_bits: int = 8
    num_time_groups: int = 4
    smoothness_threshold: float = 0.3
    group_size: int = 64
    seed: int = 0
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    calibration: CalibrationConfig = dataclasses.field(default_factory=CalibrationConfig)
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)
    interpretation: InterpretationConfig = dataclasses.field(default_factory=InterpretationConfig)
    thermo: ThermoConfig = dataclasses.field(default_factory=ThermoConfig)
    time_groups: TimeGroupsConfig = dataclasses.field(default_factory=TimeGroupsConfig)
    phases: PhasesConfig = dataclasses.field(default_factory=PhasesConfig)
    weights: WeightsConfig = dataclasses.field(default_factory=WeightsConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    quant: QuantConfig = dataclasses.field(default_factory=QuantConfig)

    def __post_init__(self) -> None:
        validate_config(self)

    @property
    def enhanced(self) -> bool:
        """Whether any enhancement (smoothing, optimization, adaptive groups) is on."""
        return (
            self.thermo.smoothing.enabled
            or self.thermo.optimization.enabled
            or self.time_groups.strategy != "uniform"
        )

    def sampler_settings(self) -> dict[str, Any]:
        """``{"sampler", "steps", "eta"}`` of the sampler that samples (``steps`` None: T)."""
        return samplers_of(self.to_dict())[0]

    def calibration_settings(self) -> dict[str, Any]:
        """``{"sampler", "steps", "eta"}`` of the sampler that calibrates (:func:`samplers_of`)."""
        return samplers_of(self.to_dict())[1]

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain nested dicts with the YAML key names (JSON, HTML, W&B)."""
        data = dataclasses.asdict(self)
        data["time_groups"] = _yaml_time_groups(data["time_groups"])
        return data


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
        "sampler": sampling.get("sampler", "ddpm"),
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


def _validate_quant(quant: QuantConfig) -> None:
    """``quant.*``: names from their lists, counts and fractions in range, whole-byte bits."""
    if quant.method not in WEIGHT_METHOD_NAMES:
        raise _fail(
            "quant.method", quant.method, f"must be one of {', '.join(WEIGHT_METHOD_NAMES)}"
        )
    if quant.hessian not in HESSIAN_WEIGHTINGS:
        raise _fail(
            "quant.hessian", quant.hessian, f"must be one of {', '.join(HESSIAN_WEIGHTINGS)}"
        )
    for name in ("clip_grid", "hqq_iters", "block_size", "hessian_samples"):
        if getattr(quant, name) < 1:
            raise _fail(f"quant.{name}", getattr(quant, name), "must be >= 1")
    if not (math.isfinite(quant.clip_min_shrink) and 0.0 < quant.clip_min_shrink <= 1.0):
        raise _fail("quant.clip_min_shrink", quant.clip_min_shrink, "must be in (0, 1]")
    if not (math.isfinite(quant.damp) and 0.0 <= quant.damp <= 1.0):
        raise _fail("quant.damp", quant.damp, "must be in [0, 1]")
    for pattern, bits in quant.keep_bits.items():
        if bits not in SUPPORTED_BIT_WIDTHS:
            raise _fail(
                f"quant.keep_bits.{pattern}", bits, f"weight bits must be {_BIT_WIDTHS_TEXT}"
            )


def _yaml_time_groups(section: Mapping[str, Any]) -> dict[str, Any]:
    """``lam`` -> ``lambda``, in field order."""
    return {("lambda" if k == "lam" else k): v for k, v in section.items()}


def _fail(key: str, value: Any, reason: str) -> UserInputError:
    return UserInputError(f"{key}={value!r}: {reason}")


def validate_config(cfg: BaselineConfig) -> None:
    """Check every value that the types alone do not constrain.

    ``num_time_groups <= T`` needs the model and is checked by the pipeline after loading it.

    Raises:
        UserInputError: naming the first offending key and its value.
    """
    if cfg.bit_width not in SUPPORTED_BIT_WIDTHS:
        raise _fail("bit_width", cfg.bit_width, f"weight bits must be {_BIT_WIDTHS_TEXT}")
    lo, hi = ACT_BITS_RANGE
    if not lo <= cfg.act_bits <= hi:
        raise _fail("act_bits", cfg.act_bits, f"activation bits must be between {lo} and {hi}")
    if cfg.num_time_groups < 1:
        raise _fail("num_time_groups", cfg.num_time_groups, "need at least 1 time group")
    threshold = cfg.smoothness_threshold
    if not math.isfinite(threshold) or threshold < 0:
        raise _fail("smoothness_threshold", threshold, "must be a finite number >= 0")
    if cfg.group_size < 1:
        raise _fail("group_size", cfg.group_size, "must be a positive integer")
    if cfg.seed < 0:
        raise _fail("seed", cfg.seed, "must be >= 0")
    if cfg.model.path is not None and not Path(cfg.model.path).expanduser().exists():
        raise _fail("model.path", cfg.model.path, "no such file or directory")
    if cfg.calibration.stats is not None and not Path(cfg.calibration.stats).expanduser().is_file():
        raise _fail("calibration.stats", cfg.calibration.stats, "no such file")
    try:
        validate_rules(cfg.weights.rules, bits=cfg.bit_width, group_size=cfg.group_size)
    except UserInputError as exc:
        raise UserInputError(f"weights.rules: {exc}") from None
    export = cfg.export.path
    if export is not None:
        target = Path(export).expanduser()
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise _fail(
                "export.path", export, "exists and is not an empty folder (nothing is overwritten)"
            )
    if cfg.calibration.samples < 1:
        raise _fail("calibration.samples", cfg.calibration.samples, "need at least 1 sample")
    if cfg.calibration.samples_per_step < 1:
        raise _fail(
            "calibration.samples_per_step", cfg.calibration.samples_per_step, "must be >= 1"
        )
    if cfg.sampling.num_samples < 1:
        raise _fail("sampling.num_samples", cfg.sampling.num_samples, "need at least 1 sample")
    _validate_model_choice(cfg)
    _validate_quant(cfg.quant)
    if cfg.wandb.mode not in WANDB_MODES:
        raise _fail("wandb.mode", cfg.wandb.mode, "must be offline, online or disabled")
    bands = cfg.interpretation
    for name in ("poor_below", "excellent_above") + tuple(
        f.name for f in dataclasses.fields(bands) if f.name.endswith(("_score", "_cosine"))
    ):
        value = getattr(bands, name)
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise _fail(f"interpretation.{name}", value, "must be within [0, 1]")
    if bands.poor_below > bands.excellent_above:
        raise _fail(
            "interpretation.poor_below",
            bands.poor_below,
            f"must not exceed interpretation.excellent_above={bands.excellent_above!r}",
        )
    for name in ("good_max_violations", "excellent_max_violations"):
        if getattr(bands, name) < 0:
            raise _fail(f"interpretation.{name}", getattr(bands, name), "must be >= 0")
    _validate_quality_limits(bands)
    _validate_thermo(cfg)
    _validate_time_groups(cfg)
    _validate_phases(cfg)


def _validate_quality_limits(bands: InterpretationConfig) -> None:
    """The quality band's limits: in range, each ``good_*`` on the good side of its ``poor_*``."""
    pairs = (  # good limit, poor limit, lowest and highest allowed, higher is better
        ("good_max_frechet_ratio", "poor_above_frechet_ratio", 1.0, math.inf, False),
        ("good_max_coverage_drop", "poor_above_coverage_drop", 0.0, 1.0, False),
        ("good_max_final_mse", "poor_above_final_mse", 0.0, math.inf, False),
        ("good_max_perplexity_ratio", "poor_above_perplexity_ratio", 1.0, math.inf, False),
        ("good_min_token_agreement", "poor_below_token_agreement", 0.0, 1.0, True),
    )
    for good, poor, lo, hi, higher_is_better in pairs:
        for name in (good, poor):
            value = getattr(bands, name)
            if not (math.isfinite(value) and lo <= value <= hi):
                allowed = f">= {lo:g}" if hi == math.inf else f"within [{lo:g}, {hi:g}]"
                raise _fail(f"interpretation.{name}", value, f"must be {allowed}")
        good_value, poor_value = getattr(bands, good), getattr(bands, poor)
        if good_value < poor_value if higher_is_better else good_value > poor_value:
            relation = "be below" if higher_is_better else "exceed"
            raise _fail(
                f"interpretation.{good}",
                good_value,
                f"must not {relation} interpretation.{poor}={poor_value!r}",
            )


SHIPPED_MODELS = ("digits", "pydoc-mdlm")
"""The models that ship with thermojax (``model.shipped``; ``model=<name>``)."""

MODEL_RUNS = ("auto", "diffusion", "weight-only")
"""``model.run``: how a checkpoint is measured (:class:`ModelConfig`)."""


def _validate_model_choice(cfg: BaselineConfig) -> None:
    """The shipped model's name and the masked-diffusion LM's sampler settings."""
    _check_choice("model.shipped", cfg.model.shipped, SHIPPED_MODELS)
    _check_choice("model.run", cfg.model.run, MODEL_RUNS)
    sampling = cfg.sampling
    for key in ("steps", "length"):
        value = getattr(sampling, key)
        if value is not None and value < (2 if key == "length" else 1):
            raise _fail(f"sampling.{key}", value, f"must be >= {2 if key == 'length' else 1}")
    if sampling.unmasking is not None:
        _check_choice("sampling.unmasking", sampling.unmasking, UNMASKING_RULES)
    if sampling.temperature is not None:
        _check_number("sampling.temperature", sampling.temperature)
    top_p = sampling.top_p
    if top_p is not None and not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise _fail("sampling.top_p", top_p, "must be in (0, 1]")
    calibration = cfg.calibration
    for prefix, name, eta in (
        ("sampling", sampling.sampler, sampling.eta),
        ("calibration", calibration.sampler, calibration.eta),
    ):
        if name is not None:
            _check_choice(f"{prefix}.sampler", name, SAMPLERS)
        if eta is not None and not (math.isfinite(eta) and 0.0 <= eta <= 1.0):
            raise _fail(f"{prefix}.eta", eta, "must be in [0, 1]")
    if calibration.steps is not None and calibration.steps < 1:
        raise _fail("calibration.steps", calibration.steps, "must be >= 1")
    for prefix, spec in (
        ("sampling", cfg.sampler_settings()),
        ("calibration", cfg.calibration_settings()),
    ):
        if spec["sampler"] == "ddpm" and spec["eta"] != 0.0:
            raise _fail(f"{prefix}.eta", spec["eta"], "is DDIM's noise: needs sampler=ddim")


def _check_number(key: str, value: float, *, positive: bool = False) -> None:
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise _fail(key, value, "must be a finite number " + ("> 0" if positive else ">= 0"))


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(key, value, f"must be one of {', '.join(choices)}")


def _check_window(key: str, window: int, *, level: str, cfg: BaselineConfig) -> None:
    """The window checks that need no model: >= 1, groups of G, adaptive min_group_size."""
    if window < 1:
        raise _fail(key, window, "the smoothing window must be >= 1")
    groups = cfg.num_time_groups
    if level == "group" and window > groups - 1:
        raise _fail(
            key,
            window,
            f"a group-level window counts neighbouring groups and must be <= num_time_groups - 1 "
            f"= {groups - 1}",
        )


def _validate_thermo(cfg: BaselineConfig) -> None:
    smoothing = cfg.thermo.smoothing
    _check_choice("thermo.smoothing.method", smoothing.method, SMOOTHING_METHODS)
    _check_choice("thermo.smoothing.level", smoothing.level, SMOOTHING_LEVELS)
    if smoothing.window < 1:
        raise _fail(
            "thermo.smoothing.window", smoothing.window, "the smoothing window must be >= 1"
        )
    _check_number("thermo.smoothing.steepness", smoothing.steepness, positive=True)
    if smoothing.enabled:
        _check_window("thermo.smoothing.window", smoothing.window, level=smoothing.level, cfg=cfg)
        adaptive = cfg.time_groups
        if (
            smoothing.level == "timestep"
            and adaptive.strategy == "adaptive"
            and smoothing.window > adaptive.min_group_size
        ):
            raise _fail(
                "thermo.smoothing.window",
                smoothing.window,
                f"larger than a group: adaptive groups may be as small as "
                f"time_groups.min_group_size={adaptive.min_group_size} timesteps",
            )
    opt = cfg.thermo.optimization
    for name in ("markov_weight", "convergence_threshold", "kl_weight", "entropy_weight"):
        _check_number(f"thermo.optimization.{name}", getattr(opt, name))
    for name in ("learning_rate", "grad_clip"):
        _check_number(f"thermo.optimization.{name}", getattr(opt, name), positive=True)
    for name in ("max_iterations", "patience"):
        if getattr(opt, name) < 1:
            raise _fail(f"thermo.optimization.{name}", getattr(opt, name), "must be >= 1")


def _validate_time_groups(cfg: BaselineConfig) -> None:
    groups = cfg.time_groups
    _check_choice("time_groups.strategy", groups.strategy, TIME_GROUP_STRATEGIES)
    _check_number("time_groups.lambda", groups.lam)
    _check_choice("time_groups.cost", groups.cost, SEGMENTATION_COSTS)
    if groups.min_group_size < 1:
        raise _fail("time_groups.min_group_size", groups.min_group_size, "must be >= 1")


def _validate_phases(cfg: BaselineConfig) -> None:
    phases = cfg.phases
    if phases.seeds < 1:
        raise _fail("phases.seeds", phases.seeds, "need at least 1 seed")
    for method in phases.methods:
        _check_choice("phases.methods", method, SMOOTHING_METHODS)
    for lam in phases.lambdas:
        _check_number("phases.lambdas", lam)
    for weight in phases.markov_weights:
        _check_number("phases.markov_weights", weight)
    if phases.min_group_size < 1:
        raise _fail("phases.min_group_size", phases.min_group_size, "must be >= 1")
    if not phases.enabled:
        return
    for window in phases.windows:
        _check_window("phases.windows", window, level="timestep", cfg=cfg)
    for window in phases.group_windows:
        _check_window("phases.group_windows", window, level="group", cfg=cfg)


def check_model_limits(cfg: BaselineConfig, num_timesteps: int) -> None:
    """The checks that need the model's T: groups, windows and adaptive group sizes.

    Raises:
        UserInputError: naming the key, its value and the limit.
    """
    groups = cfg.num_time_groups
    if groups > num_timesteps:
        raise UserInputError(
            f"num_time_groups={groups}: exceeds the model's {num_timesteps} timesteps"
        )
    smallest = num_timesteps // groups
    smoothing = cfg.thermo.smoothing
    if (
        smoothing.enabled
        and smoothing.level == "timestep"
        and cfg.time_groups.strategy == "uniform"
        and smoothing.window > smallest
    ):
        raise _fail(
            "thermo.smoothing.window",
            smoothing.window,
            f"larger than a group: the smallest of the {groups} time groups has {smallest} "
            "timesteps",
        )
    if cfg.time_groups.strategy == "adaptive" and cfg.time_groups.min_group_size > smallest:
        raise _fail(
            "time_groups.min_group_size",
            cfg.time_groups.min_group_size,
            f"must be <= T // num_time_groups = {smallest}",
        )
    if cfg.phases.enabled:
        for window in cfg.phases.windows:
            if window > smallest:
                raise _fail(
                    "phases.windows",
                    window,
                    f"larger than a group: the smallest of the {groups} time groups has "
                    f"{smallest} timesteps",
                )
        if cfg.phases.min_group_size > smallest:
            raise _fail(
                "phases.min_group_size",
                cfg.phases.min_group_size,
                f"must be <= T // num_time_groups = {smallest}",
            )
