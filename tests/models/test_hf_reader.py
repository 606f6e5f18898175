"""Opening users' Hugging Face checkpoints: validation without reading weights, streamed reading.

Every bad checkpoint must end in one ``CheckpointError`` line naming the file (and the tensor
where there is one); headers are crafted by hand here (plain ``json`` + ``struct``) so the
reader is checked against the format, not against thermojax's own writer.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import textwrap

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open

from thermojax.errors import UserInputError
from thermojax.models.hf import (
    CheckpointError,
    TensorInfo,
    open_checkpoint,
    write_dream_like,
    write_index,
    write_safetensors,
)

CODES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}
CODES[np.dtype(ml_dtypes.bfloat16)] = "BF16"
SHARD_1, SHARD_2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
UNKNOWN_ARCH = {"model_type": "not-a-known-architecture"}


def bits(array: np.ndarray) -> np.ndarray:
    """The array's raw bits, so NaN payloads and -0.0 compare exactly."""
    return array.view(f"u{array.dtype.itemsize}")


def sample_tensors(dtype) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "embed.weight": rng.normal(size=(16, 8)).astype(dtype),
        "layer.0.weight": rng.normal(size=(8, 8)).astype(dtype),
        "layer.0.bias": rng.normal(size=(8,)).astype(dtype),
        "layer.1.weight": rng.normal(size=(4, 8)).astype(dtype),
        "scalar": np.array(-0.0, dtype),
        "empty": np.zeros((0, 8), dtype),
    }


def write_folder(folder, tensors, *, shards=None, config=None):
    """A checkpoint folder: ``shards`` is a list of name lists (None: one model.safetensors)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or UNKNOWN_ARCH, indent=2))
    plan = shards or [list(tensors)]
    files = ["model.safetensors"] if len(plan) == 1 else [SHARD_1, SHARD_2][: len(plan)]
    for file, names in zip(files, plan, strict=True):
        entries = [(n, CODES[tensors[n].dtype], tensors[n].shape) for n in names]
        write_safetensors(folder / file, entries, tensors.__getitem__)
    if len(plan) > 1:
        weight_map = {n: f for f, names in zip(files, plan, strict=True) for n in names}
        write_index(folder, weight_map, sum(a.nbytes for a in tensors.values()))
    return folder


def raw_shard(path, header: dict, data: bytes, *, length: int | None = None) -> None:
    """A safetensors file written by hand: length prefix, JSON header, data."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)


def header_of(path) -> tuple[int, dict]:
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return length, json.loads(raw[8 : 8 + length])


def one_line_error(folder) -> str:
    with pytest.raises(CheckpointError) as caught:
        open_checkpoint(folder)
    message = str(caught.value)
    assert "\n" not in message
    assert isinstance(caught.value, UserInputError)
    return message


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16], ids=CODES.get)
@pytest.mark.parametrize("sharded", [False, True], ids=["single-file", "sharded"])
def test_round_trip_is_bit_exact_via_read_iter_and_safe_open(tmp_path, dtype, sharded):
    tensors = sample_tensors(dtype)
    names = list(tensors)
    plan = [names[:3], names[3:]] if sharded else None
    folder = write_folder(tmp_path / "ckpt", tensors, shards=plan)
    checkpoint = open_checkpoint(folder)

    assert checkpoint.shards == ((SHARD_1, SHARD_2) if sharded else ("model.safetensors",))
    assert set(checkpoint.tensors) == set(tensors)
    for name, expected in tensors.items():
        info = checkpoint.tensors[name]
        assert (info.dtype, info.shape, info.nbytes) == (
            CODES[np.dtype(dtype)],
            expected.shape,
            expected.nbytes,
        )
        got = checkpoint.read(name)
        assert got.dtype == np.dtype(dtype) and got.shape == expected.shape
        assert got.flags.writeable and got.flags.c_contiguous
        np.testing.assert_array_equal(bits(got), bits(expected))
        with safe_open(folder / info.file, framework="np") as reference:
            np.testing.assert_array_equal(bits(reference.get_tensor(name)), bits(got))
    streamed = {info.name: array for info, array in checkpoint.iter_tensors()}
    assert all(np.array_equal(bits(streamed[n]), bits(tensors[n])) for n in tensors)
    assert checkpoint.total_bytes == sum(a.nbytes for a in tensors.values())


