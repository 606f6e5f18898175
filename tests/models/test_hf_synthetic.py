"""The synthetic Dream-7B- and LLaDA-8B-layout checkpoints: layout, scale rule, determinism,
statistics, CLI."""

from __future__ import annotations

import filecmp
import hashlib
import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from safetensors import safe_open

from thermojax.errors import UserInputError
from thermojax.models.hf import (
    expected_shapes,
    open_checkpoint,
    plan_shards,
    write_dream_like,
    write_llada_like,
)
from thermojax.models.hf.headers import TensorInfo
from thermojax.models.hf.synthetic import (
    DREAM_7B_CONFIG,
    LLADA_8B_CONFIG,
    LLADA_SHARD_BYTES,
    dream_like_config,
    llada_like_config,
    main,
    outlier_channels,
    planned_shards,
)


def test_full_size_layout_is_dream_7b():
    config = dream_like_config()
    assert config == DREAM_7B_CONFIG
    assert (config["model_type"], config["architectures"]) == ("Dream", ["DreamModel"])
    assert (config["mask_token_id"], config["rms_norm_eps"], config["rope_theta"]) == (
        151666,
        1e-6,
        1e6,
    )
    shapes = expected_shapes(config)
    assert len(shapes) == 1 + 28 * 12 + 2  # embed, 12 per layer, norm, untied lm_head
    assert shapes["model.embed_tokens.weight"] == shapes["lm_head.weight"] == (152064, 3584)
    layer = "model.layers.27"
    assert shapes[f"{layer}.self_attn.q_proj.weight"] == (3584, 3584)
    assert shapes[f"{layer}.self_attn.k_proj.weight"] == (512, 3584)  # 4 kv heads x 128
    assert shapes[f"{layer}.self_attn.v_proj.bias"] == (512,)
    assert shapes[f"{layer}.mlp.down_proj.weight"] == (3584, 18944)
    params = sum(math.prod(shape) for shape in shapes.values())
    assert params == 7_615_616_512  # Qwen2.5-7B / Dream-7B
    infos = [TensorInfo(n, "", "BF16", s, 2 * math.prod(s)) for n, s in shapes.items()]
    assert len(plan_shards(infos, 5 * 10**9)) == 4  # like Dream's four shards


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 7, 8, 16, 56, 64, 112, 1000])
def test_scale_rule_keeps_gqa_ratio_even_head_dim_and_multiples_of_64(scale):
    config = dream_like_config(scale=scale)
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    kv_heads = config["num_key_value_heads"]
    head_dim = hidden // heads
    assert hidden == heads * head_dim and head_dim >= 2 and head_dim % 2 == 0
    assert heads == 7 * kv_heads and kv_heads >= 1
    assert config["vocab_size"] % 64 == 0 and config["intermediate_size"] % 64 == 0
    assert abs(hidden - 3584 / scale) <= heads or hidden == 2 * heads  # nearest, or smallest
    if scale & (scale - 1) == 0 and scale <= 256:  # powers of two: exact
        assert hidden == 3584 // scale
    assert expected_shapes(config) is not None


