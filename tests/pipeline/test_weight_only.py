"""Weight-only quantization of a checkpoint: per-tensor figures against an independent float64
numpy reference, honest byte counts, exact block sums, streaming one tensor at a time, and one
compiled program per block shape."""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import math
import weakref

import jax
import ml_dtypes
import numpy as np
import pytest

from thermojax.core.quant import quantize
from thermojax.errors import UserInputError
from thermojax.models.hf import CheckpointError, TensorInfo, open_checkpoint, write_safetensors
from thermojax.pipeline.weights import stream as weight_only
from thermojax.pipeline.weights.rules import QuantRule
from thermojax.pipeline.weights.stream import (
    OUTLIER_SIGMAS,
    measure_qtensor,
    quantize_checkpoint,
    quantize_tensor,
)

NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


class MemoryCheckpoint:
    """An in-memory stand-in for a SafetensorsFolder: what the quantizer uses of one."""

    def __init__(self, arrays: dict[str, np.ndarray], file: str = "model.safetensors"):
        dtype_of = {np.dtype(v): k for k, v in NUMPY_DTYPES.items()}
        self._arrays = arrays
        self.tensors = {
            name: TensorInfo(name, file, dtype_of[a.dtype], a.shape, a.nbytes)
            for name, a in arrays.items()
        }
        self.reads = 0

    def iter_tensors(self, names=None, *, check_finite=True):
        for name, info in self.tensors.items():
            self.reads += 1
            yield info, self._arrays[name].copy()  # a fresh array, as the reader gives


def weights(shape, dtype="F32", *, seed=0, spikes=2):
    """Normal weights with a few large input channels (columns), stored at ``dtype``."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape) * 0.02
    w[:, rng.choice(shape[1], size=spikes, replace=False)] *= 25.0
    return w.astype(NUMPY_DTYPES[dtype])


def unpack(codes: np.ndarray, bits: int, group_size: int) -> np.ndarray:
    """The documented planar layout, decoded with numpy: byte b of a group holds the codes of
    its elements b + k * group_size / p, element k in bits [k * bits, (k + 1) * bits)."""
    per_byte, mask = 8 // bits, (1 << bits) - 1
    lanes = codes.reshape(codes.shape[0], -1, group_size // per_byte)
    parts = [(lanes >> (k * bits)) & mask for k in range(per_byte)]
    return np.concatenate(parts, axis=-1).reshape(codes.shape[0], -1)


def reference(x: np.ndarray, q) -> dict[str, float]:
    """Cosine, SQNR and outlier share in float64 from the stored values and the packed codes."""
    x = np.asarray(x, np.float64)
    g = q.group_size
    codes = unpack(np.asarray(q.codes), q.bits, g).reshape(x.shape[0], -1, g).astype(np.float64)
    zero = np.asarray(q.zero_point, np.float64)[..., None]
    d = ((codes - zero) * np.asarray(q.scale, np.float64)[..., None]).reshape(x.shape)
    mean, std = x.mean(axis=1, keepdims=True), x.std(axis=1, keepdims=True)
    return {
        "cosine": float(np.sum(x * d) / np.sqrt(np.sum(x * x) * np.sum(d * d))),
        "sqnr_db": float(10 * np.log10(np.sum(x * x) / np.sum((x - d) ** 2))),
        "outlier_share": float(np.mean(np.abs(x - mean) > OUTLIER_SIGMAS * std)),
        "dot": float(np.sum(x * d)),
        "xx": float(np.sum(x * x)),
        "dd": float(np.sum(d * d)),
    }


def honest_bytes(shape, bits, group_size) -> int:
    rows, n = shape
    groups = rows * n // group_size
    return rows * n * bits // 8 + 4 * groups + groups  # codes + f32 scale + u8 zero per group


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 640 elements: a 37 x 64 tensor runs as 10 + 10 + 10 + 7 rows."""
    monkeypatch.setattr(weight_only, "_BLOCK_ELEMENTS", 640)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_tensor_figures_match_a_float64_reference(small_blocks, dtype, bits):
    w = weights((37, 64), dtype, seed=bits)
    q, sums = quantize_tensor(w, bits=bits, group_size=16)
    core = quantize(np.asarray(w, np.float32), bits=bits, group_size=16)
    for leaf in ("codes", "scale", "zero_point"):
        assert np.array_equal(getattr(q, leaf), np.asarray(getattr(core, leaf))), leaf
    assert (q.shape, q.bits, q.group_size) == ((37, 64), bits, 16)
    ref = reference(w, q)
    assert sums.cosine == pytest.approx(ref["cosine"], abs=1e-6)
    assert sums.sqnr_db == pytest.approx(ref["sqnr_db"], abs=1e-3)
    assert sums.outlier_share == ref["outlier_share"] > 0  # the spiky columns stand out
    assert sums.signal == pytest.approx(ref["xx"], rel=1e-5)
    assert sums.quantized == pytest.approx(ref["dd"], rel=1e-5)
    assert measure_qtensor(w.astype(np.float32), q).cosine == pytest.approx(ref["cosine"], 1e-9)


