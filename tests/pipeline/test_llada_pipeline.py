"""A LLaDA-layout folder through the pipeline: measured weight-only by default, run as a
masked-diffusion LM by the baseline command with ``model.run=diffusion`` (its quantizable layers
named by LLaDA's tensors), and exported in LLaDA's layout, which runs again with the same
numbers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from user_env import command_env

from thermojax.cli import baseline as baseline_module
from thermojax.cli.config import to_config
from thermojax.models.hf import open_checkpoint, write_llada_like
from thermojax.models.hf.layouts import LLADA_LAYOUT
from thermojax.pipeline import run

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "same_numbers.py"
_spec = importlib.util.spec_from_file_location("same_numbers", _TOOL)
same_numbers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(same_numbers)

GROUP = 8  # divides every width of the scale-64 layout (d_model 64, MLP 192)
LAYERS = 2
DIFFUSION = {
    "model": {"run": "diffusion"},
    "bit_width": 4,
    "group_size": GROUP,
    "num_time_groups": 2,
    "calibration": {"samples": 4, "samples_per_step": 8},
    "sampling": {"num_samples": 4, "steps": 4, "length": 8},
}
LINEARS = LLADA_LAYOUT.linear_names(LAYERS)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("llada")
    return write_llada_like(root / "llada", scale=64, layers=LAYERS, max_shard_bytes=300_000)


def test_a_llada_folder_is_measured_weight_only_without_model_run(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    result = run(to_config({"model": {"path": str(folder)}, "bit_width": 4, "group_size": GROUP}))
    assert result.mode == "weight-only" and result.quality is None
    rows = {row.name: row for row in result.weights.tensors}
    assert list(rows) == list(open_checkpoint(folder).tensors)
    # every block's linear weight, not the embedding (wte), the head (transformer.ff_out) or
    # the norms
    assert {name for name, row in rows.items() if row.quantized} == set(LINEARS[:-1])
    for name in (LLADA_LAYOUT.embed, LLADA_LAYOUT.head, LLADA_LAYOUT.final_norm):
        assert rows[name].bits is None and rows[name].quantized_bytes == rows[name].source_bytes
    assert {b.name for b in result.weights.blocks} >= {"model.transformer.blocks.1"}


def test_the_baseline_command_runs_a_llada_folder_as_a_diffusion_lm(
    folder, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(baseline_module, "enable_compilation_cache", lambda: None)
    work = tmp_path / "work"
    work.mkdir()
    argv = [
        f"model.path={folder}",
        "model.run=diffusion",
        "bit_width=4",
        f"group_size={GROUP}",
        "num_time_groups=2",
        "calibration.samples=4",
        "calibration.samples_per_step=8",
        "sampling.num_samples=4",
        "sampling.steps=4",
        "sampling.length=8",
        "wandb.mode=disabled",
        f"hydra.run.dir={work / 'run'}",
    ]
    # The command's own main in this process, as `python -m thermojax.baseline` runs it; it
    # returns when the run succeeds (an error would end in SystemExit).
    for name, value in command_env(tmp_path / "home", tmp_path / "cache").items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", ["thermojax.baseline", *argv])
    baseline_module.main()
    assert "llada: INT4 weights" in capsys.readouterr().out
    data = json.loads((work / "run" / "baseline_metrics.json").read_text())
    assert data["mode"] == "diffusion" and data["quality"]["kind"] == "text"
    assert isinstance(data["quality"]["token_agreement"], float)
    assert isinstance(data["quality"]["generative_perplexity_fp32"], float)
    quantized = [t["name"] for t in data["weights"]["tensors"] if t["bits"] is not None]
    assert sorted(quantized) == sorted(LINEARS)  # 7 per block and the head, LLaDA's names
    assert data["model_name"] == "llada"
    samples = np.load(work / "run" / "samples.npz")
    mask = json.loads((folder / "config.json").read_text())["mask_token_id"]
    assert samples["fp32"].shape == (4, 8) and not (samples["fp32"] == mask).any()


def without_paths(result) -> dict:
    data = result.to_dict()
    data["config"]["model"]["path"] = data["config"]["export"]["path"] = None
    data["weights"]["export_path"] = None
    return data


def test_a_llada_export_keeps_its_layout_and_runs_again_with_the_same_numbers(
    folder, tmp_path, monkeypatch
):
    out = tmp_path / "exported"
    settings = {**DIFFUSION, "model": {**DIFFUSION["model"], "path": str(folder)}}
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache-export"))
    first = run(to_config({**settings, "export": {"path": str(out)}}))
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache-reload"))
    again = run(to_config({**settings, "model": {**settings["model"], "path": str(out)}}))
    assert set(again.cache.values()) == {"miss"}  # computed again from the exported codes
    assert list(same_numbers.differences(without_paths(first), without_paths(again))) == []
    for name, array in first.samples.items():
        np.testing.assert_array_equal(again.samples[name], array, err_msg=name)

    # LLaDA's layout: its config, its shards, its names; codes for every linear layer
    assert (out / "config.json").read_bytes() == (folder / "config.json").read_bytes()
    shards = sorted(p.name for p in folder.glob("*.safetensors"))
    assert len(shards) > 1 and sorted(p.name for p in out.glob("model*.safetensors")) == shards
    stored = set()
    for shard in shards:
        with safe_open(str(out / shard), "np") as handle:
            stored |= set(handle.keys())
    assert {f"{name}.qcodes" for name in LINEARS} <= stored
    kept = {LLADA_LAYOUT.embed, LLADA_LAYOUT.final_norm}
    assert kept <= stored and not {LLADA_LAYOUT.head, *LINEARS[:-1]} & stored
    document = json.loads((out / "quantization.json").read_text())
    assert document["source"]["family"] == "masked-diffusion-lm"
    assert document["tensors"][LLADA_LAYOUT.head]["bits"] == 4
