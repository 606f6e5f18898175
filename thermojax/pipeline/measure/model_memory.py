"""A masked-diffusion LM's memory, planned from its checkpoint's headers before any weight is read.

:mod:`~thermojax.pipeline.measure.memory` checks what a run's samples take once the model is
loaded; for a 7B model the model itself is the memory, and loading it to find out it does not fit
would take minutes and the memory it was meant to spare. :func:`plan_lm_memory` counts, from
the tensor shapes the safetensors headers declare and ``config.json`` (nothing allocated):

- ``parameters``: every tensor at the run's dtype (``model.dtype``; as stored when unset);
- ``packed``: the quantized linear layers, ``bit_width`` bits per weight plus a float32 scale
  and a uint8 zero point per group of ``group_size`` (the 2-D tensors but the embedding, which
  also counts as the output projection when the head is tied);
- ``step``: what one denoising step of ``sampling.num_samples`` sequences of
  ``sampling.length`` tokens works with: the logits and their two copies ``[N, L, V]``
  float32, the attention scores and probabilities ``[N, heads, L, L]``, the MLP's three
  ``[N, L, I]`` and the residual stream's few ``[N, L, H]`` float32 arrays, and the largest
  linear weight upcast to float32 where it is used;
- ``heldout``: the same for one network call of the held-out bound: of its
  ``data.heldout_windows`` windows of ``L`` tokens, the
  :func:`~thermojax.core.text_metrics.bound_batch_size` it scores at a time (4 for Dream 7B at
  ``L = 128``).

A run that holds the reference and the packed model together needs
``needed = parameters + packed + max(step, heldout)``; one that holds them apart
(``model.residency``: the packed model with the tensors that stay unquantized, ``kept``, then
the reference) needs ``apart = max(parameters, kept + packed) + max(step, heldout)``.
:func:`check_lm_memory` picks how the run holds them (together when that fits, under
``model.residency=auto``) and refuses a plan that fits neither way with one line naming the
setting that takes the most and the value that would fit (``THERMOJAX_MEMORY_CHECK=off`` runs
it anyway, like :func:`~thermojax.pipeline.measure.memory.check_memory`).

Example:
    >>> from thermojax.models.hf.layouts import expected_shapes
    >>> hf = {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2,
    ...       "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
    ...       "vocab_size": 256}
    >>> shapes = expected_shapes(hf)
    >>> plan = plan_lm_memory(shapes, dtype_bytes=4, vocab=256, hidden=64, intermediate=128,
    ...     heads=4, bits=4, group_size=64, num_samples=2, length=16)
    >>> plan.parameters == 4 * sum(math.prod(s) for s in shapes.values())
    True
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from typing import NoReturn

from thermojax.core.text_metrics import bound_batch_size
from thermojax.errors import UserInputError
from thermojax.models.dream.config import DreamConfig
from thermojax.models.hf.headers import CheckpointError
from thermojax.models.hf.layouts import CONFIG_FILE
from thermojax.models.hf.reader import open_checkpoint
from thermojax.pipeline.measure.memory import available_memory

__all__ = ["ModelMemoryPlan", "check_lm_memory", "plan_checkpoint", "plan_lm_memory"]

log = logging.getLogger(__name__)

_LOGIT_COPIES = 3
"""Logits, their softmax and the sampler's working copy, ``[N, L, V]`` float32 each."""
_RESIDUAL_COPIES = 4
"""The residual stream, its norm, the attention output and the sum, ``[N, L, H]`` float32."""
_MLP_COPIES = 3
"""Gate, up and their product, ``[N, L, I]`` float32."""
_SCORE_COPIES = 2
"""Attention scores and probabilities, ``[N, heads, L, L]`` float32."""
_EMBEDDING_SUFFIXES = ("embed_tokens.weight", "wte.weight")


