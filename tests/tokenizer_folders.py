"""Small real tokenizers, trained here with Hugging Face's ``tokenizers`` library on text that
ships with Python, beside a small synthetic Dream-format checkpoint: the folders the tokenizer
tests and the language-model runs with text use.

- :func:`train_bpe`: a byte-level BPE trained on ``textwrap``'s source (~20 KB), with Dream's
  special tokens ``<|endoftext|>`` and ``<|mask|>`` (ids 0 and 1).
- :func:`save_tokenizer`: into a folder as ``tokenizer.json`` (the fast format LLaDA and Qwen2
  ship) or as ``vocab.json`` + ``merges.txt`` (+ ``tokenizer_config.json`` declaring the special
  tokens, as Dream ships them).
- :func:`dream_folder`: :func:`~thermojax.models.hf.write_dream_like` at scale 112 (vocabulary
  1344, more rows than the tokenizer's ids, as Dream's 152064 for its ~151665) with a tokenizer,
  and ``config.json``'s ``mask_token_id`` set to the tokenizer's ``<|mask|>``.
"""

from __future__ import annotations

import functools
import inspect
import json
import textwrap
from pathlib import Path

from tokenizers import ByteLevelBPETokenizer

from thermojax.models.hf import write_dream_like

VOCAB = 600
"""Ids of the trained tokenizer (fewer than the checkpoint's 1344 embedding rows)."""
SPECIALS = ("<|endoftext|>", "<|mask|>")
FORMATS = ("tokenizer.json", "vocab.json + merges.txt")


@functools.cache
def training_text() -> str:
    """``textwrap``'s source: a few KB of English and Python that ships with every CPython."""
    return Path(inspect.getsourcefile(textwrap)).read_text("utf-8")


def train_bpe(vocab_size: int = VOCAB, text: str | None = None) -> ByteLevelBPETokenizer:
    """A byte-level BPE of ``vocab_size`` ids (the specials first) trained on ``text``."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [training_text() if text is None else text],
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIALS),
        show_progress=False,
    )
    return bpe


def save_tokenizer(bpe: ByteLevelBPETokenizer, folder: Path, fmt: str) -> Path:
    """``bpe`` into ``folder`` (made if missing) in the format ``fmt`` (one of :data:`FORMATS`);
    returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "tokenizer.json":
        bpe.save(str(folder / "tokenizer.json"))
    else:
        bpe.save_model(str(folder))
        declared = {
            str(bpe.token_to_id(token)): {"content": token, "special": True} for token in SPECIALS
        }
        (folder / "tokenizer_config.json").write_text(
            json.dumps({"added_tokens_decoder": declared}), "utf-8"
        )
    return folder


def dream_folder(folder: Path, fmt: str = "tokenizer.json") -> Path:
    """A runnable Dream-format folder with a tokenizer in ``fmt`` (module doc)."""
    write_dream_like(folder, scale=112, layers=1)
    bpe = train_bpe()
    save_tokenizer(bpe, folder, fmt)
    config = json.loads((folder / "config.json").read_text())
    config["mask_token_id"] = bpe.token_to_id("<|mask|>")
    config["eos_token_id"] = config["pad_token_id"] = config["bos_token_id"] = 0
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder
