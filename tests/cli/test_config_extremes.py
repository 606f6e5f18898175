"""Every config value at its extremes (issue 23): each leaf key of the schema, found from
``BaselineConfig().to_dict()`` (a key added later is covered without editing this file), gets the
values at and past every limit of its type, and wrong types.

- Stage A, every key x every extreme, then hypothesis-drawn values: ``to_config`` returns a
  ``BaselineConfig`` or raises a one-line ``UserInputError`` naming the key; nothing else.
- Stage B, every extreme that stage A accepts: the real ``execute`` path on the shipped digits
  DDPM and the shipped masked-diffusion LM up to the first expensive stage (the family's checks,
  loading the model, its limits and samplers, the memory estimate); then (slow) a curated list of
  legal extremes as whole runs on the smallest settings. Each ends in success or one
  ``UserInputError`` line.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import tempfile
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thermojax.cli.baseline import execute
from thermojax.cli.config import to_config
from thermojax.errors import UserInputError
from thermojax.pipeline.settings import BaselineConfig

# ------------------------------------------------------------------ the schema's leaves


def _field_type(section: Any, name: str) -> Any:
    """The annotation of ``section``'s field ``name`` (``time_groups.lambda`` is ``lam``)."""
    hints = typing.get_type_hints(type(section))
    return hints["lam" if name == "lambda" else name]


def _leaves(section: Any, data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, annotation)`` of every leaf: a value that is not itself a dataclass."""
    for name, value in data.items():
        attribute = getattr(section, "lam" if name == "lambda" else name)
        if dataclasses.is_dataclass(attribute):
            yield from _leaves(attribute, value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", _field_type(section, name)


LEAVES: dict[str, Any] = dict(_leaves(BaselineConfig(), BaselineConfig().to_dict()))


def _kind(annotation: Any) -> tuple[str, Any]:
    """``(kind, element annotation)``: kind is bool, int, float, str, list or dict."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        origin = typing.get_origin(annotation)
    if origin is list:
        return "list", typing.get_args(annotation)[0]
    if origin is dict:
        return "dict", typing.get_args(annotation)[1]
    for kind in (bool, int, float, str):  # bool first: it is an int
        if annotation is kind:
            return kind.__name__, None
    raise AssertionError(f"a config field of a type this test does not know: {annotation!r}")


def _optional(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def test_the_enumeration_finds_every_key():
    assert len(LEAVES) > 80
    for key in (
        "bit_width",
        "seed",
        "model.path",
        "sampling.num_samples",
        "calibration.samples",
        "time_groups.lambda",
        "thermo.optimization.max_iterations",
        "quant.keep_bits",
        "weights.rules",
        "phases.windows",
        "export.path",
        "interpretation.poor_below",
    ):
        assert key in LEAVES, key
    assert {_kind(a)[0] for a in LEAVES.values()} == {"bool", "int", "float", "str", "list", "dict"}


# ------------------------------------------------------------------ the extremes


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, str]:
    """A file, an empty folder, a missing path and a FIFO, for every string key."""
    root = tmp_path_factory.mktemp("places")
    (root / "a-file").write_text("not a checkpoint")
    (root / "a-folder").mkdir()
    os.mkfifo(root / "a-fifo")
    return {
        "file": str(root / "a-file"),
        "folder": str(root / "a-folder"),
        "missing": str(root / "missing" / "deeper"),
        "fifo": str(root / "a-fifo"),
        "name too long": str(root / ("n" * 300)),
    }


INTS = (0, 1, -1, 2**31, 2**63, 2**64 - 1, 10**30)
FLOATS = (math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324, 3.5e38)  # 3.5e38: past float32
STRINGS = ("", "x" * 10_000, "a\x00b", "a\nb", "\u202eRTL\u200f", "\U0001f600")
PATHS = ("/proc", "~")
WRONG_TYPES = ("ten", 1.5, True, None, [1], {"a": 1})


def _scalars(kind: str) -> tuple[Any, ...]:
    return {"bool": (True, False, 0, 1, -1, 2**64), "int": INTS, "float": FLOATS}.get(kind, STRINGS)


