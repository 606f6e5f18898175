"""The content-addressed sweep cache: stable keys, hits, corrupt entries, and real process races."""

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from thermojax.pipeline.cache import store as cache
from thermojax.pipeline.cache.store import cache_key, entry_path, get_or_compute

FIXTURE = Path(__file__).parents[1] / "fixtures" / "cache_race.py"


def _json_save(value, path):
    Path(path).write_text(json.dumps(value))


def _json_load(path):
    return json.loads(Path(path).read_text())


def test_key_is_pinned_so_entries_survive_code_changes():
    # A change to the canonical form must be deliberate (bump CACHE_SCHEMA_VERSION), because it
    # orphans every entry users already have on disk. The digest is of this exact JSON text.
    canonical = (
        b'{"parts":{"bit_width":4,"kind":"calibration","model":"digits","samples":128,"seed":0},'
        b'"schema":1}'
    )
    assert hashlib.sha256(canonical).hexdigest() == (
        "b0082cbdb831c71c5a2493058d1a1f985db021043694602a6b7ffdc76a338d97"
    )
    key = cache_key(seed=0, samples=128, bit_width=4, model="digits", kind="calibration")
    assert key == "b0082cbdb831c71c5a2493058d1a1f985db021043694602a6b7ffdc76a338d97"


def test_key_ignores_order_and_numpy_scalar_types():
    plain = cache_key(bit_width=4, seed=0, settings={"a": 1, "b": [1.5, 2]})
    numpyish = cache_key(
        settings={"b": (np.float32(1.5), np.int64(2)), "a": np.int32(1)},
        seed=np.int64(0),
        bit_width=np.uint8(4),
    )
    assert plain == numpyish


@pytest.mark.parametrize(
    "changed",
    [{"bit_width": 8}, {"seed": 1}, {"samples": 64}, {"model": "other"}],
    ids=["bit_width", "seed", "samples", "model"],
)
def test_key_changes_with_every_dependency(changed):
    base = {"model": "digits", "bit_width": 4, "samples": 128, "seed": 0}
    assert cache_key(**base) != cache_key(**{**base, **changed})


def test_key_changes_with_schema_version(monkeypatch):
    before = cache_key(model="digits")
    monkeypatch.setattr(cache, "CACHE_SCHEMA_VERSION", cache.CACHE_SCHEMA_VERSION + 1)
    assert cache_key(model="digits") != before


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ({"x": object()}, "'parts.x' has type object"),
        ({"y": float("nan")}, "'parts.y' is not finite"),
        ({}, "at least one"),
    ],
    ids=["object", "nan", "empty"],
)
def test_key_rejects_parts_without_canonical_form(bad, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[")):
        cache_key(**bad)


def test_miss_computes_and_stores_then_hit_loads(tmp_path):
    calls = []
    key = cache_key(kind="unit")

    def compute():
        calls.append(1)
        return {"v": 3}

    first = get_or_compute(
        key, compute, save=_json_save, load=_json_load, suffix=".json", cache_dir=tmp_path
    )
    second = get_or_compute(
        key, compute, save=_json_save, load=_json_load, suffix=".json", cache_dir=tmp_path
    )
    assert first == second == {"v": 3}
    assert len(calls) == 1
    assert entry_path(key, suffix=".json", cache_dir=tmp_path).exists()
    # No temporary files are left next to the entry.
    assert not list(entry_path(key, cache_dir=tmp_path).parent.glob(".*tmp*"))


def test_default_folder_is_the_project_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "proj"))
    key = cache_key(kind="default-dir")
    get_or_compute(key, lambda: [1], save=_json_save, load=_json_load)
    assert entry_path(key).is_relative_to(tmp_path / "proj")
    assert entry_path(key).exists()


