"""End to end: `python -m thermojax.baseline` in a temporary folder, as a user runs it.

One real run (module-scoped) feeds most checks; a second run with the same seed checks
determinism and, with ``wandb.mode=online`` and no API key, that a failing W&B keeps the local
outputs. Calibration uses 16 samples to keep the suite quick; everything else is the default.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from browser import chromium_screenshot, png_size
from html_reading import check_report_shows_the_run, parse
from in_process import run_main
from quality_reference import assert_sample_figures, frechet, sample_figures
from result_samples import ADDED_KEYS, ARROWQUANT_KEYS, check_model_level_figures
from user_env import command_env
from wandb_readback import inspect_run, offline_run_dir

from thermojax.cli.baseline import main as baseline_main
from thermojax.models import SHIPPED_CHECKPOINT, load_model
from thermojax.report import BAND_COLORS

pytestmark = pytest.mark.slow

MODEL_NAME = "<script>alert(1)</script> & digits"
FAST = ["calibration.samples=16"]
OUTPUTS = {"baseline_metrics.json", "baseline_metrics.html", "baseline_metrics.log", "samples.npz"}


def baseline(args: list[str], *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "thermojax.baseline", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    return root, root / "home", root / "cache"


@pytest.fixture(scope="module")
def first_run(shared):
    root, home, cache = shared
    out = root / "run1"
    # An interactive terminal as far as rich can tell, so the progress bar is drawn.
    env = command_env(home, cache, TTY_COMPATIBLE="1", TTY_INTERACTIVE="1", COLUMNS="120")
    proc = baseline(
        [
            "bit_width=2",
            "num_time_groups=4",
            f"model.name='{MODEL_NAME}'",
            *FAST,
            f"hydra.run.dir={out}",
        ],
        cwd=root,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="module")
def metrics(first_run) -> dict:
    out, _ = first_run
    return json.loads((out / "baseline_metrics.json").read_text())


def test_writes_every_output_and_nothing_half_written(first_run):
    out, _ = first_run
    names = {p.name for p in out.iterdir()}
    assert names == OUTPUTS | {"wandb"}
    assert not [p for p in out.rglob("*.tmp")]


def test_json_keys_and_config(metrics):
    assert ARROWQUANT_KEYS | ADDED_KEYS <= set(metrics)
    assert metrics["model_name"] == MODEL_NAME
    assert (metrics["bit_width"], metrics["num_time_groups"], metrics["act_bits"]) == (2, 4, 8)
    assert metrics["smoothness_threshold"] == 0.3
    assert metrics["time_groups"] == [[0, 250], [250, 500], [500, 750], [750, 1000]]
    assert metrics["config"]["calibration"]["samples"] == 16
    assert metrics["interpretation"]["band"] in ("poor", "good", "excellent")
    assert len(metrics["layers"]) >= 4
    assert 1.0 < metrics["compression_ratio"] < 32.0 and metrics["model_size_mb"] > 0


def test_json_is_internally_consistent(metrics):
    check_model_level_figures(metrics)


def test_quality_section(metrics):
    quality = metrics["quality"]
    assert len(quality["drift_per_timestep"]) == 1000
    assert len(quality["drift_per_group"]) == 4
    drift = np.asarray(quality["drift_per_timestep"])
    assert np.all(drift >= 0) and quality["drift_mean"] == pytest.approx(drift.mean())
    assert quality["frechet_fp32"] > 0 and quality["frechet_quantized"] > 0
    assert set(quality["layer_cosine"]) == {layer["name"] for layer in metrics["layers"]}


def test_every_quality_figure_recomputed_from_samples_npz(first_run, metrics):
    """Frechet, coverage, confidence and final MSE of the JSON, from samples.npz through the
    shipped classifier's own features and probabilities, in float64 numpy; drift per group and
    its mean from the per-step drift and the time groups."""
    out, _ = first_run
    quality = metrics["quality"]
    reference = load_model().reference
    with np.load(out / "samples.npz") as samples:
        fp32, quantized = samples["fp32"], samples["quantized"]
    assert_sample_figures(quality, sample_figures(reference, fp32, quantized), frechet_rtol=1e-8)
    drift = np.asarray(quality["drift_per_timestep"], np.float64)
    per_group = [drift[a:b].mean() for a, b in metrics["time_groups"]]
    np.testing.assert_allclose(quality["drift_per_group"], per_group, rtol=1e-12)
    np.testing.assert_allclose(quality["drift_mean"], drift.mean(), rtol=1e-12)
    assert quality["num_samples"] == len(fp32) == metrics["config"]["sampling"]["num_samples"]
    real = reference.real_pixels()
    subset = real[np.random.default_rng(0).choice(len(real), size=len(fp32), replace=False)]
    want = frechet(reference.features(subset), reference.features(real))
    np.testing.assert_allclose(quality["frechet_real_subset"], want, rtol=1e-8)
    # The layer cosines are the layers' own, and the model cosine the top-level one.
    assert quality["layer_cosine"] == {
        layer["name"]: layer["cosine_similarity"] for layer in metrics["layers"]
    }
    assert quality["model_cosine"] == metrics["cosine_similarity"]


def test_html_shows_this_runs_values_where_it_shows_them(first_run, metrics):
    out, _ = first_run
    html = (out / "baseline_metrics.html").read_text()
    check_report_shows_the_run(html, metrics, BAND_COLORS)


def test_int2_headlines_its_destroyed_samples_not_its_smoothness(first_run, metrics):
    """``make baseline`` (INT2): the parameters score in the excellent smoothness band while the
    digits are destroyed; the headline is the quality band, and the smoothness band is labelled."""
    out, proc = first_run
    interpretation, quality = metrics["interpretation"], metrics["quality"]
    assert quality["frechet_quantized"] > 3 * quality["frechet_fp32"]  # measured, not assumed
    assert interpretation["verdict"] == interpretation["quality_band"] == "poor"
    assert interpretation["quality_detail"].startswith("Frechet ")
    hero = parse((out / "baseline_metrics.html").read_text()).find("section", "hero")
    ratio = quality["frechet_quantized"] / quality["frechet_fp32"]
    assert hero.find(cls="score").text() == (f"{ratio:.3g}x" if ratio >= 10 else f"{ratio:.2f}x")
    assert hero.find(cls="muted").text() == "Frechet / fp32"
    assert hero.find("span", "verdict").text() == "quality band: poor"
    assert hero.find("span", "smoothness").text() == f"smoothness band: {interpretation['band']}"
    assert hero.find("p").text().startswith("Sample quality is poor against fp32")
    stdout = plain(proc.stdout)
    assert f"quality band: poor ({interpretation['quality_detail']})" in stdout
    assert "a better weight quantizer" in stdout  # the next step, not Phase 2/3
    if interpretation["band"] != "poor":
        assert "rather than in jumps between groups" in interpretation["summary"]
        assert "Phase 2" not in " ".join(interpretation["actions"])


def test_samples_npz(first_run, metrics):
    out, _ = first_run
    with np.load(out / "samples.npz") as samples:
        assert set(samples.files) == {"fp32", "quantized"}
        fp32, quantized = samples["fp32"], samples["quantized"]
    assert fp32.shape == quantized.shape and fp32.shape[1:] == (8, 8) and fp32.shape[0] >= 64
    assert fp32.min() >= 0 and fp32.max() <= 16
    mse = float(np.mean((fp32.astype(np.float64) - quantized) ** 2))
    assert mse == pytest.approx(metrics["quality"]["final_mse"], rel=1e-5)


def test_html_escaped_self_contained_and_renders(first_run, tmp_path):
    out, _ = first_run
    html = (out / "baseline_metrics.html").read_text()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; digits" in html
    assert "http:" not in html and "https:" not in html and "url(" not in html
    png = tmp_path / "report.png"
    dom = chromium_screenshot(out / "baseline_metrics.html", png, tmp_path / "profile")
    assert png_size(png) == (1200, 3000) and png.stat().st_size > 50_000
    assert "Resolved configuration" in dom


def test_log_has_the_full_run(first_run, metrics):
    out, _ = first_run
    text = (out / "baseline_metrics.log").read_text()
    for stage in (
        "load model",
        "quantize weights",
        "calibrate",
        "sample quantized",
        "evaluate quality",
    ):
        assert f"stage {stage} took" in text
    for layer in metrics["layers"]:
        assert f"layer {layer['name']}" in text
    assert text.count("violation: layer") == metrics["violation_count"]
    assert "wrote json" in text and "W&B run" in text and text.rstrip().endswith("done")
    # This run's figures, as the log prints them.
    for layer in metrics["layers"]:
        assert (
            f"layer {layer['name']:<12} smoothness {layer['smoothness_score']:.4f} "
            f"cosine {layer['cosine_similarity']:.4f} "
            f"scales [{', '.join(f'{s:.4g}' for s in layer['scales'])}] "
            f"zero points [{', '.join(f'{z:.0f}' for z in layer['zero_points'])}]"
        ) in text, layer["name"]
    for v in metrics["violations"]:
        assert (
            f"violation: layer {v['layer']} boundary {v['boundary_idx']} scale jump "
            f"{v['scale_jump']:.3f} zero-point jump {v['zero_point_jump']:.4f} ({v['severity']})"
        ) in text
    scores = ", ".join(f"{b:.4f}" for b in metrics["boundary_scores"])
    assert f"boundary scores {scores}" in text
    quality = metrics["quality"]
    assert (
        f"quality: drift mean {quality['drift_mean']:.5f}, final MSE {quality['final_mse']:.4f}, "
        f"Frechet fp32 {quality['frechet_fp32']:.3f} / quantized {quality['frechet_quantized']:.3f}"
    ) in text
    assert (
        f"weights at {metrics['bit_width']} bits ({metrics['config']['quant']['method']}): "
        f"cosine {metrics['cosine_similarity']:.4f}, "
        f"compression {metrics['compression_ratio']:.2f}x, {metrics['model_size_mb']:.4f} MB"
    ) in text
    assert f"interpretation: {metrics['interpretation']['summary']}" in text
    assert (
        f"smoothness {metrics['smoothness_score']:.4f} (smoothness band: "
        f"{metrics['interpretation']['band']}), quality band: "
        f"{metrics['interpretation']['quality_band']}, {metrics['violation_count']} violations, cosine {metrics['cosine_similarity']:.4f}, "
        f"total {metrics['timings_s']['total']:.1f} s"
    ) in text


def plain(text: str) -> str:
    """Terminal text without ANSI control sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_console_shows_progress_and_a_short_summary(first_run, metrics):
    _, proc = first_run
    stderr, stdout = plain(proc.stderr), plain(proc.stdout)
    assert "7/7" in stderr and "evaluate quality" in stderr  # the progress bar
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert 4 <= len(lines) <= 12
    band = metrics["interpretation"]["band"]
    assert f"smoothness {metrics['smoothness_score']:.4f} (smoothness band: {band}), " in stdout
    assert f"{metrics['violation_count']} violations (jump > 0.3)" in stdout
    q = metrics["quality"]
    assert (
        f"quality: final MSE {q['final_mse']:.3f}, Frechet {q['frechet_fp32']:.2f} (fp32) / "
        f"{q['frechet_quantized']:.2f}"
    ) in stdout
    assert "Traceback" not in stderr


