"""Quantized checkpoints: written like the source, reloaded bit for bit, never half-published,
and every corruption reported as one line naming the file and the tensor."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from thermojax.core.quant import dequantize, quantize
from thermojax.errors import UserInputError
from thermojax.models import SHIPPED_CHECKPOINT, load_model
from thermojax.models.hf import CheckpointError, open_checkpoint, write_dream_like
from thermojax.pipeline.checkpoint.export import export_checkpoint
from thermojax.pipeline.checkpoint.export_digits import export_digits
from thermojax.pipeline.checkpoint.layout import QUANTIZATION_FILE
from thermojax.pipeline.checkpoint.reload import load_quantized, restore_orbax_copy
from thermojax.pipeline.measure.sampling import ActParams
from thermojax.pipeline.weights.quantize import dense_weights, quantize_weights
from thermojax.pipeline.weights.rules import QuantRule

SCALE = 64  # hidden 56, MLP 320, vocabulary 2368: 0.8 MB per layer pair at bf16
SHARDED = 150_000  # bytes per shard: four shards for two layers
MIXED = [QuantRule(include=r"mlp\.down_proj", bits=8, group_size=32), QuantRule()]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    return {
        dtype: write_dream_like(root / dtype, scale=SCALE, layers=2, dtype=dtype)
        for dtype in ("BF16", "F16", "F32")
    } | {
        "sharded": write_dream_like(
            root / "sharded", scale=SCALE, layers=2, max_shard_bytes=SHARDED
        )
    }


@pytest.fixture(scope="module")
def sharded_export(sources, tmp_path_factory):
    """The sharded source, mixed precision, with activations and the Orbax copy."""
    out = tmp_path_factory.mktemp("exports") / "sharded"
    acts = ActParams(
        scales=np.linspace(0.01, 0.2, 12, dtype=np.float32).reshape(3, 4),
        zero_points=np.arange(12, dtype=np.float32).reshape(3, 4),
        edges=np.array([0, 100, 250, 600, 1000], np.int32),
        bits=8,
    )
    ckpt = open_checkpoint(sources["sharded"])
    path, report = export_checkpoint(
        ckpt, out, MIXED, bits=4, group_size=8, activations=acts, layer_names=["a", "b", "c"],
        source={"run": "test"},
    )  # fmt: skip
    return ckpt, path, report, acts


def stored_layout(folder: Path) -> dict[str, list[str]]:
    layout = {}
    for file in sorted(folder.glob("model*.safetensors")):
        with safe_open(str(file), "np") as handle:
            layout[file.name] = sorted(handle.keys())
    return layout


@pytest.mark.parametrize(
    ("dtype", "bits"), [("BF16", 2), ("BF16", 4), ("BF16", 8), ("F16", 4), ("F32", 4)]
)
def test_round_trip_is_bit_exact(sources, tmp_path, dtype, bits):
    ckpt = open_checkpoint(sources[dtype])
    out, report = export_checkpoint(
        ckpt, tmp_path / "q", [QuantRule()], bits=bits, group_size=8, orbax=False
    )
    loaded = load_quantized(out)
    quantized = {t.name for t in report.tensors if t.bits is not None}
    assert set(loaded.qtensors) == quantized and quantized
    assert set(loaded.tensors) == set(ckpt.tensors) - quantized
    for name, info in ckpt.tensors.items():
        source = ckpt.read(name)
        if name in quantized:
            q, expected = loaded.qtensors[name], quantize(source, bits=bits, group_size=8)
            assert (q.shape, q.bits, q.group_size, q.symmetric) == (info.shape, bits, 8, False)
            for leaf in ("codes", "scale", "zero_point"):
                got, want = getattr(q, leaf), np.asarray(getattr(expected, leaf))
                assert got.dtype == want.dtype and np.array_equal(got, want), (name, leaf)
        else:
            kept = loaded.tensors[name]
            assert kept.dtype == source.dtype and np.array_equal(kept, source), name
    assert (out / "config.json").read_bytes() == (sources[dtype] / "config.json").read_bytes()
    assert loaded.config == ckpt.config
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", QUANTIZATION_FILE
    ]  # fmt: skip
    assert (out / "model.safetensors").stat().st_size < ckpt.total_bytes


def test_mapped_and_read_reloads_are_the_same_bits(sharded_export):
    _, out, _, _ = sharded_export
    mapped, read = load_quantized(out), load_quantized(out, mmap=False)
    assert set(mapped.qtensors) == set(read.qtensors) and set(mapped.tensors) == set(read.tensors)
    pairs = [(mapped.tensors[n], read.tensors[n]) for n in read.tensors]
    for name, q in read.qtensors.items():
        pairs += [
            (getattr(mapped.qtensors[name], r), getattr(q, r))
            for r in ("codes", "scale", "zero_point")
        ]
    for view, own in pairs:
        assert view.dtype == own.dtype and np.array_equal(view, own)
        # a read-only view of the file's map, not a copy
        assert not view.flags.writeable and not view.flags.owndata
    codes = next(iter(mapped.qtensors.values())).codes
    with pytest.raises(ValueError, match="read-only"):
        codes[...] = 0


def test_tokenizer_and_other_companion_files_are_copied(tmp_path):
    source = write_dream_like(tmp_path / "src", scale=SCALE, layers=1)
    companions = {
        "tokenizer.json": b'{"model": {"type": "BPE"}}',
        "tokenizer_config.json": b'{"mask_token": "<|mask|>"}',
        "generation_config.json": b"{}",
        "merges.txt": b"a b\nab c\n",
        "modeling_dream.py": b"# remote code\n",
    }
    for name, data in companions.items():
        (source / name).write_bytes(data)
    (source / "pytorch_model.bin").write_bytes(b"\0" * 64)  # weights in another format
    (source / ".cache.json").write_bytes(b"{}")
    out, _ = export_checkpoint(
        open_checkpoint(source), tmp_path / "q", [QuantRule()], bits=4, group_size=8, orbax=False
    )
    for name, data in companions.items():
        assert (out / name).read_bytes() == data, name
    assert not (out / "pytorch_model.bin").exists() and not (out / ".cache.json").exists()
    document = json.loads((out / QUANTIZATION_FILE).read_text())
    assert document["copied"] == sorted(companions)
    assert load_quantized(out).config == json.loads((source / "config.json").read_text())


def test_sharded_like_the_source(sharded_export):
    ckpt, out, report, _ = sharded_export
    assert len(ckpt.shards) == 4
    layout = stored_layout(out)
    assert list(layout) == list(ckpt.shards)  # the same file names
    for name, info in ckpt.tensors.items():
        rule = next(t for t in report.tensors if t.name == name)
        stored = (
            [name] if rule.bits is None else [name + s for s in (".qcodes", ".qscale", ".qzero")]
        )
        assert set(stored) <= set(layout[info.file]), name  # the same shard as in the source
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {name: file for file, names in layout.items() for name in names}
    sizes = {}
    for file in layout:
        for name, tensor in load_file(str(out / file)).items():
            sizes[name] = tensor.nbytes
    assert index["metadata"]["total_size"] == sum(sizes.values()) == report.total_quantized_bytes


def test_quantization_map_records_rules_figures_and_provenance(sharded_export):
    ckpt, out, report, _ = sharded_export
    document = json.loads((out / QUANTIZATION_FILE).read_text())
    assert (document["format"], document["format_version"]) == ("thermojax-quantized", 1)
    assert document["source"] == {
        "fingerprint": ckpt.fingerprint(), "path": str(ckpt.path), "run": "test"
    }  # fmt: skip
    assert [rule["text"] for rule in document["rules"]] == [
        (
            "rule 0: include 'mlp\\.down_proj', exclude 'embed|norm|lm_head|wte|"
            "transformer\\.ff_out', 8 bits, group 32"
        ),
        (
            "rule 1: include '\\.weight$', exclude 'embed|norm|lm_head|wte|transformer\\.ff_out', "
            "4 bits, group 8"
        ),
    ]
    down = document["tensors"]["model.layers.1.mlp.down_proj.weight"]
    figures = next(t for t in report.tensors if t.name == "model.layers.1.mlp.down_proj.weight")
    assert (down["bits"], down["group_size"], down["dtype"], down["shape"]) == (
        8,
        32,
        "BF16",
        [56, 320],
    )
    assert down["rule"] == figures.rule and down["report"]["cosine"] == figures.cosine
    assert down["stored"]["codes"] == {
        "name": "model.layers.1.mlp.down_proj.weight.qcodes", "dtype": "U8", "shape": [56, 320]
    }  # fmt: skip
    assert document["tensors"]["model.norm.weight"]["bits"] is None
    assert document["report"]["total_quantized_bytes"] == report.total_quantized_bytes
    assert document["activations"]["layer_names"] == ["a", "b", "c"]


def test_activations_round_trip(sharded_export):
    _, out, _, acts = sharded_export
    loaded = load_quantized(out).activations
    assert loaded.bits == acts.bits
    for field in ("scales", "zero_points", "edges"):
        got, want = getattr(loaded, field), getattr(acts, field)
        assert got.dtype == want.dtype and np.array_equal(got, want), field


def test_the_orbax_copy_reloads_to_the_same_codes(sharded_export):
    _, out, _, _ = sharded_export
    loaded = load_quantized(out)
    restored = restore_orbax_copy(out)
    assert set(restored) == set(loaded.qtensors)
    for name, q in loaded.qtensors.items():
        r = restored[name]
        assert (r.shape, r.bits, r.group_size) == (q.shape, q.bits, q.group_size)
        for leaf in ("codes", "scale", "zero_point"):
            assert np.array_equal(getattr(r, leaf), getattr(q, leaf)), (name, leaf)


def test_the_orbax_copy_is_saved_in_bounded_parts(sources, tmp_path, monkeypatch):
    """Orbax holds a saved tree in memory twice: each part holds at most ORBAX_PART_BYTES (a
    larger tensor alone), and the parts restore to the whole."""
    from thermojax.pipeline.checkpoint import orbax_copy

    monkeypatch.setattr(orbax_copy, "ORBAX_PART_BYTES", 1500)
    ckpt = open_checkpoint(sources["sharded"])
    out, _ = export_checkpoint(ckpt, tmp_path / "q", [QuantRule()], bits=4, group_size=8)
    tensors = json.loads((out / QUANTIZATION_FILE).read_text())["tensors"]
    parts: dict[str, list[int]] = {}
    for name, entry in tensors.items():
        if entry["bits"] is None:
            assert "orbax" not in entry, name
            continue
        stem = Path(entry["file"]).stem
        assert re.fullmatch(rf"orbax/{re.escape(stem)}/part-\d{{3}}", entry["orbax"]), name
        assert (out / entry["orbax"]).is_dir(), name
        stored = sum(math.prod(s["shape"]) * (4 if s["dtype"] == "F32" else 1)
                     for s in entry["stored"].values())  # fmt: skip
        parts.setdefault(entry["orbax"], []).append(stored)
    assert len(parts) > len(ckpt.shards)  # split within shards
    assert all(sum(sizes) <= 1500 or len(sizes) == 1 for sizes in parts.values()), parts
    restored, loaded = restore_orbax_copy(out), load_quantized(out)
    assert set(restored) == set(loaded.qtensors)
    for name, q in loaded.qtensors.items():
        assert np.array_equal(restored[name].codes, q.codes), name


def test_an_existing_folder_is_never_overwritten(sharded_export, sources):
    _, out, _, _ = sharded_export
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(UserInputError, match="exists and is not an empty folder"):
        export_checkpoint(
            open_checkpoint(sources["BF16"]), out, [QuantRule()], bits=4, group_size=8
        )
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_an_empty_folder_is_filled_and_a_schedule_is_per_timestep(sources, tmp_path):
    (tmp_path / "q").mkdir()
    schedule = ActParams(
        np.full((2, 6), 0.1, np.float32), np.zeros((2, 6), np.float32), np.arange(7), 4
    )
    out, _ = export_checkpoint(
        open_checkpoint(sources["BF16"]), tmp_path / "q", [], bits=4, group_size=8,
        activations=schedule, orbax=False,
    )  # fmt: skip
    loaded = load_quantized(out)
    assert not loaded.qtensors  # no rules: everything kept
    assert loaded.quantization["activations"]["per_timestep"] is True
    assert np.array_equal(loaded.activations.edges, np.arange(7, dtype=np.int32))
    assert loaded.quantization["activations"]["layer_names"] is None


def test_an_export_that_fails_midway_leaves_nothing(sources, tmp_path):
    seen = []

    def progress(report):
        seen.append(report.name)
        if len(seen) == 5:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        export_checkpoint(
            open_checkpoint(sources["sharded"]), tmp_path / "q", [QuantRule()], bits=4,
            group_size=8, progress=progress,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # no folder, no temporary left


def test_bad_rules_and_activations_fail_before_anything_is_written(sources, tmp_path):
    ckpt = open_checkpoint(sources["BF16"])
    with pytest.raises(UserInputError, match="group_size 64 does not divide"):
        export_checkpoint(ckpt, tmp_path / "q", [QuantRule()], bits=4, group_size=64)
    bad = ActParams(
        np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), np.array([0, 5, 3, 9]), 8
    )
    with pytest.raises(UserInputError, match="^activations: activation edges must rise"):
        export_checkpoint(
            ckpt, tmp_path / "q", [QuantRule()], bits=4, group_size=8, activations=bad
        )
    assert list(tmp_path.iterdir()) == []


KILLED = """
import os, sys, time
from thermojax.models.hf import open_checkpoint
from thermojax.pipeline.checkpoint.export import export_checkpoint
from thermojax.pipeline.weights.rules import QuantRule
count = []
def progress(report):
    count.append(report.name)
    if len(count) == 8:  # two shards written, the third in progress
        print("midway", flush=True)
        time.sleep(60)