def extremes(key: str, places: Mapping[str, str]) -> list[Any]:
    """The values at and past every limit of ``key``'s type, and values of other types."""
    kind, element = _kind(LEAVES[key])
    if kind == "list":
        if dataclasses.is_dataclass(element):  # one field of one element at each extreme
            values: list[Any] = []
            for field, hint in typing.get_type_hints(element).items():
                values += [[{field: v}] for v in _scalars(_kind(hint)[0])]
            values += [[{"no_such_field": 1}], [{}], [{}] * 1000]
        else:
            values = [[v] for v in _scalars(_kind(element)[0])]
            values += [[], list(range(1000)), [[1]], [{"a": 1}]]
    elif kind == "dict":
        values = [{k: 8} for k in ("", "x" * 1000, "\x00\n", "*")]
        values += [{"a": v} for v in _scalars(_kind(element)[0])]
        values += [{}, {"a": [1]}, {"a": {"b": 1}}]
    else:
        values = list(_scalars(kind))
        if kind == "str":
            values += [*places.values(), *PATHS]
    if _optional(LEAVES[key]):
        values.append(None)
    return values + [w for w in WRONG_TYPES if not any(w is v for v in values)]


def _nested(key: str, value: Any) -> dict[str, Any]:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def convert(key: str, value: Any) -> BaselineConfig | None:
    """``to_config({key: value})``: the config, or ``None`` after checking the one error line."""
    try:
        return to_config(_nested(key, value))
    except UserInputError as err:
        message = str(err)
        assert len(message.splitlines()) == 1, f"{key}={value!r}: {message!r}"
        assert key in message, f"{key}={value!r}: the error does not name the key: {message!r}"
        assert len(message) < 1000, f"{key}={value!r}: an error line of {len(message)} characters"
        return None


# ------------------------------------------------------------------ stage A


class Conversions(dict):
    """key -> ``[(extreme, its config or None)]``, converted (and checked) on first use, so that
    stage B reuses stage A's conversions."""

    def __init__(self, places: Mapping[str, str]) -> None:
        super().__init__()
        self.places = places

    def __missing__(self, key: str) -> list[tuple[Any, BaselineConfig | None]]:
        self[key] = [(v, convert(key, v)) for v in extremes(key, self.places)]
        return self[key]


@pytest.fixture(scope="module")
def conversions(places) -> Conversions:
    return Conversions(places)


@pytest.mark.parametrize("key", sorted(LEAVES))
def test_every_extreme_converts_or_is_one_line_naming_the_key(key, conversions):
    outcomes = conversions[key]
    assert len(outcomes) >= 10, key
    if _kind(LEAVES[key])[0] != "str":  # a word is no number, list or mapping
        assert {repr(v): c for v, c in outcomes}["'ten'"] is None, key


def _strategy(key: str, places: Mapping[str, str]) -> st.SearchStrategy:
    kind, element = _kind(LEAVES[key])
    scalar = {
        "bool": st.booleans() | st.integers(),
        "int": st.integers() | st.floats(allow_nan=True),
        "float": st.floats(allow_nan=True, allow_infinity=True) | st.integers(),
        "str": st.text() | st.sampled_from(sorted(places.values())),
    }
    if kind == "list":
        if dataclasses.is_dataclass(element):
            fields = typing.get_type_hints(element)
            rule = st.fixed_dictionaries(
                {}, optional={f: scalar[_kind(h)[0]] | st.none() for f, h in fields.items()}
            )
            value = st.lists(rule, max_size=3)
        else:
            value = st.lists(scalar[_kind(element)[0]], max_size=4)
    elif kind == "dict":
        value = st.dictionaries(
            st.text(max_size=12), scalar[_kind(element)[0]] | st.none(), max_size=3
        )
    else:
        value = scalar[kind]
    return value | st.none() | st.sampled_from(WRONG_TYPES)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_drawn_values_convert_or_are_one_line_naming_the_key(data, places):
    key = data.draw(st.sampled_from(sorted(LEAVES)), label="key")
    convert(key, data.draw(_strategy(key, places), label="value"))


# ------------------------------------------------------------------ stage B: up to the work

