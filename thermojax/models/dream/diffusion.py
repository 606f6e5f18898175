"""A masked-diffusion LM as a :class:`~thermojax.models.base.DiffusionModel`: the same
calibration, time groups, Markov metrics, quantized sampling and reports as the digits DDPM.

The state is the token sequence ``x_t`` (int32 ``[N, L]``); the time axis is the sampler's ``T``
unmasking steps, run as timesteps ``T - 1 .. 0`` like every sampler of the protocol (timestep
``t`` is step ``k = T - 1 - t`` of :mod:`thermojax.models.masked_diffusion`: ``t = T - 1`` is the
all-``[MASK]`` start, ``t = 0`` the step that reveals the last tokens). One step runs the network
on ``x_t`` with the given linear weights (and the activation hook on every linear layer's input),
takes its predictions (Dream's shifted one place, LLaDA's not) and reveals
``reveal_plan(...)[0][k]`` positions by the unmasking rule (within the current block, with
LLaDA's ``block_length``). The quantizable
layers are the network's linear weights, offered ``[in, out]`` like every model of the protocol
(the network stores them ``[out, in]``); their inputs per step are ``[N, L, in]``.

Example:
    >>> import tempfile, pathlib, jax
    >>> from thermojax.models.hf import write_dream_like
    >>> from thermojax.models.dream import load_dream
    >>> lm = load_dream(write_dream_like(pathlib.Path(tempfile.mkdtemp()) / "m", scale=112, layers=1))
    >>> model = MaskedDiffusionLM.create(lm, length=6, steps=3, unmasking="confidence")
    >>> x0, trajectory = model.sample(key=jax.random.key(0), num_samples=2)
    >>> x0.shape, trajectory.shape, bool((x0 != lm.mask_token_id).all())
    ((2, 6), (3, 2, 6), True)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from thermojax.core.quant import QTensor
from thermojax.models.base import ActHook, LayerWeight, SamplerSpec, run_sampler
from thermojax.models.dream.checkpoint import with_linears
from thermojax.models.dream.network import DreamLM, shift_logits
from thermojax.models.dream.text_data import PromptPassages
from thermojax.models.masked_diffusion import UnmaskingOptions, reveal_plan, unmask_step

__all__ = [
    "DEFAULT_LENGTH",
    "DEFAULT_SAMPLER",
    "DEFAULT_STEPS",
    "HELDOUT_WINDOWS",
    "TRAINING_FILE",
    "MaskedDiffusionLM",
    "TextReference",
]

TRAINING_FILE = "training.json"
"""thermojax's metadata beside a model it trained (:mod:`thermojax.models.dream.train`)."""
DEFAULT_LENGTH = 64
"""L for a checkpoint without ``training.json``."""
DEFAULT_STEPS = 64
"""T for a checkpoint without ``training.json``."""
DEFAULT_SAMPLER = {"unmasking": "random", "temperature": 0.8, "top_p": 0.95}
"""The sampler settings of :func:`~thermojax.models.dream.loading.load_masked_diffusion` when
not given."""
HELDOUT_WINDOWS = 32
"""Held-out windows of a byte-level model's quality figures (of its training length)."""

Array = jax.Array


@runtime_checkable
class TextReference(Protocol):
    """Held-out text and a decoder, for an LM's quality figures (hashable, equal by content).

    Attributes:
        description: what the text is (e.g. the corpus and its held-out split).
    """

    description: str

    def heldout_tokens(self) -> np.ndarray:
        """Fixed held-out windows, int32 ``[M, L]``, for the masked-diffusion bound."""
        ...

    def decode(self, tokens: np.ndarray) -> str:
        """One sequence of token ids as text (``[MASK]`` shown visibly)."""
        ...


class _Transposed(Mapping[str, Array]):
    """Each ``[out, in]`` weight of ``stored`` as ``[in, out]``, transposed when it is looked
    up: a 7B model's linear layers are 14 GB, and a dict of transposed copies would be 14 GB
    more; whoever walks the layers one at a time holds one copy at a time."""

    def __init__(self, stored: Mapping[str, Array]) -> None:
        self._stored = stored

    def __getitem__(self, name: str) -> Array:
        return self._stored[name].T

    def __iter__(self) -> Iterator[str]:
        return iter(self._stored)

    def __len__(self) -> int:
        return len(self._stored)


