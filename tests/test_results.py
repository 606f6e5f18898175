"""The Result schema: JSON keys, model-level definitions, round trip, atomic writes, bad files."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
from result_samples import make_result

from thermojax.results import (
    SCHEMA_VERSION,
    Result,
    atomic_write_text,
    float32_list,
    read_result,
    write_result,
)

SEED_KEYS = {
    "model_name",
    "bit_width",
    "num_time_groups",
    "smoothness_score",
    "violation_count",
    "violations",
    "boundary_scores",
    "cosine_similarity",
    "compression_ratio",
    "model_size_mb",
    "quantization_time_s",
    "min_boundary_score",
    "max_boundary_score",
    "mean_boundary_score",
    "std_boundary_score",
    "common_violation_patterns",
}
ADDED_KEYS = {
    "schema_version",
    "act_bits",
    "smoothness_threshold",
    "time_groups",
    "layers",
    "quality",
    "interpretation",
    "config",
}
LAYER_KEYS = {
    "name",
    "scales",
    "zero_points",
    "smoothness_score",
    "boundary_scores",
    "cosine_similarity",
}
VIOLATION_KEYS = {"layer", "boundary_idx", "scale_jump", "zero_point_jump", "severity"}


def check_model_level_figures(data: dict) -> None:
    """Recompute every model-level figure of a baseline_metrics.json dict from its ``layers``.

    Shared with the end-to-end test, which applies it to the real command's output.
    """
    layers = data["layers"]
    qmax = 2 ** data["act_bits"] - 1
    threshold = data["smoothness_threshold"]
    num_groups = data["num_time_groups"]
    assert len(data["time_groups"]) == num_groups
    starts = [a for a, _ in data["time_groups"]]
    ends = [b for _, b in data["time_groups"]]
    assert starts[0] == 0 and starts[1:] == ends[:-1]
    scores = np.array([layer["smoothness_score"] for layer in layers], np.float64)
    np.testing.assert_allclose(data["smoothness_score"], scores.mean(), rtol=0, atol=1e-12)
    per_layer = np.array([layer["boundary_scores"] for layer in layers], np.float64)
    per_layer = per_layer.reshape(len(layers), num_groups - 1)
    boundary = per_layer.mean(axis=0)
    np.testing.assert_allclose(data["boundary_scores"], boundary, rtol=0, atol=1e-12)
    if num_groups > 1:
        np.testing.assert_allclose(
            [
                data["min_boundary_score"],
                data["max_boundary_score"],
                data["mean_boundary_score"],
                data["std_boundary_score"],
            ],
            [boundary.min(), boundary.max(), boundary.mean(), boundary.std(ddof=0)],
            rtol=0,
            atol=1e-12,
        )
    expected = []
    for layer in layers:
        assert LAYER_KEYS <= set(layer)
        s = np.asarray(layer["scales"], np.float64)
        z = np.asarray(layer["zero_points"], np.float64)
        assert s.shape == z.shape == (num_groups,)
        assert np.all(s > 0) and np.all((z >= 0) & (z <= qmax) & (z == np.round(z)))
        jumps = np.abs(np.diff(s)) / s[:-1]
        zp_jumps = np.abs(np.diff(z)) / qmax
        np.testing.assert_allclose(layer["scale_jumps"], jumps, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(layer["zero_point_jumps"], zp_jumps, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            layer["boundary_scores"], 1 - np.minimum(1, (jumps + zp_jumps) / 2), atol=1e-5
        )
        smooth = (
            1.0 if num_groups < 2 else 1 - min(1, (jumps + zp_jumps).sum() / (2 * (num_groups - 1)))
        )
        np.testing.assert_allclose(layer["smoothness_score"], smooth, atol=1e-5)
        for b, jump in enumerate(layer["scale_jumps"]):
            if jump > threshold:
                severity = "high" if jump > 0.5 else "medium" if jump > 0.3 else "low"
                expected.append((layer["name"], b, severity))
    got = [(v["layer"], v["boundary_idx"], v["severity"]) for v in data["violations"]]
    assert sorted(got) == sorted(expected)
    assert data["violation_count"] == len(expected)
    for v in data["violations"]:
        assert set(v) == VIOLATION_KEYS
        layer = next(layer for layer in layers if layer["name"] == v["layer"])
        assert v["scale_jump"] == layer["scale_jumps"][v["boundary_idx"]]
        assert v["zero_point_jump"] == layer["zero_point_jumps"][v["boundary_idx"]]


@pytest.fixture(scope="module")
def result() -> Result:
    return make_result(num_layers=4, num_groups=6, threshold=0.1)


def test_json_has_the_seed_keys_and_the_additions(result, tmp_path):
    data = json.loads(write_result(result, tmp_path / "m.json").read_text())
    assert SEED_KEYS | ADDED_KEYS <= set(data)
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
        (lambda d: d["quality"].pop("final_mse"), "quality section lacks keys ['final_mse']"),
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
