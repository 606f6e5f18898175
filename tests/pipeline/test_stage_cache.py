"""The pipeline's cached stages: each key depends on exactly what its value depends on, entries
round-trip, and a second run of the same configuration hits instead of recomputing."""

import collections
import copy
import dataclasses
import functools

import jax
import numpy as np
import pytest

from thermojax.cli.config import to_config
from thermojax.models import load_model
from thermojax.pipeline import run
from thermojax.pipeline.cache.stages import (
    KEYS_ADDED_LATER,
    QualityEntry,
    StageCache,
    model_fingerprint,
    weights_section,
)
from thermojax.pipeline.cache.store import cache_key, entry_path
from thermojax.pipeline.families.digits import DIGITS
from thermojax.pipeline.quality.image import ImageQuality
from thermojax.pipeline.settings import BaselineConfig
from thermojax.pipeline.weights.quantize import quantize_weights
from thermojax.pipeline.weights.section import WeightsSection


@pytest.fixture(scope="module")
def model():
    return load_model()


@functools.cache
def _qweights(model, bits: int, group_size: int, method: str):
    quant = dataclasses.replace(BaselineConfig().quant, method=method)
    return quantize_weights(model, bits=bits, group_size=group_size, quant=quant)[0]


def _keys(model, **changes) -> dict[str, str]:
    config = BaselineConfig().to_dict()
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    qweights = _qweights(
        model, config["bit_width"], config["group_size"], config["quant"]["method"]
    )  # the weights those settings make, as a run quantizes them
    cached = StageCache(model, config, qweights)
    return {
        "calibration": cached.calibration_key(),
        "fp32_samples": cached.fp32_samples_key(),
        "quality": cached.quality_key(),
    }


# Which entries each change must re-key (True) or leave shared (False).
CASES = {
    "smoothness_threshold": (0.1, {"calibration": False, "fp32_samples": False, "quality": False}),
    "interpretation__poor_below": (0.5, {"calibration": False, "quality": False}),
    "wandb__group": ("other", {"calibration": False, "quality": False}),
    "model__name": ("shown", {"calibration": False, "fp32_samples": False, "quality": False}),
    "num_time_groups": (8, {"calibration": False, "fp32_samples": False, "quality": True}),
    "act_bits": (6, {"calibration": False, "fp32_samples": False, "quality": True}),
    "bit_width": (4, {"calibration": True, "fp32_samples": False, "quality": True}),
    "group_size": (32, {"calibration": True, "fp32_samples": False, "quality": True}),
    "calibration__samples": (16, {"calibration": True, "fp32_samples": False, "quality": True}),
    "calibration__samples_per_step": (8, {"calibration": True, "quality": True}),
    "seed": (1, {"calibration": True, "fp32_samples": True, "quality": True}),
    "sampling__num_samples": (16, {"calibration": False, "fp32_samples": True, "quality": True}),
    "quant__method": ("mse_clip", {"calibration": True, "fp32_samples": False, "quality": True}),
    "act__mode": ("dynamic", {"calibration": False, "fp32_samples": False, "quality": True}),
    # Of the same model: a run rotates it first, which re-keys everything through its
    # fingerprint (test_a_rotated_model_is_another_model).
    "act__rotation": ("hadamard", {"calibration": False, "fp32_samples": False, "quality": True}),
}


@pytest.mark.parametrize("change", list(CASES), ids=list(CASES))
def test_each_key_depends_on_exactly_its_inputs(model, change):
    value, expected = CASES[change]
    base, changed = _keys(model), _keys(model, **{change: value})
    for entry, rekeyed in expected.items():
        assert (base[entry] != changed[entry]) is rekeyed, entry


def test_a_config_section_added_later_is_part_of_the_quality_key(model):
    config = BaselineConfig().to_dict()
    extended = copy.deepcopy(config)
    extended["new_section"] = {"knob": 1}
    qweights = _qweights(model, config["bit_width"], config["group_size"], "minmax")
    assert (
        StageCache(model, config, qweights).quality_key()
        != StageCache(model, extended, qweights).quality_key()
    )
    assert StageCache(model, config, qweights).calibration_key() == (
        StageCache(model, extended, qweights).calibration_key()
    )