def test_wandb_offline_run_reads_back(first_run, metrics):
    out, _ = first_run
    summary, records = inspect_run(offline_run_dir(out))
    assert summary["state"] == "finished"
    assert summary["config"]["num_time_groups"] == 4
    assert summary["config"]["model"]["name"] == MODEL_NAME
    assert summary["summary"]["smoothness_score"] == pytest.approx(metrics["smoothness_score"])
    assert summary["summary"]["violation_count"] == metrics["violation_count"]
    assert summary["summary"]["layers"]["nrows"] == len(metrics["layers"])
    reports = [r["artifact"] for r in records if r["type"] == "artifact"]
    assert any(
        a.get("type") == "report" and "baseline_metrics.html" in json.dumps(a) for a in reports
    )


@pytest.fixture(scope="module")
def second_run(shared):
    """Same config and seed; W&B online without an API key, so tracking fails for real.

    It gets a cache folder of its own, so it computes calibration, samples and quality afresh
    instead of reading the first run's entries: determinism is checked on two computations.
    """
    root, home, _ = shared
    out = root / "run2"
    proc = baseline(
        [
            "bit_width=2",
            "num_time_groups=4",
            f"model.name='{MODEL_NAME}'",
            *FAST,
            "wandb.mode=online",
            f"hydra.run.dir={out}",
        ],
        cwd=root,
        env=command_env(home, root / "cache-second-run"),
    )
    assert proc.returncode == 0, proc.stderr
    return out, proc


