"""A Hugging Face checkpoint thermojax cannot run: the weight-only result, with or without stats."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from html_reading import cards, parse
from result_samples import reference_metrics
from safetensors.numpy import load_file, save_file

from thermojax.cli.config import to_config
from thermojax.errors import UserInputError
from thermojax.models.hf import open_checkpoint, write_dream_like
from thermojax.pipeline import run
from thermojax.pipeline.measure.activation_stats import write_activation_stats
from thermojax.pipeline.results.schema import Result
from thermojax.report import render_report

GROUP = 8  # divides every width of the scale-64 layout (hidden 56)
_TOOL = Path(__file__).resolve().parents[2] / "tools" / "same_numbers.py"
_spec = importlib.util.spec_from_file_location("same_numbers", _TOOL)
same_numbers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(same_numbers)
differences = same_numbers.differences  # every path where two results' numbers differ


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_dream_like(tmp_path_factory.mktemp("ckpt") / "dream", scale=64, layers=2)


def settings(checkpoint, **extra):
    return to_config(
        {"model": {"path": str(checkpoint)}, "bit_width": 4, "group_size": GROUP, **extra}
    )


@pytest.fixture(scope="module")
def plain(checkpoint):
    return run(settings(checkpoint))


def test_without_statistics_the_markov_figures_are_unknown_not_zero(plain):
    assert plain.mode == "weight-only"
    assert plain.smoothness_score is None and plain.violation_count is None
    assert plain.interpretation is None and plain.quality is None and plain.layers == ()
    assert plain.samples is None
    data = json.loads(json.dumps(plain.to_dict()))
    assert data["quality"] is None and data["smoothness_score"] is None
    assert Result.from_dict(data).to_dict() == plain.to_dict()  # the JSON reads back


def test_every_tensor_is_listed_with_its_rule_and_the_totals_add_up(plain, checkpoint):
    opened = open_checkpoint(checkpoint)
    w = plain.weights
    assert [row.name for row in w.tensors] == list(opened.tensors)
    for row in w.tensors:
        info = opened.tensors[row.name]
        assert row.source_bytes == info.nbytes and row.dtype == info.dtype
        takes = len(info.shape) == 2 and row.name.endswith(".weight")
        takes = takes and not any(k in row.name for k in ("embed", "norm", "lm_head"))
        assert row.quantized == takes, row.name
        if row.quantized:
            rows, width = info.shape
            groups = rows * width // GROUP
            assert row.quantized_bytes == rows * width * 4 // 8 + groups * 5  # codes + f32 + u8
            assert row.rule.startswith("rule 0:") and row.bits == 4 and row.group_size == GROUP
        else:
            assert row.quantized_bytes == row.source_bytes and row.rule is None
    assert w.total_source_bytes == opened.total_bytes
    assert w.total_quantized_bytes == sum(row.quantized_bytes for row in w.tensors)
    assert sum(b.tensors for b in w.blocks) == len(w.tensors)
    assert plain.compression_ratio == pytest.approx(w.fp32_bytes / w.total_quantized_bytes)
    assert plain.model_size_mb == pytest.approx(w.total_quantized_bytes / 1e6)


def test_mixed_precision_rules_reach_the_report(checkpoint):
    rules = [{"include": r"mlp\.down_proj", "bits": 8}, {}]
    result = run(settings(checkpoint, weights={"rules": rules}))
    by_name = {row.name: row for row in result.weights.tensors}
    assert by_name["model.layers.0.mlp.down_proj.weight"].bits == 8
    assert by_name["model.layers.0.mlp.up_proj.weight"].bits == 4
    assert by_name["model.layers.0.mlp.down_proj.weight"].rule.startswith("rule 0:")
    assert by_name["model.layers.0.mlp.up_proj.weight"].rule.startswith("rule 1:")


def test_statistics_give_the_markov_metrics_of_uniform_groups(checkpoint, tmp_path):
    rng = np.random.default_rng(1)
    names = ["model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj"]
    steps = 40
    lo = -rng.uniform(0.5, 3.0, (2, steps)).astype(np.float32)
    hi = rng.uniform(0.5, 3.0, (2, steps)).astype(np.float32)
    path = write_activation_stats(tmp_path / "s.safetensors", names, lo, hi, 0 * lo, hi - lo)
    result = run(settings(checkpoint, num_time_groups=4, calibration={"stats": str(path)}))
    assert result.mode == "weight-only" and result.quality is None
    assert result.num_timesteps == steps and result.time_groups == (
        (0, 10),
        (10, 20),
        (20, 30),
        (30, 40),
    )
    # Independent float64 reference: per-group min/max -> asymmetric 8-bit scale and zero point.
    g_lo = np.minimum(lo.reshape(2, 4, 10).min(-1), 0.0).astype(np.float64)
    g_hi = np.maximum(hi.reshape(2, 4, 10).max(-1), 0.0).astype(np.float64)
    scales = (g_hi - g_lo) / 255
    zero_points = np.clip(np.round(-g_lo / scales), 0, 255)
    np.testing.assert_allclose([layer.scales for layer in result.layers], scales, rtol=1e-6)
    np.testing.assert_array_equal([layer.zero_points for layer in result.layers], zero_points)
    ref = reference_metrics(scales, zero_points, qmax=255, threshold=0.3)
    assert result.smoothness_score == pytest.approx(float(np.mean(ref.smoothness_score)), abs=1e-6)
    assert result.violation_count == int(ref.violations.sum())
    cosine = {row.name: row.cosine for row in result.weights.tensors}
    assert [layer.name for layer in result.layers] == names
    assert result.layers[0].cosine_similarity == cosine["model.layers.0.mlp.down_proj.weight"]
    # Smoothness from the statistics, but no samples: a smoothness band and no verdict.
    assert result.interpretation.band in ("poor", "good", "excellent")
    assert result.interpretation.quality_band is None and result.interpretation.verdict is None
    assert "no verdict on the model" in result.interpretation.summary
    page = parse(render_report(result))
    assert (
        cards(page)["Smoothness score"]["note"] == f"smoothness band: {result.interpretation.band}"
    )
    assert "Quality band" not in page.text() and "quality band" not in page.text()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"thermo": {"smoothing": {"enabled": True}}}, "need a model thermojax can run"),
        ({"phases": {"enabled": True}}, "phase experiment samples the model"),
        ({"group_size": 16}, "group_size 16 does not divide"),
    ],
    ids=["enhancement", "phases", "group-size"],
)
def test_impossible_combinations_are_one_line(checkpoint, extra, needle):
    with pytest.raises(UserInputError, match=needle) as info:
        run(settings(checkpoint, **extra))
    assert "\n" not in str(info.value)


def test_statistics_need_enough_steps_and_a_checkpoint(checkpoint, tmp_path):
    lo = -np.ones((1, 3), np.float32)
    layer = "model.layers.0.mlp.down_proj"
    path = write_activation_stats(tmp_path / "s.safetensors", [layer], lo, -lo, 0 * lo, -lo)
    with pytest.raises(UserInputError, match="num_time_groups=4: exceeds the 3 steps"):
        run(settings(checkpoint, calibration={"stats": str(path)}))
    with pytest.raises(UserInputError, match="only for checkpoints thermojax cannot run"):
        run(to_config({"calibration": {"stats": str(path)}}))


def test_statistics_of_a_layer_the_model_lacks_are_one_line(checkpoint, tmp_path):
    """A statistics file made for another model: refused naming the layer, not reported as a
    layer without a weight cosine."""
    lo = -np.ones((2, 8), np.float32)
    names = ["model.layers.0.mlp.down_proj", "model.layers.9.mlp.down_proj"]
    path = write_activation_stats(tmp_path / "s.safetensors", names, lo, -lo, 0 * lo, -lo)
    with pytest.raises(UserInputError, match="model.layers.9.mlp.down_proj: the model has no such"):
        run(settings(checkpoint, calibration={"stats": str(path)}))


def test_the_exported_checkpoint_reports_the_same_numbers_as_its_source(checkpoint, tmp_path):
    rng = np.random.default_rng(2)
    names = ["model.layers.0.mlp.up_proj", "model.layers.1.mlp.down_proj"]
    lo = -rng.uniform(0.5, 3.0, (2, 20)).astype(np.float32)
    hi = rng.uniform(0.5, 3.0, (2, 20)).astype(np.float32)
    stats = write_activation_stats(tmp_path / "s.safetensors", names, lo, hi, 0 * lo, hi - lo)
    out = tmp_path / "quantized"
    common = {"num_time_groups": 5, "smoothness_threshold": 0.1}
    source = run(
        settings(checkpoint, calibration={"stats": str(stats)}, export={"path": str(out)}, **common)
    )
    assert source.weights.export_path == str(out)
    again = run(settings(out, **common))
    assert again.mode == "weight-only" and again.weights.export_path == str(out)
    keep = ("name", "shape", "dtype", "rule", "bits", "group_size", "cosine", "sqnr_db")
    keep += ("outlier_share", "source_bytes", "quantized_bytes", "block")
    for a, b in zip(source.weights.tensors, again.weights.tensors, strict=True):
        assert [getattr(a, k) for k in keep] == [getattr(b, k) for k in keep]
    assert again.weights.total_quantized_bytes == source.weights.total_quantized_bytes
    for field in ("smoothness_score", "violation_count", "boundary_scores", "time_groups"):
        assert getattr(again, field) == getattr(source, field), field
    assert [(x.scales, x.zero_points) for x in again.layers] == [
        (x.scales, x.zero_points) for x in source.layers
    ]
    with pytest.raises(UserInputError, match="already a quantized checkpoint"):
        run(settings(out, export={"path": str(tmp_path / "twice")}))


def test_a_quantized_digits_checkpoint_runs_with_the_same_numbers(tmp_path):
    """The exported codes, sampled against the recorded fp32 source, give the source run's
    JSON, number for number (only the settings' model.path / export.path differ)."""
    out = tmp_path / "digits-q"
    small = {"calibration": {"samples": 4, "samples_per_step": 4}, "sampling": {"num_samples": 4}}
    small |= {"bit_width": 4, "group_size": 16, "num_time_groups": 4}
    first = run(to_config({**small, "export": {"path": str(out)}}))
    assert first.weights.export_path == str(out) and (out / "quantization.json").is_file()
    again = run(to_config({**small, "model": {"path": str(out)}}))
    assert again.mode == first.mode and again.model_name == first.model_name
    before, after = first.to_dict(), again.to_dict()
    for data in (before, after):
        data["config"]["model"]["path"] = data["config"]["export"]["path"] = None
        data["weights"]["export_path"] = None
    assert list(differences(before, after)) == []
    assert again.quality.frechet_quantized == first.quality.frechet_quantized  # not vacuous
    edited = tmp_path / "edited"  # the exported codes are what runs: an edited code shows
    shutil.copytree(out, edited)
    arrays = load_file(str(edited / "model.safetensors"))
    arrays["block0.qcodes"][0, :4] ^= 0xFF
    save_file(arrays, str(edited / "model.safetensors"))
    changed = run(to_config({**small, "model": {"path": str(edited)}}))
    cosines = [
        {row.name: row.cosine for row in r.weights.tensors if row.quantized}
        for r in (first, changed)
    ]
    assert (
        cosines[1].pop("block0.kernel") < cosines[0].pop("block0.kernel")
        and cosines[1] == cosines[0]
    )
    with pytest.raises(UserInputError, match="holds 4-bit weights in groups of 16; run it with"):
        run(to_config({**small, "bit_width": 2, "model": {"path": str(out)}}))
    with pytest.raises(UserInputError, match="already a quantized checkpoint"):
        run(
            to_config(
                {**small, "model": {"path": str(out)}, "export": {"path": str(tmp_path / "twice")}}
            )
        )
    document = json.loads((out / "quantization.json").read_text())
    document["source"]["fingerprint"] = "0" * 64  # exported from another model
    (out / "quantization.json").write_text(json.dumps(document))
    with pytest.raises(UserInputError, match="is not the model it was exported from"):
        run(to_config({**small, "model": {"path": str(out)}}))
    document["source"]["path"] = str(tmp_path / "gone")
    (out / "quantization.json").write_text(json.dumps(document))
    with pytest.raises(UserInputError, match="gone .needed for the reference samples. cannot be"):
        run(to_config({**small, "model": {"path": str(out)}}))


def test_weights_are_cached_by_fingerprint_rules_and_bits(checkpoint, tmp_path, monkeypatch):
    """A threshold variant of a weight-only run reuses the streamed weights; other bits, an
    edited file or an export stream the checkpoint again."""
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    first = run(settings(checkpoint))
    again = run(settings(checkpoint, smoothness_threshold=0.5))
    assert (first.cache, again.cache) == ({"weights": "miss"}, {"weights": "hit"})
    assert again.weights.to_dict() == first.weights.to_dict()
    assert run(settings(checkpoint, bit_width=8)).cache == {"weights": "miss"}
    shard = next(checkpoint.glob("*.safetensors"))
    stat = shard.stat()
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # edited in place
    assert run(settings(checkpoint)).cache == {"weights": "miss"}
    exported = run(settings(checkpoint, export={"path": str(tmp_path / "q")}))
    assert exported.cache == {} and exported.weights.export_path == str(tmp_path / "q")


def test_export_without_the_orbax_copy(checkpoint, tmp_path):
    from thermojax.pipeline.checkpoint.reload import load_quantized

    out = tmp_path / "plain"
    result = run(settings(checkpoint, export={"path": str(out), "orbax": False}))
    assert result.weights.export_path == str(out) and not (out / "orbax").exists()
    assert json.loads((out / "quantization.json").read_text())["orbax"] is None
    loaded = load_quantized(out)
    assert {row.name for row in result.weights.quantized_tensors} == set(loaded.qtensors)