@dataclasses.dataclass(frozen=True)
class ModelMemoryPlan:
    """A masked-diffusion LM run's memory in bytes (module doc).

    Attributes:
        parameters: the reference model's tensors at the run's dtype.
        packed: the quantized linear layers (codes, scales, zero points).
        step: one denoising step's working set.
        heldout: the held-out bound's working set.
        per_sequence: the part of ``step`` that grows with each sequence.
        largest_weight: the float32 copy of the largest linear weight.
        num_samples, length: the sequences a step denoises, and their length.
        dtype: the parameters' dtype as ``model.dtype`` names it (``as stored`` for a mix).
        bf16_parameters: what the parameters take at bfloat16.
        quantized: the part of ``parameters`` that the packed copy replaces (the linear layers
            but the embedding, at the run's dtype).
    """

    parameters: float
    packed: float
    step: float
    heldout: float
    per_sequence: float
    largest_weight: float
    num_samples: int
    length: int
    dtype: str = "float32"
    bf16_parameters: float | None = None
    sizes: tuple[tuple[str, int], ...] = ()
    heldout_windows: int = 32
    quantized: float = 0.0

    def heldout_at(self, length: int) -> float:
        """:attr:`heldout` at another sequence length (its call's batch changes with it)."""
        sizes = dict(self.sizes)
        calls = min(self.heldout_windows, bound_batch_size(length, sizes["vocab"]))
        return _working_set(calls, length, **sizes) + self.largest_weight

    @property
    def needed(self) -> float:
        """Both models held together, then the larger working set."""
        return self.parameters + self.packed + max(self.step, self.heldout)

    @property
    def apart(self) -> float:
        """The packed model (with the tensors kept unquantized), then the reference, each with
        the larger working set."""
        kept = self.parameters - self.quantized
        return max(self.parameters, kept + self.packed) + max(self.step, self.heldout)


def _working_set(
    sequences: int, length: int, *, vocab: int, hidden: int, intermediate: int, heads: int
) -> float:
    """Bytes one forward pass and its sampling step work with (module doc), weights aside."""
    tokens = sequences * length
    return 4.0 * (
        _LOGIT_COPIES * tokens * vocab
        + _RESIDUAL_COPIES * tokens * hidden
        + _MLP_COPIES * tokens * intermediate
        + _SCORE_COPIES * sequences * heads * length * length
    )


def plan_lm_memory(
    shapes: Mapping[str, tuple[int, ...]],
    *,
    dtype_bytes: Mapping[str, int] | int,
    vocab: int,
    hidden: int,
    intermediate: int,
    heads: int,
    bits: int,
    group_size: int,
    num_samples: int,
    length: int,
    heldout_windows: int = 32,
    tied: bool = False,
) -> ModelMemoryPlan:
    """The plan of a run (module doc) from its tensors' shapes.

    Args:
        shapes: tensor name -> shape, as the checkpoint declares them.
        dtype_bytes: bytes per value of every tensor, or per tensor name.
        vocab, hidden, intermediate, heads: the architecture's V, H, I and query heads.
        bits, group_size: the weights' quantization.
        num_samples, length: the sequences a step denoises, and their length.
        heldout_windows: sequences in the held-out bound's batch.
        tied: whether the output projection is the embedding.
    """

    def itemsize(name: str) -> int:
        return dtype_bytes if isinstance(dtype_bytes, int) else dtype_bytes[name]

    parameters = float(sum(math.prod(shape) * itemsize(name) for name, shape in shapes.items()))
    itemsizes = {itemsize(name) for name in shapes}
    dtype = "float32" if itemsizes == {4} else "bfloat16" if itemsizes == {2} else "as stored"
    linear = [
        math.prod(shape)
        for name, shape in shapes.items()
        if len(shape) == 2 and (tied or not name.endswith(_EMBEDDING_SUFFIXES))
    ]
    packed = float(sum(n * bits / 8 + math.ceil(n / group_size) * 5 for n in linear))
    quantized = float(
        sum(
            math.prod(shape) * itemsize(name)
            for name, shape in shapes.items()
            if len(shape) == 2 and not name.endswith(_EMBEDDING_SUFFIXES)
        )
    )
    largest = 4.0 * max(linear, default=0)
    sizes = {"vocab": vocab, "hidden": hidden, "intermediate": intermediate, "heads": heads}
    step = _working_set(num_samples, length, **sizes)
    return ModelMemoryPlan(
        parameters=parameters,
        packed=packed,
        step=step + largest,
        heldout=_working_set(min(heldout_windows, bound_batch_size(length, vocab)), length, **sizes)
        + largest,
        per_sequence=step / max(num_samples, 1),
        largest_weight=largest,
        num_samples=num_samples,
        length=length,
        dtype=dtype,
        bf16_parameters=float(sum(2 * math.prod(shape) for shape in shapes.values())),
        sizes=tuple(sizes.items()),
        heldout_windows=heldout_windows,
        quantized=quantized,
    )


