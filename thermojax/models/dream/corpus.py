"""The byte-level corpus of the shipped masked-diffusion LM: CPython's own documentation.

**The corpus** is ``pydoc_data.topics.topics``, the ~465 KB of reference prose (statements,
data model, string methods, ...) that ships with every CPython for ``help()``: its topics in
sorted key order, joined by :data:`TOPIC_SEPARATOR`, as UTF-8 bytes (:func:`corpus_bytes`). It
is the same text on every machine with the same Python release, but another release rewrites
parts of it; :func:`corpus_sha256` fingerprints it, the shipped model records the fingerprint
it was trained and evaluated on, and :func:`corpus_mismatch` says when the running Python's
corpus differs (then held-out numbers are not comparable with the recorded ones).

**The tokenizer** is the bytes: token id = byte value ``0..255``; :data:`MASK_ID` (256) is the
masked-diffusion ``[MASK]``; :data:`EOS_ID` (257) is the end-of-text / padding / bos id the
model config names (never in the corpus, never a training target); ids ``258..263`` are unused
padding of the vocabulary to :data:`VOCAB_SIZE` = 264, a multiple of 8. :func:`decode` shows
``[MASK]`` as a visible placeholder (``"_"`` by default, which is also a real byte, so pass
another placeholder where that matters), drops the other special ids, and replaces invalid
UTF-8 (a multi-byte character cut by a window edge or a mask) with U+FFFD.

**The split** never changes (for a given corpus):

- held out: every 10th topic by sorted key, the ones at sorted index ``i % 10 == 9``
  (:func:`heldout_topics`: 7 topics, ~11 KB on Python 3.11);
- train: every other topic, *decontaminated*: pydoc repeats text between topics (``compound``
  contains the whole ``class`` topic, ``identifiers`` the whole ``id-classes``), so every
  paragraph (a ``"\\n\\n"``-separated block) of a train topic that contains a held-out
  paragraph of at least :data:`MIN_SHARED_PARAGRAPH` characters (both stripped of surrounding
  whitespace) is removed. No such held-out paragraph occurs anywhere in the train text.

:func:`train_and_heldout` gives both as int32 token streams (topics joined by the separator),
:func:`heldout_batch` fixed, evenly spaced windows of the held-out stream for evaluation.

Example:
    >>> ids = encode("héllo")
    >>> ids.tolist()
    [104, 195, 169, 108, 108, 111]
    >>> decode(ids), decode([104, MASK_ID, 108, EOS_ID])
    ('héllo', 'h_l')
    >>> heldout_batch(64, 3).shape
    (3, 64)
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "EOS_ID",
    "HELDOUT_EVERY",
    "MASK_ID",
    "MASK_PLACEHOLDER",
    "MIN_SHARED_PARAGRAPH",
    "NUM_BYTES",
    "SHIPPED_LM",
    "SPLIT_RULE",
    "TOPIC_SEPARATOR",
    "VOCAB_SIZE",
    "corpus_bytes",
    "corpus_mismatch",
    "corpus_sha256",
    "decode",
    "encode",
    "heldout_batch",
    "heldout_text",
    "heldout_topics",
    "topics",
    "train_and_heldout",
    "train_topics",
    "windows",
]

NUM_BYTES = 256
"""Token ids ``0..255`` are the byte values."""
MASK_ID = 256
"""The masked-diffusion ``[MASK]`` token."""
EOS_ID = 257
"""End of text; the config's ``bos_token_id``, ``eos_token_id`` and ``pad_token_id``."""
VOCAB_SIZE = 264
"""256 bytes + ``[MASK]`` + end of text + 6 unused ids (a multiple of 8)."""
MASK_PLACEHOLDER = "_"
"""How :func:`decode` shows ``[MASK]`` by default."""
TOPIC_SEPARATOR = "\n\n"
"""Between topics (each ends with a newline: two blank lines between topics)."""
HELDOUT_EVERY = 10
"""The topic at sorted index ``i`` is held out when ``i % HELDOUT_EVERY == HELDOUT_EVERY - 1``."""
MIN_SHARED_PARAGRAPH = 40
"""Held-out paragraphs this long (stripped) are removed from the train text wherever they occur."""
SPLIT_RULE = (
    "held out: pydoc_data.topics topics at sorted-key index i % 10 == 9; train: the other "
    "topics without their paragraphs ('\\n\\n'-separated blocks) that contain a held-out "
    "paragraph of >= 40 characters (both stripped); each side's topics joined by '\\n\\n' in "
    "sorted key order, UTF-8 bytes"
)
"""The split, in words (recorded in the shipped model's ``training.json``)."""
SHIPPED_LM = Path(__file__).parents[1] / "checkpoints" / "pydoc_mdlm"
"""The shipped byte-level masked-diffusion LM (a Dream-format Hugging Face folder)."""

_PARAGRAPH = "\n\n"


@functools.cache
def topics() -> dict[str, str]:
    """The running Python's ``pydoc_data.topics.topics``, keys in sorted order (a copy)."""
    from pydoc_data.topics import topics as pydoc_topics

    return {key: pydoc_topics[key] for key in sorted(pydoc_topics)}


def heldout_topics() -> tuple[str, ...]:
    """The held-out topic keys: sorted index ``i % 10 == 9``."""
    return tuple(key for i, key in enumerate(topics()) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1)


def train_topics() -> tuple[str, ...]:
    """The train topic keys: all the others."""
    held = set(heldout_topics())
    return tuple(key for key in topics() if key not in held)


@functools.cache
def corpus_bytes() -> bytes:
    """The whole corpus: every topic in sorted key order, joined by the separator, UTF-8."""
    return TOPIC_SEPARATOR.join(topics().values()).encode("utf-8")


