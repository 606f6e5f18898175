"""A masked-diffusion LM folder with its own tokenizer through the pipeline: the prompt encoded
with it, the held-out figures on its tokens (the corpus's held-out text, or ``data.heldout``),
sample texts decoded in the result and the report, calibration prompted by ``data.calibration``,
and every text or tokenizer file that cannot be used refused in one line."""

from __future__ import annotations

import json

import jax
import markupsafe
import numpy as np
import pytest
from in_process import run_main
from tokenizer_folders import dream_folder
from user_env import command_env

from thermojax.cli import baseline as baseline_module
from thermojax.cli.config import to_config
from thermojax.core.text_metrics import masked_diffusion_nll_bound
from thermojax.errors import UserInputError
from thermojax.models.dream import corpus, load_dream, shift_logits
from thermojax.models.dream.diffusion import HELDOUT_WINDOWS
from thermojax.models.dream.loading import load_masked_diffusion
from thermojax.models.hf.tokenizer import load_tokenizer
from thermojax.pipeline import run
from thermojax.pipeline.cache.stages import StageCache, reference_fingerprint
from thermojax.pipeline.families.masked_lm import MASKED_LM
from thermojax.pipeline.measure.calibrate import calibrate
from thermojax.pipeline.measure.sampling import sample
from thermojax.pipeline.quality.text import NUM_MASK_RATIOS
from thermojax.pipeline.weights.quantize import quantize_weights

PROMPT = "Wrap the text"
LENGTH = 16
SMALL = [
    "model.run=diffusion",
    "bit_width=4",
    "group_size=4",
    "num_time_groups=4",
    "calibration.samples=4",
    "calibration.samples_per_step=8",
    "sampling.num_samples=4",
    "sampling.steps=8",
    f"sampling.length={LENGTH}",
    "wandb.mode=disabled",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return dream_folder(tmp_path_factory.mktemp("lm") / "dream")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    root = tmp_path_factory.mktemp("texts")
    first, second = root / "first.txt", root / "second.txt"
    first.write_text(corpus.topics()["assert"], "utf-8")
    second.write_text(corpus.topics()["while"] * 3, "utf-8")
    return first, second


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def settings(folder, **extra):
    base = {
        "model": {"path": str(folder), "run": "diffusion"},
        "bit_width": 4,
        "group_size": 4,
        "num_time_groups": 4,
        "calibration": {"samples": 4, "samples_per_step": 8},
        "sampling": {"num_samples": 4, "steps": 8, "length": LENGTH},
    }
    for key, value in extra.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return to_config(base)


def command(folder, tmp_path, monkeypatch, capsys, *args):
    monkeypatch.setattr(baseline_module, "enable_compilation_cache", lambda: None)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    argv = [f"model.path={folder}", *SMALL, *args, f"hydra.run.dir={work / 'run'}"]
    env = command_env(tmp_path / "home", tmp_path / "cache")
    return run_main(
        baseline_module.main, argv, env=env, cwd=work, monkeypatch=monkeypatch, capsys=capsys
    )


def test_the_command_runs_a_tokenized_folder_with_a_prompt(folder, tmp_path, monkeypatch, cache):
    # The baseline command's own function, in this process (what main runs once Hydra is done).
    monkeypatch.setattr(baseline_module, "enable_compilation_cache", lambda: None)
    config = settings(folder, sampling={"prompt": PROMPT}, wandb={"mode": "disabled"})
    out = tmp_path / "run"
    files = baseline_module.execute(config, out)
    data = json.loads(files["json"].read_text())
    quality = data["quality"]
    for key in ("heldout_perplexity_fp32", "heldout_perplexity_quantized"):
        assert isinstance(quality[key], float) and quality[key] > 1, key
    # The held-out figure is the fp32 bound on the corpus's held-out text in this tokenizer's
    # ids, recomputed here.
    tokenizer = load_tokenizer(folder)
    ids = tokenizer.encode(corpus.heldout_text())
    heldout = corpus.windows(ids, LENGTH, HELDOUT_WINDOWS)
    lm = load_dream(folder)
    _, nll = masked_diffusion_nll_bound(
        lambda tokens: shift_logits(lm.forward(None, tokens)[0]),
        heldout,
        key=jax.random.PRNGKey(data["config"]["seed"]),
        num_mask_ratios=NUM_MASK_RATIOS,
        mask_token_id=lm.config.mask_token_id,
    )
    assert quality["heldout_perplexity_fp32"] == pytest.approx(float(np.exp(nll)), rel=1e-4)
    # The samples, decoded: each starts with the prompt, in the result and in the report.
    tokens = np.load(files["samples"])["quantized"]
    texts = quality["sample_text_fp32"] + quality["sample_text_quantized"]
    assert len(texts) == 8 and all(text.startswith(PROMPT) for text in texts), texts
    assert quality["sample_text_quantized"][0] == tokenizer.decode(
        tokens[0], mask_token_id=lm.config.mask_token_id
    )
    page = files["html"].read_text()
    for text in texts:
        assert f'<pre class="sample">{markupsafe.escape(text)}</pre>' in page


def test_a_held_out_file_gives_its_own_figure_and_cache_entry(folder, texts, tmp_path, cache):
    # One path, two texts: each its own held-out figure, never the other's cached entry.
    first, second = texts
    path = tmp_path / "heldout.txt"
    path.write_bytes(first.read_bytes())
    before = reference_fingerprint(load_masked_diffusion(folder, length=LENGTH, heldout=path))
    on_first = run(settings(folder, data={"heldout": str(path)}))
    path.write_bytes(second.read_bytes())
    after = reference_fingerprint(load_masked_diffusion(folder, length=LENGTH, heldout=path))
    on_second = run(settings(folder, data={"heldout": str(path)}))
    assert before != after and on_second.cache["quality"] == "miss"
    f, s = on_first.quality, on_second.quality
    assert f.heldout_perplexity_fp32 != s.heldout_perplexity_fp32
    assert f.heldout_perplexity_quantized != s.heldout_perplexity_quantized
    assert f.generative_perplexity_fp32 == s.generative_perplexity_fp32  # the same samples
    assert on_second.cache["fp32_samples"] == "hit"


def test_calibration_passages_prompt_calibration_and_nothing_else(folder, texts):
    config = settings(folder, data={"calibration": str(texts[1])})
    prompted = MASKED_LM.load(config).model
    assert prompted.calibration_prompts.describe().endswith("data.calibration file second.txt")
    plain = MASKED_LM.load(settings(folder)).model
    options = {"bit_width": 4, "group_size": 4, "num_samples": 4, "samples_per_step": 8}
    unprompted, with_text = calibrate(plain, **options), calibrate(prompted, **options)
    assert not np.array_equal(unprompted.act_max, with_text.act_max)
    assert unprompted.timesteps.tolist() == with_text.timesteps.tolist()
    # Sampling is the same; the calibration has its own cache entry.
    np.testing.assert_array_equal(
        sample(plain, num_samples=4, seed=0).x0, sample(prompted, num_samples=4, seed=0).x0
    )
    qweights, _ = quantize_weights(plain, bits=4, group_size=4)
    keys = [
        StageCache(model, c.to_dict(), qweights).calibration_key()
        for model, c in ((plain, settings(folder)), (prompted, config))
    ]
    assert keys[0] != keys[1]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "data.heldout={path!r}: holds no text"),
        (lambda p: p.write_bytes(bytes(range(128, 256))), "data.heldout={path!r}: not UTF-8 text"),
    ],
    ids=["empty", "binary"],
)
def test_a_bad_held_out_file_is_one_line(folder, tmp_path, monkeypatch, capsys, make, message):
    path = tmp_path / "heldout.txt"
    make(path)
    proc = command(folder, tmp_path, monkeypatch, capsys, f"data.heldout={path}")
    check_one_line(proc, message.format(path=str(path)), tmp_path)