def test_outlier_share_counts_row_outliers_not_large_rows():
    rng = np.random.default_rng(1)
    w = rng.uniform(-1, 1, size=(8, 128))  # |z| < sqrt(3): no natural outlier
    w[2] *= 1000.0  # a row far larger than the others: not an outlier row
    w[5, 7] = 40.0  # one spike in its row
    w[6] = 0.25  # a constant row: nothing stands out
    _, sums = quantize_tensor(w.astype(np.float32), bits=4, group_size=32)
    assert sums.outliers == 1
    assert sums.outlier_share == 1 / w.size


@pytest.mark.parametrize("misalignment", [0, 16], ids=["aligned", "unaligned"])
def test_quantize_tensor_keeps_no_reference_to_its_input(misalignment):
    # JAX aliases a 64-byte-aligned numpy input and lets go of it lazily: the tensor must not
    # depend on that (nor on the garbage collector) to be freed.
    raw = np.empty(64 * 64 * 4 + 64, np.uint8)
    start = (-raw.ctypes.data) % 64 + misalignment
    weight = raw[start : start + 64 * 64 * 4].view(np.float32).reshape(64, 64)
    weight[:] = np.linspace(-1, 1, weight.size).reshape(64, 64)
    alive = weakref.ref(raw)
    gc.disable()
    try:
        quantize_tensor(weight, bits=4, group_size=16)
        del weight, raw
        assert alive() is None
    finally:
        gc.enable()


def test_all_zero_weights_are_exact():
    q, sums = quantize_tensor(np.zeros((4, 32), np.float32), bits=2, group_size=8)
    assert sums.cosine == 1.0 and sums.outliers == 0 and sums.noise == 0
    assert np.all(q.scale == 1)


@pytest.mark.parametrize(
    ("shape", "bits", "group_size"), [((4, 30), 4, 8), ((4, 32), 3, 8), ((32,), 4, 8)]
)
def test_quantize_tensor_refuses_what_it_cannot_quantize(shape, bits, group_size):
    with pytest.raises(ValueError, match=r"bits|shape|group_size"):
        quantize_tensor(np.zeros(shape, np.float32), bits=bits, group_size=group_size)


TOY = {
    "model.embed_tokens.weight": ((50, 32), "BF16"),
    "model.layers.0.self_attn.q_proj.weight": ((32, 32), "BF16"),
    "model.layers.0.self_attn.q_proj.bias": ((32,), "BF16"),
    "model.layers.0.mlp.up_proj.weight": ((64, 32), "F16"),
    "model.layers.1.mlp.down_proj.weight": ((32, 64), "F32"),
    "model.layers.1.input_layernorm.weight": ((32,), "F32"),
    "model.norm.weight": ((32,), "BF16"),
    "lm_head.weight": ((50, 32), "BF16"),
}
RULES = [QuantRule(include=r"down_proj", bits=8, group_size=32), QuantRule()]


@pytest.fixture(scope="module")
def toy():
    arrays = {
        name: weights(shape, dtype, seed=i)
        if len(shape) == 2
        else np.linspace(0.5, 1.5, shape[0]).astype(NUMPY_DTYPES[dtype])
        for i, (name, (shape, dtype)) in enumerate(TOY.items())
    }
    ckpt = MemoryCheckpoint(arrays)
    return arrays, ckpt, quantize_checkpoint(ckpt, RULES, bits=4, group_size=16)


def test_checkpoint_report_per_tensor(toy):
    arrays, _, report = toy
    assert [t.name for t in report.tensors] == list(TOY)
    by_name = {t.name: t for t in report.tensors}
    for name, (shape, dtype) in TOY.items():
        t = by_name[name]
        assert (t.shape, t.dtype, t.source_bytes) == (shape, dtype, arrays[name].nbytes)
        quantized = name.endswith("proj.weight")
        assert (t.bits is not None) == quantized, name
        if not quantized:
            assert (t.rule, t.group_size, t.cosine, t.sqnr_db, t.outlier_share) == (None,) * 5
            assert t.quantized_bytes == t.source_bytes
            continue
        bits, group = (8, 32) if "down_proj" in name else (4, 16)
        assert (t.bits, t.group_size) == (bits, group)
        assert t.rule.startswith("rule 0" if bits == 8 else "rule 1")
        assert t.quantized_bytes == honest_bytes(shape, bits, group)
        q = quantize(np.asarray(arrays[name], np.float32), bits=bits, group_size=group)
        ref = reference(arrays[name], q)
        assert t.cosine == pytest.approx(ref["cosine"], abs=1e-6)
        assert t.sqnr_db == pytest.approx(ref["sqnr_db"], abs=1e-3)
        assert t.outlier_share == ref["outlier_share"]


