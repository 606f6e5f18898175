"""A cache can never change a number (issue 23): each kind of run, once into an empty cache and
once into one shared cache filled by every other kind, gives the same JSON (timings, the
environment and cache hits aside: ``tools/same_numbers.py``'s list) and the same samples.

The kinds: the digits DDPM with minmax weights; with mse_clip weights, exporting them; a run of
that export; a run of the same export as written before exports recorded their ``quant``
settings (its codes under the default ``quant`` settings: before the keys held the weights, it
found the minmax run's calibration and reported other smoothness and violations); the shipped
masked-diffusion LM; a synthetic Hugging Face checkpoint measured weight-only. A cache folder
that cannot take a file costs nothing but time.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from thermojax.cli.config import to_config
from thermojax.models.hf import write_dream_like
from thermojax.pipeline import run

pytestmark = pytest.mark.slow  # thirteen runs, about 80 s on two shared cores

_TOOL = Path(__file__).resolve().parents[2] / "tools" / "same_numbers.py"
_spec = importlib.util.spec_from_file_location("same_numbers", _TOOL)
same_numbers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(same_numbers)

QUICK = {"calibration": {"samples": 16, "samples_per_step": 16}, "sampling": {"num_samples": 8}}
LM_SAMPLER = {"num_samples": 8, "steps": 16, "length": 32}


def settings(kind: str, root: Path, export_to: Path) -> dict:
    """The settings of one kind of run (``export_to``: where the exporting kind writes)."""
    digits = {**QUICK, "bit_width": 4, "num_time_groups": 4}
    return {
        "digits-minmax": digits,
        "digits-mse_clip-export": {
            **digits,
            "quant": {"method": "mse_clip"},
            "export": {"path": str(export_to)},
        },
        "digits-reload": {**digits, "model": {"path": str(root / "export")}},
        "digits-reload-legacy": {**digits, "model": {"path": str(root / "export-legacy")}},
        "lm": {
            **QUICK,
            "model": {"shipped": "pydoc-mdlm"},
            "sampling": LM_SAMPLER,
            "bit_width": 4,
            "num_time_groups": 4,
        },
        "weight-only": {"model": {"path": str(root / "dream")}, "bit_width": 4, "group_size": 8},
    }[kind]


KINDS = (
    "digits-minmax",
    "digits-mse_clip-export",
    "digits-reload",
    "digits-reload-legacy",
    "lm",
    "weight-only",
)
"""In the order they first run: the export before its reloads."""


def legacy_copy(export: Path, to: Path) -> None:
    """``export`` as thermojax wrote it before an export recorded the settings that made it."""
    shutil.copytree(export, to)
    document = json.loads((to / "quantization.json").read_text())
    del document["source"]["quant"]
    (to / "quantization.json").write_text(json.dumps(document))


def json_numbers(result) -> dict:
    """The result's JSON, less where the exporting kind wrote (a folder per run)."""
    data = result.to_dict()
    data["config"]["export"]["path"] = None
    if data.get("weights") is not None:
        data["weights"]["export_path"] = None
    return data


def fill(folder: Path, caches: list[Path]) -> None:
    """One cache folder holding every entry of ``caches`` (not their locks)."""
    for cache in caches:
        shutil.copytree(
            cache / "entries",
            folder / "entries",
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("*.lock"),
        )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(alone, shared)``: each kind's result from an empty cache, and from one holding every
    other kind's entries."""
    root = tmp_path_factory.mktemp("never")
    write_dream_like(root / "dream", scale=64, layers=2)
    alone, shared = {}, {}
    with pytest.MonkeyPatch.context() as patch:
        for kind in KINDS:
            patch.setenv("THERMOJAX_CACHE_DIR", str(root / "alone" / kind))
            alone[kind] = run(to_config(settings(kind, root, root / "export")))
            if kind == "digits-mse_clip-export":
                legacy_copy(root / "export", root / "export-legacy")
        for kind in KINDS:
            folder = root / "shared" / kind
            fill(folder, [root / "alone" / other for other in KINDS if other != kind])
            patch.setenv("THERMOJAX_CACHE_DIR", str(folder))
            shared[kind] = run(to_config(settings(kind, root, root / "export-again")))
    return root, alone, shared


@pytest.mark.parametrize("kind", KINDS)
def test_a_shared_cache_gives_the_numbers_of_an_empty_one(runs, kind):
    _, alone, shared = runs
    first, again = alone[kind], shared[kind]
    assert list(same_numbers.differences(json_numbers(first), json_numbers(again))) == []
    assert set(first.samples or {}) == set(again.samples or {})
    for name, array in (first.samples or {}).items():
        np.testing.assert_array_equal(again.samples[name], array, err_msg=name)
    assert set(first.cache.values()) <= {"miss"}  # an empty cache computed everything


def test_the_shared_cache_was_used_where_the_work_is_the_same(runs):
    """Not vacuous: what another kind computed with the same inputs was found (the export's
    codes are the mse_clip run's weights; the digits runs share the fp32 samples), and nothing
    of a run with other weights was."""
    _, _, shared = runs
    assert shared["digits-reload"].cache["calibration"] == "hit"
    assert shared["digits-reload"].cache["fp32_samples"] == "hit"
    assert shared["digits-minmax"].cache["calibration"] == "miss"
    assert shared["digits-minmax"].cache["fp32_samples"] == "hit"
    assert shared["digits-reload-legacy"].cache["calibration"] == "hit"  # the same codes
    for reload in ("digits-reload", "digits-reload-legacy"):
        assert shared[reload].quality == shared["digits-mse_clip-export"].quality
        assert shared[reload].smoothness_score == shared["digits-mse_clip-export"].smoothness_score
        assert shared[reload].smoothness_score != shared["digits-minmax"].smoothness_score


def test_a_cache_folder_that_takes_no_file_is_a_warning(runs, monkeypatch, caplog):
    """A cache path too long for the file system: a warning, and the run's numbers."""
    root, alone, _ = runs
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(root / ("c" * 300)))
    with caplog.at_level(logging.WARNING):
        result = run(to_config(settings("weight-only", root, root / "unused")))
    assert "takes no files" in caplog.text
    before, after = json_numbers(alone["weight-only"]), json_numbers(result)
    assert list(same_numbers.differences(before, after)) == []
