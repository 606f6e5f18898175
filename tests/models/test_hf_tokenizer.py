"""A Hugging Face folder's own tokenizer (``thermojax.models.hf.tokenizer``), in both formats
a folder ships: tokenizers trained here on Python's own text, saved as ``tokenizer.json`` or as
``vocab.json`` + ``merges.txt``; what the user sees is the text that comes back."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from tokenizer_folders import FORMATS, SPECIALS, VOCAB, save_tokenizer, train_bpe

from thermojax.errors import UserInputError
from thermojax.models.hf import CheckpointError
from thermojax.models.hf.tokenizer import MASK_SHOWN, load_tokenizer

TEXT = "Wrap this paragraph, naïve café déjà vu:\n\n    indented  text\tand 123 digits."


@pytest.fixture(scope="module")
def bpe():
    return train_bpe()


@pytest.fixture(scope="module", params=FORMATS)
def folder(request, bpe, tmp_path_factory):
    return save_tokenizer(bpe, tmp_path_factory.mktemp("tok"), request.param)


def test_text_round_trips_through_either_format(folder, bpe):
    tokenizer = load_tokenizer(folder)
    ids = tokenizer.encode(TEXT)
    assert ids.dtype == np.int32 and 0 < ids.size < len(TEXT.encode())  # merges were used
    assert tokenizer.decode(ids) == TEXT
    assert tokenizer.vocab_size == VOCAB
    assert int(ids.max()) < VOCAB
    # The specials are the tokens the folder declares (tokenizer_config.json beside the BPE).
    assert tokenizer.encode("<|mask|>").tolist() == [bpe.token_to_id("<|mask|>")]


def test_tokenizer_json_is_preferred_and_content_is_the_identity(bpe, tmp_path):
    both = save_tokenizer(bpe, tmp_path / "both", "vocab.json + merges.txt")
    assert load_tokenizer(both).files == ("vocab.json", "merges.txt", "tokenizer_config.json")
    save_tokenizer(train_bpe(300), both, "tokenizer.json")  # a different tokenizer wins
    preferred = load_tokenizer(both)
    assert preferred.files == ("tokenizer.json",) and preferred.vocab_size == 300
    copy = save_tokenizer(train_bpe(300), tmp_path / "copy", "tokenizer.json")
    again = load_tokenizer(copy)
    assert again == preferred and hash(again) == hash(preferred)  # equal by content
    assert load_tokenizer(save_tokenizer(bpe, tmp_path / "other", "tokenizer.json")) != again
    restored = pickle.loads(pickle.dumps(again))
    assert restored == again and restored.decode(again.encode(TEXT)) == TEXT


def test_decoding_never_fails_and_shows_what_is_not_text(folder, bpe):
    tokenizer = load_tokenizer(folder)
    mask = bpe.token_to_id("<|mask|>")
    ids = tokenizer.encode("Hello there").tolist()
    shown = tokenizer.decode([*ids, mask, 152000, VOCAB, -3, *ids], mask_token_id=mask)
    assert shown == f"Hello there{MASK_SHOWN}<id 152000><id {VOCAB}><id -3>Hello there"
    end = bpe.token_to_id(SPECIALS[0])
    assert tokenizer.decode([*ids, end]) == "Hello there"  # end of text dropped
    assert tokenizer.decode([mask]) == ""  # not the model's mask here: a special, dropped
    assert tokenizer.decode(np.array([], np.int32)) == ""
    with pytest.raises(ValueError, match="1-D integer"):
        tokenizer.decode(np.zeros((2, 2), np.int32))


def test_a_folder_without_a_tokenizer_has_none(tmp_path):
    assert load_tokenizer(tmp_path) is None
    (tmp_path / "vocab.json").write_text("{}")  # merges.txt missing: not a tokenizer
    assert load_tokenizer(tmp_path) is None


@pytest.mark.parametrize(
    ("name", "content", "named"),
    [
        ("tokenizer.json", "{not json", "tokenizer.json: not a tokenizer"),
        ("tokenizer.json", '{"model": {"type": "Nope"}}', "tokenizer.json: not a tokenizer"),
        ("merges.txt", "#version: 0.2\nonly_one_token_here\n", "vocab.json + merges.txt: not a"),
        ("vocab.json", "[1, 2", "vocab.json + merges.txt: not a"),
        ("tokenizer_config.json", "{bad", "tokenizer_config.json: not readable JSON"),
    ],
    ids=["tokenizer.json", "tokenizer.json-model", "merges", "vocab", "tokenizer_config"],
)
def test_a_corrupt_tokenizer_file_is_one_line_naming_it(bpe, tmp_path, name, content, named):
    fmt = "tokenizer.json" if name == "tokenizer.json" else "vocab.json + merges.txt"
    save_tokenizer(bpe, tmp_path, fmt)
    (tmp_path / name).write_text(content)
    with pytest.raises(CheckpointError) as raised:
        load_tokenizer(tmp_path)
    assert isinstance(raised.value, UserInputError)
    message = str(raised.value)
    assert message.startswith(named) and "\n" not in message, message


def test_special_tokens_declared_after_a_gap_are_not_misplaced(bpe, tmp_path):
    save_tokenizer(bpe, tmp_path, "vocab.json + merges.txt")
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    vocab = {token: i for token, i in vocab.items() if token not in SPECIALS}
    vocab = {token: i - len(SPECIALS) for token, i in vocab.items()}  # ids 0 .. VOCAB - 3
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    declared = {  # <|endoftext|> right after the vocabulary, <|mask|> after a gap of one id
        str(len(vocab)): {"content": "<|endoftext|>", "special": True},
        str(len(vocab) + 2): {"content": "<|mask|>", "special": True},
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": declared}))
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.encode("<|endoftext|>").tolist() == [len(vocab)]
    assert len(vocab) + 2 not in tokenizer.encode("<|mask|>").tolist()
    assert tokenizer.decode([len(vocab) + 2]) == f"<id {len(vocab) + 2}>"
