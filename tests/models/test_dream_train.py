"""The byte-level masked-diffusion LM: its corpus and split, its training loop, its command, and
the shipped checkpoint (never retrained here: its recorded held-out number is re-measured)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermojax.models.dream import DreamLM, corpus, load_dream
from thermojax.models.dream.objective import (
    ArchConfig,
    TrainConfig,
    corrupt,
    dream_config,
    heldout_nll_bound,
    hf_config,
    init_model,
    masked_diffusion_loss,
)
from thermojax.models.dream.train import SAMPLE_SETTINGS, load_bytes_lm, main, train

SHIPPED = corpus.SHIPPED_LM
TINY_ARCH = ArchConfig(
    hidden_size=32,
    num_hidden_layers=1,
    intermediate_size=64,
    num_attention_heads=2,
    num_key_value_heads=1,
)
TINY = TrainConfig(
    steps=60,
    batch_size=8,
    seq_len=32,
    learning_rate=1e-2,
    warmup_steps=5,
    steps_per_call=20,
    eval_windows=4,
    eval_mask_ratios=2,
    sample_steps=4,
    sample_count=1,
)
TINY_FLAGS = [
    "--steps=2",
    "--batch-size=4",
    "--seq-len=16",
    "--hidden-size=16",
    "--layers=1",
    "--intermediate-size=32",
    "--heads=2",
    "--kv-heads=1",
    "--eval-windows=2",
    "--eval-mask-ratios=2",
    "--sample-count=1",
    "--sample-steps=2",
]


def shipped_metadata() -> dict:
    return json.loads((SHIPPED / "training.json").read_text())


def skip_unless_shipped_corpus() -> dict:
    metadata = shipped_metadata()
    reason = corpus.corpus_mismatch(metadata["corpus"]["sha256"])
    if reason:
        pytest.skip(f"the shipped numbers were measured on another corpus: {reason}")
    return metadata


def run_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "thermojax.models.train_bytes_lm", *args],
        capture_output=True,
        check=False,
        text=True,
        cwd=cwd,
        timeout=300,
    )


# ------------------------------------------------------------------------- tokenizer


def test_encode_decode_round_trip_the_whole_corpus():
    text = corpus.corpus_bytes().decode("utf-8")
    ids = corpus.encode(text)
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < corpus.NUM_BYTES
    assert corpus.decode(ids) == text
    assert corpus.decode(corpus.encode("ß — “x” 😀")) == "ß — “x” 😀"


def test_decode_shows_the_mask_drops_the_other_specials_and_replaces_bad_utf8():
    assert corpus.decode([97, corpus.MASK_ID, 98, corpus.EOS_ID, 263]) == "a_b"
    assert corpus.decode([97, corpus.MASK_ID], mask_placeholder="<M>") == "a<M>"
    cut = corpus.encode("é")[:1]  # the first byte of a two-byte character
    assert corpus.decode(cut) == "\ufffd"
    for bad in ([corpus.VOCAB_SIZE], [-1], [[1, 2]], [0.5]):
        with pytest.raises(ValueError, match="ids must be"):
            corpus.decode(bad)


def test_vocabulary_layout():
    assert corpus.VOCAB_SIZE % 8 == 0 and corpus.VOCAB_SIZE > corpus.EOS_ID > corpus.MASK_ID
    assert corpus.MASK_ID == corpus.NUM_BYTES == 256


# ------------------------------------------------------------------------- corpus and split


def test_split_is_every_tenth_topic_and_nothing_held_out_is_trained_on():
    keys = list(corpus.topics())
    assert keys == sorted(keys) and len(keys) > 50
    held, trained = corpus.heldout_topics(), corpus.train_topics()
    assert held == tuple(keys[9::10])
    assert not set(held) & set(trained) and set(held) | set(trained) == set(keys)
    train_ids, heldout_ids = corpus.train_and_heldout()
    train_text = corpus.decode(train_ids)
    # Every held-out paragraph is absent from the train text (pydoc repeats some verbatim).
    paragraphs = {p.strip() for k in held for p in corpus.topics()[k].split("\n\n")}
    paragraphs = {p for p in paragraphs if len(p) >= corpus.MIN_SHARED_PARAGRAPH}
    assert len(paragraphs) > 40 and not [p for p in paragraphs if p in train_text]
    assert "The proposal that added class decorators." not in train_text  # in compound too
    assert corpus.decode(heldout_ids) == "\n\n".join(corpus.topics()[k] for k in held)
    assert 0.01 < heldout_ids.size / train_ids.size < 0.1
    assert not train_ids.flags.writeable and not heldout_ids.flags.writeable


def test_corpus_sha_and_split_sizes_are_the_recorded_ones():
    metadata = skip_unless_shipped_corpus()["corpus"]
    train_ids, heldout_ids = corpus.train_and_heldout()
    assert metadata["sha256"] == corpus.corpus_sha256()
    assert metadata["bytes"] == len(corpus.corpus_bytes())
    assert (metadata["train_tokens"], metadata["heldout_tokens"]) == (
        train_ids.size,
        heldout_ids.size,
    )
    assert metadata["heldout_topics"] == list(corpus.heldout_topics())
    assert metadata["split_rule"] == corpus.SPLIT_RULE


def test_corpus_mismatch_names_both_fingerprints():
    assert corpus.corpus_mismatch(corpus.corpus_sha256()) is None
    reason = corpus.corpus_mismatch("0" * 64)
    assert "000000000000" in reason and corpus.corpus_sha256()[:12] in reason


def test_heldout_batch_is_fixed_evenly_spread_windows():
    heldout = corpus.train_and_heldout()[1]
    windows = corpus.heldout_batch(100, 7)
    assert windows.shape == (7, 100) and windows.dtype == np.int32
    np.testing.assert_array_equal(windows, corpus.heldout_batch(100, 7))
    np.testing.assert_array_equal(windows[0], heldout[:100])
    np.testing.assert_array_equal(windows[-1], heldout[-100:])
    assert len({w.tobytes() for w in windows}) == 7
    np.testing.assert_array_equal(corpus.heldout_batch(5, 1), heldout[None, :5])
    most = heldout.size - 99
    assert len({w.tobytes() for w in corpus.heldout_batch(100, most)}) == most
    for length, count in ((0, 1), (heldout.size + 1, 1), (100, most + 1), (10, 0)):
        with pytest.raises(ValueError, match="must be"):
            corpus.heldout_batch(length, count)


# ------------------------------------------------------------------------- the objective


def reference_loss(model: DreamLM, tokens, masked, ratio) -> float:
    """float64 numpy: Dream's shift, [MASK] removed, masked cross entropy / t, per token."""
    noisy = np.where(masked, corpus.MASK_ID, tokens)
    raw = np.asarray(model.logits(jnp.asarray(noisy)), np.float64)
    shifted = np.concatenate([raw[:, :1], raw[:, :-1]], axis=1)  # prediction i from output i-1
    shifted[..., corpus.MASK_ID] = -np.inf
    top = shifted.max(axis=-1, keepdims=True)
    log_probs = shifted - top - np.log(np.exp(shifted - top).sum(axis=-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]
    return float(np.sum(np.where(masked, nll, 0.0) / ratio[:, None]) / tokens.size)


def test_loss_matches_a_float64_reference():
    model = init_model(dream_config(TINY_ARCH, seq_len=16), jax.random.key(3))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (3, 16)).astype(np.int32)
    masked = rng.random((3, 16)) < np.array([[0.2], [0.6], [1.0]])
    masked[0, 0] = True  # position 0 predicts itself, also when masked
    ratio = np.array([0.25, 0.5, 0.9], np.float32)
    ours = float(masked_diffusion_loss(model, jnp.asarray(tokens), jnp.asarray(masked), ratio))
    assert ours == pytest.approx(reference_loss(model, tokens, masked, ratio), rel=1e-5)
    none_masked = np.zeros_like(masked)
    assert float(masked_diffusion_loss(model, jnp.asarray(tokens), none_masked, ratio)) == 0.0