@functools.cache
def corpus_sha256() -> str:
    """The hex sha256 of :func:`corpus_bytes` (which Python release's documentation this is)."""
    return hashlib.sha256(corpus_bytes()).hexdigest()


def corpus_mismatch(recorded_sha256: str) -> str | None:
    """Why numbers recorded on the corpus ``recorded_sha256`` do not apply here, or ``None``.

    Example:
        >>> corpus_mismatch(corpus_sha256()) is None
        True
    """
    if recorded_sha256 == corpus_sha256():
        return None
    return (
        f"this Python's pydoc corpus (Python {sys.version.split()[0]}, sha256 "
        f"{corpus_sha256()[:12]}...) differs from the recorded one (sha256 "
        f"{str(recorded_sha256)[:12]}...): held-out numbers are not comparable"
    )


def encode(text: str) -> np.ndarray:
    """``text``'s UTF-8 bytes as int32 token ids ``[n]``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)


@functools.cache
def _byte_table(mask_placeholder: str) -> tuple[bytes, ...]:
    specials = [b""] * (VOCAB_SIZE - NUM_BYTES)
    specials[MASK_ID - NUM_BYTES] = mask_placeholder.encode("utf-8")
    return tuple(bytes([i]) for i in range(NUM_BYTES)) + tuple(specials)


def decode(ids: Sequence[int] | np.ndarray, *, mask_placeholder: str = MASK_PLACEHOLDER) -> str:
    """Token ids ``[n]`` back to text (module docstring: the special ids, invalid UTF-8).

    Raises:
        ValueError: ids that are not a 1-D integer sequence in ``[0, VOCAB_SIZE)``.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"ids must be a 1-D integer sequence, got {ids.dtype} {ids.shape}")
    bad = ids[(ids < 0) | (ids >= VOCAB_SIZE)]
    if bad.size:
        raise ValueError(f"ids must be in [0, {VOCAB_SIZE}), got {int(bad[0])}")
    table = _byte_table(mask_placeholder)
    return b"".join(table[i] for i in ids.tolist()).decode("utf-8", errors="replace")


def _decontaminate(text: str, heldout_paragraphs: set[str]) -> str:
    kept = [
        p for p in text.split(_PARAGRAPH) if not any(shared in p for shared in heldout_paragraphs)
    ]
    return _PARAGRAPH.join(kept)


@functools.cache
def heldout_text() -> str:
    """The held-out side of the split as text: the held-out topics joined by the separator
    (what another tokenizer than the bytes tokenizes for its held-out windows).

    Example:
        >>> encode(heldout_text()).tolist() == train_and_heldout()[1].tolist()
        True
    """
    corpus = topics()
    return TOPIC_SEPARATOR.join(corpus[key] for key in heldout_topics())


@functools.cache
def _split() -> tuple[np.ndarray, np.ndarray]:
    corpus = topics()
    held = heldout_topics()
    heldout_paragraphs = {
        p.strip()
        for key in held
        for p in corpus[key].split(_PARAGRAPH)
        if len(p.strip()) >= MIN_SHARED_PARAGRAPH
    }
    train_text = TOPIC_SEPARATOR.join(
        _decontaminate(corpus[key], heldout_paragraphs) for key in train_topics()
    )
    train_ids, heldout_ids = encode(train_text), encode(heldout_text())
    train_ids.flags.writeable = False
    heldout_ids.flags.writeable = False
    return train_ids, heldout_ids


def train_and_heldout() -> tuple[np.ndarray, np.ndarray]:
    """``(train_ids, heldout_ids)``: the two sides of the split as int32 byte streams.

    Read-only arrays (cached: every call returns the same two).
    """
    return _split()


def heldout_batch(length: int, count: int) -> np.ndarray:
    """``count`` fixed windows of ``length`` held-out tokens, int32 ``[count, length]``.

    Window ``j`` starts at ``round(j * (n - length) / (count - 1))`` of the ``n``-token held-out
    stream (one window at 0 for ``count = 1``): evenly spread over the whole held-out text,
    distinct, overlapping only when ``count * length > n``. The same windows every call.

    Raises:
        ValueError: ``length`` not in ``[1, n]``, or ``count`` not in ``[1, n - length + 1]``.
    """
    return windows(_split()[1], length, count, what="held-out")


def windows(tokens: np.ndarray, length: int, count: int, *, what: str = "") -> np.ndarray:
    """``count`` fixed windows of ``length`` tokens of the stream ``tokens`` ``[n]``, int32
    ``[count, length]``: window ``j`` starts at ``round(j * (n - length) / (count - 1))`` (one
    window at 0 for ``count = 1``), as :func:`heldout_batch` takes them from the held-out stream.

    Args:
        tokens: int ``[n]``, the stream.
        length, count: the windows' length and number.
        what: the stream's name in errors (``"held-out"``: ``(the held-out tokens)``).

    Raises:
        ValueError: ``length`` not in ``[1, n]``, or ``count`` not in ``[1, n - length + 1]``.

    Example:
        >>> windows(np.arange(10), 4, 3).tolist()
        [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    """
    stream = np.asarray(tokens)
    size = stream.size
    what = f"{what} tokens" if what else "tokens"
    for name, value in (("length", length), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    if length > size:
        raise ValueError(f"length must be <= {size} (the {what}), got length={length}")
    if count > size - length + 1:
        raise ValueError(
            f"count must be <= {size - length + 1} (distinct windows of {length}), got "
            f"count={count}"
        )
    starts = np.rint(np.linspace(0, size - length, count)).astype(np.int64) if count > 1 else [0]
    return np.stack([stream[s : s + length] for s in starts]).astype(np.int32)
