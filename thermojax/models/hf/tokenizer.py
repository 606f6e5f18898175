"""A Hugging Face folder's own tokenizer, read with Hugging Face's ``tokenizers`` library.

:func:`load_tokenizer` reads, in this order of preference:

- ``tokenizer.json`` (the "fast" tokenizer file: LLaDA's, Qwen2's), as it is;
- ``vocab.json`` + ``merges.txt`` (a byte-level BPE without ``tokenizer.json``: Dream's), run as
  Qwen2 / Dream run it (``tokenization_dream.py`` is Qwen2's tokenizer): NFC, Qwen2's
  pre-tokenization regex, byte-level BPE, byte-level decoding; the special tokens that
  ``tokenizer_config.json``'s ``added_tokens_decoder`` declares are added at their ids
  (``<|endoftext|>``, ``<|mask|>``, ...), each where it lands: at its id in ``vocab.json``, or
  at the next id after the vocabulary (one declared after a gap is left out).

A folder with neither gives ``None``. A tokenizer file that cannot be read is a one-line
:class:`~thermojax.models.hf.headers.CheckpointError` naming it.

:class:`FolderTokenizer` encodes text without adding special tokens (a prompt or a held-out
text is plain text) and decodes any ids without failing: the model's ``[MASK]`` id shows as
:data:`MASK_SHOWN`, an id the tokenizer does not have (a model's embedding vocabulary is often
padded beyond its tokenizer's: Dream's 152064 rows for ~151665 tokens) as ``<id N>``, other
special tokens (end of text, padding) are dropped.

Example:
    >>> import tempfile, pathlib
    >>> from tokenizers import ByteLevelBPETokenizer
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> bpe = ByteLevelBPETokenizer()
    >>> bpe.train_from_iterator(["hello world"] * 10, vocab_size=300, show_progress=False)
    >>> bpe.save(str(folder / "tokenizer.json"))
    >>> tokenizer = load_tokenizer(folder)
    >>> ids = tokenizer.encode("hello world")
    >>> tokenizer.decode(ids)
    'hello world'
    >>> tokenizer.decode([*ids[:1], 9999, 5000], mask_token_id=5000)
    'hello<id 9999>[MASK]'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thermojax.models.hf.headers import CheckpointError

__all__ = [
    "MASK_SHOWN",
    "MERGES_FILE",
    "QWEN2_PRETOKENIZE_REGEX",
    "TOKENIZER_CONFIG_FILE",
    "TOKENIZER_FILE",
    "VOCAB_FILE",
    "FolderTokenizer",
    "load_tokenizer",
]

TOKENIZER_FILE = "tokenizer.json"
"""The ``tokenizers`` library's own file (preferred when a folder has both formats)."""
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
"""A byte-level BPE's vocabulary and merges (Dream's tokenizer files)."""
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
"""transformers' tokenizer settings; its ``added_tokens_decoder`` is read beside the BPE files."""
MASK_SHOWN = "[MASK]"
"""How a decoded ``[MASK]`` looks."""
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen2's (and so Dream's) split of text before byte-level BPE."""


@dataclasses.dataclass(frozen=True)
class FolderTokenizer:
    """A folder's tokenizer (module doc): hashable and equal by the content of its files.

    Attributes:
        files: the files it was read from, e.g. ``("tokenizer.json",)``.
        sha256: the hex sha256 over those files' bytes, in that order.
        backend: the ``tokenizers.Tokenizer`` (not compared or hashed: ``sha256`` stands for it).
    """

    files: tuple[str, ...]
    sha256: str
    backend: Any = dataclasses.field(compare=False, hash=False, repr=False)

    @property
    def source(self) -> str:
        """The files, e.g. ``vocab.json + merges.txt``."""
        return " + ".join(self.files)

    @property
    def vocab_size(self) -> int:
        """The ids it has, added tokens included."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> np.ndarray:
        """``text`` as int32 token ids ``[n]``, without added special tokens (no BOS/EOS).

        Raises:
            TypeError: ``text`` is not a ``str``.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return np.asarray(ids, np.int32).reshape(-1)

    def decode(self, ids: Sequence[int] | np.ndarray, *, mask_token_id: int | None = None) -> str:
        """Token ids ``[n]`` as text, whatever the ids (module doc: the mask, unknown ids,
        special tokens).

        Raises:
            ValueError: ``ids`` is not a 1-D integer sequence.
        """
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
            raise ValueError(f"ids must be a 1-D integer sequence, got {ids.dtype} {ids.shape}")
        pieces: list[str] = []
        run: list[int] = []
        for token in ids.tolist():
            shown = None
            if token == mask_token_id:
                shown = MASK_SHOWN
            elif token < 0 or self.backend.id_to_token(token) is None:
                shown = f"<id {token}>"
            if shown is None:
                run.append(token)
                continue
            if run:
                pieces.append(self.backend.decode(run, skip_special_tokens=True))
                run = []
            pieces.append(shown)
        if run:
            pieces.append(self.backend.decode(run, skip_special_tokens=True))
        return "".join(pieces)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _sha256(folder: Path, names: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        try:
            digest.update((folder / name).read_bytes())
        except OSError as err:
            raise CheckpointError(name, f"not readable ({_one_line(err)})") from None
    return digest.hexdigest()


def _from_tokenizer_json(folder: Path) -> Any:
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(folder / TOKENIZER_FILE))
    except Exception as err:  # noqa: BLE001 (the library raises a bare Exception for every parse error)
        raise CheckpointError(
            TOKENIZER_FILE, f"not a tokenizer the tokenizers library reads ({_one_line(err)})"
        ) from None


def _added_tokens(folder: Path) -> list[tuple[int, dict[str, Any]]]:
    """``tokenizer_config.json``'s ``added_tokens_decoder`` as ``(id, entry)`` in id order
    (none without the file)."""
    path = folder / TOKENIZER_CONFIG_FILE
    if not path.is_file():
        return []
    try:
        config = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(
            TOKENIZER_CONFIG_FILE, f"not readable JSON ({_one_line(err)})"
        ) from None
    declared = config.get("added_tokens_decoder") if isinstance(config, dict) else None
    if not isinstance(declared, dict):
        return []
    added = []
    for key, entry in declared.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("content"), str)):
            raise CheckpointError(
                TOKENIZER_CONFIG_FILE, f"added_tokens_decoder[{key!r}] has no content string"
            )
        try:
            added.append((int(key), entry))
        except ValueError:
            raise CheckpointError(
                TOKENIZER_CONFIG_FILE, f"added_tokens_decoder key {key!r} is not a token id"
            ) from None
    return sorted(added, key=lambda pair: pair[0])


def _from_bpe_files(folder: Path) -> Any:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    try:
        model = BPE.from_file(str(folder / VOCAB_FILE), str(folder / MERGES_FILE))
    except Exception as err:  # noqa: BLE001 (the library raises a bare Exception for every parse error)
        raise CheckpointError(
            f"{VOCAB_FILE} + {MERGES_FILE}",
            f"not a byte-level BPE the tokenizers library reads ({_one_line(err)})",
        ) from None
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    for token_id, entry in _added_tokens(folder):
        known = tokenizer.token_to_id(entry["content"])
        placed = known == token_id  # a token of vocab.json, now matched whole in text
        if known is None and token_id == tokenizer.get_vocab_size(with_added_tokens=True):
            placed = True  # the next id: added there
        if not placed:
            continue  # declared elsewhere than it would land: left out, decoded as its id
        special = bool(entry.get("special", False))
        token = AddedToken(entry["content"], special=special)
        if special:
            tokenizer.add_special_tokens([token])
        else:
            tokenizer.add_tokens([token])
    return tokenizer


def load_tokenizer(folder: str | os.PathLike[str]) -> FolderTokenizer | None:
    """The folder's tokenizer (module doc), or ``None`` when it has none.

    Raises:
        CheckpointError: a tokenizer file that cannot be read or parsed (one line naming it).
    """
    folder = Path(folder).expanduser()
    if (folder / TOKENIZER_FILE).is_file():
        files: tuple[str, ...] = (TOKENIZER_FILE,)
        backend = _from_tokenizer_json(folder)
    elif (folder / VOCAB_FILE).is_file() and (folder / MERGES_FILE).is_file():
        files = (VOCAB_FILE, MERGES_FILE)
        if (folder / TOKENIZER_CONFIG_FILE).is_file():
            files += (TOKENIZER_CONFIG_FILE,)
        backend = _from_bpe_files(folder)
    else:
        return None
    return FolderTokenizer(files=files, sha256=_sha256(folder, files), backend=backend)
