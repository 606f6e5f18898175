"""calibration.stats files: the documented format reads back, every malformed file is one line."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from thermojax.errors import UserInputError
from thermojax.pipeline.measure.activation_stats import (
    read_activation_stats,
    write_activation_stats,
)


def stats_arrays(layers: int = 3, steps: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    lo = -rng.uniform(0.5, 2.0, (layers, steps)).astype(np.float32)
    hi = rng.uniform(0.5, 2.0, (layers, steps)).astype(np.float32)
    mean = ((lo + hi) / 2).astype(np.float32)
    std = rng.uniform(0.1, 0.5, (layers, steps)).astype(np.float32)
    return lo, hi, mean, std


def test_round_trip_keeps_layer_order_and_values(tmp_path):
    names = ["model.layers.1.mlp.down_proj", "model.layers.0.self_attn.q_proj", "z"]
    arrays = stats_arrays()
    path = write_activation_stats(tmp_path / "s.safetensors", names, *arrays)
    stats = read_activation_stats(path)
    assert stats.layer_names == tuple(sorted(names))
    order = [names.index(n) for n in stats.layer_names]
    for got, want in zip(
        (stats.act_min, stats.act_max, stats.act_mean, stats.act_std), arrays, strict=True
    ):
        np.testing.assert_array_equal(got, want[order])
    assert stats.num_timesteps == 20


def write_raw(tmp_path, arrays):
    path = tmp_path / "raw.safetensors"
    save_file({k: np.asarray(v, np.float32) for k, v in arrays.items()}, str(path))
    return path


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"a.min": [0.0], "a.max": [1.0], "a.mean": [0.5]}, "a: lacks a.std"),
        ({"a.lo": [0.0]}, "a.lo: expected tensors named NAME.min"),
        (
            {"a.min": [[0.0]], "a.max": [[1.0]], "a.mean": [[0.5]], "a.std": [[1.0]]},
            "expected a vector over T steps",
        ),
        (
            {"a.min": [np.nan], "a.max": [1.0], "a.mean": [0.5], "a.std": [1.0]},
            "a.min: 1 NaN value",
        ),
        ({"a.min": [2.0], "a.max": [1.0], "a.mean": [0.5], "a.std": [1.0]}, "a.min: exceeds a.max"),
        ({"a.min": [0.0], "a.max": [1.0], "a.mean": [0.5], "a.std": [-1.0]}, "a.std: negative"),
        (
            {
                "a.min": [0.0, 0.0],
                "a.max": [1.0, 1.0],
                "a.mean": [0.5, 0.5],
                "a.std": [1.0, 1.0],
                "b.min": [0.0],
                "b.max": [1.0],
                "b.mean": [0.5],
                "b.std": [1.0],
            },
            "different lengths [1, 2]",
        ),
    ],
    ids=[
        "missing-kind",
        "bad-name",
        "not-a-vector",
        "nan",
        "min-above-max",
        "negative-std",
        "lengths",
    ],
)
def test_malformed_files_name_the_file_and_tensor(tmp_path, arrays, needle):
    path = write_raw(tmp_path, arrays)
    with pytest.raises(UserInputError) as info:
        read_activation_stats(path)
    message = str(info.value)
    assert needle in message and f"calibration.stats={str(path)!r}" in message
    assert "\n" not in message


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserInputError, match="no such file"):
        read_activation_stats(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{oops")
    with pytest.raises(UserInputError, match="not a safetensors file"):
        read_activation_stats(bad)