def without_run_details(data: dict) -> dict:
    skip = {"timings_s", "quantization_time_s", "environment", "cache"}
    config = {k: v for k, v in data["config"].items() if k != "wandb"}
    clock = {"seconds", "bytes_per_second"}  # the weights section's wall time
    weights = {k: v for k, v in data["weights"].items() if k not in clock}
    return {
        **{k: v for k, v in data.items() if k not in skip},
        "config": config,
        "weights": weights,
    }


def test_same_seed_same_numbers(first_run, second_run, metrics):
    out2, _ = second_run
    again = json.loads((out2 / "baseline_metrics.json").read_text())
    assert set(again["cache"].values()) == {"miss"}, again["cache"]
    assert without_run_details(again) == without_run_details(metrics)
    out1, _ = first_run
    with np.load(out1 / "samples.npz") as a, np.load(out2 / "samples.npz") as b:
        np.testing.assert_array_equal(a["quantized"], b["quantized"])


def test_a_custom_model_path_runs_that_checkpoint(first_run, metrics, shared):
    """A copy of the shipped checkpoint in a folder of its own, given as ``model.path``: the run
    reads it (its path is in the config) and, with the same weights and seed, measures exactly
    what the default model's run measured, computed afresh (a cache folder of its own)."""
    root, home, _ = shared
    checkpoint = shutil.copytree(SHIPPED_CHECKPOINT, root / "my checkpoints" / "digits")
    out = root / "custom"
    proc = baseline(
        [
            "bit_width=2",
            "num_time_groups=4",
            f"model.name='{MODEL_NAME}'",
            f"model.path='{checkpoint}'",
            *FAST,
            "wandb=disabled",
            f"hydra.run.dir={out}",
        ],
        cwd=root,
        env=command_env(home, root / "cache-custom"),
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "baseline_metrics.json").read_text())
    assert data["config"]["model"]["path"] == str(checkpoint)
    assert set(data["cache"].values()) == {"miss"}
    assert "error:" not in proc.stderr and "Traceback" not in proc.stderr
    mine, default = without_run_details(data), without_run_details(metrics)
    for config in (mine["config"], default["config"]):
        config["model"] = {k: v for k, v in config["model"].items() if k != "path"}
    assert mine == default
    with np.load(out / "samples.npz") as a, np.load(first_run[0] / "samples.npz") as b:
        np.testing.assert_array_equal(a["quantized"], b["quantized"])


