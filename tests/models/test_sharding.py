"""A masked-diffusion LM laid over several devices (``model.devices``): four host devices forced
on this CPU (``XLA_FLAGS=--xla_force_host_platform_device_count=4``, which must be set before
JAX starts, so the checks run in a process of their own). Each device holds its slice of each
tensor; the logits and the whole baseline give the one-device numbers (the same tokens; figures
to float32 rounding, the cross-device sums adding in another order), under cache keys of their
own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

_CHECKS = textwrap.dedent(
    """
    import json, os, pathlib, sys, tempfile
    import jax, jax.numpy as jnp, numpy as np
    from thermojax.cli.config import to_config
    from thermojax.errors import UserInputError
    from thermojax.models.dream import load_dream
    from thermojax.models.dream.sharding import parameter_specs, shard_lm
    from thermojax.models.hf import write_dream_like
    from thermojax.pipeline import run
    from thermojax.pipeline.cache.stages import model_fingerprint
    from thermojax.models.dream.diffusion import MaskedDiffusionLM

    root = pathlib.Path(sys.argv[1])
    folder = write_dream_like(root / "m", scale=112, layers=2)
    report = {"devices": jax.local_device_count()}
    lm = load_dream(folder)
    sharded = shard_lm(lm, 4)
    q = "model.layers.0.self_attn.q_proj.weight"
    o = "model.layers.0.self_attn.o_proj.weight"
    report["shards"] = {
        name: [list(s.data.shape) for s in sharded.params[name].addressable_shards]
        for name in (q, o, "lm_head.weight", "model.embed_tokens.weight", "model.norm.weight")
    }
    report["full"] = {name: list(lm.params[name].shape) for name in report["shards"]}
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, lm.vocab_size, (2, 12)), jnp.int32)
    logits = jax.jit(lambda m, t: m.logits(t))
    one, four = np.asarray(logits(lm, tokens)), np.asarray(logits(sharded, tokens))
    report["logits_max_abs"] = float(np.max(np.abs(one - four)))
    report["logits_scale"] = float(np.max(np.abs(one)))
    report["keys_differ"] = model_fingerprint(
        MaskedDiffusionLM.create(lm, length=8, steps=2)
    ) != model_fingerprint(MaskedDiffusionLM.create(sharded, length=8, steps=2))

    results = {}
    for devices in (1, 4):
        os.environ["THERMOJAX_CACHE_DIR"] = str(root / "cache")  # one cache: keys must differ
        config = to_config({
            "model": {"path": str(folder), "run": "diffusion", "devices": devices},
            "bit_width": 4, "group_size": 4, "num_time_groups": 2,
            "sampling": {"num_samples": 4, "steps": 8, "length": 16},
            "calibration": {"samples": 4, "samples_per_step": 8},
            "wandb": {"mode": "disabled"},
        })
        result = run(config)
        results[devices] = {
            "fp32": result.samples["fp32"].tolist(),
            "quantized": result.samples["quantized"].tolist(),
            "cache": result.cache,
            "smoothness_score": result.smoothness_score,
            "quality": {
                k: v for k, v in result.to_dict()["quality"].items() if isinstance(v, float)
            },
        }
    report["runs"] = results
    try:
        run(to_config({"model": {"path": str(folder), "run": "diffusion", "devices": 8}}))
    except UserInputError as err:
        report["refusal"] = str(err)
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, "-c", _CHECKS, str(tmp_path_factory.mktemp("sharding"))],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_each_device_holds_its_slice_of_each_tensor(report):
    assert report["devices"] == 4
    full, shards = report["full"], report["shards"]
    q, o = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight"
    # q widens the residual stream: split along its output features ([out, in] rows); o
    # narrows it back: along its input features; the head along the vocabulary; the embedding
    # along the hidden width; the norm whole on every device.
    assert shards[q] == [[full[q][0] // 4, full[q][1]]] * 4
    assert shards[o] == [[full[o][0], full[o][1] // 4]] * 4
    head, embed = full["lm_head.weight"], full["model.embed_tokens.weight"]
    assert shards["lm_head.weight"] == [[head[0] // 4, head[1]]] * 4
    assert shards["model.embed_tokens.weight"] == [[embed[0], embed[1] // 4]] * 4
    assert shards["model.norm.weight"] == [full["model.norm.weight"]] * 4


def test_sharded_logits_are_the_one_device_logits(report):
    assert report["logits_max_abs"] <= 1e-5 * report["logits_scale"]


def test_the_baseline_on_four_devices_gives_the_one_device_numbers(report):
    one, four = report["runs"]["1"], report["runs"]["4"]
    assert one["fp32"] == four["fp32"] and one["quantized"] == four["quantized"]
    assert four["smoothness_score"] == pytest.approx(one["smoothness_score"], rel=1e-6)
    assert one["quality"].keys() == four["quality"].keys() and one["quality"]
    for key, value in one["quality"].items():
        assert four["quality"][key] == pytest.approx(value, rel=1e-5), key
    # Not bit for bit, so the four-device run computed its own entries in the shared cache.
    assert report["keys_differ"]
    assert four["cache"]["calibration"] == "miss" and four["cache"]["fp32_samples"] == "miss"


def test_more_devices_than_there_are_is_one_line(report):
    assert report["refusal"] == (
        "model.devices=8: this process sees 4 local cpu devices (on a CPU, "
        "XLA_FLAGS=--xla_force_host_platform_device_count=8 makes 8)"
    )