export_checkpoint(open_checkpoint(sys.argv[1]), sys.argv[2], [QuantRule()], bits=4,
                  group_size=8, progress=progress)
"""


def test_a_killed_export_leaves_no_complete_looking_folder(sources, tmp_path):
    out = tmp_path / "q"
    out.mkdir()  # an (empty) old folder: it must stay as it was
    env = os.environ | {"JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED), str(sources["sharded"]), str(out)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout.readline().strip() == "midway"
        leftovers = [p for p in tmp_path.iterdir() if p != out]
        assert len(leftovers) == 1 and leftovers[0].name.startswith(".q.")  # the staging folder
        assert any(leftovers[0].glob("model-0000*.safetensors"))  # it was really midway
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert out.is_dir() and not any(out.iterdir())
    (staging,) = [p for p in tmp_path.iterdir() if p != out]
    assert staging.name.endswith(".tmp") and not (staging / QUANTIZATION_FILE).exists()
    with pytest.raises(CheckpointError, match=f"^{QUANTIZATION_FILE}: not found"):
        load_quantized(out)


# ----------------------------------------------------------------------------- corruption


@pytest.fixture
def export_copy(sources, tmp_path):
    ckpt = open_checkpoint(sources["sharded"])
    out, _ = export_checkpoint(ckpt, tmp_path / "q", MIXED, bits=4, group_size=8, orbax=False)
    return out


def edit_map(out: Path, edit) -> None:
    path = out / QUANTIZATION_FILE
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


def edit_shard(out: Path, file: str, edit) -> None:
    path = out / file
    with safe_open(str(path), "np") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata=metadata)


UP = "model.layers.0.mlp.up_proj.weight"
UP_FILE = "model-00002-of-00004.safetensors"


def corrupt_up_entry(key, value):
    return lambda doc: doc["tensors"][UP].__setitem__(key, value)


CORRUPTIONS = {
    "no map": (lambda out: (out / QUANTIZATION_FILE).unlink(), f"{QUANTIZATION_FILE}: not found"),
    "map not JSON": (
        lambda out: (out / QUANTIZATION_FILE).write_text("{"),
        f"{QUANTIZATION_FILE}: not valid JSON",
    ),
    "wrong format": (
        lambda out: edit_map(out, lambda d: d.__setitem__("format", "other")),
        re.escape(f"{QUANTIZATION_FILE}: not a thermojax-quantized map (format 'other')"),
    ),
    "newer version": (
        lambda out: edit_map(out, lambda d: d.__setitem__("format_version", 9)),
        f"{QUANTIZATION_FILE}: format_version 9",
    ),
    "entry lacks a key": (
        lambda out: edit_map(out, lambda d: d["tensors"][UP].pop("stored")),
        re.escape(f"{QUANTIZATION_FILE}: {UP}: tensor entry lacks ['stored']"),
    ),
    "map shape": (
        lambda out: edit_map(out, corrupt_up_entry("shape", [320, 64])),
        f"{QUANTIZATION_FILE}: {UP}: stored tensors .* disagree",
    ),
    "map bits": (
        lambda out: edit_map(out, corrupt_up_entry("bits", 8)),
        f"{QUANTIZATION_FILE}: {UP}: stored tensors .* disagree",
    ),
    "map file": (
        lambda out: edit_map(out, corrupt_up_entry("file", "../x.safetensors")),
        f"{QUANTIZATION_FILE}: {UP}: file '../x.safetensors' is not a file name",
    ),
    "no config": (lambda out: (out / "config.json").unlink(), "config.json: not found"),
    "no shard": (lambda out: (out / UP_FILE).unlink(), f"{UP_FILE}: not found"),
    "shard not safetensors": (
        lambda out: (out / UP_FILE).write_bytes(b"garbage"),
        f"{UP_FILE}: not a readable safetensors file",
    ),
    "tensor missing": (
        lambda out: edit_shard(out, UP_FILE, lambda t: t.pop(UP + ".qscale")),
        f"{UP_FILE}: {UP}.qscale: missing",
    ),
    "kept tensor missing": (
        lambda out: edit_shard(
            out, UP_FILE, lambda t: t.pop("model.layers.0.self_attn.q_proj.bias")
        ),
        f"{UP_FILE}: model.layers.0.self_attn.q_proj.bias: missing",
    ),
    "shape disagrees": (
        lambda out: edit_shard(
            out, UP_FILE, lambda t: t.__setitem__(UP + ".qcodes", t[UP + ".qcodes"][:-1])
        ),
        rf"{UP_FILE}: {UP}\.qcodes: shape \[319, 28\], but {QUANTIZATION_FILE} says \[320, 28\]",
    ),
    "dtype disagrees": (
        lambda out: edit_shard(
            out,
            UP_FILE,
            lambda t: t.__setitem__(UP + ".qscale", t[UP + ".qscale"].astype(np.float16)),
        ),
        f"{UP_FILE}: {UP}.qscale: dtype F16, but {QUANTIZATION_FILE} says F32",
    ),
    "unlisted tensor": (
        lambda out: edit_shard(
            out, UP_FILE, lambda t: t.__setitem__("extra", np.zeros(2, np.float32))
        ),
        f"{UP_FILE}: extra: not listed in {QUANTIZATION_FILE}",
    ),
    "bad scales": (
        lambda out: edit_shard(out, UP_FILE, lambda t: t[UP + ".qscale"].__setitem__((0, 0), -1.0)),
        f"{UP_FILE}: {UP}: has scales that are not positive finite numbers",
    ),
    "bad zero points": (
        lambda out: edit_shard(out, UP_FILE, lambda t: t[UP + ".qzero"].__setitem__((0, 0), 200)),
        f"{UP_FILE}: {UP}.qzero: has zero points above 15",
    ),
    "no activations file": (
        lambda out: edit_map(
            out,
            lambda d: d.__setitem__(
                "activations",
                {"file": "activations.safetensors", "bits": 8, "num_layers": 1, "num_params": 1},
            ),
        ),
        "activations.safetensors: not found",
    ),
}


@pytest.mark.parametrize(("corrupt", "message"), list(CORRUPTIONS.values()), ids=list(CORRUPTIONS))
def test_every_corruption_is_one_line_naming_file_and_tensor(export_copy, corrupt, message):
    corrupt(export_copy)
    with pytest.raises(CheckpointError) as err:
        load_quantized(export_copy)
    assert isinstance(err.value, UserInputError)
    assert "\n" not in str(err.value)
    assert re.match(message, str(err.value)), str(err.value)


def test_not_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        load_quantized(tmp_path / "absent")


# ----------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    model = load_model()
    qweights, _ = quantize_weights(model, bits=4, group_size=64)
    num_layers = len(model.layer_names)
    acts = ActParams(
        scales=np.full((num_layers, 4), 0.05, np.float32),
        zero_points=np.full((num_layers, 4), 128.0, np.float32),
        edges=np.array([0, 250, 500, 750, 1000], np.int32),
        bits=8,
    )
    out = export_digits(
        model,
        tmp_path_factory.mktemp("digits") / "q",
        qweights,
        bits=4,
        group_size=64,
        activations=acts,
    )
    return model, qweights, acts, out


def test_digits_round_trip(digits):
    model, qweights, acts, out = digits
    loaded = load_quantized(out)
    assert set(loaded.qtensors) == set(model.layer_names)
    for name, q in qweights.items():
        got = loaded.qtensors[name]
        assert (got.shape, got.bits, got.group_size) == (q.shape, q.bits, q.group_size)
        for leaf in ("codes", "scale", "zero_point"):
            assert np.array_equal(getattr(got, leaf), np.asarray(getattr(q, leaf))), (name, leaf)
        bias = loaded.tensors[f"{name}/bias"]
        assert np.array_equal(bias, np.asarray(model.params[name]["bias"]))
    dense = dense_weights(model, loaded.qtensors)
    for name, weight in dense_weights(model, qweights).items():
        assert np.array_equal(np.asarray(dense[name]), np.asarray(weight)), name
    assert np.array_equal(loaded.activations.scales, acts.scales)
    assert loaded.quantization["activations"]["layer_names"] == list(model.layer_names)


def test_digits_folder_keeps_the_checkpoint_format(digits):
    model, _, _, out = digits
    shipped = json.loads((SHIPPED_CHECKPOINT / "model.json").read_text())
    spec = json.loads((out / "model.json").read_text())
    assert spec.pop("quantization") == {
        "format": "thermojax-quantized", "file": QUANTIZATION_FILE, "bits": 4, "group_size": 64
    }  # fmt: skip
    assert spec == shipped
    classifier = "classifier.safetensors"
    assert (out / classifier).read_bytes() == (SHIPPED_CHECKPOINT / classifier).read_bytes()
    restored = restore_orbax_copy(out)
    assert set(restored) == set(model.layer_names)
    document = json.loads((out / QUANTIZATION_FILE).read_text())
    entry = document["tensors"]["block0"]
    assert (entry["source_name"], entry["source_shape"], entry["shape"]) == (
        "block0/kernel",
        [256, 256],
        [256, 256],
    )
    kernel = np.asarray(model.params["block0"]["kernel"], np.float64).T
    deq = np.asarray(dequantize(jax.tree.map(np.asarray, restored["block0"])), np.float64)
    cosine = np.sum(kernel * deq) / np.sqrt(np.sum(kernel**2) * np.sum(deq**2))
    assert entry["report"]["cosine"] == pytest.approx(cosine, abs=1e-9)


def test_digits_activations_must_span_the_schedule(digits, tmp_path):
    model, qweights, acts, _ = digits
    short = ActParams(acts.scales, acts.zero_points, np.array([0, 1, 2, 3, 4], np.int32), 8)
    with pytest.raises(UserInputError, match="must end at T=1000"):
        export_digits(model, tmp_path / "q", qweights, bits=4, group_size=64, activations=short)
    assert list(tmp_path.iterdir()) == []


def test_bf16_dtype_is_kept_in_the_map(sharded_export):
    _, out, _, _ = sharded_export
    loaded = load_quantized(out)
    assert loaded.tensors["model.norm.weight"].dtype == ml_dtypes.bfloat16