def test_a_key_added_later_keeps_the_entries_of_runs_before_it(model, monkeypatch):
    """The default ``act`` section hashes as the config did before it existed, and as it did
    between ``act.mode`` and ``act.rotation``; another value re-keys; a key added after them at
    its earlier value re-keys nothing, not even their other values."""
    config = BaselineConfig().to_dict()
    assert config["act"] == {
        "mode": "static",
        "rotation": "none",
        "mask_aware": False,
        "granularity": "tensor",
        "channel_groups": 8,
    }
    earlier = copy.deepcopy(config)
    del earlier["act"]  # what a run hashed before act.mode existed
    qweights = _qweights(model, config["bit_width"], config["group_size"], "minmax")

    def key(data):
        return StageCache(model, data, qweights).quality_key()

    def with_act(**act):
        return {**copy.deepcopy(config), "act": act}

    assert key(config) == key(earlier) == key(with_act(mode="static"))
    assert key(config) == key(with_act(mode="static", rotation="none"))  # before mask_aware
    assert key(config) != key(with_act(mode="static", rotation="none", mask_aware=True))
    dynamic = with_act(mode="dynamic", rotation="none")
    assert key(dynamic) == key(with_act(mode="dynamic"))  # before act.rotation existed
    assert key(dynamic) != key(config)
    rotated = with_act(mode="static", rotation="hadamard")
    assert len({key(config), key(dynamic), key(rotated)}) == 3
    before = key(rotated), key(dynamic)
    monkeypatch.setitem(KEYS_ADDED_LATER, ("act", "later"), "off")
    for data in (config, dynamic, rotated):
        data["act"]["later"] = "off"
    assert (key(config), (key(rotated), key(dynamic))) == (key(earlier), before)
    rotated["act"]["later"] = "on"
    assert key(rotated) != before[0]


def test_a_rotated_model_is_another_model(model):
    """``act.rotation=hadamard`` runs the rotated model (the same function within float32
    rounding, other parameters): its own calibration and fp32 entries, one per seed."""
    rotated = [DIGITS.rotate(model, seed) for seed in (0, 0, 1)]
    prints = [model_fingerprint(m) for m in (model, *rotated)]
    assert prints[1] == prints[2]
    assert len({prints[0], prints[1], prints[3]}) == 3


def test_the_weights_used_are_in_the_keys_whatever_the_settings_say(model):
    """An export's codes reloaded under the default ``quant`` settings (issue 23): other
    weights under the same config are other calibration and quality entries; one changed code
    is enough."""
    config = BaselineConfig().to_dict()
    config["bit_width"] = 4
    minmax = _qweights(model, 4, config["group_size"], "minmax")
    clipped = _qweights(model, 4, config["group_size"], "mse_clip")
    first = model.layer_names[0]
    codes = minmax[first].codes.at[0, 0].add(1)
    edited = {**minmax, first: dataclasses.replace(minmax[first], codes=codes)}
    keys = [StageCache(model, config, q) for q in (minmax, clipped, edited)]
    for entry in ("calibration_key", "quality_key"):
        found = [getattr(cached, entry)() for cached in keys]
        assert len(set(found)) == 3, entry
    assert len({cached.fp32_samples_key() for cached in keys}) == 1


# The fingerprint of the shipped checkpoint, as computed before models became pytrees (when the
# schedule kept its arrays as fields): cache entries written then are still found.
SHIPPED_MODEL_FINGERPRINT = "cd24cd8261b241e56f6a36a326677839fd0d8e838c85f47cb579e61e72df7df7"


def test_model_fingerprint_covers_every_parameter_not_only_kernels(model):
    again = load_model()
    assert model_fingerprint(again) == model_fingerprint(model) == SHIPPED_MODEL_FINGERPRINT
    first = model.layer_names[0]
    params = jax.tree.map(lambda a: a, model.params)
    params[first] = {**params[first], "bias": params[first]["bias"] + 1e-6}
    assert model_fingerprint(model.replace(params=params)) != model_fingerprint(model)
    schedule = dataclasses.replace(model.schedule, beta_end=model.schedule.beta_end * 1.0001)
    assert model_fingerprint(model.replace(schedule=schedule)) != model_fingerprint(model)


def test_quality_entry_round_trips_with_nan(tmp_path):
    quality = ImageQuality(
        drift_per_timestep=np.linspace(0.0, 1.0, 10),
        drift_per_group=np.array([0.25, 0.75]),
        drift_mean=0.5,
        final_mse=0.1 + 0.2,
        frechet_fp32=float("nan"),
        frechet_quantized=3.0,
        class_coverage_fp32=1.0,
        class_coverage_quantized=0.9,
        classifier_confidence_fp32=0.95,
        classifier_confidence_quantized=0.85,
        layer_cosine={"in": 0.9, "out": 1 / 3},
        model_cosine=0.93,
        frechet_real_subset=0.4,
        num_samples=8,
    )
    entry = QualityEntry(quality=quality, quantized_x0=np.arange(8, dtype=np.float32))
    entry.save(tmp_path / "q.npz")
    back = QualityEntry.load(tmp_path / "q.npz")
    assert np.isnan(back.quality.frechet_fp32)
    np.testing.assert_array_equal(back.quantized_x0, entry.quantized_x0)
    assert back.quality.to_dict().keys() == quality.to_dict().keys()
    for name in ("drift_per_timestep", "drift_per_group"):
        assert getattr(back.quality, name) == getattr(quality, name)
    rest = {
        k: v for k, v in quality.to_dict().items() if not k.startswith(("drift_per", "frechet_fp"))
    }
    assert {k: back.quality.to_dict()[k] for k in rest} == rest