def test_corrupt_draws_ratios_in_range_and_masks_at_that_rate():
    tokens = jnp.zeros((64, 512), jnp.int32)
    masked, ratio = corrupt(tokens, jax.random.key(0), eps=1e-3)
    ratio = np.asarray(ratio)
    assert masked.shape == tokens.shape and ratio.shape == (64,)
    assert ratio.min() > 1e-3 and ratio.max() <= 1.0
    # stratified: exactly one ratio in each of the 64 strata
    strata = np.floor((ratio - 1e-3) / (1 - 1e-3) * 64).astype(int)
    assert sorted(strata.tolist()) == list(range(64))
    rates = np.asarray(masked).mean(axis=1)
    assert np.abs(rates - ratio).max() < 0.1


# ------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> tuple[Path, Path, dict]:
    first, second = (tmp_path_factory.mktemp("run") / "lm" for _ in range(2))
    metadata = train(first, TINY, TINY_ARCH, log=lambda line: None)
    train(second, TINY, TINY_ARCH, log=lambda line: None)
    return first, second, metadata


def test_training_lowers_the_loss(tiny_runs):
    curve = tiny_runs[2]["training"]["loss_curve"]
    assert [point["step"] for point in curve] == [20, 40, 60]
    assert curve[-1]["loss"] < curve[0]["loss"] - 0.3
    assert curve[0]["loss"] < np.log(256) + 1.0  # starts near uniform over bytes