def test_corrupt_entry_is_recomputed(tmp_path):
    key = cache_key(kind="corrupt")
    path = entry_path(key, suffix=".json", cache_dir=tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"v": 3')  # truncated
    value = get_or_compute(
        key, lambda: {"v": 4}, save=_json_save, load=_json_load, suffix=".json", cache_dir=tmp_path
    )
    assert value == {"v": 4}
    assert _json_load(path) == {"v": 4}


def test_a_cache_folder_whose_names_are_too_long_is_a_warning(tmp_path, caplog):
    """A cache path the file system cannot name (ENAMETOOLONG on the first look): the value
    is computed, the run goes on, and the log says the folder takes no files."""
    too_long = tmp_path / ("c" * 300)
    calls = []
    with caplog.at_level("WARNING", logger=cache.__name__):
        for _ in range(2):
            value = get_or_compute(
                cache_key(kind="long"),
                lambda: calls.append(1) or {"v": 5},
                save=_json_save,
                load=_json_load,
                suffix=".json",
                cache_dir=too_long,
            )
            assert value == {"v": 5}
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []
    assert "takes no files" in caplog.text and "too long" in caplog.text.lower()


def test_failed_compute_leaves_no_entry_and_releases_the_lock(tmp_path):
    key = cache_key(kind="fails")

    def boom():
        raise RuntimeError("calibration crashed")

    with pytest.raises(RuntimeError, match="calibration crashed"):
        get_or_compute(key, boom, save=_json_save, load=_json_load, cache_dir=tmp_path)
    assert not entry_path(key, cache_dir=tmp_path).exists()
    assert get_or_compute(key, lambda: 5, save=_json_save, load=_json_load, cache_dir=tmp_path) == 5


def test_save_that_writes_elsewhere_is_an_error(tmp_path):
    key = cache_key(kind="elsewhere")

    def save_with_extra_suffix(value, path):  # what numpy.savez does without a .npz suffix
        Path(f"{path}.npz").write_text("x")

    with pytest.raises(RuntimeError, match="did not write the path"):
        get_or_compute(
            key, lambda: 1, save=save_with_extra_suffix, load=_json_load, cache_dir=tmp_path
        )


def test_npz_entries_written_by_path_keep_their_suffix(tmp_path):
    # numpy.savez appends ".npz" to a path without it: the temporary name must end in the suffix.
    key = cache_key(kind="npz")
    value = get_or_compute(
        key,
        lambda: np.arange(4.0),
        save=lambda v, path: np.savez(path, x=v),
        load=lambda path: np.load(path)["x"],
        suffix=".npz",
        cache_dir=tmp_path,
    )
    np.testing.assert_array_equal(value, np.arange(4.0))
    final = entry_path(key, suffix=".npz", cache_dir=tmp_path)
    np.testing.assert_array_equal(np.load(final)["x"], np.arange(4.0))
    assert sorted(p.name for p in final.parent.iterdir()) == sorted([final.name, f"{key}.lock"])


def test_bad_key_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="hex digest"):
        entry_path("../../etc/passwd", cache_dir=tmp_path)


def test_racing_processes_compute_once_and_never_see_half_entries(tmp_path):
    compute_log = tmp_path / "computed.log"
    compute_log.touch()
    go, ready = tmp_path / "go", tmp_path / "ready"
    ready.mkdir()
    count = 4
    command = [sys.executable, str(FIXTURE), str(tmp_path / "cache"), str(compute_log), str(go)]
    contenders = [
        subprocess.Popen(
            [*command, str(ready), str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    # The barrier: every interpreter has started and waits for the signal.
    while len(list(ready.glob("ready-*"))) < count:
        assert all(p.poll() is None for p in contenders), [p.communicate() for p in contenders]
        time.sleep(0.01)
    go.touch()
    # Meanwhile, read the entry's final path as often as we can: whenever it exists it is whole.
    final = entry_path(cache_key(kind="race", n=50), suffix=".json", cache_dir=tmp_path / "cache")
    seen_whole = 0
    while True:
        running = any(p.poll() is None for p in contenders)
        if final.exists():
            assert len(json.loads(final.read_text())["rows"]) == 50
            seen_whole += 1
        if not running:
            break
        time.sleep(0.01)
    outputs = [p.communicate() for p in contenders]
    for proc, (out, err) in zip(contenders, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "true"
    assert len(compute_log.read_text().split()) == 1
    assert seen_whole > 0
    assert not list(final.parent.glob(".*tmp*"))


def test_arrays_fingerprint_sees_values_names_dtypes_and_shapes():
    rng = np.random.default_rng(0)
    weights = {
        "dense_0": rng.normal(size=(64, 32)).astype(np.float32),
        "dense_1": np.ones(3, np.float32),
    }
    base = cache.arrays_fingerprint(weights)
    assert base == cache.arrays_fingerprint(dict(reversed(list(weights.items()))))
    changed = dict(weights, dense_1=np.array([1, 1, 1.0001], np.float32))
    renamed = {"dense_x": weights["dense_0"], "dense_1": weights["dense_1"]}
    recast = dict(weights, dense_1=np.ones(3, np.float64))
    reshaped = dict(weights, dense_0=weights["dense_0"].reshape(32, 64))
    others = [cache.arrays_fingerprint(w) for w in (changed, renamed, recast, reshaped)]
    assert len({base, *others}) == 5