@struct.dataclass(eq=False)
class MaskedDiffusionLM:
    """A :class:`DreamLM` with its sampler settings, as a diffusion model (module doc).

    A pytree: its only child is the network (whose leaves are the parameters); the sampler
    settings and the reference are static.

    Attributes:
        lm: the network.
        length: L, the generated sequence length (prompt included).
        num_timesteps: T, the unmasking steps.
        options: the unmasking rule, temperature and block length.
        prompt: token ids kept at the start of every sample (never masked).
        reference: held-out text and a decoder, or ``None``.
        label: the model's name in reports.
        calibration_prompts: passages that start the calibration samples instead of
            ``prompt`` (``data.calibration``; :meth:`calibration_model`), or ``None``.
        sample_prompts: passages that start the samples instead of ``prompt``, each sample
            its own (:meth:`PromptPassages.rows
            <thermojax.models.dream.text_data.PromptPassages.rows>`): set on the model
            :meth:`calibration_model` gives; ``None``.
        linear_source: ``None``, or for a network loaded without its linear layers
            (``model.residency=apart``), where they are read when quantized
            (:class:`~thermojax.models.dream.checkpoint.CheckpointLinears`): every call then
            passes all of them (the packed codes) until :meth:`full_precision` reads them in.
    """

    lm: DreamLM
    length: int = struct.field(pytree_node=False)
    num_timesteps: int = struct.field(pytree_node=False)
    options: UnmaskingOptions = struct.field(pytree_node=False)
    prompt: tuple[int, ...] = struct.field(pytree_node=False, default=())
    reference: Any = struct.field(pytree_node=False, default=None)
    label: str = struct.field(pytree_node=False, default="dream")
    calibration_prompts: PromptPassages | None = struct.field(pytree_node=False, default=None)
    sample_prompts: PromptPassages | None = struct.field(pytree_node=False, default=None)
    linear_source: Mapping[str, Array] | None = struct.field(pytree_node=False, default=None)

    family: ClassVar[str] = "masked-diffusion-lm"

    @classmethod
    def create(
        cls,
        lm: DreamLM,
        *,
        length: int,
        steps: int,
        unmasking: str = "confidence",
        temperature: float = 0.0,
        top_p: float | None = None,
        block_length: int | None = None,
        prompt: tuple[int, ...] | list[int] = (),
        reference: TextReference | None = None,
        name: str = "dream",
        calibration_prompts: PromptPassages | None = None,
        linear_source: Mapping[str, Array] | None = None,
    ) -> MaskedDiffusionLM:
        """The model with its sampler settings, checked.

        Raises:
            ValueError: no mask token, a length or step count below 1, a prompt (or
                calibration passages) that leaves no position to generate or holds ids outside
                the vocabulary or the mask id, a bad rule or temperature, blocks that do not
                divide the generated positions or the steps (each naming the value).
        """
        mask = lm.config.checked_mask_token_id()
        options = UnmaskingOptions(
            mask_token_id=mask,
            vocab_size=lm.vocab_size,
            unmasking=unmasking,
            temperature=temperature,
            top_p=None if top_p is None or top_p >= 1 else top_p,
            block_length=block_length,
        )
        for key, value in (("length", length), ("steps", steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
        prompt = tuple(int(i) for i in prompt)
        if len(prompt) >= length:
            raise ValueError(
                f"prompt of {len(prompt)} tokens leaves nothing to generate in length {length}"
            )
        bad = [i for i in prompt if not 0 <= i < lm.vocab_size or i == mask]
        if bad:
            raise ValueError(
                f"prompt ids {bad[:5]} are outside [0, {lm.vocab_size}) or the mask id {mask}"
            )
        if calibration_prompts is not None:
            passages = np.asarray(calibration_prompts.tokens)
            if not 1 <= calibration_prompts.length < length:
                raise ValueError(
                    f"calibration passages of {calibration_prompts.length} tokens leave nothing "
                    f"to generate in length {length}"
                )
            if np.any((passages < 0) | (passages >= lm.vocab_size) | (passages == mask)):
                raise ValueError(
                    f"calibration passage ids are outside [0, {lm.vocab_size}) or the mask id "
                    f"{mask}"
                )
        reveal_plan(length - len(prompt), steps, block_length=block_length)
        if calibration_prompts is not None and block_length is not None:
            try:
                reveal_plan(length - calibration_prompts.length, steps, block_length=block_length)
            except ValueError as err:
                raise ValueError(
                    f"calibration passages of {calibration_prompts.length} tokens: {err}"
                ) from None
        return cls(
            lm=lm,
            length=int(length),
            num_timesteps=int(steps),
            options=options,
            prompt=prompt,
            reference=reference,
            label=name,
            calibration_prompts=calibration_prompts,
            linear_source=linear_source,
        )

    # ---------------------------------------------------------------- the protocol

    @property
    def name(self) -> str:
        return self.label

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.lm.layer_names

    @property
    def layer_input_widths(self) -> tuple[int, ...]:
        return self.lm.layer_input_widths

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (self.length,)

    @property
    def state_size(self) -> int:
        return self.length

    @property
    def params(self) -> dict[str, Array]:
        """The network's tensors (the model's fingerprint hashes them)."""
        return self.lm.params

    @property
    def config(self) -> dict[str, Any]:
        """Everything static that changes samples: architecture and sampler settings."""
        return {
            "network": self.lm.config,
            "length": self.length,
            "steps": self.num_timesteps,
            "options": self.options,
            "prompt": self.prompt,
            # only when set (the options' repr leaves it out): one-block keys stay as they were
            **({} if self.options.block_length is None else {"blocks": self.options.block_length}),
            **{  # only when set: the keys of an unprompted calibration stay as they were
                name: {"text": passages.text, "sha256": passages.sha256}
                for name, passages in (
                    ("calibration_prompts", self.calibration_prompts),
                    ("sample_prompts", self.sample_prompts),
                )
                if passages is not None
            },
        }

    @property
    def prompt_length(self) -> int:
        """Positions every sample starts with (never masked): the prompt's or the passages'."""
        return len(self.prompt) if self.sample_prompts is None else self.sample_prompts.length

    def calibration_model(self) -> MaskedDiffusionLM:
        """The model calibration runs: with ``calibration_prompts``, each sample starts with its
        own passage (then ``[MASK]``), the prompt left out; without, the model itself."""
        if self.calibration_prompts is None:
            return self
        return self.replace(
            prompt=(), calibration_prompts=None, sample_prompts=self.calibration_prompts
        )

    @property
    def schedule(self) -> np.ndarray:
        """int32 ``[T]``: the positions revealed at each step ``k`` (step order)."""
        return self._plan()[0]

    def _plan(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The schedule, and each step's block end (prompt included) or ``None``."""
        counts, block_end = reveal_plan(
            self.length - self.prompt_length,
            self.num_timesteps,
            block_length=self.options.block_length,
        )
        return counts, None if block_end is None else block_end + self.prompt_length

    def quantizable_weights(self) -> Mapping[str, Array]:
        """Each linear layer's weight ``[in, out]`` (the transposed ``[out, in]`` tensor),
        transposed when it is looked up (:class:`_Transposed`)."""
        if self.linear_source is not None:
            return _Transposed(self.linear_source)
        return _Transposed(self.lm.quantizable_weights())

    def full_precision(self) -> MaskedDiffusionLM:
        """The model with every tensor in memory: itself, or, loaded without its linear layers
        (:attr:`linear_source`), with them read from the checkpoint (the other tensors
        shared)."""
        if self.linear_source is None:
            return self
        return self.replace(lm=with_linears(self.lm, self.linear_source), linear_source=None)

    def num_parameters(self) -> int:
        shapes = self.lm.config.tensor_shapes()  # with the linear layers the file still holds
        return sum(int(np.prod(shape)) for shape in shapes.values())

    @staticmethod
    def network_weights(weights: Mapping[str, LayerWeight]) -> dict[str, LayerWeight]:
        """The protocol's weights in the network's layout (:meth:`DreamLM.forward`): each
        ``[in, out]`` array transposed to ``[out, in]``; a QTensor, which holds ``[out, in]``
        already, kept packed (the network dequantizes it where the layer uses it)."""
        return {
            name: w if isinstance(w, QTensor) else jnp.asarray(w).T for name, w in weights.items()
        }

    def initial_state(self, key: Array, num_samples: int) -> Array:
        """The prompt (each sample's passage, with ``sample_prompts``), then ``[MASK]``
        everywhere: int32 ``[num_samples, L]`` (``key`` unused)."""
        del key
        if self.sample_prompts is not None:
            rows = np.full((num_samples, self.length), self.options.mask_token_id, np.int32)
            rows[:, : self.prompt_length] = self.sample_prompts.rows(num_samples)
            return jnp.asarray(rows)
        row = np.full(self.length, self.options.mask_token_id, np.int32)
        row[: len(self.prompt)] = self.prompt
        return jnp.broadcast_to(jnp.asarray(row), (num_samples, self.length))

    def step(
        self,
        weights: Mapping[str, LayerWeight],
        x_t: Array,
        t: Array,
        key: Array,
        *,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """One unmasking step from timestep ``t``: ``(x_prev, layer_inputs)`` (jit-safe)."""
        logits, layer_inputs = self.denoise(weights, x_t, t, act_hook=act_hook)
        counts, block_end = self._plan()
        k = self.num_timesteps - 1 - t
        end = None if block_end is None else jnp.asarray(block_end)[k]
        x_prev, _ = unmask_step(
            x_t, logits, jnp.asarray(counts)[k], key, self.options, block_end=end
        )
        return x_prev, layer_inputs

    def position_kinds(self, x_t: Array) -> Array:
        """Which positions of ``x_t`` are masked: bool ``[N, L]`` (a token's layer inputs
        come from the mask embedding there, from a token elsewhere)."""
        return jnp.asarray(x_t) == self.options.mask_token_id

    def denoise(
        self,
        weights: Mapping[str, LayerWeight],
        x_t: Array,
        t: Array,
        *,
        act_hook: ActHook | None = None,
    ) -> tuple[Array, tuple[Array, ...]]:
        """The network's predictions for ``x_t``, ``[N, L, V]`` (shifted by the checkpoint's
        ``logit_shift``: Dream's one place, LLaDA's none)."""
        kinds = self.position_kinds(x_t)
        hook = None if act_hook is None else (lambda index, x: act_hook(index, x, t, kinds))
        logits, layer_inputs = self.lm.forward(self.network_weights(weights), x_t, act_hook=hook)
        return shift_logits(logits, self.lm.logit_shift), layer_inputs

    def sample(
        self,
        weights: Mapping[str, LayerWeight] | None = None,
        *,
        key: Array,
        num_samples: int,
        act_hook: ActHook | None = None,
        sampler: SamplerSpec | None = None,
    ) -> tuple[Array, Array]:
        """``(x0 [N, L], trajectory [T, N, L])``, ``trajectory[t]`` after the step at ``t``.

        The unmasking sampler runs its own T steps (``sampling.steps`` sets T when the model is
        loaded); ``sampler`` may only be ``None`` or DDPM-like (every step)."""
        # None: no layer replaced, so the network reads its own tensors where it uses them
        # (quantizable_weights() would put a transposed copy of every layer beside the scan).
        weights = {} if weights is None else weights
        x0, trajectory, _ = run_sampler(
            self, weights, key=key, num_samples=num_samples, act_hook=act_hook, sampler=sampler
        )
        return x0, trajectory

    def to_pixels(self, x: Array | np.ndarray) -> np.ndarray:
        """The samples as they are: int32 token ids ``[N, L]``."""
        return np.asarray(x, np.int32)
