"""A masked-diffusion LM through the pipeline: the protocol, the text quality figures recomputed
independently, and the settings that only an LM takes."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from thermojax.cli.config import to_config
from thermojax.core.text_metrics import masked_diffusion_nll_bound
from thermojax.errors import UserInputError
from thermojax.models.dream import load_dream, shift_logits
from thermojax.models.dream.diffusion import MaskedDiffusionLM
from thermojax.models.hf import write_dream_like
from thermojax.pipeline import run
from thermojax.pipeline.measure.sampling import sample
from thermojax.pipeline.quality.text import NUM_MASK_RATIOS, evaluate_text_quality
from thermojax.pipeline.quality.text import timesteps_for_masks as timesteps_of
from thermojax.pipeline.weights.quantize import quantize_weights

GROUP = 4  # divides the scale-112 layout's widths (hidden 28)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_dream_like(tmp_path_factory.mktemp("lm") / "dream", scale=112, layers=1)


@pytest.fixture(scope="module")
def model(folder):
    return MaskedDiffusionLM.create(
        load_dream(folder), length=12, steps=5, unmasking="confidence", prompt=(7, 8)
    )


def test_the_sampler_reveals_every_position_once_and_keeps_the_prompt(model):
    samples = sample(model, num_samples=3, seed=1)
    tokens, trajectory = np.asarray(samples.x0), np.asarray(samples.trajectory)
    mask = model.options.mask_token_id
    assert tokens.shape == (3, 12) and trajectory.shape == (5, 3, 12)
    assert (tokens[:, :2] == [7, 8]).all() and (tokens != mask).all()
    # trajectory[t] is after the step at timestep t; the sampler runs t = T-1 .. 0
    masked_after = (trajectory == mask).sum(axis=2)  # [T, N]
    revealed = np.diff(np.concatenate([np.full((1, 3), 10), masked_after[::-1]]), axis=0)
    assert (-revealed == np.asarray(model.schedule)[:, None]).all()
    steps_seen = (trajectory[::-1] != mask).sum(axis=0)  # how many states each position was set
    first = np.argmax(trajectory[::-1] != mask, axis=0)
    for n in range(3):
        for i in range(2, 12):  # once revealed, never changed
            assert (trajectory[::-1][first[n, i] :, n, i] == tokens[n, i]).all()
    assert (steps_seen[:, 2:] >= 1).all()
    assert np.array_equal(np.asarray(sample(model, num_samples=3, seed=1).x0), tokens)
    # argmax + confidence is deterministic whatever the seed; drawing is not
    drawn = dataclasses.replace(
        model, options=dataclasses.replace(model.options, unmasking="random", temperature=1.0)
    )
    first = np.asarray(sample(drawn, num_samples=3, seed=1).x0)
    assert np.array_equal(np.asarray(sample(drawn, num_samples=3, seed=1).x0), first)
    assert not np.array_equal(np.asarray(sample(drawn, num_samples=3, seed=2).x0), first)


def test_timesteps_for_masks_follow_the_schedule(model):
    schedule = np.asarray(model.schedule)  # step k reveals schedule[k]
    remaining = [int(schedule[k:].sum()) for k in range(model.num_timesteps)]
    for masked in range(11):
        steps = [k for k in range(model.num_timesteps) if remaining[k] >= masked]
        expected = model.num_timesteps - 1 - (steps[-1] if steps else 0)
        got = int(timesteps_of(model, np.asarray([masked]))[0])
        assert got == expected, masked
    assert int(timesteps_of(model, np.asarray([10]))[0]) == model.num_timesteps - 1


def test_text_quality_is_recomputed_independently(model):
    qweights, report = quantize_weights(model, bits=2, group_size=GROUP)
    fp32 = sample(model, num_samples=4, seed=0)
    quant = sample(model, weights=qweights, num_samples=4, seed=0)
    edges = np.array([0, 2, 5])
    quality = evaluate_text_quality(
        model, fp32, quant, edges, report, qweights=None, act_params=None, seed=3
    )
    traj_f, traj_q = np.asarray(fp32.trajectory), np.asarray(quant.trajectory)
    drift = (traj_f != traj_q).mean(axis=(1, 2))
    np.testing.assert_array_equal(quality.drift_per_timestep, drift)
    np.testing.assert_allclose(
        quality.drift_per_group, [drift[:2].mean(), drift[2:].mean()], rtol=1e-12
    )
    tokens_f, tokens_q = np.asarray(fp32.x0), np.asarray(quant.x0)
    assert quality.token_agreement == (tokens_f[:, 2:] == tokens_q[:, 2:]).mean()
    scored = np.ones(tokens_f.shape, bool)
    scored[:, :2] = False

    def fp32_logits(tokens):
        return shift_logits(model.lm.forward(None, tokens)[0])

    for tokens, figure in (
        (tokens_f, quality.generative_perplexity_fp32),
        (tokens_q, quality.generative_perplexity_quantized),
    ):
        _, nll = masked_diffusion_nll_bound(
            fp32_logits,
            tokens,
            key=jax.random.PRNGKey(3),
            num_mask_ratios=NUM_MASK_RATIOS,
            mask_token_id=model.options.mask_token_id,
            positions=scored,
        )
        assert figure == pytest.approx(float(np.exp(nll)), rel=1e-5)
    assert quality.heldout_perplexity_fp32 is None and quality.sample_text_fp32 is None
    if not np.array_equal(tokens_f, tokens_q):
        assert quality.token_agreement < 1


def settings(folder, **extra):
    base = {
        "model": {"path": str(folder), "run": "diffusion"},
        "bit_width": 4,
        "group_size": GROUP,
        "num_time_groups": 4,
        "calibration": {"samples": 4, "samples_per_step": 8},
        "sampling": {"num_samples": 4, "steps": 8, "length": 16},
    }
    for key, value in extra.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return to_config(base)


def test_the_baseline_runs_a_language_model_and_is_deterministic(folder):
    first, second = run(settings(folder)), run(settings(folder))
    assert first.mode == "diffusion" and first.quality.kind == "text"
    data = first.to_dict()["quality"]
    for key in ("token_agreement", "generative_perplexity_fp32", "generative_perplexity_quantized"):
        assert isinstance(data[key], float), key
    assert data["heldout_perplexity_fp32"] is None  # no held-out text for this checkpoint
    assert "final_mse" not in data and "frechet_quantized" not in data  # the image kind's
    assert first.sampler["description"] == "masked-diffusion unmasking (random), 8 steps"
    assert first.config["sampling"]["sampler"] is None  # its own sampler, no DDPM named
    assert len(data["drift_per_timestep"]) == 8 and len(first.time_groups) == 4
    assert first.samples["fp32"].dtype == np.int32 and first.samples["fp32"].shape == (4, 16)
    assert first.sample_preview is None
    assert first.to_dict()["quality"] == second.to_dict()["quality"]
    assert first.smoothness_score == second.smoothness_score
    names = [row.name for row in first.weights.tensors]
    assert "model.embed_tokens.weight" in names and "lm_head.weight" in names
    assert sum(row.quantized for row in first.weights.tensors) == 8  # 7 per layer + lm_head


def test_without_model_run_a_folder_stays_weight_only(folder):
    result = run(to_config({"model": {"path": str(folder)}, "bit_width": 4, "group_size": GROUP}))
    assert result.mode == "weight-only"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"sampling": {"steps": 0}}, "sampling.steps=0: must be >= 1"),
        ({"sampling": {"length": 1}}, "sampling.length=1: must be >= 2"),
        ({"sampling": {"unmasking": "best"}}, "sampling.unmasking='best': must be one of"),
        ({"sampling": {"temperature": -1.0}}, "sampling.temperature=-1.0"),
        ({"model": {"shipped": "gpt"}}, "model.shipped='gpt': must be one of digits, pydoc-mdlm"),
        ({"model": {"run": "fast"}}, "model.run='fast': must be one of auto, diffusion"),
    ],
)
def test_bad_language_model_settings_are_one_line(folder, extra, message):
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        run(settings(folder, **extra))


def test_settings_that_do_not_fit_the_model_are_refused(folder):
    with pytest.raises(UserInputError, match="sampling.prompt='Hi': .* no tokenizer"):
        run(settings(folder, sampling={"prompt": "Hi"}))
    too_long = json.loads((folder / "config.json").read_text())["max_position_embeddings"] + 1
    with pytest.raises(UserInputError, match=f"sampling.length={too_long}: exceeds the model's"):
        run(settings(folder, sampling={"length": too_long}))
    with pytest.raises(UserInputError, match="sampling.steps=50: the ddpm sampler runs all T=1000"):
        run(to_config({"sampling": {"steps": 50}}))
    with pytest.raises(UserInputError, match="sampling.sampler='ddim': .* runs its own sampler"):
        run(settings(folder, sampling={"sampler": "ddim"}))
    with pytest.raises(UserInputError, match="num_time_groups=9: exceeds the model's 8"):
        run(settings(folder, num_time_groups=9))


def test_phases_and_enhancements_compare_a_language_models_text_figures(folder):
    """``experiment=phases`` and ``thermo.*`` on an LM: the table holds the text figures (token
    agreement, generative perplexity), none of the DDPM's; without held-out text, no held-out
    column either. The paired deltas are recomputed from the per-run records."""
    phases = {
        "enabled": True,
        "seeds": 2,
        "windows": [1],
        "min_group_size": 1,
        "variants": ["smooth-linear-w1", "phase3-mw1"],
    }
    result = run(settings(folder, phases=phases))
    table = result.phases
    assert table.family == "text" and [r.variant for r in table.rows] == [
        "baseline",
        "smooth-linear-w1",
        "phase3-mw1",
    ]
    assert table.compared() == ("drift_mean", "token_agreement", "generative_perplexity_quantized")
    assert set(table.fp32) == {"generative_perplexity_fp32"}
    records = result.phase_records
    assert len(records) == 6 and all("final_mse" not in r for r in records)
    for row in table.rows:
        assert row.spread("final_mse") is None and row.spread("frechet_quantized") is None
        assert row.spread("heldout_perplexity_quantized") is None
        runs = [r for r in records if r["variant"] == row.variant]
        base = {r["seed"]: r for r in records if r["variant"] == "baseline"}
        for name in table.compared():
            values = np.array([r[name] for r in runs], np.float64)
            assert row.spread(name).mean == pytest.approx(values.mean(), rel=1e-12)
            delta = values - np.array([base[r["seed"]][name] for r in runs])
            assert row.paired_delta[name].mean == pytest.approx(delta.mean(), abs=1e-12)
    from thermojax.report import render_report

    page = render_report(result)
    assert "&Delta; token agreement (paired)" in page and "Frechet" not in page
    # The table's baseline of the run's own seed is the run's baseline.
    first = next(r for r in records if r["variant"] == "baseline" and r["seed"] == 0)
    assert first["token_agreement"] == result.quality.token_agreement

    enhanced = run(settings(folder, thermo={"smoothing": {"enabled": True, "window": 1}}))
    assert enhanced.baseline is not None and enhanced.baseline.quality.kind == "text"
    assert enhanced.baseline.quality.figure("token_agreement") == pytest.approx(
        result.quality.token_agreement
    )
    assert enhanced.quality.figure("final_mse") is None


@pytest.mark.slow
def test_the_shipped_language_model_through_the_command(tmp_path):
    """``model=pydoc-mdlm``: the whole report; its held-out figure recomputed independently
    from the corpus's fixed windows, and the sample texts shown escaped, side by side."""
    import html
    import subprocess
    import sys

    import markupsafe

    from thermojax.models import shipped_path
    from thermojax.models.dream import corpus
    from thermojax.models.dream.diffusion import HELDOUT_WINDOWS

    out = tmp_path / "run"
    command = [sys.executable, "-m", "thermojax.baseline", "model=pydoc-mdlm", "bit_width=4"]
    command += ["num_time_groups=4", "sampling.num_samples=6", "calibration.samples=4"]
    command += ["wandb.mode=disabled", f"hydra.run.dir={out}"]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=tmp_path)
    data = json.loads((out / "baseline_metrics.json").read_text())
    quality = data["quality"]
    assert quality["kind"] == "text" and len(quality["drift_per_timestep"]) == 64
    lm = load_dream(shipped_path("pydoc-mdlm"))
    heldout = corpus.heldout_batch(128, HELDOUT_WINDOWS)
    _, nll = masked_diffusion_nll_bound(
        lambda tokens: shift_logits(lm.forward(None, tokens)[0]),
        heldout,
        key=jax.random.PRNGKey(data["config"]["seed"]),
        num_mask_ratios=NUM_MASK_RATIOS,
        mask_token_id=corpus.MASK_ID,
    )
    assert quality["heldout_perplexity_fp32"] == pytest.approx(float(np.exp(nll)), rel=1e-5)
    assert 1 < quality["heldout_perplexity_fp32"] < 20  # a trained model: far below 256
    tokens = np.load(out / "samples.npz")["quantized"]
    assert tokens.dtype == np.int32 and tokens.shape == (6, 128)
    assert quality["sample_text_quantized"][0] == corpus.decode(tokens[0])
    page = (out / "baseline_metrics.html").read_text()
    for text in quality["sample_text_fp32"] + quality["sample_text_quantized"]:
        shown = f'<pre class="sample">{markupsafe.escape(text)}</pre>'  # Jinja2's escaping
        assert shown in page
        assert html.unescape(str(markupsafe.escape(text))) == text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=gpt", "error: Could not find 'model/gpt'; Available options in 'model': digits"),
        ("sampling.steps=0", "error: sampling.steps=0: must be >= 1"),
        ("sampling.prompt=" + "a" * 130, "prompt of 130 tokens leaves nothing to generate"),
    ],
    ids=["model", "steps", "prompt"],
)
def test_bad_lm_values_on_the_command_line_are_one_line_and_exit_2(
    tmp_path, override, message, monkeypatch, capsys
):
    # Every case through the command's main in this process (Hydra, the command boundary); the
    # one refused against the model, "prompt", also through the real command, a process of its
    # own.
    import os
    import subprocess
    import sys

    from in_process import run_main

    from thermojax.cli.baseline import main

    args = ["model=pydoc-mdlm", override, "wandb.mode=disabled"]
    args += [f"hydra.run.dir={tmp_path / 'run'}"]
    procs = [
        run_main(
            main, args, env=dict(os.environ), cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
        )
    ]
    if override.startswith("sampling.prompt="):
        command = [sys.executable, "-m", "thermojax.baseline", *args]
        procs.append(
            subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
        )
    for proc in procs:
        check_refused_in_one_line(proc, message, tmp_path)


def check_refused_in_one_line(proc, message, tmp_path):
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "run" / "baseline_metrics.json").exists()