def test_checkpoint_report_blocks_and_totals(toy):
    arrays, _, report = toy
    by_name = {t.name: t for t in report.tensors}
    refs = {
        t.name: reference(
            arrays[t.name],
            quantize(np.asarray(arrays[t.name], np.float32), bits=t.bits, group_size=t.group_size),
        )
        for t in report.tensors
        if t.bits is not None
    }

    def cosine(names):
        dot = sum(refs[n]["dot"] for n in names)
        return dot / math.sqrt(
            sum(refs[n]["xx"] for n in names) * sum(refs[n]["dd"] for n in names)
        )

    blocks = {b.name: b for b in report.blocks}
    assert list(blocks) == ["other", "model.layers.0", "model.layers.1"]
    for block in report.blocks:
        members = [n for n in TOY if weight_only.block_name(n) == block.name]
        quantized = [n for n in members if n in refs]
        assert (block.tensors, block.quantized_tensors) == (len(members), len(quantized))
        assert block.source_bytes == sum(by_name[n].source_bytes for n in members)
        assert block.quantized_bytes == sum(by_name[n].quantized_bytes for n in members)
        if quantized:
            assert block.cosine == pytest.approx(cosine(quantized), abs=1e-6)
            assert block.min_cosine == min(by_name[n].cosine for n in quantized)
        else:
            assert block.cosine is block.min_cosine is None
    assert report.model_cosine == pytest.approx(cosine(list(refs)), abs=1e-6)
    assert report.total_source_bytes == sum(a.nbytes for a in arrays.values())
    assert report.total_quantized_bytes == sum(t.quantized_bytes for t in report.tensors)
    assert report.fp32_bytes == sum(4 * a.size for a in arrays.values())
    assert report.compression_vs_source == report.total_source_bytes / report.total_quantized_bytes
    assert report.compression_vs_fp32 == report.fp32_bytes / report.total_quantized_bytes
    assert report.bytes_per_second == pytest.approx(report.total_source_bytes / report.seconds)
    assert json.loads(json.dumps(report.to_dict()))["tensors"][1]["shape"] == [32, 32]


def test_the_sink_gets_each_tensor_once_in_order_and_the_stream_keeps_none(toy):
    arrays, _, _ = toy
    seen, previous = [], []

    def sink(info, qtensor, array):
        # The tensor before this one is gone: nothing in the stream still holds it.
        assert all(ref() is None for ref in previous), f"{seen[-1]} still alive at {info.name}"
        previous[:] = [weakref.ref(array)]
        seen.append(info.name)
        assert array.dtype == arrays[info.name].dtype and np.array_equal(array, arrays[info.name])
        assert (qtensor is None) == (not info.name.endswith("proj.weight"))

    quantize_checkpoint(MemoryCheckpoint(arrays), RULES, bits=4, group_size=16, sink=sink)
    assert seen == list(TOY)


def test_rule_errors_come_before_any_read(toy):
    arrays, _, _ = toy
    ckpt = MemoryCheckpoint(arrays)
    with pytest.raises(UserInputError, match=r"^rule 0: .*does not divide the input width 32 of"):
        quantize_checkpoint(ckpt, [QuantRule(group_size=64)], bits=4, group_size=16)
    assert ckpt.reads == 0


@contextlib.contextmanager
def compiles_of(name: str):
    counts: collections.Counter[str] = collections.Counter()

    def listen(event: str, duration: float, **kwargs) -> None:
        if event == BACKEND_COMPILE and name in str(kwargs.get("fun_name", "")):
            counts[name] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def test_one_compiled_program_per_block_shape_dtype_and_options():
    # Shapes no other test uses, so this test sees its own compilations.
    same = {f"model.layers.{i}.mlp.up_proj.weight": weights((24, 40), seed=i) for i in range(3)}
    other = {"model.layers.0.mlp.down_proj.weight": weights((40, 24), seed=9)}
    with compiles_of("_block_program") as counts:
        quantize_checkpoint(MemoryCheckpoint(same | other), [QuantRule()], bits=4, group_size=8)
        assert counts["_block_program"] == 2  # three tensors of one shape share a program
        quantize_checkpoint(MemoryCheckpoint(same), [QuantRule()], bits=4, group_size=8)
        assert counts["_block_program"] == 2  # warm: nothing new
        quantize_checkpoint(MemoryCheckpoint(same), [QuantRule()], bits=8, group_size=8)
        assert counts["_block_program"] == 3  # new static options, one new program


def test_a_nan_in_the_source_is_refused_naming_file_and_tensor(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "toy"}')
    w = np.ones((4, 16), np.float32)
    w[1, 3] = np.nan
    write_safetensors(
        tmp_path / "model.safetensors", [("a.weight", "F32", w.shape)], {"a.weight": w}.get
    )
    with pytest.raises(CheckpointError, match=r"^model\.safetensors: a\.weight: 1 NaN value$"):
        quantize_checkpoint(open_checkpoint(tmp_path), [QuantRule()], bits=4, group_size=8)
