"""Loading a Dream- or LLaDA-format folder as a
:class:`~thermojax.models.dream.diffusion.MaskedDiffusionLM`: its sampler settings (defaults from
the ``training.json`` thermojax writes beside a model it trained), its tokenizer, its held-out
text and calibration passages (:func:`load_masked_diffusion`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from thermojax.errors import UserInputError
from thermojax.models.dream import corpus
from thermojax.models.dream.checkpoint import CheckpointLinears, load_dream
from thermojax.models.dream.diffusion import (
    DEFAULT_LENGTH,
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    HELDOUT_WINDOWS,
    TRAINING_FILE,
    MaskedDiffusionLM,
    TextReference,
)
from thermojax.models.dream.network import DreamLM
from thermojax.models.dream.text_data import (
    CALIBRATION_KEY,
    HELDOUT_KEY,
    ByteTokenizer,
    PromptPassages,
    TextDataError,
    TextTokenizer,
    calibration_passages,
    heldout_reference,
)
from thermojax.models.hf.tokenizer import MERGES_FILE, TOKENIZER_FILE, VOCAB_FILE, load_tokenizer
from thermojax.models.masked_diffusion import reveal_plan

__all__ = ["ByteTextReference", "load_masked_diffusion", "trained_length"]


@dataclasses.dataclass(frozen=True)
class ByteTextReference:
    """The byte-level corpus's fixed held-out windows and its decoder
    (:mod:`thermojax.models.dream.corpus`), a :class:`TextReference`.

    Attributes:
        length: tokens (bytes) per window; count: windows.
    """

    length: int
    count: int = HELDOUT_WINDOWS

    @property
    def description(self) -> str:
        return f"{self.count} windows of {self.length} bytes: {corpus.SPLIT_RULE}"

    def heldout_tokens(self) -> np.ndarray:
        return corpus.heldout_batch(self.length, self.count)

    def decode(self, tokens: np.ndarray) -> str:
        return corpus.decode(np.asarray(tokens))


def _training_metadata(folder: Path) -> dict[str, Any]:
    path = folder / TRAINING_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(f"{path}: not readable JSON ({err})") from err
    return data if isinstance(data, dict) else {}


def trained_length(path: str | os.PathLike[str]) -> int:
    """The sequence length L a folder samples by default: its ``training.json``'s, else
    :data:`DEFAULT_LENGTH`."""
    sampling = _training_metadata(Path(path).expanduser()).get("sampling")
    return (
        int(sampling.get("length", DEFAULT_LENGTH))
        if isinstance(sampling, dict)
        else (DEFAULT_LENGTH)
    )


def _text_data(
    lm: DreamLM,
    tokenizer: TextTokenizer | None,
    *,
    length: int,
    heldout_length: int,
    heldout: str | os.PathLike[str] | None,
    calibration: str | os.PathLike[str] | None,
    heldout_windows: int,
) -> tuple[TextReference | None, PromptPassages | None]:
    """The reference and the calibration passages of :func:`load_masked_diffusion`: the byte
    model's own reference unless ``heldout`` is given (its numbers as they always were)."""
    if tokenizer is None:
        return None, None
    mask = lm.config.mask_token_id
    fits = {"mask_token_id": -1 if mask is None else int(mask), "vocab_size": lm.vocab_size}
    if isinstance(tokenizer, ByteTokenizer) and heldout is None:
        reference: TextReference = ByteTextReference(heldout_length, heldout_windows)
    else:
        reference = heldout_reference(
            tokenizer, length=heldout_length, count=heldout_windows, path=heldout, **fits
        )
    passages = None
    if calibration is not None:
        passages = calibration_passages(tokenizer, calibration, length=max(1, length // 4), **fits)
    return reference, passages


def load_masked_diffusion(
    path: str | os.PathLike[str],
    *,
    steps: int | None = None,
    length: int | None = None,
    unmasking: str | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    prompt: str = "",
    name: str | None = None,
    heldout: str | os.PathLike[str] | None = None,
    calibration: str | os.PathLike[str] | None = None,
    block_length: int | None = None,
    dtype: str | None = "float32",
    linear: bool = True,
    heldout_windows: int = HELDOUT_WINDOWS,
) -> MaskedDiffusionLM:
    """A Dream- or LLaDA-format folder as a :class:`MaskedDiffusionLM` with its sampler settings.

    ``steps`` and ``length`` default to the ``training.json`` thermojax writes beside a model
    it trained (else :data:`DEFAULT_STEPS`, :data:`DEFAULT_LENGTH`); ``unmasking``,
    ``temperature`` and ``top_p`` to :data:`DEFAULT_SAMPLER` (random order, temperature 0.8,
    nucleus 0.95: greedy most-confident-first decoding of the shipped 0.8M-parameter model
    degenerates into runs of spaces, measured). ``block_length`` (``None``: one block) must
    cut the positions to generate into blocks that divide ``steps`` (LLaDA's sampler).

    The text: a byte-level model (its ``training.json``'s ``tokenizer`` ``bytes``) encodes
    ``prompt`` as UTF-8 bytes and gets the corpus's held-out windows as its reference
    (:class:`ByteTextReference`); any other folder its own tokenizer
    (:func:`~thermojax.models.hf.tokenizer.load_tokenizer`: ``tokenizer.json``, or ``vocab.json``
    + ``merges.txt``) and ``heldout_windows`` (``data.heldout_windows``, default
    :data:`HELDOUT_WINDOWS`) windows of the corpus's held-out text in its tokens
    (:func:`~thermojax.models.dream.text_data.heldout_reference`); the byte-level model as many
    of its own. ``heldout``
    (``data.heldout``) replaces the held-out text by a UTF-8 text file's, in either case;
    ``calibration`` (``data.calibration``) gives passages of a quarter of the sequence length
    that prompt the calibration samples (:meth:`MaskedDiffusionLM.calibration_model`). A folder
    without a tokenizer takes no ``prompt``, ``heldout`` or ``calibration``, and has no held-out
    figures.

    ``dtype`` (``model.dtype``) is the parameters' dtype: ``"float32"`` (the default) upcasts
    on load, ``"bfloat16"`` halves the memory, ``None`` keeps the stored dtype
    (:func:`~thermojax.models.dream.checkpoint.load_dream`); matmuls are float32 either way.
    ``linear=False`` leaves the linear layers in the file (:attr:`MaskedDiffusionLM.linear_source`).

    Raises:
        UserInputError: a bad checkpoint or tokenizer (one line naming the file and tensor),
            sampler settings that do not fit it (naming the ``sampling.*`` key), a text file
            that cannot be used (:class:`~thermojax.models.dream.text_data.TextDataError`,
            naming the ``data.*`` key).
    """
    folder = Path(path).expanduser()
    lm = load_dream(folder, dtype=dtype, linear=linear)
    meta = _training_metadata(folder)
    tokenizer = meta.get("tokenizer") if isinstance(meta.get("tokenizer"), dict) else {}
    byte_level = tokenizer.get("type") == "bytes"
    sampling = meta.get("sampling") if isinstance(meta.get("sampling"), dict) else {}
    steps = int(sampling.get("num_steps", DEFAULT_STEPS)) if steps is None else steps
    length = int(sampling.get("length", DEFAULT_LENGTH)) if length is None else length
    if length > lm.config.max_position_embeddings:
        raise UserInputError(
            f"sampling.length={length}: exceeds the model's max_position_embeddings="
            f"{lm.config.max_position_embeddings}"
        )
    text_tokenizer = ByteTokenizer() if byte_level else load_tokenizer(folder)
    for key, given in (
        ("sampling.prompt", prompt),
        (HELDOUT_KEY, heldout),
        (CALIBRATION_KEY, calibration),
    ):
        if given and text_tokenizer is None:
            error = UserInputError if key == "sampling.prompt" else TextDataError
            raise error(
                f"{key}={str(given)!r}: {folder} has no tokenizer thermojax can run "
                f"({TOKENIZER_FILE}, or {VOCAB_FILE} + {MERGES_FILE})"
            )
    prompt_ids: tuple[int, ...] = ()
    if prompt:
        prompt_ids = tuple(int(i) for i in text_tokenizer.encode(prompt))
    reference, passages = _text_data(
        lm,
        text_tokenizer,
        length=length,
        heldout_length=int(meta.get("heldout", {}).get("length", length)) if byte_level else length,
        heldout=heldout,
        calibration=calibration,
        heldout_windows=heldout_windows,
    )
    if block_length is not None:
        try:
            reveal_plan(length - len(prompt_ids), steps, block_length=block_length)
        except ValueError as err:
            shown = f" less a prompt of {len(prompt_ids)} tokens" if prompt_ids else ""
            raise UserInputError(
                f"sampling.block_length={block_length}, sampling.steps={steps}, "
                f"sampling.length={length}{shown}: {err}"
            ) from None
    defaults = DEFAULT_SAMPLER
    try:
        return MaskedDiffusionLM.create(
            lm,
            length=length,
            steps=steps,
            unmasking=defaults["unmasking"] if unmasking is None else unmasking,
            temperature=defaults["temperature"] if temperature is None else temperature,
            top_p=defaults["top_p"] if top_p is None else top_p,
            block_length=block_length,
            prompt=prompt_ids,
            reference=reference,
            name=name or folder.resolve().name,
            calibration_prompts=passages,
            linear_source=None if linear else CheckpointLinears(folder, dtype=dtype),
        )
    except ValueError as err:
        raise UserInputError(f"sampling: {err}") from None