def test_second_run_hits_every_entry_and_gives_the_same_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path))
    cfg = {
        "calibration": {"samples": 2, "samples_per_step": 2},
        "sampling": {"num_samples": 4},
    }
    first = run(to_config(cfg))
    assert first.cache == {"calibration": "miss", "fp32_samples": "miss", "quality": "miss"}
    second = run(to_config({**cfg, "smoothness_threshold": 0.05, "model": {"name": "other"}}))
    assert second.cache == {"calibration": "hit", "fp32_samples": "hit", "quality": "hit"}
    assert second.quality == first.quality
    assert [layer.scales for layer in second.layers] == [layer.scales for layer in first.layers]
    np.testing.assert_array_equal(second.samples["quantized"], first.samples["quantized"])
    third = run(to_config({**cfg, "num_time_groups": 2}))
    assert third.cache == {"calibration": "hit", "fp32_samples": "hit", "quality": "miss"}


def test_calibration_from_the_cache_equals_a_fresh_one(model, tmp_path):
    config = BaselineConfig().to_dict()
    config["calibration"] = {"samples": 2, "samples_per_step": 2}
    qweights, _ = quantize_weights(model, bits=2)
    computed = StageCache(model, config, qweights, cache_dir=tmp_path).calibration()
    cached = StageCache(model, config, qweights, cache_dir=tmp_path)
    loaded = cached.calibration()
    assert cached.record == {"calibration": "hit"}
    for name in ("act_min", "act_max", "act_mean", "act_std", "act_samples"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(computed, name))


def _count_compiles(names: tuple[str, ...]):
    """A listener counting XLA compilations of the jitted functions called ``names``, and its
    counts (a ``collections.Counter`` keyed by name)."""
    counts = collections.Counter()

    def listen(event: str, duration: float, **kwargs) -> None:
        name = str(kwargs.get("fun_name", "")).removeprefix("jit(").removesuffix(")")
        if event == "/jax/core/compile/backend_compile_duration" and name in names:
            counts[name] += 1

    return listen, counts


def test_a_second_load_runs_on_the_programs_the_first_compiled(tmp_path, monkeypatch):
    """Each run loads its model afresh (no process-wide registry): an equal model (same
    checkpoint, a new object) must reuse the sampler and calibration programs, not recompile."""
    programs = ("_sample_program", "_calibration_program", "_weights_program", "_classify")
    cfg = {
        "calibration": {"samples": 3, "samples_per_step": 3},
        "sampling": {"num_samples": 5},
    }
    listen, counts = _count_compiles(programs)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "first"))
        first = run(to_config(cfg))
        # Shapes no other test uses: the first run compiles (and so the listener works).
        assert counts["_sample_program"] >= 1 and counts["_calibration_program"] == 1
        counts.clear()
        monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "second"))
        second = run(to_config(cfg))
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert second.cache == {"calibration": "miss", "fp32_samples": "miss", "quality": "miss"}
    assert dict(counts) == {}
    assert second.quality == first.quality


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_a_weights_entry_holding_a_non_number_is_recomputed(tmp_path, bad):
    """The weight-only entry is strict JSON (written with ``allow_nan=False``): one that holds
    NaN or Infinity was not stored whole by the cache, and is computed again, never reported."""
    section = WeightsSection(
        tensors=(), blocks=(), total_source_bytes=8, total_quantized_bytes=4, fp32_bytes=8,
        compression_vs_source=2.0, compression_vs_fp32=2.0, model_cosine=0.5, seconds=1.0,
        bytes_per_second=8.0,
    )  # fmt: skip
    calls = []

    def compute():
        calls.append(1)
        return section

    key = cache_key(kind="weights-test")
    first, state = weights_section(key, compute, cache_dir=tmp_path)
    assert (state, first) == ("miss", section)
    path = entry_path(key, suffix=".json", cache_dir=tmp_path)
    path.write_text(path.read_text().replace('"model_cosine": 0.5', f'"model_cosine": {bad}'))
    again, state = weights_section(key, compute, cache_dir=tmp_path)
    assert (state, again, len(calls)) == ("miss", section, 2)
    assert weights_section(key, compute, cache_dir=tmp_path) == (section, "hit")