def test_training_is_deterministic(tiny_runs):
    first, second, _ = tiny_runs
    for name in ("model.safetensors", "config.json", "training.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other = train(
        first.parent / "seed1",
        dataclasses.replace(TINY, seed=1),
        TINY_ARCH,
        log=lambda _: None,
    )
    assert other["training"]["loss_curve"] != tiny_runs[2]["training"]["loss_curve"]


def test_output_is_a_dream_folder(tiny_runs):
    folder, _, metadata = tiny_runs
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        "training.json",
    ]
    assert not list(folder.parent.glob(".*.tmp"))  # the staging folder was renamed
    config = json.loads((folder / "config.json").read_text())
    assert config == hf_config(TINY_ARCH, seq_len=TINY.seq_len)
    assert (config["model_type"], config["architectures"]) == ("Dream", ["DreamModel"])
    assert config["mask_token_id"] == corpus.MASK_ID and config["vocab_size"] == corpus.VOCAB_SIZE
    model = load_dream(folder)
    assert model.config.mask_token_id == corpus.MASK_ID
    assert metadata["corpus"]["sha256"] == corpus.corpus_sha256()
    assert metadata["tokenizer"]["type"] == "bytes"
    heldout = metadata["heldout"]
    assert 0 < heldout["nll_bound_nats_per_byte"] < 7
    assert heldout["perplexity"] == pytest.approx(np.exp(heldout["nll_bound_nats_per_byte"]))
    recomputed = heldout_nll_bound(
        model,
        length=heldout["length"],
        count=heldout["windows"],
        num_mask_ratios=heldout["num_mask_ratios"],
        seed=heldout["seed"],
    )
    assert recomputed == pytest.approx(heldout["nll_bound_nats_per_byte"], rel=1e-5)
    samples = metadata["sampling"]["samples"]
    assert [(s["unmasking"], s["temperature"], s["top_p"]) for s in samples] == list(
        SAMPLE_SETTINGS
    )
    assert all(len(s["texts"]) == 1 and len(s["texts"][0]) >= 1 for s in samples)


def test_evaluator_warns_about_another_corpus(tiny_runs):
    model = load_dream(tiny_runs[0])
    with pytest.warns(UserWarning, match="not comparable"):
        heldout_nll_bound(model, length=16, count=1, num_mask_ratios=1, recorded_sha256="0" * 64)