def test_tensor_infos_follow_the_files_header_order_and_offsets(tmp_path):
    tensors = sample_tensors(np.float32)
    names = list(tensors)
    folder = write_folder(tmp_path / "ckpt", tensors, shards=[names[3:], names[:3]])
    checkpoint = open_checkpoint(folder)
    # Independent: the shards' headers parsed with plain json, ordered by file then offset.
    expected = []
    for file in sorted({SHARD_1, SHARD_2}):
        _, header = header_of(folder / file)
        header.pop("__metadata__", None)
        by_offset = sorted(header.items(), key=lambda item: item[1]["data_offsets"])
        expected += [(name, file, tuple(entry["shape"])) for name, entry in by_offset]
    assert [(i.name, i.file, i.shape) for i in checkpoint.tensors.values()] == expected
    assert [i.name for i, _ in checkpoint.iter_tensors()] == [name for name, *_ in expected]
    assert checkpoint.tensors["layer.0.weight"] == TensorInfo(
        "layer.0.weight", SHARD_2, "F32", (8, 8), 256
    )
    assert checkpoint.tensors["layer.0.weight"].numel == 64


def test_iter_tensors_yields_each_wanted_tensor_once_in_file_order(tmp_path):
    tensors = sample_tensors(np.float16)
    names = list(tensors)
    folder = write_folder(tmp_path / "ckpt", tensors, shards=[names[:2], names[2:]])
    checkpoint = open_checkpoint(folder)
    wanted = ["layer.1.weight", "embed.weight", "layer.1.weight", "layer.0.bias"]
    got = [info.name for info, _ in checkpoint.iter_tensors(wanted)]
    assert got == [n for n in checkpoint.tensors if n in wanted]
    assert len(got) == len(set(got)) == 3
    with pytest.raises(KeyError, match="nope"):
        checkpoint.iter_tensors(["embed.weight", "nope"])  # refused before reading anything
    with pytest.raises(KeyError, match="nope"):
        checkpoint.read("nope")


def test_config_text_architecture_and_repr(tmp_path):
    config = {"architectures": ["SomethingForCausalLM"], "hidden_size": 8}
    folder = write_folder(tmp_path / "ckpt", sample_tensors(np.float32), config=config)
    checkpoint = open_checkpoint(folder)
    assert checkpoint.config == config
    assert checkpoint.config_text == (folder / "config.json").read_text()
    assert checkpoint.architecture == "SomethingForCausalLM"
    assert "6 tensors" in repr(checkpoint)
    assert open_checkpoint(
        write_dream_like(tmp_path / "dream", scale=112, layers=1)
    ).architecture == ("Dream")


# ------------------------------------------------------------------------ bad checkpoints


@pytest.fixture
def sharded(tmp_path):
    tensors = sample_tensors(np.float32)
    names = list(tensors)
    return write_folder(tmp_path / "ckpt", tensors, shards=[names[:3], names[3:]])


def edit_index(folder, change) -> None:
    path = folder / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    change(index["weight_map"])
    path.write_text(json.dumps(index))


def test_missing_folder_and_missing_config(tmp_path):
    message = one_line_error(tmp_path / "nowhere")
    assert message == f"{tmp_path / 'nowhere'}: no such checkpoint folder"
    folder = write_folder(tmp_path / "ckpt", sample_tensors(np.float32))
    (folder / "config.json").unlink()
    assert one_line_error(folder) == f"config.json: not found in {folder}"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object"), (b"\xff{}", "UTF-8")],
    ids=["not-json", "not-object", "not-utf8"],
)
def test_unreadable_config(tmp_path, text, fragment):
    folder = write_folder(tmp_path / "ckpt", sample_tensors(np.float32))
    path = folder / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    message = one_line_error(folder)
    assert message.startswith("config.json: ") and fragment in message


def test_folder_without_weights(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    message = one_line_error(folder)
    assert message.startswith("model.safetensors: not found in") and "index.json" in message


def test_corrupt_header_json(tmp_path):
    folder = write_folder(tmp_path / "ckpt", sample_tensors(np.float32))
    path = folder / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[8:12] = b"{{{{"  # same length, no longer JSON
    path.write_bytes(bytes(raw))
    assert one_line_error(folder).startswith("model.safetensors: corrupt header (")


def test_header_length_beyond_the_file(sharded):
    path = sharded / SHARD_2
    raw = path.read_bytes()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw[8:])
    assert one_line_error(sharded) == (
        f"{SHARD_2}: header length {len(raw)} goes beyond the end of the file ({len(raw)} bytes)"
    )


def test_file_too_short_for_a_header(sharded):
    (sharded / SHARD_1).write_bytes(b"\x01\x02")
    assert one_line_error(sharded).startswith(f"{SHARD_1}: only 2 bytes")


