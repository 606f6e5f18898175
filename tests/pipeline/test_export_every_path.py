"""Every export path (issue 23): each family the baseline runs, with each weight option, writes a
quantized checkpoint that ``model.path=`` runs again with the numbers of the run that wrote it,
from an empty cache (only the paths, timings and cache record differ)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from thermojax.cli.config import to_config
from thermojax.errors import UserInputError
from thermojax.models.hf import write_dream_like
from thermojax.pipeline import run
from thermojax.pipeline.checkpoint.reload import load_quantized
from thermojax.pipeline.families import MASKED_LM, recognise

pytestmark = pytest.mark.slow  # fourteen runs, the shipped LM's among them

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "same_numbers.py"
_spec = importlib.util.spec_from_file_location("same_numbers", _TOOL)
same_numbers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(same_numbers)

QUICK = {"calibration": {"samples": 8, "samples_per_step": 8}, "sampling": {"num_samples": 4}}


def without_paths(result) -> dict:
    data = result.to_dict()
    data["config"]["model"]["path"] = data["config"]["export"]["path"] = None
    data["weights"]["export_path"] = None
    return data


def export_and_reload(settings: dict, tmp_path: Path, monkeypatch, **reload_model) -> tuple:
    """The run that exports, and the run of its export, each from an empty cache."""
    out = tmp_path / "exported"
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache-export"))
    first = run(to_config({**settings, "export": {"path": str(out)}}))
    assert first.weights.export_path == str(out)
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache-reload"))
    model = {**settings.get("model", {}), **reload_model, "path": str(out)}
    again = run(to_config({**{k: v for k, v in settings.items() if k != "quant"}, "model": model}))
    assert set(again.cache.values()) == {"miss"}  # computed again from the exported codes
    return out, first, again


def assert_same_numbers(first, again) -> None:
    assert list(same_numbers.differences(without_paths(first), without_paths(again))) == []
    for name, array in first.samples.items():
        np.testing.assert_array_equal(again.samples[name], array, err_msg=name)


DIGITS = {**QUICK, "bit_width": 4, "group_size": 16, "num_time_groups": 4}
WEIGHT_OPTIONS = {
    "minmax": {},
    "mse_clip": {"method": "mse_clip"},
    "hqq": {"method": "hqq"},
    "gptq": {"method": "gptq", "hessian_samples": 8},
    "keep_bits": {"keep_bits": {"output": 8}},
}


@pytest.mark.parametrize("option", list(WEIGHT_OPTIONS))
def test_the_digits_export_runs_again_with_the_same_numbers(option, tmp_path, monkeypatch):
    quant = WEIGHT_OPTIONS[option]
    out, first, again = export_and_reload({**DIGITS, "quant": quant}, tmp_path, monkeypatch)
    assert_same_numbers(first, again)
    assert again.config["quant"] == first.config["quant"]  # the settings that made the codes
    document = json.loads((out / "quantization.json").read_text())
    bits = {name: entry["bits"] for name, entry in document["tensors"].items() if entry["bits"]}
    assert bits["output"] == (8 if option == "keep_bits" else 4)
    assert set(bits.values()) == ({4, 8} if option == "keep_bits" else {4})


def test_the_digits_export_refuses_weight_settings_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "q"
    run(to_config({**DIGITS, "export": {"path": str(out)}}))
    with pytest.raises(UserInputError, match=r"quant.method='gptq': not for an exported"):
        run(to_config({**DIGITS, "model": {"path": str(out)}, "quant": {"method": "gptq"}}))


LM = {
    **QUICK,
    "model": {"shipped": "pydoc-mdlm"},
    "sampling": {"num_samples": 4, "steps": 8, "length": 24},
    "bit_width": 4,
    "group_size": 32,
    "num_time_groups": 4,
}


@pytest.fixture(scope="module")
def lm_export(tmp_path_factory):
    """The shipped LM exported with its output projection kept at 8 bits, and run again."""
    tmp_path = tmp_path_factory.mktemp("lm")
    with pytest.MonkeyPatch.context() as patch:
        settings = {**LM, "quant": {"keep_bits": {"lm_head*": 8}}}
        return export_and_reload(settings, tmp_path, patch)


def test_the_shipped_lm_export_runs_again_with_the_same_numbers(lm_export):
    out, first, again = lm_export
    assert first.mode == again.mode and first.quality.kind == "text"
    assert_same_numbers(first, again)
    assert again.config["quant"]["keep_bits"] == {"lm_head*": 8}
    document = json.loads((out / "quantization.json").read_text())
    assert document["source"]["family"] == "masked-diffusion-lm"
    assert document["source"]["shipped"] == "pydoc-mdlm"
    assert document["tensors"]["lm_head.weight"]["bits"] == 8
    # Dream's layout: the source's config and tokenizer metadata, codes under the HF names.
    assert {"config.json", "training.json", "model.safetensors"} <= {p.name for p in out.iterdir()}
    with safe_open(str(out / "model.safetensors"), "np") as handle:
        names = set(handle.keys())
    assert "model.layers.0.mlp.up_proj.weight.qcodes" in names
    assert "model.embed_tokens.weight" in names and "model.norm.weight" in names


def test_the_lm_export_holds_every_linear_layer_as_it_was_sampled(lm_export):
    out, first, _ = lm_export
    loaded = load_quantized(out)
    assert set(loaded.qtensors) == {row.name for row in first.weights.quantized_tensors}
    assert {name: q.bits for name, q in loaded.qtensors.items()} == {
        row.name: row.bits for row in first.weights.quantized_tensors
    }


def test_the_lm_export_refuses_what_contradicts_it(lm_export, tmp_path, monkeypatch):
    out, _, _ = lm_export
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    at = {**LM, "model": {"shipped": "pydoc-mdlm", "path": str(out)}}
    with pytest.raises(UserInputError, match="holds 4-bit weights in groups of 32"):
        run(to_config({**at, "bit_width": 2}))
    with pytest.raises(UserInputError, match="not for an exported checkpoint"):
        run(to_config({**at, "quant": {"method": "hqq"}}))
    with pytest.raises(UserInputError, match="already a quantized checkpoint"):
        run(to_config({**at, "export": {"path": str(tmp_path / "twice")}}))
    weight_only = run(to_config({**at, "model": {**at["model"], "run": "weight-only"}}))
    assert weight_only.mode == "weight-only" and weight_only.quality is None


def test_a_users_dream_folder_exports_and_runs_again(tmp_path, monkeypatch):
    """A Dream-layout folder (bf16, sharded) run with ``model.run=diffusion``: its export keeps
    the shards and dtypes, and the run of it has the same numbers (``model.run=auto`` runs it
    too); a source that changed since is refused in one line."""
    source = write_dream_like(tmp_path / "dream", scale=64, layers=1, max_shard_bytes=200_000)
    settings = {
        **QUICK,
        "model": {"path": str(source), "run": "diffusion"},
        "sampling": {"num_samples": 4, "steps": 4, "length": 8},
        "bit_width": 4,
        "group_size": 8,  # divides every width of the scale-64 layout (hidden 56)
        "num_time_groups": 2,
    }
    out, first, again = export_and_reload(settings, tmp_path, monkeypatch)
    assert_same_numbers(first, again)
    assert recognise(to_config({"model": {"path": str(out)}})) is MASKED_LM  # model.run=auto
    shards = sorted(p.name for p in source.glob("*.safetensors"))
    assert len(shards) > 1 and sorted(p.name for p in out.glob("model*.safetensors")) == shards
    assert (out / "model.safetensors.index.json").is_file()
    document = json.loads((out / "quantization.json").read_text())
    assert document["tensors"]["model.norm.weight"]["dtype"] == "BF16"
    with safe_open(str(out / shards[0]), "np") as handle:
        stored = list(handle.keys())
        kept = [n for n in stored if not n.endswith((".qcodes", ".qscale", ".qzero"))]
        assert kept and all(handle.get_slice(n).get_dtype() == "BF16" for n in kept)
    shutil.rmtree(source)  # retrained in place: the reference samples need the old one
    write_dream_like(source, scale=64, layers=1, max_shard_bytes=200_000, seed=1)
    with pytest.raises(UserInputError, match="is not the model it was exported from"):
        run(to_config({**settings, "model": {"path": str(out)}}))
