"""The streaming safetensors writer, the index writer and the shard planner.

Files are checked with ``safetensors.safe_open`` and with a plain ``json``/``struct`` parse of
the header, independently of thermojax's reader.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open

from thermojax.models.hf import (
    TensorInfo,
    plan_shards,
    shard_file_name,
    write_index,
    write_safetensors,
)

DTYPE_CASES = {
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "U8": np.uint8,
    "I32": np.int32,
}


def bits(array: np.ndarray) -> np.ndarray:
    """The raw bits of a float array (bfloat16 included), so equality is bit-exact."""
    return array if array.dtype.kind in "ui" else array.view(f"u{array.dtype.itemsize}")


def header_of(path) -> tuple[int, dict]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return length, json.loads(raw[8 : 8 + length])


def sample(dtype, shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind in "ui":
        return rng.integers(0, 100, size=shape).astype(dtype)
    return rng.normal(size=shape).astype(dtype)


def entries_of(tensors: dict[str, np.ndarray], code: str) -> list[tuple[str, str, tuple]]:
    return [(name, code, array.shape) for name, array in tensors.items()]


@pytest.mark.parametrize("code", list(DTYPE_CASES))
def test_round_trip_through_safe_open_is_bit_exact(tmp_path, code):
    dtype = DTYPE_CASES[code]
    tensors = {
        "b.weight": sample(dtype, (5, 7)),
        "a.bias": sample(dtype, (7,), seed=1),
        "scalar": sample(dtype, (), seed=2),
        "empty": np.zeros((0, 3), dtype),
    }
    path = write_safetensors(
        tmp_path / "x.safetensors",
        entries_of(tensors, code),
        tensors.__getitem__,
        metadata={"format": "pt"},
    )
    with safe_open(path, framework="np") as reader:
        assert reader.metadata() == {"format": "pt"}
        assert set(reader.keys()) == set(tensors)
        for name, expected in tensors.items():
            got = reader.get_tensor(name)
            assert got.dtype == np.dtype(dtype) and got.shape == expected.shape
            np.testing.assert_array_equal(bits(got), bits(expected))


def test_header_is_contiguous_aligned_and_in_entry_order(tmp_path):
    tensors = {"z": sample(np.float32, (3, 3)), "a": sample(np.float32, (5,))}
    path = write_safetensors(tmp_path / "x.safetensors", entries_of(tensors, "F32"), tensors.get)
    length, header = header_of(path)
    assert (8 + length) % 8 == 0  # tensor data 8-byte aligned, as safetensors writes it
    assert list(header) == ["z", "a"] and "__metadata__" not in header
    assert header["z"] == {"dtype": "F32", "shape": [3, 3], "data_offsets": [0, 36]}
    assert header["a"]["data_offsets"] == [36, 56]
    assert path.stat().st_size == 8 + length + 56
    raw = path.read_bytes()[8 + length :]
    assert raw == tensors["z"].astype("<f4").tobytes() + tensors["a"].astype("<f4").tobytes()


def test_produce_is_called_once_per_tensor_in_order(tmp_path):
    calls = []

    def produce(name):
        calls.append(name)
        return np.full((2, 2), len(calls), np.float32)

    write_safetensors(tmp_path / "x.safetensors", [(n, "F32", (2, 2)) for n in "cab"], produce)
    assert calls == ["c", "a", "b"]


def test_big_endian_and_strided_arrays_are_written_little_endian_c_order(tmp_path):
    base = sample(np.float32, (4, 6))
    tensors = {
        "big_endian": base.astype(">f4"),
        "transposed": base.T,
        "strided": base[:, ::2],
    }
    entries = [(name, "F32", array.shape) for name, array in tensors.items()]
    path = write_safetensors(tmp_path / "x.safetensors", entries, tensors.__getitem__)
    with safe_open(path, framework="np") as reader:
        for name, expected in tensors.items():
            np.testing.assert_array_equal(reader.get_tensor(name), expected)


@pytest.mark.parametrize(
    ("entries", "match"),
    [
        ([("w", "F8", (2,))], "w: dtype must be one of"),
        ([("w", "F32", (2, -1))], "w: shape must be non-negative integers"),
        ([("w", "F32", (2,)), ("w", "F32", (2,))], "w: listed twice"),
        ([("__metadata__", "F32", (2,))], "tensor names must be non-empty strings"),
    ],
    ids=["dtype", "shape", "duplicate", "reserved-name"],
)
def test_bad_entries_are_refused_before_anything_is_produced(tmp_path, entries, match):
    def produce(name):
        raise AssertionError("produce must not be called")

    with pytest.raises(ValueError, match=match):
        write_safetensors(tmp_path / "x.safetensors", entries, produce)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("produced", "error", "match"),
    [
        (
            np.zeros((2, 3), np.float16),
            ValueError,
            r"w: declared F32 \(float32\), produced float16",
        ),
        (
            np.zeros((3, 2), np.float32),
            ValueError,
            r"w: declared shape \[2, 3\], produced \[3, 2\]",
        ),
        ([[0.0] * 3] * 2, TypeError, "w: produce returned list, not a numpy array"),
    ],
    ids=["dtype", "shape", "not-an-array"],
)
def test_a_mismatching_array_fails_and_leaves_the_old_file(tmp_path, produced, error, match):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"previous contents")
    with pytest.raises(error, match=match):
        write_safetensors(
            path,
            [("ok", "F32", (1,)), ("w", "F32", (2, 3))],
            lambda name: np.zeros(1, np.float32) if name == "ok" else produced,
        )
    assert path.read_bytes() == b"previous contents"
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]  # no temporary left


def test_bfloat16_must_be_declared_bf16(tmp_path):
    with pytest.raises(ValueError, match="declared F16"):
        write_safetensors(
            tmp_path / "x.safetensors",
            [("w", "F16", (2,))],
            lambda name: np.zeros(2, ml_dtypes.bfloat16),
        )


def test_metadata_must_be_strings(tmp_path):
    with pytest.raises(ValueError, match="metadata must map str to str"):
        write_safetensors(tmp_path / "x.safetensors", [], lambda n: None, metadata={"k": 1})


def test_write_index_matches_the_transformers_format(tmp_path):
    weight_map = {"b": "model-00002-of-00002.safetensors", "a": "model-00001-of-00002.safetensors"}
    path = write_index(tmp_path, weight_map, 1234)
    assert path == tmp_path / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    assert index == {"metadata": {"total_size": 1234}, "weight_map": weight_map}
    assert list(index["weight_map"]) == ["a", "b"]
    with pytest.raises(ValueError, match="total_size"):
        write_index(tmp_path, weight_map, -1)


def infos(*sizes: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(name=f"t{i}", nbytes=size) for i, size in enumerate(sizes)]


@pytest.mark.parametrize(
    ("sizes", "limit", "expected"),
    [
        ((4, 4, 4), 8, [["t0", "t1"], ["t2"]]),
        ((4, 4, 4), 12, [["t0", "t1", "t2"]]),
        ((20, 1, 1), 8, [["t0"], ["t1", "t2"]]),  # larger than the limit: a shard of its own
        ((1, 20, 1), 8, [["t0"], ["t1"], ["t2"]]),
        ((0, 0), 1, [["t0", "t1"]]),
        ((), 8, []),
    ],
    ids=["fill", "one-shard", "oversize-first", "oversize-middle", "empty-tensors", "none"],
)
def test_plan_shards_is_greedy_in_order(sizes, limit, expected):
    plan = plan_shards(infos(*sizes), limit)
    assert plan == expected
    assert [name for shard in plan for name in shard] == [f"t{i}" for i in range(len(sizes))]
    for shard in plan:
        shard_bytes = sum(sizes[int(name[1:])] for name in shard)
        assert shard_bytes <= limit or len(shard) == 1


def test_plan_shards_takes_tensor_infos_and_names_files_like_hugging_face():
    tensors = [TensorInfo(f"w{i}", "", "BF16", (1000,), 2000) for i in range(5)]
    plan = plan_shards(tensors, 4000)
    assert plan == [["w0", "w1"], ["w2", "w3"], ["w4"]]
    assert [shard_file_name(k, len(plan)) for k in range(len(plan))] == [
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
    ]
    assert shard_file_name(0, 1) == "model.safetensors"
    with pytest.raises(ValueError, match="max_shard_bytes"):
        plan_shards(tensors, 0)


WRITE_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from thermojax.models.hf import write_safetensors

    def status_mib(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

    shape = (1024, 1024)
    entries = [(f"t{i}", "F32", shape) for i in range(48)]
    produce = lambda name: np.full(shape, int(name[1:]), np.float32)
    write_safetensors(sys.argv[1] + "/warm.safetensors", entries[:1], produce)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset the peak (VmHWM) to the current resident size
    before = status_mib("VmRSS")
    write_safetensors(sys.argv[1] + "/x.safetensors", entries, produce)
    print(json.dumps({"before": before, "after": status_mib("VmHWM")}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_writing_holds_one_tensor_not_the_file(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", WRITE_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    probe = json.loads(result.stdout.splitlines()[-1])
    size_mib = (tmp_path / "x.safetensors").stat().st_size / 2**20
    assert size_mib > 190
    growth = probe["after"] - probe["before"]
    print(f"peak RSS growth {growth:.1f} MiB writing {size_mib:.0f} MiB")
    assert growth < 3 * 4 + 8  # 4 MiB tensors
    with safe_open(tmp_path / "x.safetensors", framework="np") as reader:
        assert float(reader.get_tensor("t47")[3, 5]) == 47.0
