"""The text a masked-diffusion LM is measured and calibrated on, tokenized by its own tokenizer.

- **Held-out text** (:func:`heldout_reference`): fixed windows of the model's sequence length
  (:func:`~thermojax.models.dream.corpus.windows`: evenly spread, at most ``count``) of a UTF-8
  text file (``data.heldout``), or by default of the held-out split of the pydoc corpus the
  shipped LM was trained on (:func:`~thermojax.models.dream.corpus.heldout_text`), as a
  :class:`TokenizedTextReference`, which also decodes samples.
- **Calibration passages** (:func:`calibration_passages`): up to
  :data:`MAX_CALIBRATION_PASSAGES` non-overlapping passages of ``P`` tokens of a UTF-8 text file
  (``data.calibration``), evenly spread over it, as :class:`PromptPassages`: each calibration
  sample starts with one of them (:meth:`MaskedDiffusionLM.calibration_model
  <thermojax.models.dream.diffusion.MaskedDiffusionLM.calibration_model>`).

Both are equal and hashed by content (the tokenizer's files' and the text's sha256, never a
path): a model's static fields, and the cache keys hash them. A text file that cannot be used
(unreadable, not UTF-8, empty, too short for one window or passage, holding the mask token) is a
one-line :class:`TextDataError` naming its ``data.*`` key.

Example:
    >>> from thermojax.models.dream import corpus
    >>> reference = heldout_reference(
    ...     ByteTokenizer(), length=64, count=4, mask_token_id=corpus.MASK_ID,
    ...     vocab_size=corpus.VOCAB_SIZE)
    >>> reference.heldout_tokens().shape, reference.decode(corpus.encode("a"))
    ((4, 64), 'a')
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from thermojax.errors import UserInputError
from thermojax.models.dream import corpus
from thermojax.models.hf.headers import CheckpointError

__all__ = [
    "CALIBRATION_KEY",
    "HELDOUT_KEY",
    "MAX_CALIBRATION_PASSAGES",
    "MAX_TEXT_BYTES",
    "ByteTokenizer",
    "PromptPassages",
    "TextDataError",
    "TextTokenizer",
    "TokenizedTextReference",
    "calibration_passages",
    "heldout_reference",
    "read_text",
]

HELDOUT_KEY = "data.heldout"
CALIBRATION_KEY = "data.calibration"
"""The settings that name the text files."""
MAX_TEXT_BYTES = 64 * 2**20
"""The largest text file read (64 MiB: far more windows and passages than a run uses)."""
MAX_CALIBRATION_PASSAGES = 1024
"""Passages kept of a calibration text (evenly spread over it)."""
_HELD_OUT_TOPICS = (
    f"pydoc_data.topics at sorted-key index i % {corpus.HELDOUT_EVERY} == "
    f"{corpus.HELDOUT_EVERY - 1}"
)


class TextDataError(UserInputError):
    """A ``data.*`` text file that cannot be used, in one line naming the key and the file."""


class TextTokenizer(Protocol):
    """What the text needs of a tokenizer (:class:`~thermojax.models.hf.tokenizer.FolderTokenizer`,
    :class:`ByteTokenizer`): hashable, equal by content.

    Attributes:
        source: what it is (its files).
        sha256: a hash of its content.
    """

    source: str
    sha256: str

    def encode(self, text: str) -> np.ndarray: ...

    def decode(
        self, ids: Sequence[int] | np.ndarray, *, mask_token_id: int | None = None
    ) -> str: ...


@dataclasses.dataclass(frozen=True)
class ByteTokenizer:
    """The byte-level model's tokenizer (:mod:`~thermojax.models.dream.corpus`): token id = byte.

    Example:
        >>> ByteTokenizer().decode(ByteTokenizer().encode("héllo"))
        'héllo'
    """

    source: str = "UTF-8 bytes"
    sha256: str = "bytes"

    def encode(self, text: str) -> np.ndarray:
        return corpus.encode(text)

    def decode(self, ids: Sequence[int] | np.ndarray, *, mask_token_id: int | None = None) -> str:
        """As :func:`corpus.decode <thermojax.models.dream.corpus.decode>` (``[MASK]`` as ``_``)."""
        del mask_token_id  # the corpus's own
        return corpus.decode(ids)


@dataclasses.dataclass(frozen=True)
class TokenizedTextReference:
    """Fixed held-out windows of a text in a tokenizer's ids, and that tokenizer's decoder: a
    :class:`~thermojax.models.dream.diffusion.TextReference`.

    Equal and hashed by content: the tokenizer, what the text is and its sha256, the windows'
    shape and the mask id; the windows follow from them and are not compared.

    Attributes:
        tokenizer: the model's tokenizer.
        text: what the text is, e.g. ``data.heldout file notes.txt``.
        text_sha256: the hex sha256 of the text's UTF-8 bytes.
        mask_token_id: the model's ``[MASK]`` id (decoded visibly).
        length, count: tokens per window, windows.
        windows: int32 ``[count, length]``.
    """

    tokenizer: Any
    text: str
    text_sha256: str
    mask_token_id: int
    length: int
    count: int
    windows: np.ndarray = dataclasses.field(compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if np.shape(self.windows) != (self.count, self.length):
            raise ValueError(
                f"windows {np.shape(self.windows)} must be [count={self.count}, "
                f"length={self.length}]"
            )

    @property
    def description(self) -> str:
        return (
            f"{self.count} windows of {self.length} tokens ({self.tokenizer.source}) of "
            f"{self.text} (sha256 {self.text_sha256[:12]})"
        )

    @property
    def config(self) -> dict[str, Any]:
        """What the windows are made of, with full hashes (the cache key's part)."""
        return {
            "tokenizer": self.tokenizer.source,
            "tokenizer_sha256": self.tokenizer.sha256,
            "text": self.text,
            "text_sha256": self.text_sha256,
            "length": self.length,
            "count": self.count,
        }

    def heldout_tokens(self) -> np.ndarray:
        """The windows, int32 ``[count, length]`` (a copy)."""
        return np.array(self.windows, np.int32)

    def decode(self, tokens: np.ndarray) -> str:
        """One sequence of ids as text (``[MASK]`` and ids the tokenizer lacks shown)."""
        return self.tokenizer.decode(np.asarray(tokens), mask_token_id=self.mask_token_id)


@dataclasses.dataclass(frozen=True)
class PromptPassages:
    """Passages of ``P`` tokens that prompt the calibration samples.

    Equal and hashed by ``sha256`` (of the tokenizer, the text and ``tokens``' bytes).

    Attributes:
        text: what the text is, e.g. ``data.calibration file notes.txt``.
        sha256: the content hash.
        tokens: int32 ``[R, P]``, R >= 1 passages.
    """

    text: str
    sha256: str
    tokens: np.ndarray = dataclasses.field(compare=False, hash=False, repr=False)

    @property
    def length(self) -> int:
        """P, tokens per passage."""
        return int(self.tokens.shape[1])

    def rows(self, num_samples: int) -> np.ndarray:
        """The passage of each of ``num_samples`` samples, int32 ``[N, P]``: ``N`` passages
        evenly spread over the ``R`` (distinct when ``N <= R``), else all of them in turn.

        Example:
            >>> passages = PromptPassages("x", "0", np.arange(8).reshape(4, 2))
            >>> passages.rows(2).tolist(), passages.rows(5)[:, 0].tolist()
            ([[0, 1], [4, 5]], [0, 2, 4, 6, 0])
        """
        count = len(self.tokens)
        if num_samples <= count:
            chosen = np.arange(num_samples) * count // num_samples
        else:
            chosen = np.arange(num_samples) % count
        return np.asarray(self.tokens[chosen], np.int32)

    def describe(self) -> str:
        """In words, e.g. ``128 passages of 16 tokens of data.calibration file notes.txt``."""
        return f"{len(self.tokens)} passages of {self.length} tokens of {self.text}"


def read_text(key: str, path: str | os.PathLike[str]) -> tuple[str, str]:
    """The UTF-8 text of ``path`` and the hex sha256 of its bytes (a leading BOM dropped).

    Raises:
        TextDataError: ``path`` unreadable, larger than :data:`MAX_TEXT_BYTES`, not UTF-8, or
            only whitespace (naming ``key``).
    """
    where = f"{key}={str(path)!r}"
    try:
        with open(Path(path).expanduser(), "rb") as handle:
            data = handle.read(MAX_TEXT_BYTES + 1)
    except OSError as err:
        raise TextDataError(f"{where}: not readable ({err.strerror or err})") from None
    if len(data) > MAX_TEXT_BYTES:
        raise TextDataError(f"{where}: larger than {MAX_TEXT_BYTES // 2**20} MiB of text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TextDataError(
            f"{where}: not UTF-8 text (byte {err.start}: {err.reason}); give a UTF-8 text file"
        ) from None
    if not text.strip():
        raise TextDataError(f"{where}: holds no text")
    return text, hashlib.sha256(data).hexdigest()


def _checked_tokens(
    tokens: np.ndarray,
    tokenizer: TextTokenizer,
    *,
    where: str | None,
    mask_token_id: int,
    vocab_size: int,
) -> np.ndarray:
    """``tokens`` when every id is an embedding row of the model and none is its mask.

    Raises:
        CheckpointError: ids beyond the model's vocabulary (the tokenizer does not fit it), or
            the default text holding the mask id.
        TextDataError: a ``data.*`` text (``where``) holding the mask id.
    """
    if tokens.size and int(tokens.max()) >= vocab_size:
        raise CheckpointError(
            tokenizer.source,
            f"gives token id {int(tokens.max())}, beyond the model's vocab_size {vocab_size}",
        )
    if np.any(tokens == mask_token_id):
        problem = f"the text holds the model's mask token (id {mask_token_id})"
        if where is None:
            raise CheckpointError(tokenizer.source, problem)
        raise TextDataError(f"{where}: {problem}")
    return tokens


def heldout_reference(
    tokenizer: TextTokenizer,
    *,
    length: int,
    count: int,
    mask_token_id: int,
    vocab_size: int,
    path: str | os.PathLike[str] | None = None,
) -> TokenizedTextReference:
    """The held-out reference of a model (module doc): windows of ``length`` tokens of ``path``
    (``data.heldout``), or of the pydoc corpus's held-out split when ``path`` is ``None``;
    ``count`` windows, fewer when the text has fewer distinct ones.

    Args:
        tokenizer: the model's tokenizer.
        length: tokens per window (the model's sequence length).
        count: the most windows.
        mask_token_id, vocab_size: the model's.
        path: the text file, or ``None``.

    Raises:
        TextDataError: a ``path`` that cannot be used (:func:`read_text`), holds the mask or
            has fewer than ``length`` tokens (naming ``data.heldout``).
        CheckpointError: a tokenizer whose ids do not fit the model (naming its files).
    """
    if path is None:
        text = corpus.heldout_text()
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        what, where = f"the pydoc corpus's held-out split ({_HELD_OUT_TOPICS})", None
    else:
        text, digest = read_text(HELDOUT_KEY, path)
        what, where = f"{HELDOUT_KEY} file {Path(path).name}", f"{HELDOUT_KEY}={str(path)!r}"
    tokens = _checked_tokens(
        tokenizer.encode(text),
        tokenizer,
        where=where,
        mask_token_id=mask_token_id,
        vocab_size=vocab_size,
    )
    if tokens.size < length:
        raise TextDataError(
            f"{where or what}: {tokens.size} tokens, fewer than one window of {length} "
            "(the sequence length, sampling.length)"
        )
    count = min(int(count), int(tokens.size) - length + 1)
    return TokenizedTextReference(
        tokenizer=tokenizer,
        text=what,
        text_sha256=digest,
        mask_token_id=int(mask_token_id),
        length=int(length),
        count=count,
        windows=corpus.windows(tokens, length, count),
    )


def calibration_passages(
    tokenizer: TextTokenizer,
    path: str | os.PathLike[str],
    *,
    length: int,
    mask_token_id: int,
    vocab_size: int,
) -> PromptPassages:
    """Passages of ``length`` tokens of the text file ``path`` (``data.calibration``): as
    many non-overlapping ones as it holds, at most :data:`MAX_CALIBRATION_PASSAGES`, evenly
    spread over it.

    Raises:
        TextDataError: a ``path`` that cannot be used (:func:`read_text`), holds the mask or
            has fewer than ``length`` tokens (naming ``data.calibration``).
        CheckpointError: a tokenizer whose ids do not fit the model (naming its files).
    """
    text, digest = read_text(CALIBRATION_KEY, path)
    where = f"{CALIBRATION_KEY}={str(path)!r}"
    tokens = _checked_tokens(
        tokenizer.encode(text),
        tokenizer,
        where=where,
        mask_token_id=mask_token_id,
        vocab_size=vocab_size,
    )
    if tokens.size < length:
        raise TextDataError(
            f"{where}: {tokens.size} tokens, fewer than one passage of {length} (a quarter of "
            "the sequence length)"
        )
    count = min(int(tokens.size) // length, MAX_CALIBRATION_PASSAGES)
    passages = corpus.windows(tokens, length, count)
    content = hashlib.sha256(f"{tokenizer.sha256}\0{digest}\0".encode())
    content.update(passages.tobytes())
    return PromptPassages(
        text=f"{CALIBRATION_KEY} file {Path(path).name}",
        sha256=content.hexdigest(),
        tokens=passages,
    )
