"""``act.granularity=channel``: one activation scale and zero point per block of each layer's
input channels (``act.channel_groups`` blocks) in every time group, calibrated per block and
quantized per block, checked against float64 numpy references of each block."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermojax.cli.config import to_config
from thermojax.errors import UserInputError
from thermojax.models import load_model
from thermojax.pipeline import run
from thermojax.pipeline.cache.stages import StageCache
from thermojax.pipeline.measure.calibrate import _channel_stats, act_rows, calibrate
from thermojax.pipeline.measure.sampling import ActParams, quantize_input, sample
from thermojax.pipeline.weights.quantize import quantize_weights, sampler_weights

K = 4


@pytest.fixture(scope="module")
def digits():
    return load_model()


def block_reference(h: np.ndarray, groups: int) -> np.ndarray:
    """``[groups, 4]``: min, max, mean, std (float64) of each block of ``h``'s last axis."""
    h = np.asarray(h, np.float64)
    blocks = np.split(h, groups, axis=-1)
    return np.array([[b.min(), b.max(), b.mean(), b.std()] for b in blocks])


def fake_quant_reference(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int):
    """float64 ``(clip(round(x / s) + z, 0, qmax) - z) * s`` with the block's ``s`` and ``z``
    for each block of the last axis."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    width = x.shape[-1] // len(scale)
    for k, (s, z) in enumerate(zip(scale, zero, strict=True)):
        part = x[..., k * width : (k + 1) * width]
        codes = np.clip(np.round(part / s) + z, 0, 2**bits - 1)
        out[..., k * width : (k + 1) * width] = (codes - z) * s
    return out


def test_each_blocks_statistics_are_its_channels_only():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 5, 16)).astype(np.float32)
    h[..., 4:8] *= 30.0  # an outlier block
    stats = _channel_stats(jnp.asarray(h), K, jax.random.PRNGKey(0), 32)
    got = np.array([np.asarray(s, np.float64) for s, _ in stats])
    np.testing.assert_allclose(got, block_reference(h, K), rtol=1e-5, atol=1e-6)
    for k, (_, picks) in enumerate(stats):  # each block's draws are its own values
        assert set(np.asarray(picks).tolist()) <= set(h[..., 4 * k : 4 * k + 4].ravel().tolist())


@pytest.mark.parametrize("per_sample", [False, True], ids=["one column", "one per sample"])
def test_each_block_is_quantized_with_its_own_row(per_sample):
    rng = np.random.default_rng(1)
    layers, layer, bits = 3, 1, 4
    h = rng.normal(size=(2, 5, 16)).astype(np.float32) * np.repeat([1, 10, 0.1, 3], 4)
    scales = rng.uniform(0.01, 0.5, size=(K * layers, 6)).astype(np.float32)
    zeros = rng.integers(0, 16, size=(K * layers, 6)).astype(np.float32)
    column = jnp.array([2, 4]) if per_sample else 3
    got = quantize_input(
        jnp.asarray(h), jnp.asarray(scales), jnp.asarray(zeros), layer, column,
        bits=bits, num_layers=layers, channel_groups=K,
    )  # fmt: skip
    rows = [k * layers + layer for k in range(K)]
    for n in range(2):
        c = int(column[n]) if per_sample else column
        reference = fake_quant_reference(h[n], scales[rows, c], zeros[rows, c], bits)
        np.testing.assert_allclose(np.asarray(got[n]), reference, rtol=1e-6, atol=1e-6)
    # rows in layer-major order (a deliberate mistake) quantize otherwise
    wrong = [layer * K + k for k in range(K)]
    mistaken = fake_quant_reference(
        h[0],
        scales[wrong, 3 if not per_sample else 2],
        zeros[wrong, 3 if not per_sample else 2],
        bits,
    )
    assert not np.allclose(np.asarray(got[0]), mistaken, atol=1e-3)


def test_calibration_splits_each_layer_into_channel_blocks(digits):
    qweights, _ = quantize_weights(digits, bits=8, group_size=64)
    together = calibrate(digits, bit_width=8, num_samples=4, samples_per_step=8, qweights=qweights)
    blocks = calibrate(
        digits, bit_width=8, num_samples=4, samples_per_step=8, qweights=qweights, channel_groups=K
    )
    names = tuple(digits.layer_names)
    count = len(names)
    assert blocks.layer_names == act_rows(names, False, K)
    assert blocks.layer_names[count] == f"{names[0]} [channels 2/{K}]"
    stacked = blocks.act_min.reshape(K, count, -1)
    np.testing.assert_array_equal(stacked.min(axis=0), together.act_min)
    np.testing.assert_array_equal(
        blocks.act_max.reshape(K, count, -1).max(axis=0), together.act_max
    )
    # The first step (the highest timestep) from the sampler's own initial noise: each block's
    # row is the statistics of its channels in that network pass, computed here from it.
    init_key = jax.random.split(jax.random.PRNGKey(0), 3)[0]
    state = digits.initial_state(init_key, 4)
    t = jnp.int32(digits.num_timesteps - 1)
    _, inputs = digits.step(sampler_weights(digits, qweights), state, t, jax.random.PRNGKey(1))
    for j in (0, count - 1):
        reference = block_reference(np.asarray(inputs[j]), K)
        for k in range(K):
            got = [a[k * count + j, -1] for a in (blocks.act_min, blocks.act_max, blocks.act_mean)]
            np.testing.assert_allclose(got, reference[k, :3], rtol=1e-5, atol=1e-6)


def test_equal_blocks_sample_as_one_parameter_set(digits):
    count, steps = len(digits.layer_names), int(digits.num_timesteps)
    edges = np.array([0, steps // 2, steps])
    scales = np.full((count, 2), 0.2, np.float32)
    zeros = np.full((count, 2), 7.0, np.float32)
    plain = ActParams(scales, zeros, edges, 4)
    same = ActParams(np.tile(scales, (K, 1)), np.tile(zeros, (K, 1)), edges, 4, channel_groups=K)
    a = sample(digits, act_params=plain, num_samples=4, seed=2)
    b = sample(digits, act_params=same, num_samples=4, seed=2)
    np.testing.assert_array_equal(a.x0, b.x0)
    other = np.tile(scales, (K, 1))
    other[:count] *= 3.0  # the first block of every layer coarser
    c = sample(digits, act_params=ActParams(other, same.zero_points, edges, 4, channel_groups=K),
               num_samples=4, seed=2)  # fmt: skip
    assert not np.array_equal(a.x0, c.x0)


def test_the_default_keeps_the_calibration_key(digits, tmp_path):
    qweights, _ = quantize_weights(digits, bits=8, group_size=64)
    config = to_config({}).to_dict()

    def key(act):
        return StageCache(
            digits, {**config, "act": act}, qweights, cache_dir=tmp_path
        ).calibration_key()

    act = dict(config["act"])
    off = key(act)
    assert key({k: v for k, v in act.items() if k not in ("granularity", "channel_groups")}) == off
    assert key({**act, "channel_groups": 4}) == off  # unused with granularity=tensor
    assert key({**act, "granularity": "channel"}) != off


@pytest.mark.slow
def test_a_channel_run_reports_each_block(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    settings = {"calibration": {"samples": 16, "samples_per_step": 16}, "act_bits": 4,
                "sampling": {"num_samples": 32}}  # fmt: skip
    blocks = run(to_config({**settings, "act": {"granularity": "channel", "channel_groups": K}}))
    plain = run(to_config(settings))
    count = len(plain.layers)
    assert [layer.name for layer in blocks.layers] == list(
        act_rows(tuple(layer.name for layer in plain.layers), False, K)
    )
    assert blocks.layers[0].cosine_similarity == blocks.layers[count].cosine_similarity
    assert blocks.quality.figure("frechet_quantized") != plain.quality.figure("frechet_quantized")
    assert blocks.quality.figure("frechet_fp32") == plain.quality.figure("frechet_fp32")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"act": {"granularity": "pixel"}}, r"^act.granularity='pixel': must be "),
        ({"act": {"granularity": "channel", "channel_groups": 0}}, r"^act.channel_groups=0: "),
        (
            {"act": {"granularity": "channel", "channel_groups": 7}},
            r"^act.channel_groups=7: channel_groups=7 does not divide the input width \d+ of ",
        ),
        (
            {"act": {"granularity": "channel", "mode": "dynamic"}},
            r"^act.granularity=channel: act.mode=dynamic has no calibrated parameters",
        ),
        (
            {"act": {"granularity": "channel"}, "export": {"path": "/nonexistent/q"}},
            r"^act.granularity=channel: exports hold one parameter set per layer",
        ),
        (
            {
                "model": {"shipped": "pydoc-mdlm"},
                "act": {"granularity": "channel", "mask_aware": True},
            },
            r"^act.granularity=channel: not with both act.granularity=channel and act.mask_aware",
        ),
    ],
    ids=["unknown", "zero", "not dividing", "dynamic", "export", "mask-aware"],
)
def test_what_it_cannot_be_combined_with_is_one_line(settings, message):
    with pytest.raises(UserInputError, match=message):
        run(to_config(settings))
