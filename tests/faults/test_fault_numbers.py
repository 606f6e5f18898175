"""Hostile numbers in every kind of checkpoint thermojax reads, and hostile files handed to it
(README: Faults and hostile input).

Each kind is written for real (a copy of the shipped digits DDPM, a synthetic Hugging Face folder,
an export made once per session by the real command, an activation-statistics file, cache
entries), one tensor or field is corrupted per case, and its reader is called in-process: a
value no model can use is one ``UserInputError`` line naming the file and the tensor; a legal one
(all zeros, a subnormal where harmless) loads and gives finite numbers. A few representative
cases run the real command: one ``error:`` line, exit 2, no traceback.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from faultlib import FAST, assert_one_error, assert_one_line, command, command_env
from safetensors.numpy import load_file, save_file

from thermojax.core.markov import markov_metrics
from thermojax.core.quant import dequantize
from thermojax.core.timegroups import group_activation_params, uniform_edges
from thermojax.errors import UserInputError
from thermojax.models.base import SamplerSpec
from thermojax.models.digits.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from thermojax.models.hf import open_checkpoint, write_dream_like
from thermojax.models.hf.layouts import DTYPES
from thermojax.pipeline.cache.checks import check_entry
from thermojax.pipeline.checkpoint.reload import load_quantized
from thermojax.pipeline.measure.activation_stats import (
    read_activation_stats,
    write_activation_stats,
)
from thermojax.pipeline.measure.calibrate import CalibrationStats
from thermojax.pipeline.measure.sampling import Samples
from thermojax.pipeline.settings import BaselineConfig

TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "compare" / "report_template.json"
SUBNORMAL = 1e-40  # float32's smallest normal is 1.2e-38
HF_GROUP = "group_size=8"  # the synthetic model at scale 64 is 56 wide
Change = Callable[[np.ndarray], None]


# ---------------------------------------------------------------------------- corrupting files


def patch_tensor(path: Path, tensor: str, change: Change) -> None:
    """Change ``tensor``'s bytes in the safetensors file ``path`` in place (same dtype and
    shape, so the header stays valid): ``change`` edits a writable view of its values."""
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[:8])
    entry = json.loads(data[8 : 8 + length])[tensor]
    dtype = DTYPES[entry["dtype"]]
    begin, end = entry["data_offsets"]
    values = np.frombuffer(data, dtype, (end - begin) // dtype.itemsize, 8 + length + begin)
    change(values.reshape(entry["shape"]))
    path.write_bytes(data)


def put(value: float, at: int = 3) -> Change:
    def change(values: np.ndarray) -> None:
        values.flat[at] = value

    return change


def fill(value: float) -> Change:
    def change(values: np.ndarray) -> None:
        values[...] = value

    return change


def first(values: list[float]) -> Change:
    def change(array: np.ndarray) -> None:
        array.reshape(-1)[: len(values)] = values

    return change


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


# ---------------------------------------------------------------------------- the checkpoints


@pytest.fixture(scope="session")
def export(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(root, export, cache)``: the shipped digits DDPM exported by the real command
    (2-bit weights, 8-bit activation parameters), once per session."""
    root = tmp_path_factory.mktemp("export")
    out, cache = root / "export", root / "cache"
    proc = command(
        "thermojax.baseline",
        [
            f"export.path={out}",
            "calibration=quick",
            "sampling.num_samples=8",
            "wandb=disabled",
            f"hydra.run.dir={root / 'run'}",
        ],
        cwd=root,
        env=command_env(root / "home", cache),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, out, cache


@pytest.fixture(scope="session")
def hf_source(tmp_path_factory) -> Path:
    """A synthetic Dream-like folder (scale 64, 2 layers: 0.8 MB of bfloat16)."""
    return write_dream_like(tmp_path_factory.mktemp("hf") / "dream", scale=64, layers=2)


@pytest.fixture
def digits(tmp_path) -> Path:
    return Path(shutil.copytree(SHIPPED_CHECKPOINT, tmp_path / "digits"))


@pytest.fixture
def hf(hf_source, tmp_path) -> Path:
    return Path(shutil.copytree(hf_source, tmp_path / "hf"))


@pytest.fixture
def exported(export, tmp_path) -> Path:
    return Path(shutil.copytree(export[1], tmp_path / "export"))


# ---------------------------------------------------------------------------- digits DDPM

DENOISER, CLASSIFIER = "denoiser.safetensors", "classifier.safetensors"

DIGITS_REFUSED = [
    ("nan", DENOISER, "block0/kernel", put(np.nan), "1 NaN value"),
    ("inf", DENOISER, "output/bias", put(-np.inf), "1 Inf value"),
    ("all-nan", DENOISER, "time_embed/kernel", fill(np.nan), "16384 NaN values"),
    ("classifier-inf", CLASSIFIER, "logits/kernel", put(np.inf), "1 Inf value"),
]


@pytest.mark.parametrize(
    ("file", "tensor", "change", "problem"),
    [case[1:] for case in DIGITS_REFUSED],
    ids=[case[0] for case in DIGITS_REFUSED],
)
def test_digits_non_finite_weights_are_one_line(digits, file, tensor, change, problem):
    patch_tensor(digits / file, tensor, change)
    with pytest.raises(UserInputError) as err:
        load_checkpoint(digits)
    assert_one_line(err.value, str(digits), file, tensor, problem)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_digits_tensor_of_another_dtype_is_one_line(digits, dtype):
    tensors = load_file(str(digits / DENOISER))
    tensors["block1/kernel"] = tensors["block1/kernel"].astype(dtype)
    save_file(tensors, str(digits / DENOISER))
    with pytest.raises(UserInputError) as err:
        load_checkpoint(digits)
    assert_one_line(err.value, DENOISER, "block1/kernel", f"dtype {np.dtype(dtype).name}")


@pytest.mark.parametrize(
    ("tensor", "change"),
    [("block0/kernel", fill(0.0)), ("block2/bias", fill(0.0)), ("block0/kernel", put(SUBNORMAL))],
    ids=["all-zero-kernel", "all-zero-bias", "subnormal"],
)
def test_digits_legal_values_load_and_denoise_finitely(digits, tensor, change):
    patch_tensor(digits / DENOISER, tensor, change)
    model = load_checkpoint(digits)
    layer, kind = tensor.split("/")
    stored = load_file(str(digits / DENOISER))[tensor]
    np.testing.assert_array_equal(np.asarray(model.params[layer][kind]), stored)  # bit for bit
    x = np.linspace(-1, 1, 4 * 64, dtype=np.float32).reshape(4, 64)
    eps, _ = model.denoise({}, x, np.array([0, 10, 500, 999]))
    assert np.all(np.isfinite(np.asarray(eps)))


# ---------------------------------------------------------------------------- Hugging Face

HF_WEIGHT = "model.layers.0.mlp.down_proj.weight"
HF_CASES = [
    ("nan", HF_WEIGHT, put(np.nan), "1 NaN value"),
    ("inf", "lm_head.weight", put(np.inf), "1 Inf value"),
    (
        "norm-nan-and-inf",
        "model.norm.weight",
        first([np.nan, np.inf, -np.inf]),
        "1 NaN and 2 Inf values",
    ),
    ("subnormal", HF_WEIGHT, put(1e-39), None),  # bfloat16 keeps float32's exponent range
    ("all-zero", HF_WEIGHT, fill(0.0), None),
    ("all-zero-norm", "model.norm.weight", fill(0.0), None),
]


@pytest.mark.parametrize(
    ("tensor", "change", "problem"),
    [case[1:] for case in HF_CASES],
    ids=[case[0] for case in HF_CASES],
)
def test_hugging_face_weights_read_or_refused(hf, tensor, change, problem):
    patch_tensor(hf / "model.safetensors", tensor, change)
    checkpoint = open_checkpoint(hf)  # headers only: a value is checked when it is read
    if problem is None:
        read = {info.name: array for info, array in checkpoint.iter_tensors()}
        expected = checkpoint.read(tensor, check_finite=False)
        np.testing.assert_array_equal(read[tensor], expected)
        return
    with pytest.raises(UserInputError) as err:
        for _ in checkpoint.iter_tensors():
            pass
    assert_one_line(err.value, "model.safetensors", tensor, problem)


# ---------------------------------------------------------------------------- exported folders

MODEL = "model.safetensors"
ACTIVATIONS = "activations.safetensors"
QUANTIZATION = "quantization.json"

EXPORT_TENSORS_REFUSED = [
    ("scale-nan", MODEL, "block0.qscale", put(np.nan), "not positive finite"),
    ("scale-inf", MODEL, "block1.qscale", put(np.inf), "not positive finite"),
    ("scale-zero", MODEL, "output.qscale", put(0.0), "not positive finite"),
    ("scale-negative", MODEL, "input.qscale", put(-0.5), "not positive finite"),
    ("zero-point-beyond-2-bits", MODEL, "block2.qzero", put(4), "zero points above 3"),
    ("kept-bias-nan", MODEL, "block0/bias", put(np.nan), "1 NaN value"),
    ("kept-bias-inf", MODEL, "output/bias", put(np.inf), "1 Inf value"),
    ("activation-scale-nan", ACTIVATIONS, "scales", put(np.nan), "not positive finite"),
    ("activation-scale-zero", ACTIVATIONS, "scales", put(0.0), "not positive finite"),
    ("activation-scale-negative", ACTIVATIONS, "scales", put(-1.0), "not positive finite"),
    ("activation-zero-point-256", ACTIVATIONS, "zero_points", put(256.0), "integers in [0, 255]"),
    ("activation-zero-point-half", ACTIVATIONS, "zero_points", put(1.5), "integers in [0, 255]"),
    ("activation-zero-point-nan", ACTIVATIONS, "zero_points", put(np.nan), "integers in [0, 255]"),
    ("edges-falling", ACTIVATIONS, "edges", put(0, at=2), "rise strictly from 0"),
    ("edges-short-of-T", ACTIVATIONS, "edges", put(999, at=-1), "num_timesteps 1000"),
]


@pytest.mark.parametrize(
    ("file", "tensor", "change", "problem"),
    [case[1:] for case in EXPORT_TENSORS_REFUSED],
    ids=[case[0] for case in EXPORT_TENSORS_REFUSED],
)
def test_export_values_are_checked_when_loaded(exported, file, tensor, change, problem):
    patch_tensor(exported / file, tensor, change)
    for mmap in (True, False):
        with pytest.raises(UserInputError) as err:
            load_quantized(exported, mmap=mmap)
        assert_one_line(err.value, file, tensor.removesuffix(".qscale"), problem)


EXPORT_TENSORS_LEGAL = [
    ("scale-subnormal", MODEL, "block0.qscale", put(SUBNORMAL)),
    ("codes-all-ones", MODEL, "block1.qcodes", fill(255)),  # every 2-bit code = 3
    ("codes-all-zero", MODEL, "block1.qcodes", fill(0)),
    ("kept-bias-all-zero", MODEL, "block2/bias", fill(0.0)),
    ("activation-scale-subnormal", ACTIVATIONS, "scales", put(SUBNORMAL)),
]


@pytest.mark.parametrize(
    ("file", "tensor", "change"),
    [case[1:] for case in EXPORT_TENSORS_LEGAL],
    ids=[case[0] for case in EXPORT_TENSORS_LEGAL],
)
def test_export_legal_values_load_as_stored(exported, file, tensor, change):
    patch_tensor(exported / file, tensor, change)
    loaded = load_quantized(exported)
    stored = load_file(str(exported / file))[tensor]
    if file == ACTIVATIONS:
        np.testing.assert_array_equal(getattr(loaded.activations, tensor), stored)
        metrics = markov_metrics(
            loaded.activations.scales,
            loaded.activations.zero_points,
            qmax=2**loaded.activations.bits - 1,
            threshold=0.3,
        )
        assert np.all(np.isfinite(np.asarray(metrics.smoothness_score)))
    elif tensor.endswith("/bias"):
        np.testing.assert_array_equal(loaded.tensors[tensor], stored)
    else:
        name, role = tensor.split(".")
        qtensor = loaded.qtensors[name]
        field = {"qscale": "scale", "qcodes": "codes"}[role]
        np.testing.assert_array_equal(np.asarray(getattr(qtensor, field)), stored)
        assert np.all(np.isfinite(np.asarray(dequantize(qtensor))))


def _tensor(name: str, key: str, value) -> Callable[[dict], None]:
    return lambda doc: doc["tensors"][name].__setitem__(key, value)


def _activations(key: str, value) -> Callable[[dict], None]:
    return lambda doc: doc["activations"].__setitem__(key, value)


def _four_bit_block0(doc: dict) -> None:
    """bits 4 with stored entries consistent with it: the shard's 2-bit codes then disagree."""
    entry = doc["tensors"]["block0"]
    entry["bits"] = 4
    entry["stored"]["codes"]["shape"] = [256, 128]


EXPORT_METADATA_REFUSED = [
    ("bits-disagree", _tensor("block0", "bits", 4), "block0", "stored tensors"),
    ("bits-3", _tensor("block0", "bits", 3), "block0", "bits 3"),
    ("shape-disagrees", _tensor("block1", "shape", [256, 128]), "block1", "stored tensors"),
    ("bits-and-stored-4", _four_bit_block0, "block0.qcodes", "shape [256, 64], but"),
    ("activation-bits-99", _activations("bits", 99), "activations.bits", "[2, 16]"),
    ("activation-bits-string", _activations("bits", "8"), "activations.bits", "'8'"),
    ("num-layers-string", _activations("num_layers", "6"), "activations.num_layers", "'6'"),
    ("layer-names-short", _activations("layer_names", ["a"]), "layer_names", "6 names"),
    ("num-timesteps-999", _activations("num_timesteps", 999), "edges", "num_timesteps 999"),
    (
        "figure-string",
        lambda d: d["tensors"]["block0"]["report"].__setitem__("quantized_bytes", "many"),
        "block0: report.quantized_bytes",
        "'many'",
    ),
    (
        "figure-string-number",
        lambda d: d["tensors"]["block0"]["report"].__setitem__("cosine", "0.9"),
        "block0: report.cosine",
        "finite number",
    ),
    (
        "total-negative",
        lambda d: d["report"].__setitem__("total_source_bytes", -1),
        "report.total_source_bytes",
        "non-negative integer",
    ),
    (
        "block-wrong-type",
        lambda d: d["report"]["blocks"].__setitem__(0, [1, 2]),
        "report.blocks[0]",
        "is not an object",
    ),
    ("top-bits-string", lambda d: d.__setitem__("bits", "2"), "bits", "'2'"),
]


@pytest.mark.parametrize(
    ("change", "named", "problem"),
    [case[1:] for case in EXPORT_METADATA_REFUSED],
    ids=[case[0] for case in EXPORT_METADATA_REFUSED],
)
def test_export_metadata_that_disagrees_is_one_line(exported, change, named, problem):
    edit_json(exported / QUANTIZATION, change)
    with pytest.raises(UserInputError) as err:
        load_quantized(exported)
    assert_one_line(err.value, named, problem)


@pytest.mark.parametrize(
    ("text", "problem"),
    [('"cosine": NaN', "NaN is not strict JSON"), ('"cosine": 1e999', "overflows")],
    ids=["nan", "overflow"],
)
def test_export_map_is_strict_json(exported, text, problem):
    path = exported / QUANTIZATION
    original = path.read_text()
    changed = original.replace('"cosine": 0.', f'{text}, "x": 0.', 1)
    assert changed != original
    path.write_text(changed)
    with pytest.raises(UserInputError) as err:
        load_quantized(exported)
    assert_one_line(err.value, QUANTIZATION, "not valid JSON")


# ---------------------------------------------------------------------------- activation stats

STAT_LAYERS = ("model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj")


def _stats(path: Path, change: Callable[[dict], None] | None = None) -> Path:
    """A statistics file over T = 20 steps for the synthetic model's two down projections;
    ``change`` edits ``{"min", "max", "mean", "std"}`` ([L, T] float32) first."""
    lo = -np.linspace(1, 2, 20, dtype=np.float32) * np.ones((2, 1), np.float32)
    arrays = {"min": lo, "max": -lo, "mean": 0 * lo, "std": -lo}
    if change is not None:
        change(arrays)
    write_activation_stats(
        path, STAT_LAYERS, arrays["min"], arrays["max"], arrays["mean"], arrays["std"]
    )
    return path


def _at(kind: str, value: float, where=(0, 3)) -> Callable[[dict], None]:
    return lambda a: a[kind].__setitem__(where, value)


def _huge(a: dict) -> None:
    a["min"][:] = -3e38
    a["max"][:] = 3e38


STATS_REFUSED = [
    ("nan", _at("max", np.nan), f"{STAT_LAYERS[0]}.max", "1 NaN value"),
    ("inf", _at("min", -np.inf), f"{STAT_LAYERS[0]}.min", "1 Inf value"),
    ("std-inf", _at("std", np.inf, (1, 0)), f"{STAT_LAYERS[1]}.std", "1 Inf value"),
    ("huge", _huge, f"{STAT_LAYERS[0]}.max", "overflow float32"),
    ("huge-mean", _at("mean", -2e38), f"{STAT_LAYERS[0]}.mean", "beyond"),
    ("min-above-max", _at("min", 5.0), f"{STAT_LAYERS[0]}.min", "exceeds"),
    ("std-negative", _at("std", -1.0), f"{STAT_LAYERS[0]}.std", "negative"),
]


@pytest.mark.parametrize(
    ("change", "tensor", "problem"),
    [case[1:] for case in STATS_REFUSED],
    ids=[case[0] for case in STATS_REFUSED],
)
def test_activation_stats_values_are_one_line(tmp_path, change, tensor, problem):
    path = _stats(tmp_path / "stats.safetensors", change)
    with pytest.raises(UserInputError) as err:
        read_activation_stats(path)
    assert_one_line(err.value, str(path), tensor, problem)


@pytest.mark.parametrize("dtype", [np.int32, np.float64])
def test_activation_stats_of_another_dtype(tmp_path, dtype):
    path = _stats(tmp_path / "stats.safetensors")
    tensors = load_file(str(path))
    name = f"{STAT_LAYERS[1]}.max"
    tensors[name] = tensors[name].astype(dtype) * (1e300 if dtype == np.float64 else 1)
    save_file(tensors, str(path))
    with pytest.raises(UserInputError) as err:
        read_activation_stats(path)
    assert_one_line(err.value, name, "dtype int32" if dtype == np.int32 else "overflow float32")


def test_activation_stats_layers_the_model_lacks(tmp_path, hf_source):
    path = _stats(tmp_path / "stats.safetensors")
    tensors = list(open_checkpoint(hf_source).tensors)
    assert read_activation_stats(path, checkpoint_tensors=tensors).layer_names == STAT_LAYERS
    renamed = load_file(str(path))
    renamed = {k.replace("layers.1.", "layers.7."): v for k, v in renamed.items()}
    save_file(renamed, str(path))
    with pytest.raises(UserInputError) as err:
        read_activation_stats(path, checkpoint_tensors=tensors)
    assert_one_line(err.value, str(path), "model.layers.7.mlp.down_proj", "no such layer")


@pytest.mark.parametrize(
    "change",
    [
        _at("min", -SUBNORMAL),
        lambda a: [v.__setitem__(Ellipsis, 0.0) for v in a.values()],
        lambda a: [a[k].__setitem__((0, slice(None, 10)), 0.0) for k in ("min", "max", "std")],
        lambda a: (a["min"].__setitem__(Ellipsis, -1e38), a["max"].__setitem__(Ellipsis, 1e38)),
    ],
    ids=["subnormal", "all-zero", "zero-then-not", "large-but-representable"],
)
def test_activation_stats_legal_values_give_finite_scores(tmp_path, change):
    stats = read_activation_stats(_stats(tmp_path / "stats.safetensors", change))
    edges = uniform_edges(stats.num_timesteps, 4)
    scales, zero_points = group_activation_params(stats.act_min, stats.act_max, edges, bits=8)
    metrics = markov_metrics(scales, zero_points, qmax=255, threshold=0.3)
    assert np.all(np.isfinite(np.asarray(scales))) and np.all(np.asarray(scales) > 0)
    for field in ("smoothness_score", "boundary_scores", "scale_jumps"):
        assert not np.any(np.isnan(np.asarray(getattr(metrics, field)))), field


# ---------------------------------------------------------------------------- cache entries

CONFIG = BaselineConfig().to_dict()


@pytest.fixture(scope="module")
def shipped():
    return load_checkpoint(SHIPPED_CHECKPOINT)


def _calibration(shipped, change: Callable[[dict], None] | None = None) -> CalibrationStats:
    layers, steps = len(shipped.layer_names), shipped.num_timesteps
    lo = -np.ones((layers, steps), np.float32)
    arrays = {
        "act_min": lo,
        "act_max": -lo,
        "act_mean": 0 * lo,
        "act_std": -lo,
        "act_samples": np.zeros(
            (layers, steps, CONFIG["calibration"]["samples_per_step"]), np.float32
        ),
    }
    if change is not None:
        change(arrays)
    return CalibrationStats(tuple(shipped.layer_names), **arrays)


def _cal(kind: str, value: float) -> Callable[[dict], None]:
    return lambda a: a[kind].__setitem__((1, 7), value)


def _samples(shipped, *, timesteps=None, x0_value: float | None = None) -> Samples:
    n, steps = CONFIG["sampling"]["num_samples"], 10
    timesteps = np.arange(0, 1000, 100) if timesteps is None else np.asarray(timesteps)
    x0 = np.full((n, 8, 8), 8.0 if x0_value is None else x0_value, np.float32)
    return Samples(
        x0=x0,
        trajectory=np.zeros((steps, n, 64), np.float32),
        sampler=SamplerSpec("ddim", steps=steps),
        timesteps=timesteps.astype(np.int32),
    )


CACHE_REFUSED = [
    ("calibration-nan", "calibration", lambda m: _calibration(m, _cal("act_max", np.nan)), "act_max holds NaN"),
    ("calibration-inf", "calibration", lambda m: _calibration(m, _cal("act_mean", -np.inf)), "act_mean holds NaN or infinite"),
    ("calibration-huge", "calibration", lambda m: _calibration(m, _cal("act_max", 3e38)), "act_max holds values beyond"),
    ("calibration-std-negative", "calibration", lambda m: _calibration(m, _cal("act_std", -1.0)), "act_std holds negative"),
    ("samples-nan", "fp32_samples", lambda m: _samples(m, x0_value=np.nan), "x0 holds NaN"),
    ("timesteps-beyond-T", "fp32_samples", lambda m: _samples(m, timesteps=np.arange(100, 1100, 100)), "timesteps must rise"),
    ("timesteps-falling", "fp32_samples", lambda m: _samples(m, timesteps=np.arange(900, -100, -100)), "timesteps must rise"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("stage", "entry", "problem"),
    [case[1:] for case in CACHE_REFUSED],
    ids=[case[0] for case in CACHE_REFUSED],
)
def test_cache_entry_values_are_checked(shipped, stage, entry, problem):
    """A bad entry is a ValueError naming the array: the cache logs it, deletes the entry and
    recomputes it (``test_fault_files.py::test_a_bad_cache_entry_is_recomputed``)."""
    with pytest.raises(ValueError) as err:
        check_entry(stage, entry(shipped), model=shipped, config=CONFIG)
    assert problem in str(err.value)


@pytest.mark.parametrize(
    ("stage", "entry"),
    [
        ("calibration", lambda m: _calibration(m, _cal("act_max", SUBNORMAL))),
        ("calibration", lambda m: _calibration(m, lambda a: [v.fill(0) for v in a.values()])),
        ("fp32_samples", lambda m: _samples(m, x0_value=0.0)),
    ],
    ids=["calibration-subnormal", "calibration-all-zero", "samples-all-zero"],
)
def test_cache_entry_legal_values_are_used(shipped, stage, entry):
    value = entry(shipped)
    assert check_entry(stage, value, model=shipped, config=CONFIG) is value


# ---------------------------------------------------------------------------- real commands


def test_command_digits_checkpoint_with_nan_is_one_line(digits, tmp_path):
    patch_tensor(digits / DENOISER, "block0/kernel", put(np.nan))
    run = tmp_path / "run"
    proc = command(
        "thermojax.baseline",
        [*FAST, f"model.path={digits}", f"hydra.run.dir={run}"],
        cwd=tmp_path,
        env=command_env(tmp_path / "home", tmp_path / "cache"),
    )
    assert_one_error(proc, 2, DENOISER, "block0/kernel", "1 NaN value")
    assert not (run / "baseline_metrics.json").exists()


def test_command_export_with_a_zero_scale_is_one_line(exported, tmp_path):
    patch_tensor(exported / MODEL, "block1.qscale", put(0.0))
    proc = command(
        "thermojax.baseline",
        [*FAST, f"model.path={exported}", "bit_width=2", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=command_env(tmp_path / "home", tmp_path / "cache"),
    )
    assert_one_error(proc, 2, str(exported), MODEL, "block1: has scales", "not positive finite")


def test_command_activation_stats_that_overflow_are_one_line(hf_source, tmp_path):
    stats = _stats(tmp_path / "stats.safetensors", _huge)
    proc = command(
        "thermojax.baseline",
        [
            f"model.path={hf_source}",
            f"calibration.stats={stats}",
            HF_GROUP,
            "num_time_groups=4",
            "wandb=disabled",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=command_env(tmp_path / "home", tmp_path / "cache"),
    )
    assert_one_error(proc, 2, str(stats), f"{STAT_LAYERS[0]}.max", "overflow float32")
