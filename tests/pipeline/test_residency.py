"""A masked-diffusion LM run that holds its full-precision model and its quantized copy one after
the other (``model.residency=apart``): the same result and the same exported bytes as a run that
holds them together, for Dream's layout (with and without a tied head) and LLaDA's; a second run
on the same cache that never reads the linear layers in; the plan that picks it; and the
settings that need both models at once, refused in one line."""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file
from tokenizer_folders import dream_folder

from thermojax.cli.config import to_config
from thermojax.errors import UserInputError
from thermojax.models.dream.checkpoint import CheckpointLinears, linear_tensor_names, load_dream
from thermojax.models.dream.config import DreamConfig
from thermojax.models.hf import open_checkpoint, write_llada_like
from thermojax.models.hf.layouts import expected_shapes
from thermojax.models.hf.synthetic import DREAM_7B_CONFIG
from thermojax.pipeline import run
from thermojax.pipeline.cache.stages import network_fingerprint
from thermojax.pipeline.measure.model_memory import check_lm_memory, plan_lm_memory

GB = 1e9
LENGTH = 16
# The settings of a whole run besides the model: held out of the comparison are only what
# differs by construction (timings, the cache record, the config's model.residency).
NOT_COMPARED = ("timings_s", "quantization_time_s", "cache", "config")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return dream_folder(tmp_path_factory.mktemp("lm") / "dream")


@pytest.fixture(scope="module")
def tied_folder(tmp_path_factory, folder):
    """The same folder with its head tied to the embedding (no ``lm_head.weight``)."""
    tied = tmp_path_factory.mktemp("tied") / "dream"
    shutil.copytree(folder, tied)
    checkpoint = open_checkpoint(tied)
    tensors = {
        info.name: array
        for info, array in checkpoint.iter_tensors()
        if info.name != "lm_head.weight"
    }
    for file in {*checkpoint.shards, "model.safetensors.index.json"}:
        (tied / file).unlink(missing_ok=True)
    save_file(tensors, tied / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((tied / "config.json").read_text())
    (tied / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    return tied


def settings(folder, residency, tmp_path, **extra):
    base = {
        "model": {"path": str(folder), "run": "diffusion", "residency": residency},
        "bit_width": 4,
        "group_size": 4,
        "num_time_groups": 4,
        "calibration": {"samples": 4, "samples_per_step": 8},
        "sampling": {"num_samples": 4, "steps": 8, "length": LENGTH},
        "export": {"path": str(tmp_path / f"export-{residency}")},
        "wandb": {"mode": "disabled"},
    }
    for key, value in extra.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return to_config(base)


def compared(result):
    data = result.to_dict()
    for key in NOT_COMPARED:
        data.pop(key)
    data["weights"] = {
        k: v for k, v in data["weights"].items() if k not in ("seconds", "bytes_per_second")
    }
    data["weights"].pop("export_path")
    return data


def run_both(folder, tmp_path, monkeypatch, **extra):
    results = {}
    for residency in ("together", "apart"):
        monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / f"cache-{residency}"))
        results[residency] = run(settings(folder, residency, tmp_path, **extra))
    return results["together"], results["apart"]


def assert_same_exports(tmp_path):
    together, apart = tmp_path / "export-together", tmp_path / "export-apart"

    def files(folder):  # Orbax's copy names its files by random ids: its own tests read it
        return sorted(p.name for p in folder.iterdir() if p.is_file())

    assert files(together) == files(apart) and "model.safetensors" in files(together)
    for name in files(together):
        assert (together / name).read_bytes() == (apart / name).read_bytes(), name


@pytest.mark.parametrize("which", ["dream", "dream-tied-head"])
def test_apart_gives_the_result_and_export_of_together(
    which, folder, tied_folder, tmp_path, monkeypatch
):
    path = folder if which == "dream" else tied_folder
    together, apart = run_both(
        path,
        tmp_path,
        monkeypatch,
        sampling={"prompt": "Wrap the text"},
        model={"dtype": "bfloat16"},
    )
    assert compared(apart) == compared(together)
    for key in ("fp32", "quantized"):
        np.testing.assert_array_equal(apart.samples[key], together.samples[key])
    assert apart.quality.heldout_perplexity_quantized is not None
    assert apart.quality.heldout_perplexity_quantized > 1
    assert list(apart.timings_s)[:8] == [
        "load model",
        "quantize weights",
        "calibrate",
        "time groups + metrics",
        "export",
        "sample quantized",
        "load full precision",
        "sample fp32",
    ]
    assert_same_exports(tmp_path)


def test_llada_apart_gives_the_result_of_together(tmp_path, monkeypatch):
    llada = write_llada_like(tmp_path / "llada", scale=64, layers=2)
    together, apart = run_both(
        llada, tmp_path, monkeypatch, group_size=8, sampling={"steps": 4, "length": 8}
    )
    assert compared(apart) == compared(together)
    assert_same_exports(tmp_path)