_DIFFUSION = importlib.import_module("thermojax.pipeline.run.diffusion")


class _ReachedTheWork(Exception):
    """Raised where the run's first expensive stage would start."""


@pytest.fixture
def before_the_work(monkeypatch, tmp_path_factory):
    """``execute`` with every check before the work real (the memory estimate included), and a
    stop instead of the work."""
    checked = _DIFFUSION.check_memory

    def check_then_stop(*args, **kwargs):
        checked(*args, **kwargs)
        raise _ReachedTheWork

    monkeypatch.setattr(_DIFFUSION, "check_memory", check_then_stop)
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    root = tmp_path_factory.mktemp("runs")

    def run_until_the_work(config: BaselineConfig) -> str:
        out = tempfile.mkdtemp(dir=root)
        try:
            execute(config, out)
        except _ReachedTheWork:
            return "reached the work"
        except UserInputError as err:
            assert len(str(err).splitlines()) == 1, repr(str(err))
            return f"error: {err}"
        raise AssertionError("a run got past the memory check without being stopped")

    return run_until_the_work


@pytest.mark.parametrize("model", ["digits", "pydoc-mdlm"])
def test_every_legal_extreme_passes_the_checks_before_the_work(model, conversions, before_the_work):
    outcomes = []
    for key in sorted(LEAVES):
        for _, config in conversions[key]:
            if config is None:
                continue
            if key != "model.shipped":  # the same extreme on this shipped model
                try:
                    shipped = dataclasses.replace(config.model, shipped=model)
                    config = dataclasses.replace(config, model=shipped)  # validated again
                except UserInputError:
                    continue
            outcomes.append(before_the_work(config))
    assert len(outcomes) > 300
    assert outcomes.count("reached the work") > 100, outcomes


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            value = _merged(out[key], value)
        out[key] = value
    return out


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"seed": 2**32}, "seed=4294967296: must be within [0, 4294967295]"),
        ({"seed": 2**64 - 1}, "seed=18446744073709551615"),
        ({"sampling": {"num_samples": 1}}, "sampling.num_samples=1: need at least 2"),
        ({"sampling": {"num_samples": 2**31}}, "sampling.num_samples=2147483648: must be <="),
        (
            {"sampling": {"num_samples": 10**7}},
            "sampling.num_samples=10000000: the run needs about",
        ),
        ({"calibration": {"samples": 10**8}}, "calibration.samples=100000000: the run needs"),
        (
            {"calibration": {"samples_per_step": 10**8}},
            "calibration.samples_per_step=100000000: the run needs",
        ),
        (
            {"quant": {"method": "gptq", "hessian_samples": 10**8}},
            "quant.hessian_samples=100000000: the run needs",
        ),
        ({"thermo": {"optimization": {"max_iterations": 2**31}}}, "must be <= 1000000"),
        ({"quant": {"hqq_iters": 2**31}}, "quant.hqq_iters=2147483648: must be <= 2147483647"),
        ({"quant": {"clip_grid": 2**31}}, "quant.clip_grid=2147483648: must be <= 10000"),
        ({"time_groups": {"lambda": 1e308}}, "time_groups.lambda=1e+308: must be <= 1e+20"),
        ({"thermo": {"smoothing": {"steepness": 1e308}}}, "thermo.smoothing.steepness=1e+308"),
        ({"export": {"path": "a\x00b"}}, "export.path='a\\x00b': a path cannot hold a NUL"),
        (
            {
                "phases": {"enabled": True, "seeds": 2, "windows": [1], "min_group_size": 1},
                "seed": 2**32 - 1,
            },
            "phases.seeds=2: seeds seed .. seed + phases.seeds - 1 = 4294967296",
        ),
    ],
    ids=[
        "seed-2^32",
        "seed-2^64-1",
        "one-sample",
        "samples-past-int32",
        "samples-past-memory",
        "calibration-past-memory",
        "samples-per-step-past-memory",
        "hessian-samples-past-memory",
        "iterations-past-limit",
        "hqq-iterations-past-int32",
        "clip-grid-past-limit",
        "lambda-past-float32",
        "steepness-past-float32",
        "export-path-with-nul",
        "phase-seeds-past-32-bits",
    ],
)
def test_values_past_a_limit_name_the_value_and_the_limit(overrides, named, before_the_work):
    try:
        outcome = before_the_work(to_config({"wandb": {"mode": "disabled"}, **overrides}))
    except UserInputError as err:
        outcome = f"error: {err}"
    assert named in outcome