def _gb(value: float) -> str:
    return f"{value / 1e9:.1f} GB" if value >= 1e8 else f"{value / 1e6:.0f} MB"


def check_lm_memory(
    plan: ModelMemoryPlan,
    *,
    free: float | None = None,
    devices: int = 1,
    residency: str = "together",
    together_by: str | None = None,
) -> str:
    """How the run holds its reference and packed model (``"together"`` or ``"apart"``), and
    the refusal of a plan that fits ``free`` bytes (default: what is available now, on the
    accelerator when there is one, else on the host) neither way, in one line naming the
    setting.

    Args:
        plan: the run's plan.
        free: the bytes available (``None``: measured now: one accelerator's, or the host's).
        devices: the accelerators the parameters are laid over (``model.devices``): each
            holds about its share of them; host devices share the host's memory.
        residency: ``model.residency``: ``together``, ``apart``, or ``auto`` (together when
            that fits, else apart).
        together_by: the setting that needs both models at once (GPTQ's Hessians, the
            enhanced parameters' or the phases' extra sampling), or ``None``: ``auto`` then
            stays together, and ``apart`` is refused naming it.

    Raises:
        UserInputError: ``model.residency=apart`` with ``together_by``; the parameters alone do
            not fit (naming ``model.dtype``), or the working set does not (naming
            ``sampling.num_samples`` or ``sampling.length``); a plan that would fit apart but
            ``together_by`` keeps together (naming it).
    """
    if residency == "apart" and together_by is not None:
        raise UserInputError(
            f"model.residency=apart: {together_by} needs the reference and the quantized model "
            "together"
        )
    if free is None:
        host, device = available_memory()
        free = host
        if device is not None:
            free = device
            plan = dataclasses.replace(
                plan,
                parameters=plan.parameters / devices,
                packed=plan.packed / devices,
                quantized=plan.quantized / devices,
                bf16_parameters=(plan.bf16_parameters or 0.0) / devices,
            )
    apart = residency == "apart" or (
        residency == "auto" and together_by is None and free is not None and plan.needed > free
    )
    log.info(
        "memory plan: parameters %s (%s), packed %s, step %s, held-out bound %s; needs %s "
        "together, %s apart, %s available; holding them %s",
        _gb(plan.parameters),
        plan.dtype,
        _gb(plan.packed),
        _gb(plan.step),
        _gb(plan.heldout),
        _gb(plan.needed),
        _gb(plan.apart),
        "unknown" if free is None else _gb(free),
        "apart" if apart else "together",
    )
    needed = plan.apart if apart else plan.needed
    if free is None or needed <= free:
        return "apart" if apart else "together"
    if os.environ.get("THERMOJAX_MEMORY_CHECK", "").lower() == "off":
        log.warning("THERMOJAX_MEMORY_CHECK=off: running a plan that needs more than is available")
        return "apart" if apart else "together"
    if not apart and together_by is not None and plan.apart <= free:
        raise UserInputError(
            f"{together_by}: needs the reference ({_gb(plan.parameters)}) and its packed copy "
            f"({_gb(plan.packed)}) together, the run about {_gb(plan.needed)} of the "
            f"{_gb(free)} available; without it the run holds them one after the other in about "
            f"{_gb(plan.apart)}"
        )
    hint = ""
    if not apart and plan.apart <= free:  # model.residency=together, which it need not be
        hint = f"; model.residency=apart (about {_gb(plan.apart)}) fits"
    _refuse(plan, free, apart=apart, hint=hint)