def test_failing_wandb_keeps_local_outputs(second_run):
    out, proc = second_run
    assert OUTPUTS <= {p.name for p in out.iterdir()}
    assert "W&B init failed" in (out / "baseline_metrics.log").read_text()
    assert "W&B init failed" in proc.stderr  # one warning on the console
    assert "Traceback" not in proc.stderr


BAD_INPUTS = [
    (["bit_width=3"], "bit_width=3"),
    (["num_time_groups=0"], "num_time_groups=0"),
    (["num_time_groups=1001"], "num_time_groups=1001"),
    (["smoothness_threshold=-0.5"], "smoothness_threshold=-0.5"),
    (["smoothness_threshold=abc"], "smoothness_threshold=abc"),
    (["model.path=/no/such/checkpoint"], "model.path='/no/such/checkpoint'"),
    (["model.path=."], "model.path='.'"),
    (["bit_widht=2"], "bit_widht=2"),
    (["sampling.sampler=plms"], "sampling.sampler='plms'"),
    (["sampling.sampler=ddim", "sampling.steps=0"], "sampling.steps=0"),
    (["sampling.sampler=ddim", "sampling.steps=2000"], "sampling.steps=2000"),
    (["sampling.steps=50"], "sampling.steps=50"),
    (["sampling.eta=0.5"], "sampling.eta=0.5"),
    (["sampling.sampler=ddim", "sampling.eta=1.5"], "sampling.eta=1.5"),
    (["sampling.sampler=ddim", "sampling.steps=3"], "num_time_groups=4"),
    (["calibration.sampler=ddim", "calibration.steps=2"], "num_time_groups=4"),
    (["act.mode=bogus"], "act.mode='bogus': must be one of static, dynamic"),
    (["act.mode=dynamic", "experiment=phases"], "act.mode='dynamic': the phase experiment"),
]


@pytest.mark.parametrize(("args", "named"), BAD_INPUTS, ids=[a[0] for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_writes_nothing(
    args, named, tmp_path, shared, monkeypatch, capsys
):
    # Every case through the command's own main in this process; the real command, a process of
    # its own, for one of each way a value is refused: test_bad_input_through_the_command.
    _, home, cache = shared
    work = tmp_path / "work"
    work.mkdir()
    proc = run_main(
        baseline_main,
        [*args, f"hydra.run.dir={work}/run"],
        env=command_env(home, cache),
        cwd=work,
        monkeypatch=monkeypatch,
        capsys=capsys,
    )
    assert_refused_in_one_line(proc, named, work)


# The schema's check, Hydra's (an unknown key) and one against the model (its T timesteps).
THROUGH_THE_COMMAND = [BAD_INPUTS[0], BAD_INPUTS[7], BAD_INPUTS[2]]


@pytest.mark.parametrize(
    ("args", "named"), THROUGH_THE_COMMAND, ids=[a[0] for a, _ in THROUGH_THE_COMMAND]
)
def test_bad_input_through_the_command(args, named, tmp_path, shared):
    _, home, cache = shared
    work = tmp_path / "work"
    work.mkdir()
    proc = baseline([*args, f"hydra.run.dir={work}/run"], cwd=work, env=command_env(home, cache))
    assert_refused_in_one_line(proc, named, work)


def assert_refused_in_one_line(proc: subprocess.CompletedProcess, named: str, work: Path) -> None:
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert named in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert list(work.iterdir()) == []
