"""The registry of model families: what the pipeline asks of a family (:class:`ModelFamily`),
which families are registered, which one claims a configured model or declares a model, and the
quality of a model's samples by its family's kind of sample.

It imports no family and nothing that runs one, so the run's modules (the diffusion run, the phase
experiment, the stage cache) can look families up without an import circle; the families
themselves (:mod:`thermojax.pipeline.families.base` and beside it) register here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from thermojax.core.quant import QTensor
from thermojax.errors import UserInputError
from thermojax.models.base import DiffusionModel
from thermojax.pipeline.measure.sampling import ActParams, Samples
from thermojax.pipeline.quality.kind import QualityKind, SampleQuality
from thermojax.pipeline.run.stages import ProgressCallback
from thermojax.pipeline.settings import BaselineConfig

if TYPE_CHECKING:
    from thermojax.pipeline.results.schema import Result

__all__ = [
    "ModelFamily",
    "evaluate_quality",
    "families",
    "family_of",
    "recognise",
    "register_family",
]


@runtime_checkable
class ModelFamily(Protocol):
    """A model family, as the pipeline sees it.

    Attributes:
        name: the family's name (``DiffusionModel.family`` of its models).
        description: the family in words, for messages (``the digits DDPM``).
        quality: the kind of sample its models draw; ``None`` for a family whose checkpoints
            are measured weight-only (no samples).
    """

    name: str
    description: str
    quality: QualityKind | None

    def recognises(self, config: BaselineConfig) -> bool:
        """Whether ``config.model`` (its folder, ``model.run``) is one of this family's."""
        ...

    def check(self, config: BaselineConfig) -> BaselineConfig:
        """Refuse settings this family does not take (one line naming the key), before any
        work; returns ``config`` with the family's defaults filled in."""
        ...

    def run(self, config: BaselineConfig, progress: ProgressCallback | None) -> Result:
        """The baseline run of ``config`` on this family's model."""
        ...


_FAMILIES: dict[str, ModelFamily] = {}
_FALLBACK: list[ModelFamily] = []


def register_family(family: ModelFamily, *, fallback: bool = False) -> ModelFamily:
    """Make ``family`` one that :func:`recognise` asks (after those registered before it) and
    :func:`family_of` finds; returns it. The ``fallback`` family takes a model no family
    claims (its loader then says what the folder lacks).

    Raises:
        ValueError: another family of that name is registered already.
    """
    known = _FAMILIES.get(family.name)
    if known is not None and known is not family:
        raise ValueError(f"a model family {family.name!r} is registered already")
    _FAMILIES[family.name] = family
    if fallback:
        _FALLBACK[:] = [family]
    return family


def families() -> tuple[ModelFamily, ...]:
    """Every registered family, in the order :func:`recognise` asks them."""
    return tuple(_FAMILIES.values())


def recognise(config: BaselineConfig) -> ModelFamily:
    """The family that claims ``config.model`` (the first registered that recognises it), else
    the fallback family."""
    for family in _FAMILIES.values():
        if family.recognises(config):
            return family
    if not _FALLBACK:
        raise UserInputError(f"model.path={config.model.path!r}: no model family recognises it")
    return _FALLBACK[0]


def family_of(model: DiffusionModel) -> ModelFamily:
    """The family a model declares (``model.family``).

    Raises:
        ValueError: a family nobody registered.
    """
    if model.family not in _FAMILIES:
        raise ValueError(
            f"{type(model).__name__}.family={model.family!r} is not a registered model family "
            f"({', '.join(_FAMILIES)})"
        )
    return _FAMILIES[model.family]


def evaluate_quality(
    model: DiffusionModel,
    fp32: Samples,
    quantized: Samples,
    edges: Any,
    weight_report: Any,
    *,
    qweights: Mapping[str, QTensor] | None = None,
    act_params: ActParams | None = None,
    seed: int = 0,
) -> SampleQuality:
    """Quantized samples against fp32 samples of the same seed, by the evaluator of the kind of
    sample the model's family draws (:attr:`QualityKind.evaluate`)."""
    kind = family_of(model).quality
    if kind is None:
        raise ValueError(f"{model.family}: a family without samples has no sample quality")
    return kind.evaluate(
        model,
        fp32,
        quantized,
        edges,
        weight_report,
        qweights=qweights,
        act_params=act_params,
        seed=seed,
    )