def test_scaled_sizes():
    assert [
        (c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"])
        for c in (dream_like_config(scale=s) for s in (2, 4, 64, 112))
    ] == [(1792, 14, 2), (896, 7, 1), (56, 7, 1), (28, 7, 1)]
    config = dream_like_config(scale=4, layers=3, dtype="F16")
    assert (config["num_hidden_layers"], config["max_window_layers"]) == (3, 3)
    assert config["torch_dtype"] == "float16"


@pytest.mark.parametrize(
    "kwargs",
    [{"scale": 0}, {"layers": 0}, {"dtype": "I8"}, {"seed": -1}, {"max_shard_bytes": 0}],
    ids=["scale", "layers", "dtype", "seed", "shard-bytes"],
)
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(UserInputError):
        write_dream_like(tmp_path / "m", **kwargs)
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return write_dream_like(root / "tiny", scale=56, layers=2, max_shard_bytes=150_000)


def test_synthetic_checkpoint_opens_with_the_layout_check(tiny):
    checkpoint = open_checkpoint(tiny)
    assert checkpoint.architecture == "Dream"
    assert expected_shapes(checkpoint.config) == {
        name: info.shape for name, info in checkpoint.tensors.items()
    }
    assert {info.dtype for info in checkpoint.tensors.values()} == {"BF16"}
    assert len(checkpoint.shards) > 1 and (tiny / "model.safetensors.index.json").is_file()
    assert json.loads((tiny / "config.json").read_text()) == dream_like_config(scale=56, layers=2)
    with safe_open(tiny / checkpoint.shards[0], framework="np") as reader:
        metadata = reader.metadata()
    assert metadata["format"] == "pt"
    assert json.loads(metadata["thermojax_synthetic"]) == {"layers": 2, "scale": 56, "seed": 0}
    names = list(checkpoint.tensors)
    assert names[0] == "model.embed_tokens.weight" and names[-1] == "lm_head.weight"


def test_same_seed_same_bytes_other_seed_other_weights(tiny, tmp_path):
    again = write_dream_like(tmp_path / "again", scale=56, layers=2, max_shard_bytes=150_000)
    assert open_checkpoint(again).fingerprint() == open_checkpoint(tiny).fingerprint()
    files = sorted(p.name for p in tiny.iterdir())
    assert sorted(p.name for p in again.iterdir()) == files
    _, mismatch, errors = filecmp.cmpfiles(tiny, again, files, shallow=False)
    assert (mismatch, errors) == ([], [])

    other = open_checkpoint(
        write_dream_like(tmp_path / "other", scale=56, layers=2, max_shard_bytes=150_000, seed=1)
    )
    name = "model.layers.0.mlp.up_proj.weight"
    mine = open_checkpoint(tiny).read(name)
    assert not np.array_equal(other.read(name).view(np.uint16), mine.view(np.uint16))


def test_bytes_are_pinned_for_a_seed(tmp_path):
    """The weights come from raw PCG64 words only, a stream numpy keeps stable across
    versions, so a fixture made once is made again byte for byte. Changing the generator on
    purpose changes this digest: update it, and say so (others' fixtures move too)."""
    folder = write_dream_like(tmp_path / "pinned", scale=112, layers=1)
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert digest == "3564fc9db306539454edf52c7f1165b00b964d0ff75a0eb7d6d8c6a2e7a44430"


def test_a_tensor_does_not_depend_on_the_layer_count_or_sharding(tiny, tmp_path):
    single = open_checkpoint(write_dream_like(tmp_path / "one", scale=56, layers=1))
    assert single.shards == ("model.safetensors",)
    name = "model.layers.0.self_attn.k_proj.weight"
    np.testing.assert_array_equal(
        single.read(name).view(np.uint16), open_checkpoint(tiny).read(name).view(np.uint16)
    )


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """Wide enough for statistics: hidden 224, MLP 1216, vocab 9536."""
    return open_checkpoint(
        write_dream_like(tmp_path_factory.mktemp("synthetic") / "wide", scale=16, layers=1)
    )


def test_weights_are_normal_with_outlier_input_channels(wide):
    hidden = wide.config["hidden_size"]
    for name, fan_in in [
        ("model.layers.0.mlp.up_proj.weight", hidden),
        ("model.layers.0.mlp.down_proj.weight", wide.config["intermediate_size"]),
        ("lm_head.weight", hidden),
    ]:
        weight = wide.read(name).astype(np.float64)
        assert weight.shape[1] == fan_in
        channels = outlier_channels(fan_in, seed=0)
        assert channels.size == max(1, round(0.005 * fan_in))
        normal = np.delete(weight, channels, axis=1)
        expected_std = 0.02 * math.sqrt(3584 / fan_in)
        assert normal.std() == pytest.approx(expected_std, rel=0.03)
        assert abs(normal.mean()) < 0.05 * expected_std
        kurtosis = ((normal - normal.mean()) ** 4).mean() / normal.var() ** 2
        assert kurtosis == pytest.approx(3.0, abs=0.15)  # normal, not uniform or heavy-tailed
        ratios = weight[:, channels].std(axis=0) / normal.std()
        assert np.all((ratios > 8) & (ratios < 33)), (name, ratios)
        others = normal.std(axis=0) / normal.std()
        assert others.max() < 2
    # the residual-stream width shares its outlier channels across tensors, like real LLMs
    q_proj = wide.read("model.layers.0.self_attn.q_proj.weight").astype(np.float32)
    columns = np.abs(q_proj).max(axis=0)
    assert set(np.argsort(columns)[-outlier_channels(hidden).size :]) == set(
        outlier_channels(hidden)
    )


def test_norms_near_one_and_small_biases(wide):
    norm = wide.read("model.layers.0.input_layernorm.weight").astype(np.float64)
    assert norm.mean() == pytest.approx(1.0, abs=0.02) and 0.02 < norm.std() < 0.08
    bias = wide.read("model.layers.0.self_attn.q_proj.bias").astype(np.float64)
    assert abs(bias.mean()) < 0.005 and bias.std() < 0.02


def test_other_dtypes(tmp_path):
    checkpoint = open_checkpoint(
        write_dream_like(tmp_path / "f32", scale=112, layers=1, dtype="F32")
    )
    assert checkpoint.config["torch_dtype"] == "float32"
    assert checkpoint.read("model.norm.weight").dtype == np.float32


def test_refuses_a_folder_that_is_not_empty(tiny):
    with pytest.raises(UserInputError, match="exists and is not an empty folder"):
        write_dream_like(tiny, scale=56, layers=2)


def test_command_line(tmp_path, capsys):
    assert main([str(tmp_path / "cli"), "--scale", "112", "--layers", "2", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "model.safetensors: 27 tensors" in out and "peak RSS" in out
    checkpoint = open_checkpoint(tmp_path / "cli")
    assert checkpoint.config["num_hidden_layers"] == 2
    assert main([str(tmp_path / "cli"), "--scale", "112"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main([str(tmp_path / "bad"), "--scale", "0"]) == 2


def test_python_dash_m_runs_without_warnings(tmp_path):
    out = tmp_path / "m"
    command = [sys.executable, "-W", "error", "-m", "thermojax.models.hf.synthetic", str(out)]
    result = subprocess.run(
        [*command, "--scale", "112", "--layers", "1", "--shard-gb", "0.0001"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(open_checkpoint(out).shards) == 2


STREAMING_PROBE = textwrap.dedent(
    """
    import json, sys
    from thermojax.models.hf import open_checkpoint, write_dream_like

    def status_mib(key):  # Linux: VmRSS is the resident size now, VmHWM its peak
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

    write_dream_like(sys.argv[1] + "/warm", scale=112, layers=1)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # reset VmHWM to VmRSS: import-time peaks do not hide growth
    before = status_mib("VmRSS")
    write_dream_like(sys.argv[1] + "/m8", scale=8, layers=16, max_shard_bytes=50_000_000)
    print(json.dumps({"before": before, "after": status_mib("VmHWM")}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_generation_streams_one_tensor_at_a_time(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", STREAMING_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    probe = json.loads(result.stdout.splitlines()[-1])
    checkpoint = open_checkpoint(tmp_path / "m8")
    largest_mib = max(info.nbytes for info in checkpoint.tensors.values()) / 2**20
    total_mib = checkpoint.total_bytes / 2**20
    assert total_mib > 8 * largest_mib and len(checkpoint.shards) == 4
    growth = probe["after"] - probe["before"]
    print(
        f"synthetic write: {total_mib:.0f} MiB, largest tensor {largest_mib:.0f} MiB, "
        f"peak RSS +{growth:.0f} MiB"
    )
    assert growth < largest_mib + 40  # the tensor + ~16 MB of temporaries, not the model


# ------------------------------------------------------------------------------- LLaDA 8B


def test_full_size_llada_layout_is_llada_8b():
    """scale=1 plans LLaDA-8B's config, tensors and six shards without writing its 16 GB."""
    config = llada_like_config()
    assert config == LLADA_8B_CONFIG
    assert (config["model_type"], config["architectures"]) == ("llada", ["LLaDAModelLM"])
    assert (config["mask_token_id"], config["rms_norm_eps"], config["rope_theta"]) == (
        126336,
        1e-5,
        5e5,
    )
    shapes = expected_shapes(config)
    assert len(shapes) == 3 + 32 * 9  # wte, ln_f, head; 9 per block, no biases
    wte, head = "model.transformer.wte.weight", "model.transformer.ff_out.weight"
    assert shapes[wte] == shapes[head] == (126464, 4096)
    block = "model.transformer.blocks.31"
    for suffix, shape in {
        "q_proj": (4096, 4096),
        "k_proj": (4096, 4096),  # 32 key-value heads x 128
        "v_proj": (4096, 4096),
        "attn_out": (4096, 4096),
        "ff_proj": (12288, 4096),
        "up_proj": (12288, 4096),
        "ff_out": (4096, 12288),
        "attn_norm": (4096,),
        "ff_norm": (4096,),
    }.items():
        assert shapes[f"{block}.{suffix}.weight"] == shape, suffix
    params = sum(math.prod(shape) for shape in shapes.values())
    assert params == 8_015_581_184
    assert 2 * params == 16_031_162_368  # bf16: LLaDA-8B's index's total_size
    plan = planned_shards(config, max_shard_bytes=LLADA_SHARD_BYTES)
    shard = {name: k + 1 for k, names in enumerate(plan) for name in names}
    assert len(plan) == 6 and set(shard) == set(shapes)
    # LLaDA-8B's weight_map: its tensors grouped by kind, cut at 3 GB
    assert shard[wte] == shard["model.transformer.ln_f.weight"] == 1 and shard[head] == 2
    first_layer_of_shard = {
        "attn_out": {0: 1},
        "ff_out": {0: 2, 19: 3},
        "attn_norm": {0: 3},
        "ff_norm": {0: 3},
        "q_proj": {0: 3},
        "k_proj": {0: 3, 18: 4},
        "v_proj": {0: 4},
        "ff_proj": {0: 4, 14: 5},
        "up_proj": {0: 5, 11: 6},
    }
    for suffix, starts in first_layer_of_shard.items():
        expected = [max(k for i, k in starts.items() if i <= layer) for layer in range(32)]
        got = [shard[f"model.transformer.blocks.{layer}.{suffix}.weight"] for layer in range(32)]
        assert got == expected, suffix


@pytest.mark.parametrize("scale", [1, 2, 4, 8, 32, 64, 112, 1000])
def test_llada_scale_rule_keeps_multi_head_attention(scale):
    config = llada_like_config(scale=scale)
    hidden, heads = config["d_model"], config["n_heads"]
    assert config["n_kv_heads"] == heads == max(1, 32 // scale)
    head_dim = hidden // heads
    assert hidden == heads * head_dim and head_dim >= 2 and head_dim % 2 == 0
    assert config["vocab_size"] == config["embedding_size"]
    assert config["vocab_size"] % 64 == 0 and config["mlp_hidden_size"] % 64 == 0
    assert 0 <= config["mask_token_id"] < config["vocab_size"]
    if scale & (scale - 1) == 0 and scale <= 64:  # powers of two: exact
        assert hidden == 4096 // scale
    assert expected_shapes(config) is not None


def test_small_llada_checkpoint_opens_with_the_layout_check(tmp_path):
    folder = write_llada_like(tmp_path / "llada", scale=64, layers=2, max_shard_bytes=200_000)
    checkpoint = open_checkpoint(folder)
    assert checkpoint.architecture == "llada"
    assert expected_shapes(checkpoint.config) == {
        name: info.shape for name, info in checkpoint.tensors.items()
    }
    assert {info.dtype for info in checkpoint.tensors.values()} == {"BF16"}
    plan = planned_shards(checkpoint.config, max_shard_bytes=200_000)
    assert [list(names) for names in plan] == [
        [name for name, info in checkpoint.tensors.items() if info.file == file]
        for file in checkpoint.shards
    ]
    # LLaDA's final norm is a norm too (named ln_f): drawn near 1 like the blocks' norms
    for name in ("model.transformer.ln_f.weight", "model.transformer.blocks.1.ff_norm.weight"):
        assert checkpoint.read(name).astype(np.float64).mean() == pytest.approx(1.0, abs=0.05)
    down = checkpoint.read("model.transformer.blocks.0.ff_out.weight").astype(np.float64)
    fan_in = checkpoint.config["mlp_hidden_size"]
    normal = np.delete(down, outlier_channels(fan_in), axis=1)
    assert normal.std() == pytest.approx(0.02 * math.sqrt(4096 / fan_in), rel=0.1)


def test_command_line_writes_a_llada_layout(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [str(out), "--layout", "llada", "--scale", "112", "--layers", "1"]
    assert main(args) == 0
    assert "model.safetensors: 12 tensors" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text()) == llada_like_config(scale=112, layers=1)
    with pytest.raises(SystemExit) as exited:  # argparse's refusal, one line
        main([str(tmp_path / "bad"), "--layout", "qwen3"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("error: argument --layout: invalid choice")