def _refuse(plan: ModelMemoryPlan, free: float, *, apart: bool, hint: str) -> NoReturn:
    """The one line of a plan that does not fit ``free`` held ``apart`` or together, ``hint``
    appended."""
    dtype, num_samples, length = plan.dtype, plan.num_samples, plan.length
    kept = plan.parameters - plan.quantized
    models = max(plan.parameters, kept + plan.packed) if apart else plan.parameters + plan.packed
    needed = models + max(plan.step, plan.heldout)
    other, halved = "", None
    bf16_parameters = plan.bf16_parameters
    if dtype == "float32" and bf16_parameters is not None:
        halved_models = (
            max(bf16_parameters, bf16_parameters - plan.quantized / 2 + plan.packed)
            if apart
            else bf16_parameters + plan.packed
        )
        halved = halved_models + max(plan.step, plan.heldout)
        fits = "fits" if halved <= free else f"needs {_gb(halved)}, also too much"
        other = f"; model.dtype=bfloat16 ({_gb(bf16_parameters)}) {fits}"
    if models + plan.largest_weight > free or (halved is not None and halved <= free):
        held = (
            f"the parameters ({_gb(plan.parameters)}), held apart from their packed copy "
            f"({_gb(plan.packed)}), need {_gb(models)}"
            if apart
            else f"the parameters ({_gb(plan.parameters)}) and their packed copy "
            f"({_gb(plan.packed)}) need {_gb(models)}"
        )
        raise UserInputError(
            f"model.dtype={dtype}: {held}, the run about {_gb(needed)}, of the {_gb(free)} "
            f"available{other}{hint}"
        )
    room = free - models - plan.largest_weight
    if plan.step >= plan.heldout:
        fits = int(room // plan.per_sequence) if plan.per_sequence > 0 else 0
        raise UserInputError(
            f"sampling.num_samples={num_samples}: the run needs about {_gb(needed)} and "
            f"{_gb(free)} is available (a denoising step of {num_samples} sequences of "
            f"{length} tokens takes {_gb(plan.step)}); "
            + (f"at most about {fits} fit" if fits >= 1 else "no sample count fits")
            + hint
        )
    # The held-out bound's call: halve the length until it fits.
    shorter = length
    while shorter > 1 and plan.heldout_at(shorter) > free - models:
        shorter //= 2
    raise UserInputError(
        f"sampling.length={length}: the run needs about {_gb(needed)} and {_gb(free)} is "
        f"available (the held-out bound's windows of {length} tokens take "
        f"{_gb(plan.heldout)}); about sampling.length={shorter} fits{hint}"
    )


def plan_checkpoint(
    path: str,
    *,
    dtype: str | None,
    bits: int,
    group_size: int,
    num_samples: int,
    length: int,
    heldout_windows: int = 32,
) -> ModelMemoryPlan:
    """A masked-diffusion LM folder's plan (module doc) from its headers alone.

    Args:
        path: the Hugging Face folder (its ``config.json`` and safetensors headers are read).
        dtype: ``model.dtype`` (``None``: each tensor as stored).
        heldout_windows: ``data.heldout_windows``.

    Raises:
        UserInputError: an unreadable folder (:func:`~thermojax.models.hf.open_checkpoint`), or
            a length past the model's positions.
    """
    checkpoint = open_checkpoint(path)
    try:
        arch = DreamConfig.from_hf(checkpoint.config)
    except ValueError as err:
        raise CheckpointError(CONFIG_FILE, str(err)) from err
    if length > arch.max_position_embeddings:  # before a plan for a length it cannot run
        raise UserInputError(
            f"sampling.length={length}: exceeds the model's max_position_embeddings="
            f"{arch.max_position_embeddings}"
        )
    shapes = {name: tuple(info.shape) for name, info in checkpoint.tensors.items()}
    stored = {name: 4 if info.dtype == "F32" else 2 for name, info in checkpoint.tensors.items()}
    return plan_lm_memory(
        shapes,
        dtype_bytes=stored if dtype is None else (4 if dtype == "float32" else 2),
        vocab=arch.vocab_size,
        hidden=arch.hidden_size,
        intermediate=arch.intermediate_size,
        heads=arch.num_attention_heads,
        bits=bits,
        group_size=group_size,
        num_samples=num_samples,
        length=length,
        heldout_windows=heldout_windows,
        tied=arch.tie_word_embeddings,
    )