def test_a_corrupt_tokenizer_is_one_line_naming_it(folder, tmp_path, monkeypatch, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "tokenizer.json").write_text('{"model": ')
    proc = command(broken, tmp_path, monkeypatch, capsys)
    check_one_line(proc, f"model.path={str(broken)!r}: tokenizer.json: not a tokenizer", tmp_path)


def test_text_data_is_refused_where_there_is_no_text(folder, texts, tmp_path, cache):
    with pytest.raises(UserInputError, match="data.heldout=.*: only for a masked-diffusion LM"):
        run(to_config({"data": {"heldout": str(texts[0])}}))  # the digits DDPM
    weight_only = {"model": {"path": str(folder), "run": "weight-only"}, "group_size": 4}
    with pytest.raises(UserInputError, match="data.calibration=.*: only for a masked-diffusion"):
        run(to_config({**weight_only, "data": {"calibration": str(texts[0])}}))


def check_one_line(proc, message, tmp_path):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "work" / "run" / "baseline_metrics.json").exists()


def test_heldout_windows_sets_how_many_windows_the_bound_scores(folder, cache):
    result = run(settings(folder, data={"heldout_windows": 2}))
    tokenizer = load_tokenizer(folder)
    heldout = corpus.windows(tokenizer.encode(corpus.heldout_text()), LENGTH, 2)
    lm = load_dream(folder)
    _, nll = masked_diffusion_nll_bound(
        lambda tokens: shift_logits(lm.forward(None, tokens)[0]),
        heldout,
        key=jax.random.PRNGKey(result.config["seed"]),
        num_mask_ratios=NUM_MASK_RATIOS,
        mask_token_id=lm.config.mask_token_id,
    )
    assert result.quality.heldout_perplexity_fp32 == pytest.approx(float(np.exp(nll)), rel=1e-4)
    with pytest.raises(UserInputError, match=r"^data\.heldout_windows=2: only for a masked"):
        run(to_config({"data": {"heldout_windows": 2}, "wandb": {"mode": "disabled"}}))
    with pytest.raises(UserInputError, match=r"data\.heldout_windows.*must be >= 1"):
        run(to_config({"data": {"heldout_windows": 0}, "wandb": {"mode": "disabled"}}))