def test_a_second_run_apart_on_its_cache_never_reads_the_linear_layers(
    folder, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    first = run(settings(folder, "apart", tmp_path, export={"path": None}))
    with caplog.at_level(logging.INFO, logger="thermojax"):
        second = run(settings(folder, "apart", tmp_path, export={"path": None}))
    assert first.cache == {"calibration": "miss", "fp32_samples": "miss", "quality": "miss"}
    assert second.cache == {"calibration": "hit", "quality": "hit", "fp32_samples": "hit"}
    assert compared(second) == compared(first)
    messages = [r.getMessage() for r in caplog.records]
    assert not any("linear layers read in" in m for m in messages)
    assert any("holding them apart" in m for m in messages)


def test_the_network_loads_without_its_linear_layers_and_reads_them_when_asked(tied_folder):
    whole = load_dream(tied_folder, dtype="bfloat16")
    bare = load_dream(tied_folder, dtype="bfloat16", linear=False)
    names = linear_tensor_names(whole.config)
    assert "lm_head.weight" not in names  # tied: the head is the embedding, which stays
    assert set(bare.params) == set(whole.params) - set(names)
    linears = CheckpointLinears(tied_folder, dtype="bfloat16")
    assert list(linears) == list(whole.layer_names)
    stored = whole.quantizable_weights()
    for name in whole.layer_names:
        assert linears[name].dtype == stored[name].dtype
        np.testing.assert_array_equal(np.asarray(linears[name]), np.asarray(stored[name]))
    # The export's record of its source: the same hash, the linear layers read one at a time.
    assert network_fingerprint(bare, linears=linears) == network_fingerprint(whole)
    assert network_fingerprint(bare) != network_fingerprint(whole)


def _dream_7b_plan():
    c = DREAM_7B_CONFIG
    return plan_lm_memory(
        expected_shapes(c),
        dtype_bytes=2,
        vocab=c["vocab_size"],
        hidden=c["hidden_size"],
        intermediate=c["intermediate_size"],
        heads=c["num_attention_heads"],
        bits=4,
        group_size=64,
        num_samples=2,
        length=128,
    )


def test_dream_7b_is_held_apart_where_both_do_not_fit():
    plan = _dream_7b_plan()
    shapes = expected_shapes(DREAM_7B_CONFIG)
    linear = sum(math.prod(s) for n, s in shapes.items() if len(s) == 2 and "embed_tokens" not in n)
    assert plan.quantized == 2.0 * linear
    kept = plan.parameters - plan.quantized  # the embedding and the norms: 1.1 GB
    assert kept / GB == pytest.approx(1.09, abs=0.01)
    # Apart: the larger of the reference and the packed model, then the working set.
    assert plan.apart == pytest.approx(plan.parameters + max(plan.step, plan.heldout))
    assert plan.apart / GB == pytest.approx(18.5, abs=0.05)
    assert plan.needed / GB == pytest.approx(22.6, abs=0.05)
    assert check_lm_memory(plan, free=24 * GB, residency="auto") == "together"
    assert check_lm_memory(plan, free=20 * GB, residency="auto") == "apart"
    assert check_lm_memory(plan, free=24 * GB, residency="apart") == "apart"
    # together where it does not fit but apart would: the refusal says so.
    with pytest.raises(UserInputError) as refused:
        check_lm_memory(plan, free=20 * GB, residency="together")
    assert str(refused.value).endswith("; model.residency=apart (about 18.5 GB) fits")
    # A setting that needs both at once keeps auto together, and says what apart would need.
    with pytest.raises(UserInputError) as refused:
        check_lm_memory(plan, free=20 * GB, residency="auto", together_by="quant.method=gptq")
    assert str(refused.value) == (
        "quant.method=gptq: needs the reference (15.2 GB) and its packed copy (4.1 GB) together, "
        "the run about 22.6 GB of the 20.0 GB available; without it the run holds them one "
        "after the other in about 18.5 GB"
    )
    with pytest.raises(UserInputError, match="^model.residency=apart: phases.enabled=true needs"):
        check_lm_memory(plan, free=64 * GB, residency="apart", together_by="phases.enabled=true")
    # Past even apart: the parameters and the largest layer at float32 do not fit 17 GB.
    with pytest.raises(UserInputError) as refused:
        check_lm_memory(plan, free=17 * GB, residency="auto")
    assert str(refused.value).startswith(
        "model.dtype=bfloat16: the parameters (15.2 GB), held apart from their packed copy "
        "(4.1 GB), need 15.2 GB, the run about 18.5 GB, of the 17.0 GB available"
    )


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"quant": {"method": "gptq"}}, "quant.method=gptq"),
        ({"phases": {"enabled": True}}, "phases.enabled=true"),
    ],
)
def test_settings_that_need_both_models_refuse_apart(extra, named, folder, tmp_path):
    with pytest.raises(UserInputError) as refused:
        run(settings(folder, "apart", tmp_path, **extra))
    assert str(refused.value).startswith(f"model.residency=apart: {named} needs the reference")


def test_residency_is_refused_where_it_means_nothing(tmp_path):
    with pytest.raises(UserInputError, match=r"^model.residency='apart': only for a masked"):
        run(to_config({"model": {"residency": "apart"}, "wandb": {"mode": "disabled"}}))
    with pytest.raises(UserInputError, match=r"model\.residency"):
        to_config({"model": {"residency": "sometimes"}})


def test_config_of_the_tied_folder_is_tied(tied_folder):
    config = DreamConfig.from_hf(json.loads((tied_folder / "config.json").read_text()))
    assert config.tie_word_embeddings
