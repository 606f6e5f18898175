"""The text a masked-diffusion LM is measured and calibrated on
(``thermojax.models.dream.text_data``) and how :func:`load_masked_diffusion` takes it: held-out
windows of a folder's own tokenizer, of a ``data.heldout`` file, passages of a
``data.calibration`` file; every file that cannot be used is one line naming its key."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizer_folders import FORMATS, dream_folder

from thermojax.errors import UserInputError
from thermojax.models import shipped_path
from thermojax.models.dream import corpus
from thermojax.models.dream.diffusion import HELDOUT_WINDOWS, TextReference
from thermojax.models.dream.loading import ByteTextReference, load_masked_diffusion
from thermojax.models.dream.text_data import MAX_CALIBRATION_PASSAGES, TextDataError
from thermojax.models.hf.tokenizer import MASK_SHOWN, load_tokenizer

LENGTH = 16


@pytest.fixture(scope="module", params=FORMATS)
def folder(request, tmp_path_factory):
    return dream_folder(tmp_path_factory.mktemp("lm") / "dream", request.param)


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """Two different held-out files and a calibration file."""
    root = tmp_path_factory.mktemp("texts")
    first, second = root / "first.txt", root / "second.txt"
    first.write_text(corpus.topics()["assert"], "utf-8")
    second.write_text(corpus.topics()["while"] * 3, "utf-8")
    return first, second


def load(folder, **options):
    return load_masked_diffusion(folder, steps=4, length=LENGTH, **options)


def test_a_folder_with_a_tokenizer_takes_a_prompt_and_has_held_out_text(folder):
    tokenizer = load_tokenizer(folder)
    model = load(folder, prompt="Wrap text")
    assert model.prompt == tuple(tokenizer.encode("Wrap text").tolist())
    reference = model.reference
    assert isinstance(reference, TextReference)
    # By default: the pydoc corpus's held-out text, in this tokenizer's ids.
    expected = corpus.windows(tokenizer.encode(corpus.heldout_text()), LENGTH, HELDOUT_WINDOWS)
    np.testing.assert_array_equal(reference.heldout_tokens(), expected)
    assert "pydoc corpus's held-out split" in reference.description
    assert reference.decode(expected[0]) == tokenizer.decode(expected[0])
    assert reference.decode(expected[0]) in corpus.heldout_text()
    mask = model.options.mask_token_id
    assert reference.decode([*model.prompt, mask, 1300]) == f"Wrap text{MASK_SHOWN}<id 1300>"
    assert reference == load(folder).reference and hash(reference) == hash(load(folder).reference)


def test_a_held_out_file_replaces_the_corpus_and_its_content_is_its_identity(
    folder, texts, tmp_path
):
    first, second = texts
    tokenizer = load_tokenizer(folder)
    reference = load(folder, heldout=first).reference
    ids = tokenizer.encode(first.read_text("utf-8"))
    count = min(HELDOUT_WINDOWS, ids.size - LENGTH + 1)
    np.testing.assert_array_equal(reference.heldout_tokens(), corpus.windows(ids, LENGTH, count))
    assert "data.heldout file first.txt" in reference.description
    other = load(folder, heldout=second).reference
    assert other != reference and other.description != reference.description
    copy = tmp_path / "elsewhere.txt"
    copy.write_bytes(first.read_bytes())
    moved = load(folder, heldout=copy).reference  # the same text elsewhere: the same windows
    assert moved.config["text_sha256"] == reference.config["text_sha256"]
    np.testing.assert_array_equal(moved.heldout_tokens(), reference.heldout_tokens())


SHORT = {
    "heldout": "1 tokens, fewer than one window of 16",
    "calibration": "fewer than one passage of 4",
}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "holds no text"),
        (b"  \n\t\n", "holds no text"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8 text (byte 0"),
        (b"a", None),
    ],
    ids=["empty", "whitespace", "binary", "short"],
)
@pytest.mark.parametrize("key", ["heldout", "calibration"])
def test_a_text_file_that_cannot_be_used_is_one_line_naming_its_key(
    folder, tmp_path, key, content, problem
):
    path = tmp_path / "text.txt"
    path.write_bytes(content)
    with pytest.raises(TextDataError) as raised:
        load(folder, **{key: path})
    message = str(raised.value)
    assert message.startswith(f"data.{key}={str(path)!r}: "), message
    assert (problem or SHORT[key]) in message and "\n" not in message, message


def test_a_folder_without_a_tokenizer_refuses_text_in_one_line(tmp_path, texts):
    from thermojax.models.hf import write_dream_like

    bare = write_dream_like(tmp_path / "bare", scale=112, layers=1)
    assert load(bare).reference is None
    for options, key in (
        ({"prompt": "Hi"}, "sampling.prompt='Hi'"),
        ({"heldout": texts[0]}, f"data.heldout={str(texts[0])!r}"),
        ({"calibration": texts[0]}, f"data.calibration={str(texts[0])!r}"),
    ):
        with pytest.raises(UserInputError, match="no tokenizer thermojax can run") as raised:
            load(bare, **options)
        assert str(raised.value).startswith(f"{key}: {bare} has no tokenizer"), raised.value


def test_calibration_passages_prompt_each_calibration_sample(folder, texts):
    tokenizer = load_tokenizer(folder)
    plain = load(folder)
    assert plain.calibration_model() is plain and "calibration_prompts" not in plain.config
    model = load(folder, calibration=texts[1])
    passages = model.calibration_prompts
    ids = tokenizer.encode(texts[1].read_text("utf-8"))
    count = min(ids.size // (LENGTH // 4), MAX_CALIBRATION_PASSAGES)
    np.testing.assert_array_equal(passages.tokens, corpus.windows(ids, LENGTH // 4, count))
    assert count > 8  # distinct passages for the 8 samples below
    # Sampling is unchanged: the same initial states as without the file.
    np.testing.assert_array_equal(model.initial_state(None, 3), plain.initial_state(None, 3))
    calibrating = model.calibration_model()
    start = np.asarray(calibrating.initial_state(None, 8))
    np.testing.assert_array_equal(start[:, : LENGTH // 4], passages.rows(8))
    assert len({row.tobytes() for row in start}) == 8  # each sample its own passage
    assert (start[:, LENGTH // 4 :] == model.options.mask_token_id).all()
    assert calibrating.schedule.sum() == LENGTH - LENGTH // 4
    assert model.config["calibration_prompts"]["sha256"] == passages.sha256


def test_the_byte_model_keeps_its_reference_and_takes_a_held_out_file(texts):
    shipped = load_masked_diffusion(shipped_path("pydoc-mdlm"))
    assert shipped.reference == ByteTextReference(128)  # today's numbers, unchanged
    with_file = load_masked_diffusion(shipped_path("pydoc-mdlm"), heldout=texts[0])
    raw = np.frombuffer(texts[0].read_bytes(), np.uint8).astype(np.int32)
    count = min(HELDOUT_WINDOWS, raw.size - 128 + 1)
    np.testing.assert_array_equal(
        with_file.reference.heldout_tokens(), corpus.windows(raw, 128, count)
    )
    assert with_file.reference.decode(raw[:20]) == texts[0].read_text("utf-8")[:20]
    prompted = load_masked_diffusion(shipped_path("pydoc-mdlm"), calibration=texts[1])
    assert prompted.calibration_prompts.length == prompted.length // 4