# ------------------------------------------------------------------------- the command


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps=0"], "steps must be an integer >= 1"),
        (["--steps=x"], "invalid int value"),
        (["--learning-rate=-1"], "learning_rate must be a number in (0.0, 1.0]"),
        (["--seq-len=1"], "seq_len must be an integer in [2,"),
        (["--eval-windows=100000"], "eval_windows must be an integer in [1,"),
        (["--seed=-1"], "seed must be an integer in [0,"),
        (["--hidden-size=30", "--heads=4"], "hidden_size=30 is not a multiple"),
        (["--heads=4", "--kv-heads=3"], "num_attention_heads=4 is not a multiple"),
        (["--ship", "--out=x"], "--ship and --out are exclusive"),
        (["--out", str(SHIPPED)], "is the shipped checkpoint: pass --ship"),
        (["--unknown"], "unrecognized arguments"),
    ],
    ids=lambda value: value if isinstance(value, str) else " ".join(value),
)
def test_bad_arguments_end_in_one_line_before_any_work(flags, message, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("thermojax.models.dream.train.train", no_training)
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", "/nonexistent/never-written", *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err


def test_command_refuses_a_non_empty_folder_and_the_shipped_one(tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    result = run_command("--out", str(occupied), *TINY_FLAGS, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "is not empty" in result.stderr
    assert (occupied / "keep.txt").read_text() == "mine"
    before = {p.name: p.stat().st_mtime_ns for p in SHIPPED.iterdir()}
    result = run_command("--out", str(SHIPPED), "--force", *TINY_FLAGS, cwd=tmp_path)
    assert result.returncode == 2 and "pass --ship" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in SHIPPED.iterdir()} == before


@pytest.mark.slow
def test_command_writes_the_default_folder_and_force_replaces_it_with_the_same_bytes(tmp_path):
    result = run_command(*TINY_FLAGS, cwd=tmp_path)  # the default --out: ./pydoc_mdlm
    assert result.returncode == 0, result.stderr
    out = tmp_path / "pydoc_mdlm"
    metadata = json.loads((out / "training.json").read_text())
    assert metadata["command"] == " ".join(
        ["python -m thermojax.models.train_bytes_lm", *TINY_FLAGS]
    )
    assert metadata["training"]["steps"] == 2
    assert load_dream(out).config.hidden_size == 16
    weights = (out / "model.safetensors").read_bytes()
    (out / "stale.txt").write_text("old")
    result = run_command("--out", "pydoc_mdlm", "--force", *TINY_FLAGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pydoc_mdlm"]  # no temporaries left
    assert not (out / "stale.txt").exists()
    assert (out / "model.safetensors").read_bytes() == weights  # another process, same bytes
    again = json.loads((out / "training.json").read_text())
    assert again["training"] == metadata["training"] and again["heldout"] == metadata["heldout"]


# ------------------------------------------------------------------------- the shipped model


def test_shipped_checkpoint_loads_and_is_small():
    files = sorted(p.name for p in SHIPPED.iterdir())
    assert files == ["config.json", "model.safetensors", "training.json"]
    assert sum(p.stat().st_size for p in SHIPPED.iterdir()) < 10_000_000
    model = load_dream(SHIPPED)
    config = json.loads((SHIPPED / "config.json").read_text())
    assert (config["model_type"], config["tie_word_embeddings"]) == ("Dream", False)
    assert model.config.mask_token_id == corpus.MASK_ID
    assert model.vocab_size == corpus.VOCAB_SIZE
    metadata = shipped_metadata()
    assert metadata["parameters"] == model.num_parameters()
    assert metadata["heldout"]["nll_bound_nats_per_byte"] < 2.5  # learned: uniform is 5.55
    assert metadata["training"]["final_train_loss"] < metadata["training"]["loss_curve"][0]["loss"]


def test_shipped_heldout_bound_reproduces():
    metadata = skip_unless_shipped_corpus()
    heldout = metadata["heldout"]
    model, _ = load_bytes_lm(SHIPPED)
    recomputed = heldout_nll_bound(
        model,
        length=heldout["length"],
        count=heldout["windows"],
        num_mask_ratios=heldout["num_mask_ratios"],
        seed=heldout["seed"],
        recorded_sha256=metadata["corpus"]["sha256"],
    )
    assert recomputed == pytest.approx(heldout["nll_bound_nats_per_byte"], rel=1e-4)
