"""``export.format=compressed-tensors`` (issue 28): a masked-diffusion LM's codes in
compressed-tensors' ``pack-quantized`` layout, read here by a decoder written from the format's
documentation (not thermojax's code) and compared with thermojax's own codes and dequantized
weights; reloaded to the same QTensors; a run of the folder gives the numbers of the run that
wrote it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors import safe_open

from thermojax.cli.config import to_config
from thermojax.core.quant import dequantize, quantize
from thermojax.errors import UserInputError
from thermojax.models import shipped_path
from thermojax.models.dream.loading import load_masked_diffusion
from thermojax.models.hf import write_dream_like, write_safetensors
from thermojax.pipeline import run
from thermojax.pipeline.checkpoint.compressed_tensors import (
    from_compressed_tensors,
    to_compressed_tensors,
)
from thermojax.pipeline.checkpoint.export_lm import export_masked_lm
from thermojax.pipeline.checkpoint.reload import load_quantized
from thermojax.pipeline.measure.sampling import ActParams

# ------------------------------------------------- the format, as its documentation states it


def decode_words(words: np.ndarray, bits: int, count: int) -> np.ndarray:
    """``pack-quantized``: each row's values as one bit stream over its int32 words, value
    ``i`` in bits ``[i * bits, (i + 1) * bits)`` counted from the lowest bit of word 0 (2, 4
    and 8 bits never straddle a word). Returns the unsigned fields, int64 ``[rows, count]``."""
    assert 32 % bits == 0
    unsigned = np.asarray(words).astype(np.int64) & 0xFFFFFFFF
    start = np.arange(count) * bits
    return (unsigned[:, start // 32] >> (start % 32)) & ((1 << bits) - 1)


def decode_layer(tensors: dict, module: str, args: dict) -> tuple[np.ndarray, ...]:
    """One layer's codes, zero points (the unsigned fields) and float64 weights: the library
    dequantizes ``(q - zp) * scale`` per group with ``q`` and ``zp`` signed, each stored as
    the field minus ``2**(bits-1)``."""
    bits, group = args["num_bits"], args["group_size"]
    out, width = (int(d) for d in tensors[f"{module}.weight_shape"])
    codes = decode_words(tensors[f"{module}.weight_packed"], bits, width)
    zero = decode_words(tensors[f"{module}.weight_zero_point"].T, bits, out).T
    offset = 1 << (bits - 1)
    q, zp = codes - offset, zero - offset
    scale = tensors[f"{module}.weight_scale"].astype(np.float64)
    weights = (q - np.repeat(zp, group, axis=1)) * np.repeat(scale, group, axis=1)
    return codes, zero, weights


def read_folder(folder: Path) -> tuple[dict, dict]:
    """``config.json`` and every tensor of the folder's top-level safetensors files (what a
    serving stack loads)."""
    config = json.loads((folder / "config.json").read_text())
    tensors = {}
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "np") as handle:
            tensors |= {name: handle.get_tensor(name) for name in list(handle.keys())}
    return config, tensors


def scheme_of(config: dict, module: str) -> dict:
    quantization = config["quantization_config"]
    assert module not in quantization["ignore"]
    (args,) = [
        group["weights"]
        for group in quantization["config_groups"].values()
        if module in group["targets"] or group["targets"] == ["Linear"]
    ]
    return args


def thermojax_codes(q) -> np.ndarray:
    """A QTensor's codes in element order, from its documented planar storage: byte ``b`` of a
    group holds elements ``b + k * group_size / p``, element ``k`` in bits ``[k * bits, ...)``."""
    rows, width = q.shape
    per_byte = 8 // q.bits
    lane = q.group_size // per_byte
    planar = np.asarray(q.codes).reshape(rows, width // q.group_size, lane).astype(np.int64)
    lanes = [(planar >> (k * q.bits)) & q.qmax for k in range(per_byte)]
    return np.stack(lanes, axis=2).reshape(rows, width)


def assert_decodes_to(tensors: dict, module: str, args: dict, q) -> None:
    codes, zero, weights = decode_layer(tensors, module, args)
    np.testing.assert_array_equal(codes, thermojax_codes(q), err_msg=module)
    np.testing.assert_array_equal(zero, np.asarray(q.zero_point), err_msg=module)
    reference = np.asarray(dequantize(q))
    np.testing.assert_allclose(weights, reference, rtol=1e-7, atol=0, err_msg=module)
    # float32 computes (c - z) * scale exactly rounded, as the library does in float32
    np.testing.assert_array_equal(weights.astype(np.float32), reference, err_msg=module)


# ------------------------------------------------------------------- the tensors, one layer

LAYERS = {  # bits -> (shape, group size): widths not a multiple of 32 / bits are padded
    2: ((9, 24), 4),
    4: ((7, 20), 4),
    8: ((5, 6), 2),
}


def one_layer(bits: int):
    shape, group = LAYERS[bits]
    weights = np.random.default_rng(bits).normal(size=shape).astype(np.float32)
    return jax.tree.map(np.asarray, quantize(weights, bits=bits, group_size=group))


@pytest.mark.parametrize("bits", sorted(LAYERS), ids=lambda b: f"W{b}")
def test_a_layer_is_stored_as_the_format_documents_it(bits):
    q = one_layer(bits)
    stored = to_compressed_tensors(q)
    tensors = {f"x.weight_{role}": array for role, array in stored.items()}
    args = {"num_bits": bits, "group_size": q.group_size}
    assert stored["packed"].dtype == np.int32 and stored["zero_point"].dtype == np.int32
    assert stored["shape"].dtype == np.int64 and stored["shape"].tolist() == list(q.shape)
    assert_decodes_to(tensors, "x", args, q)
    back = from_compressed_tensors(stored, shape=q.shape, bits=bits, group_size=q.group_size)
    for leaf in ("codes", "scale", "zero_point"):
        np.testing.assert_array_equal(getattr(back, leaf), getattr(q, leaf), err_msg=leaf)


def test_the_decoder_catches_a_wrong_pack_order():
    """The planar bytes of a QTensor written as the words, or each word's codes high bits
    first, decode to other codes: the comparisons above can fail."""
    q = one_layer(4)
    stored = to_compressed_tensors(q)
    args = {"num_bits": 4, "group_size": q.group_size}
    rows, width = q.shape
    planar = np.zeros((rows, stored["packed"].shape[1] * 4), np.uint8)
    planar[:, : width // 2] = np.asarray(q.codes)
    reversed_words = np.zeros_like(stored["packed"], dtype=np.uint32)
    for k in range(8):  # code k of a word at bits 28 - 4k instead of 4k
        field = (stored["packed"].view(np.uint32) >> np.uint32(4 * k)) & np.uint32(15)
        reversed_words |= field << np.uint32(28 - 4 * k)
    for wrong in (planar.view("<i4"), reversed_words.view(np.int32)):
        tensors = {f"x.weight_{role}": array for role, array in stored.items()}
        tensors["x.weight_packed"] = wrong
        codes, _, _ = decode_layer(tensors, "x", args)
        assert not np.array_equal(codes, thermojax_codes(q))


# ------------------------------------------------------------------ a folder, written directly


def export_for_serving(source: Path, out: Path, bits_of, group_size: int = 8, **options):
    """``source`` loaded as a masked-diffusion LM, every linear layer quantized at
    ``bits_of(name)``, exported with ``export_format="compressed-tensors"``."""
    model = load_masked_diffusion(source, steps=4, length=8)
    weights = model.lm.quantizable_weights()
    qweights = {
        name: jax.tree.map(
            np.asarray, quantize(weights[name], bits=bits_of(name), group_size=group_size)
        )
        for name in model.layer_names
    }
    layers, steps = len(model.layer_names), int(model.num_timesteps)
    acts = ActParams(
        scales=np.full((layers, 2), 0.05, np.float32),
        zero_points=np.full((layers, 2), 128.0, np.float32),
        edges=np.array([0, steps // 2, steps], np.int32),
        bits=8,
    )
    export_masked_lm(
        model,
        out,
        qweights,
        source_path=source,
        bits=bits_of(""),
        group_size=group_size,
        activations=acts,
        export_format="compressed-tensors",
        **options,
    )
    return model, qweights


@pytest.fixture(scope="module")
def dream(tmp_path_factory):
    """A Dream-layout folder: hidden 56 (not a multiple of 16: 2-bit rows are padded), key and
    value projections of 8 rows (their 2-bit zero points padded along the output axis)."""
    return write_dream_like(tmp_path_factory.mktemp("dream") / "dream", scale=64, layers=1)


@pytest.mark.parametrize("bits", [2, 4, 8], ids=lambda b: f"W{b}")
def test_a_dream_folder_is_written_for_serving(dream, tmp_path, bits):
    out = tmp_path / "served"
    _, qweights = export_for_serving(dream, out, lambda name: bits)
    config, tensors = read_folder(out)
    source = json.loads((dream / "config.json").read_text())
    assert {k: v for k, v in config.items() if k != "quantization_config"} == source
    quantization = config["quantization_config"]
    assert quantization["quant_method"] == "compressed-tensors"
    assert quantization["format"] == "pack-quantized"
    assert quantization["quantization_status"] == "compressed" and quantization["ignore"] == []
    assert quantization["config_groups"] == {
        "group_0": {
            "targets": ["Linear"],
            "weights": {
                "num_bits": bits,
                "type": "int",
                "symmetric": False,
                "group_size": 8,
                "strategy": "group",
                "dynamic": False,
            },
            "input_activations": None,
            "output_activations": None,
            "format": "pack-quantized",
        }
    }
    for name, q in qweights.items():
        module = name.removesuffix(".weight")
        assert name not in tensors
        assert_decodes_to(tensors, module, scheme_of(config, module), q)
    # every other tensor as stored in the source (embeddings, norms, biases)
    with safe_open(str(dream / "model.safetensors"), "np") as handle:
        kept = [n for n in list(handle.keys()) if n not in qweights]
        assert kept and all(
            np.array_equal(tensors[n], handle.get_tensor(n))
            and tensors[n].dtype == handle.get_tensor(n).dtype
            for n in kept
        )
    assert len(tensors) == len(kept) + 4 * len(qweights)
    # thermojax's sidecar, out of the loaders' *.safetensors glob; no Orbax copy
    assert not (out / "activations.safetensors").exists() and not (out / "orbax").exists()
    assert (out / "thermojax" / "activations.safetensors").is_file()
    document = json.loads((out / "quantization.json").read_text())
    assert document["export_format"] == "compressed-tensors" and document["orbax"] is None
    assert document["activations"]["file"] == "thermojax/activations.safetensors"
    loaded = load_quantized(out)
    assert set(loaded.qtensors) == set(qweights)
    for name, q in qweights.items():
        again = loaded.qtensors[name]
        assert (again.shape, again.bits, again.group_size) == (q.shape, q.bits, q.group_size)
        for leaf in ("codes", "scale", "zero_point"):
            np.testing.assert_array_equal(getattr(again, leaf), getattr(q, leaf), err_msg=name)
    np.testing.assert_array_equal(loaded.activations.zero_points, 128.0)


def test_mixed_bits_target_their_layers_by_name(dream, tmp_path):
    out = tmp_path / "mixed"
    _, qweights = export_for_serving(dream, out, lambda name: 8 if "lm_head" in name else 4)
    config, tensors = read_folder(out)
    groups = config["quantization_config"]["config_groups"]
    targets = {g["weights"]["num_bits"]: g["targets"] for g in groups.values()}
    assert targets[8] == ["lm_head"]
    assert set(targets[4]) == {n.removesuffix(".weight") for n in qweights} - {"lm_head"}
    for name, q in qweights.items():
        module = name.removesuffix(".weight")
        assert_decodes_to(tensors, module, scheme_of(config, module), q)


def test_a_tied_head_is_untied_in_the_served_config(tmp_path):
    """The shipped LM's folder with its head tied to the embedding: the export holds the head's
    own codes, so its config no longer ties them (a loader would drop the head)."""
    shipped = shipped_path("pydoc-mdlm")
    tied = tmp_path / "tied"
    tied.mkdir()
    with safe_open(str(shipped / "model.safetensors"), "np") as handle:
        names = [n for n in list(handle.keys()) if n != "lm_head.weight"]
        arrays = {n: handle.get_tensor(n) for n in names}
    write_safetensors(
        tied / "model.safetensors",
        [(n, "F32", a.shape) for n, a in arrays.items()],
        arrays.__getitem__,
    )
    config = json.loads((shipped / "config.json").read_text()) | {"tie_word_embeddings": True}
    (tied / "config.json").write_text(json.dumps(config))
    (tied / "training.json").write_text((shipped / "training.json").read_text())
    out = tmp_path / "served"
    _, qweights = export_for_serving(tied, out, lambda name: 4, group_size=32)
    served, tensors = read_folder(out)
    assert served["tie_word_embeddings"] is False
    assert_decodes_to(tensors, "lm_head", scheme_of(served, "lm_head"), qweights["lm_head.weight"])


# ----------------------------------------------------------------------- the settings


def test_a_bad_export_format_is_one_line():
    with pytest.raises(UserInputError, match=r"^export.format='gguf': must be thermojax or "):
        to_config({"export": {"format": "gguf"}})


def test_a_family_without_a_writer_refuses_it(tmp_path):
    settings = {"export": {"path": str(tmp_path / "q"), "format": "compressed-tensors"}}
    with pytest.raises(
        UserInputError, match=r"^export.format='compressed-tensors': the digits DDPM has no "
    ):
        run(to_config(settings))
    assert not (tmp_path / "q").exists()


# ------------------------------------------- a checkpoint measured weight-only, streamed


def test_a_checkpoint_measured_weight_only_is_streamed_for_serving(dream, tmp_path):
    """The streamed export of a Hugging Face folder by ``weights.rules`` (how a 7B checkpoint
    is exported): the quantized layers are targeted by name (the head and the embedding, kept
    by the default rules, are not), each decodes to the codes of the reloaded export, the rest
    is stored as in the source, and a weight-only run of the export reports the same figures."""
    out = tmp_path / "served"
    settings = {
        "model": {"path": str(dream), "run": "weight-only"},
        "bit_width": 4,
        "group_size": 8,
        "weights": {"rules": [{"bits": 8, "include": r"\.v_proj\.weight$"}, {}]},
        "export": {"path": str(out), "format": "compressed-tensors"},
    }
    first = run(to_config(settings))
    config, tensors = read_folder(out)
    loaded = load_quantized(out)
    quantized = {row.name for row in first.weights.quantized_tensors}
    assert set(loaded.qtensors) == quantized and "lm_head.weight" not in quantized
    groups = config["quantization_config"]["config_groups"]
    targets = {g["weights"]["num_bits"]: set(g["targets"]) for g in groups.values()}
    assert targets[8] == {n.removesuffix(".weight") for n in quantized if "v_proj" in n}
    assert targets[4] == {n.removesuffix(".weight") for n in quantized if "v_proj" not in n}
    for name, q in loaded.qtensors.items():
        module = name.removesuffix(".weight")
        assert_decodes_to(tensors, module, scheme_of(config, module), q)
    with safe_open(str(dream / "model.safetensors"), "np") as handle:
        kept = [n for n in list(handle.keys()) if n not in quantized]
        assert "lm_head.weight" in kept
        for n in kept:
            np.testing.assert_array_equal(tensors[n], handle.get_tensor(n), err_msg=n)
    assert len(tensors) == len(kept) + 4 * len(quantized)
    document = json.loads((out / "quantization.json").read_text())
    assert document["export_format"] == "compressed-tensors" and not (out / "orbax").exists()
    again = run(to_config({"model": {"path": str(out), "run": "weight-only"}}))
    rows = {row.name: row for row in again.weights.quantized_tensors}
    for row in first.weights.quantized_tensors:
        assert (rows[row.name].bits, rows[row.name].cosine) == (row.bits, row.cosine), row.name


def test_a_rule_on_a_tensor_the_format_cannot_hold_is_one_line(tmp_path):
    from thermojax.models.hf import open_checkpoint
    from thermojax.pipeline.checkpoint.export import export_checkpoint
    from thermojax.pipeline.weights.rules import QuantRule

    source = tmp_path / "src"
    source.mkdir()
    arrays = {"proj.kernel": np.ones((4, 16), np.float32), "out.weight": np.ones((4, 16))}
    arrays["out.weight"] = arrays["out.weight"].astype(np.float32)
    write_safetensors(
        source / "model.safetensors",
        [(n, "F32", a.shape) for n, a in arrays.items()],
        arrays.__getitem__,
    )
    (source / "config.json").write_text("{}")
    with pytest.raises(
        UserInputError,
        match=r"^export.format=compressed-tensors: proj.kernel: shape \[4, 16\]; "
        r"compressed-tensors packs a linear layer's 2-D .weight",
    ):
        export_checkpoint(
            open_checkpoint(source),
            tmp_path / "q",
            [QuantRule(include=".", exclude=None)],
            bits=4,
            group_size=8,
            export_format="compressed-tensors",
        )
    assert not (tmp_path / "q").exists()


# ------------------------------------------------------------------- the whole command


_TOOL = Path(__file__).resolve().parents[2] / "tools" / "same_numbers.py"
_spec = importlib.util.spec_from_file_location("same_numbers", _TOOL)
same_numbers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(same_numbers)

LM = {
    "model": {"shipped": "pydoc-mdlm"},
    "calibration": {"samples": 8, "samples_per_step": 8},
    "sampling": {"num_samples": 4, "steps": 8, "length": 24},
    "bit_width": 4,
    "group_size": 32,
    "num_time_groups": 4,
    "quant": {"keep_bits": {"lm_head*": 8}},  # two config groups, their layers by name
}


def without_paths(result) -> dict:
    data = result.to_dict()
    data["config"]["model"]["path"] = data["config"]["export"]["path"] = None
    data["config"]["export"]["format"] = None
    data["weights"]["export_path"] = None
    return data


@pytest.mark.slow
def test_the_shipped_lm_served_export_runs_again_with_the_same_numbers(tmp_path, monkeypatch):
    out = tmp_path / "served"
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache-export"))
    export = {"path": str(out), "format": "compressed-tensors"}
    first = run(to_config({**LM, "export": export}))
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache-reload"))
    model = {**LM["model"], "path": str(out)}
    its_own = {
        k: v for k, v in LM.items() if k != "quant"
    }  # the export's codes are used as they are
    again = run(to_config({**its_own, "model": model}))
    assert set(again.cache.values()) == {"miss"}  # computed again from the exported codes
    assert again.config["quant"] == first.config["quant"]
    assert list(same_numbers.differences(without_paths(first), without_paths(again))) == []
    for name, array in first.samples.items():
        np.testing.assert_array_equal(again.samples[name], array, err_msg=name)
    weight_only = run(to_config({**its_own, "model": {**model, "run": "weight-only"}}))
    assert weight_only.mode == "weight-only"
    assert {row.name: row.bits for row in weight_only.weights.quantized_tensors} == {
        row.name: row.bits for row in first.weights.quantized_tensors
    }
    config, tensors = read_folder(out)
    loaded = load_quantized(out)
    assert {q.bits for q in loaded.qtensors.values()} == {4, 8}
    for name, q in loaded.qtensors.items():
        module = name.removesuffix(".weight")
        assert_decodes_to(tensors, module, scheme_of(config, module), q)
