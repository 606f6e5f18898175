"""The Result schema: JSON keys, model-level definitions, round trip, atomic writes, bad files."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
from result_samples import ADDED_KEYS, ARROWQUANT_KEYS, check_model_level_figures, make_result

from thermojax.files import atomic_write_text
from thermojax.pipeline.results.schema import (
    SCHEMA_VERSION,
    Result,
    float32_list,
    read_result,
    write_result,
)


@pytest.fixture(scope="module")
def result() -> Result:
    return make_result(num_layers=4, num_groups=6, threshold=0.1)


def test_json_has_arrowquant_keys_and_the_additions(result, tmp_path):
    data = json.loads(write_result(result, tmp_path / "m.json").read_text())
    assert ARROWQUANT_KEYS | ADDED_KEYS <= set(data)
    assert data["schema_version"] == SCHEMA_VERSION
    assert "samples" not in data  # arrays go to samples.npz, not the JSON
    assert {"band", "actions"} <= set(data["interpretation"])
    assert {"drift_per_timestep", "frechet_fp32", "layer_cosine"} <= set(data["quality"])
    assert data["config"]["bit_width"] == data["bit_width"]


@pytest.mark.parametrize(
    ("threshold", "num_groups"), [(0.1, 6), (0.02, 4), (5.0, 3)], ids=["some", "many", "none"]
)
def test_model_level_figures_are_defined_from_layers(threshold, num_groups, tmp_path):
    result = make_result(num_groups=num_groups, threshold=threshold, seed=num_groups)
    data = json.loads(write_result(result, tmp_path / "m.json").read_text())
    check_model_level_figures(data)
    if threshold == 5.0:
        assert data["violation_count"] == 0 and data["violations"] == []


def test_round_trip_is_exact(result, tmp_path):
    path = write_result(result, tmp_path / "m.json")
    again = read_result(path)
    assert again == result
    assert again.samples is None and result.samples is not None


def test_the_interpretation_has_the_quality_band_and_the_verdict(result, tmp_path):
    data = json.loads(write_result(result, tmp_path / "m.json").read_text())
    interpretation = data["interpretation"]
    assert interpretation["quality_band"] == interpretation["verdict"] == "good"
    assert interpretation["quality_detail"] == "Frechet 1.50x fp32"
    assert [c["met"] for c in interpretation["quality_checks"]] == [True, True, True]


@pytest.mark.parametrize("version", [1, 4, 5])
def test_a_result_without_the_quality_band_keys_still_reads(result, tmp_path, version):
    """Files written before the quality band: no quality band, no verdict, the rest as written."""
    data = result.to_dict()
    for key in ("quality_band", "quality_detail", "quality_checks", "verdict"):
        del data["interpretation"][key]
    data["schema_version"] = version
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = read_result(path).interpretation
    assert (old.quality_band, old.quality_detail, old.quality_checks, old.verdict) == (
        None,
        "",
        (),
        None,
    )
    assert (old.band, old.checks, old.summary) == (
        result.interpretation.band,
        result.interpretation.checks,
        result.interpretation.summary,
    )


def test_one_time_group_has_no_boundaries_and_null_statistics(tmp_path):
    result = make_result(num_groups=1)
    data = json.loads(write_result(result, tmp_path / "m.json").read_text())
    assert data["boundary_scores"] == [] and data["smoothness_score"] == 1.0
    assert data["min_boundary_score"] is None and data["std_boundary_score"] is None
    back = read_result(tmp_path / "m.json")
    assert math.isnan(back.min_boundary_score)


def test_float32_values_are_written_short_and_exact():
    values = np.array([0.3, 1 / 3, 1e-8, 12345.678], np.float32)
    written = float32_list(values)
    assert written[0] == 0.3
    np.testing.assert_array_equal(np.asarray(written, np.float32), values)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(result, tmp_path):
    path = write_result(result, tmp_path / "m.json")
    before = path.read_bytes()
    broken = dataclasses.replace(result, config={"not json": object()})
    with pytest.raises(TypeError):
        write_result(broken, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
    previous = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "schema_version"),
        (lambda d: d.pop("smoothness_score"), "missing key 'smoothness_score'"),
        (lambda d: d.update(surprise=1), "unknown keys ['surprise']"),
        (lambda d: d.update(bit_width="two"), "result.bit_width: expected an integer"),
        (lambda d: d["layers"][0].update(scales="wide"), "result.layers[0].scales"),
        (lambda d: d["quality"].pop("drift_mean"), "quality section lacks keys ['drift_mean']"),
    ],
    ids=["newer-version", "missing-key", "unknown-key", "wrong-type", "nested-type", "quality"],
)
def test_reading_a_bad_file_names_the_problem(result, tmp_path, change, message):
    data = result.to_dict()
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_result(path)


def test_a_schema_6_image_quality_without_kind_reads_as_the_image_kind(result, tmp_path):
    """Schema 6 wrote the DDPM's quality section without ``kind``."""
    data = result.to_dict()
    assert data["quality"]["kind"] == "image"
    del data["quality"]["kind"]
    data["schema_version"] = 6
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = read_result(path)
    assert old.quality == result.quality and old.quality.kind == "image"


def test_a_schema_6_text_quality_with_the_image_figures_null_reads_as_text(tmp_path):
    """Schema 6 wrote a masked-diffusion LM's section with ``kind: "text"`` beside the image
    figures as ``null``; they read as absent, and the LM's figures as its own."""
    from thermojax.pipeline.quality.text import TextQuality

    quality = TextQuality(
        drift_per_timestep=(0.5, 0.25),
        drift_per_group=(0.375,),
        drift_mean=0.375,
        token_agreement=0.75,
        generative_perplexity_fp32=6.0,
        generative_perplexity_quantized=6.5,
        sample_text_fp32=("ab",),
        sample_text_quantized=("ac",),
        layer_cosine={"a": 0.9},
        model_cosine=0.9,
        num_samples=4,
    )
    data = make_result().to_dict()
    data["quality"] = {
        **quality.to_dict(),
        **dict.fromkeys(("final_mse", "frechet_fp32", "frechet_quantized"), None),
        **dict.fromkeys(("class_coverage_fp32", "class_coverage_quantized"), None),
    }
    data["schema_version"] = 6
    data["sample_preview"] = None
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    old = read_result(path)
    assert old.quality == quality and old.quality.figure("final_mse") is None
    assert old.quality.figures() == {
        "drift_mean": 0.375,
        "token_agreement": 0.75,
        "generative_perplexity_fp32": 6.0,
        "generative_perplexity_quantized": 6.5,
    }
    data["quality"]["final_mse"] = 1.0  # a figure of another kind is not this kind's
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown keys \\['final_mse'\\]"):
        read_result(path)