def test_truncated_shard_names_the_first_tensor_cut_off(sharded):
    path = sharded / SHARD_1
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    _, header = header_of(path)
    last = max((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"])
    message = one_line_error(sharded)
    assert message.startswith(f"{SHARD_1}: {last}: truncated: the tensor ends at byte {len(raw)}")
    assert message.endswith(f"the file has {len(raw) - 10} bytes")


def test_index_naming_a_missing_shard(sharded):
    (sharded / SHARD_2).unlink()
    # names the index's first tensor in the shard (write_index sorts names: "empty")
    assert one_line_error(sharded) == (
        f"{SHARD_2}: empty: not found (model.safetensors.index.json maps 3 tensor(s) to it)"
    )


def test_index_naming_a_tensor_not_in_its_shard(sharded):
    edit_index(sharded, lambda weight_map: weight_map.update({"ghost.weight": SHARD_1}))
    assert one_line_error(sharded) == (
        f"{SHARD_1}: ghost.weight: listed in model.safetensors.index.json but not in the shard"
    )


def test_shard_tensor_missing_from_the_index(sharded):
    edit_index(sharded, lambda weight_map: weight_map.pop("layer.0.bias"))
    assert one_line_error(sharded) == (
        f"{SHARD_1}: layer.0.bias: in the shard but not in model.safetensors.index.json"
    )


def test_index_mapping_a_tensor_to_the_other_shard(sharded):
    edit_index(sharded, lambda weight_map: weight_map.update({"layer.0.bias": SHARD_2}))
    assert one_line_error(sharded) == (
        f"{SHARD_2}: layer.0.bias: listed in model.safetensors.index.json but not in the shard"
    )


@pytest.mark.parametrize(
    ("index", "fragment"),
    [
        ("{", "not valid JSON"),
        ('{"metadata": {}}', "has no weight_map"),
        ('{"weight_map": {}}', "empty"),
    ],
    ids=["not-json", "no-weight-map", "empty"],
)
def test_unusable_index(sharded, index, fragment):
    (sharded / "model.safetensors.index.json").write_text(index)
    message = one_line_error(sharded)
    assert message.startswith("model.safetensors.index.json: ") and fragment in message


def test_index_naming_a_path_outside_the_folder(sharded):
    edit_index(sharded, lambda weight_map: weight_map.update({"embed.weight": "../x.safetensors"}))
    assert one_line_error(sharded).startswith(
        "model.safetensors.index.json: embed.weight: maps the tensor to '../x.safetensors'"
    )


F32_4 = {"dtype": "F32", "shape": [4]}


@pytest.mark.parametrize(
    ("header", "data", "expected"),
    [
        (
            {"w": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]}},
            bytes(4),
            "w: dtype I8 is not supported (only F32, F16, BF16)",
        ),
        (
            {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}},
            bytes(16),
            "w: data_offsets [0, 16] hold 16 bytes but F32 [3] needs 12",
        ),
        (
            {"a": F32_4 | {"data_offsets": [0, 16]}, "b": F32_4 | {"data_offsets": [8, 24]}},
            bytes(24),
            "b: data_offsets [8, 24] overlap those of a",
        ),
        (
            {"a": F32_4 | {"data_offsets": [4, 20]}},
            bytes(20),
            "a: 4 unused bytes before the tensor (data_offsets [4, 20])",
        ),
        ({"a": F32_4 | {"data_offsets": [0, 16]}}, bytes(20), "a: 4 bytes after the last"),
        ({"a": F32_4 | {"data_offsets": [16, 0]}}, bytes(16), "a: corrupt header entry"),
        ({"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, bytes(16), "a: corrupt"),
        ({"a": {"dtype": "F32"}}, b"", "a: corrupt header entry (needs dtype"),
        ({"__metadata__": {"k": 1}}, b"", "corrupt header (__metadata__ is not"),
        ({}, b"", "holds no tensors"),
    ],
    ids=[
        "unsupported-dtype",
        "byte-size",
        "overlap",
        "gap",
        "trailing-bytes",
        "reversed-offsets",
        "negative-shape",
        "missing-fields",
        "bad-metadata",
        "empty",
    ],
)
def test_bad_header_entries(tmp_path, header, data, expected):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    raw_shard(folder / "model.safetensors", header, data)
    assert one_line_error(folder).startswith(f"model.safetensors: {expected}")


def test_tensor_listed_twice_in_a_header(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    entry = '{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
    text = f'{{"w": {entry}, "w": {entry}}}'.encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + bytes(4))
    assert one_line_error(folder) == "model.safetensors: w: listed twice in the header"


def test_writer_dtypes_the_reader_refuses(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    write_safetensors(
        folder / "model.safetensors",
        [("codes", "U8", (4,))],
        lambda name: np.arange(4, dtype=np.uint8),
    )
    assert one_line_error(folder) == (
        "model.safetensors: codes: dtype U8 is not supported (only F32, F16, BF16)"
    )


# ----------------------------------------------------------------- layout against config.json


@pytest.fixture
def dream(tmp_path):
    return write_dream_like(tmp_path / "dream", scale=112, layers=2, max_shard_bytes=150_000)


def edit_config(folder, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def test_synthetic_dream_passes_the_layout_check(dream):
    checkpoint = open_checkpoint(dream)
    assert len(checkpoint.tensors) == 1 + 2 * 12 + 2
    assert len(checkpoint.shards) == 2


def test_shape_disagreeing_with_config(dream):
    edit_config(dream, intermediate_size=256)
    checkpoint_file = json.loads((dream / "model.safetensors.index.json").read_text())
    file = checkpoint_file["weight_map"]["model.layers.0.mlp.gate_proj.weight"]
    assert one_line_error(dream) == (
        f"{file}: model.layers.0.mlp.gate_proj.weight: shape [192, 28] but config.json "
        "implies [256, 28]"
    )


def test_tensor_config_does_not_expect(dream):
    edit_config(dream, num_hidden_layers=1)
    message = one_line_error(dream)
    assert ": model.layers.1.self_attn.q_proj.weight: shape [28, 28] found, but config.json " in (
        message
    )
    assert message.endswith("(Dream) implies no such tensor")


def test_tensor_config_expects_but_missing(dream):
    edit_config(dream, num_hidden_layers=3)
    assert one_line_error(dream) == (
        "model.safetensors.index.json: model.layers.2.self_attn.q_proj.weight: missing; "
        "config.json implies shape [28, 28]"
    )


def test_config_with_impossible_sizes(dream):
    edit_config(dream, num_attention_heads=5)
    assert one_line_error(dream) == (
        "config.json: hidden_size=28 is not a multiple of num_attention_heads=5"
    )
    edit_config(dream, num_attention_heads=7, hidden_size="big")
    assert one_line_error(dream) == "config.json: hidden_size must be a positive integer, got 'big'"


@pytest.mark.parametrize("layers", [10**9, 1001])
def test_an_absurd_layer_count_is_refused_before_its_layout_is_built(dream, layers):
    # 10**9 layers would be 12e9 names: refused in one line instead of filling the memory
    edit_config(dream, num_hidden_layers=layers)
    assert one_line_error(dream) == (
        f"config.json: num_hidden_layers must be at most 1000, got {layers}"
    )


def test_unknown_architecture_checks_headers_only(dream):
    edit_config(dream, model_type="llama", intermediate_size=1)
    assert len(open_checkpoint(dream).tensors) == 27


# ------------------------------------------------------------------------------- NaN and Inf


def test_nan_and_inf_are_found_by_read_and_iter_tensors(tmp_path):
    tensors = sample_tensors(ml_dtypes.bfloat16)
    tensors["layer.0.weight"].reshape(-1)[:12] = np.nan
    tensors["layer.1.weight"].reshape(-1)[[1, 5, 7]] = [np.inf, -np.inf, np.inf]
    tensors["layer.0.bias"][0], tensors["layer.0.bias"][1] = np.nan, -np.inf
    names = list(tensors)
    folder = write_folder(tmp_path / "ckpt", tensors, shards=[names[:3], names[3:]])
    checkpoint = open_checkpoint(folder)  # opening reads no weights

    with pytest.raises(CheckpointError) as caught:
        checkpoint.read("layer.0.weight")
    assert str(caught.value) == f"{SHARD_1}: layer.0.weight: 12 NaN values"
    with pytest.raises(CheckpointError, match=f"^{SHARD_2}: layer.1.weight: 3 Inf values$"):
        checkpoint.read("layer.1.weight")
    with pytest.raises(CheckpointError, match=r"layer.0.bias: 1 NaN and 1 Inf values$"):
        checkpoint.read("layer.0.bias")

    seen = []
    with pytest.raises(CheckpointError, match="layer.0.weight: 12 NaN values"):
        for info, _ in checkpoint.iter_tensors():
            seen.append(info.name)
    assert seen == ["embed.weight"]
    assert np.isnan(checkpoint.read("layer.0.weight", check_finite=False)).sum() == 12
    names_read = [i.name for i, _ in checkpoint.iter_tensors(check_finite=False)]
    assert names_read == list(checkpoint.tensors)


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["F32", "F16"])
def test_finite_check_counts_match_numpy(tmp_path, dtype):
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(300, 7000)).astype(dtype)  # > one counting chunk
    weight.reshape(-1)[rng.choice(weight.size, 40, replace=False)] = np.nan
    weight.reshape(-1)[rng.choice(weight.size, 9, replace=False)] = np.inf
    folder = write_folder(tmp_path / "ckpt", {"w": weight})
    nan, inf = int(np.isnan(weight).sum()), int(np.isinf(weight).sum())
    with pytest.raises(CheckpointError, match=f"w: {nan} NaN and {inf} Inf values$"):
        open_checkpoint(folder).read("w")


# ------------------------------------------------------------------------------ fingerprints


def test_fingerprint_changes_with_config_or_header_and_only_then(tmp_path):
    tensors = sample_tensors(np.float32)
    names = list(tensors)
    folder = write_folder(tmp_path / "ckpt", tensors, shards=[names[:3], names[3:]])
    first = open_checkpoint(folder).fingerprint()
    assert len(first) == 64 and int(first, 16) >= 0
    assert open_checkpoint(folder).fingerprint() == first  # nothing changed

    config = folder / "config.json"
    original_config = config.read_text()
    config.write_text(original_config + " ")  # same JSON, other bytes
    assert open_checkpoint(folder).fingerprint() != first
    config.write_text(original_config)
    assert open_checkpoint(folder).fingerprint() == first

    entries = [(n, "F32", tensors[n].shape) for n in names[3:]]
    write_safetensors(folder / SHARD_2, entries, tensors.__getitem__, metadata={"format": "pt"})
    assert open_checkpoint(folder).fingerprint() != first  # header bytes differ

    # the documented limit: weights edited in place (same header, same size) are not seen
    write_safetensors(folder / SHARD_2, entries, tensors.__getitem__)
    assert open_checkpoint(folder).fingerprint() == first
    path = folder / SHARD_2
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert open_checkpoint(folder).fingerprint() == first


def test_reading_a_shard_changed_since_open_is_refused(tmp_path):
    tensors = sample_tensors(np.float32)
    folder = write_folder(tmp_path / "ckpt", tensors)
    checkpoint = open_checkpoint(folder)
    smaller = {n: a[:1] if a.ndim and a.shape[0] else a for n, a in tensors.items()}
    write_folder(folder, smaller)
    with pytest.raises(CheckpointError, match="^model.safetensors: changed on disk since"):
        checkpoint.read("embed.weight")


def test_checkpoint_error_pickles_with_its_fields():
    error = CheckpointError("model.safetensors", "3 Inf values", "lm_head.weight")
    again = pickle.loads(pickle.dumps(error))
    assert (again.file, again.tensor, again.problem, str(again)) == (
        "model.safetensors",
        "lm_head.weight",
        "3 Inf values",
        "model.safetensors: lm_head.weight: 3 Inf values",
    )


# ------------------------------------------------------------------------------ peak memory

MEMORY_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from thermojax.models.hf import open_checkpoint

    def status_mib(key):  # Linux: VmRSS is the resident size now, VmHWM its peak
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

    checkpoint = open_checkpoint(sys.argv[1])
    checkpoint.read(next(iter(checkpoint.tensors)))  # warm up allocator and code paths
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset VmHWM to VmRSS: import-time peaks do not hide growth
    before = status_mib("VmRSS")
    total = 0.0
    for info, array in checkpoint.iter_tensors():
        total += float(array[0, 0])
    print(json.dumps({"before": before, "after": status_mib("VmHWM"), "total": total}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_iterating_holds_about_one_tensor_not_the_checkpoint(tmp_path):
    tensor_mib, count = 4, 48
    shape = (tensor_mib * 2**20 // 4 // 1024, 1024)
    names = [f"layer.{i}.weight" for i in range(count)]
    tensors_per_shard = count // 2
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weight_map = {}
    for k, file in enumerate([SHARD_1, SHARD_2]):
        chunk = names[k * tensors_per_shard : (k + 1) * tensors_per_shard]
        write_safetensors(
            folder / file,
            [(n, "F32", shape) for n in chunk],
            lambda n: np.full(shape, float(n.split(".")[1]), np.float32),
        )
        weight_map |= dict.fromkeys(chunk, file)
    write_index(folder, weight_map, count * tensor_mib * 2**20)
    checkpoint_mib = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
    assert checkpoint_mib > 190

    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    probe = json.loads(result.stdout.splitlines()[-1])
    assert probe["total"] == sum(range(count))  # every tensor was really read
    growth = probe["after"] - probe["before"]
    print(f"peak RSS growth {growth:.1f} MiB reading a {checkpoint_mib:.0f} MiB checkpoint")
    # the loop's tensor + the one being read + the NaN counter's chunk, not 192 MiB
    assert growth < 4 * tensor_mib + 8