# ------------------------------------------------------------------ stage B: whole runs

CHEAP = {
    "sampling": {"sampler": "ddim", "steps": 8, "num_samples": 2},
    "calibration": {"samples": 1, "samples_per_step": 1},
    "wandb": {"mode": "disabled"},
}
SMOOTHING = {"enabled": True, "window": 1, "method": "sigmoid"}
OPTIMIZATION = {"enabled": True, "max_iterations": 3}

LEGAL_EXTREMES = {
    "smallest": {},
    "largest-seed": {"seed": 2**32 - 1},
    "one-group": {"num_time_groups": 1},
    "a-group-per-step": {"num_time_groups": 8},
    "threshold-0": {"smoothness_threshold": 0.0},
    "threshold-huge": {"smoothness_threshold": 1e308},
    "threshold-denormal": {"smoothness_threshold": 5e-324},
    "act-bits-2": {"act_bits": 2},
    "act-bits-16": {"act_bits": 16},
    "w8-group-1": {"bit_width": 8, "group_size": 1},
    "w2-group-4": {"group_size": 4},
    "sigmoid-steepness-denormal": {"thermo": {"smoothing": {**SMOOTHING, "steepness": 5e-324}}},
    "sigmoid-steepness-float32-max": {"thermo": {"smoothing": {**SMOOTHING, "steepness": 3.4e38}}},
    "phase3-huge-weights": {
        "thermo": {
            "optimization": {
                **OPTIMIZATION,
                "learning_rate": 1e308,
                "markov_weight": 1e308,
                "kl_weight": 1e308,
                "entropy_weight": 1e308,
            }
        }
    },
    "phase3-denormal-steps": {
        "thermo": {"optimization": {**OPTIMIZATION, "learning_rate": 5e-324, "grad_clip": 5e-324}}
    },
    "adaptive-largest-lambda": {"time_groups": {"strategy": "adaptive", "lambda": 1e20}},
    "adaptive-lambda-0-mse": {
        "time_groups": {"strategy": "adaptive", "lambda": 0.0, "cost": "mse"}
    },
    "hqq-one-iteration": {"quant": {"method": "hqq", "hqq_iters": 1}},
    "mse-clip-one-factor": {
        "quant": {"method": "mse_clip", "clip_grid": 1, "clip_min_shrink": 1.0}
    },
    "mse-clip-denormal-shrink": {"quant": {"method": "mse_clip", "clip_min_shrink": 5e-324}},
    "gptq-extremes": {
        "quant": {
            "method": "gptq",
            "hessian": "uniform",
            "hessian_samples": 1,
            "damp": 0.0,
            "block_size": 2**64 - 1,
            "act_order": True,
        }
    },
    "phases-one-seed": {
        "phases": {
            "enabled": True,
            "seeds": 1,
            "variants": ["baseline"],
            "windows": [1],
            "min_group_size": 1,
        }
    },
    "export-to-a-unicode-path": {"export": {"path": "EXPORT/\u202eé\nfolder", "orbax": False}},
    "unicode-name": {"model": {"name": "\u202e" + "x" * 10_000 + "\x00\n"}},
}


@pytest.mark.slow
@pytest.mark.parametrize("extra", list(LEGAL_EXTREMES.values()), ids=list(LEGAL_EXTREMES))
def test_legal_extremes_run_to_the_end(extra, tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    extra = _merged(extra, {})
    if "export" in extra:
        extra["export"] = {**extra["export"], "path": str(tmp_path / extra["export"]["path"])}
    files = execute(to_config(_merged(CHEAP, extra)), tmp_path / "run")
    assert files["json"].is_file()
    if "export" in extra:
        assert Path(extra["export"]["path"]).is_dir()
