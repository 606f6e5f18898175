"""Typed config: conf/ mirrors the schema, values are validated, Hydra errors become one line."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from thermojax.cli.config import describe_config_error, register_configs, to_config
from thermojax.errors import UserInputError
from thermojax.pipeline.settings import BaselineConfig, validate_config

CONF = Path(__file__).resolve().parents[2] / "conf"


def composed(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_conf_yaml_composes_to_the_schema_defaults():
    cfg = to_config(composed())
    assert cfg == BaselineConfig()


def test_overrides_reach_the_typed_config():
    cfg = to_config(
        composed("bit_width=4", "num_time_groups=8", "model.name=mine", "calibration=quick")
    )
    assert (cfg.bit_width, cfg.num_time_groups, cfg.model.name) == (4, 8, "mine")
    assert cfg.calibration.samples == 16


def test_act_mode_from_the_command_line():
    assert to_config(composed()).act.mode == "static"
    assert to_config(composed("act.mode=dynamic")).act.mode == "dynamic"
    with pytest.raises(
        UserInputError, match=r"^act\.mode='bogus': must be one of static, dynamic$"
    ):
        to_config(composed("act.mode=bogus"))


def test_act_rotation_from_the_command_line():
    assert to_config(composed()).act.rotation == "none"
    assert to_config(composed("act.rotation=hadamard")).act.rotation == "hadamard"
    with pytest.raises(
        UserInputError, match=r"^act\.rotation='bogus': must be one of none, hadamard$"
    ):
        to_config(composed("act.rotation=bogus"))


def test_experiment_files_only_override():
    cfg = to_config(composed("experiment=int4_8groups"))
    assert (cfg.bit_width, cfg.num_time_groups) == (4, 8)
    assert cfg.smoothness_threshold == BaselineConfig().smoothness_threshold


def test_wandb_group_selects_mode():
    assert to_config(composed("wandb=disabled")).wandb.mode == "disabled"
    assert to_config(composed("wandb.mode=online")).wandb.mode == "online"


def test_hydra_run_dir_can_be_set(tmp_path):
    cfg = composed(f"hydra.run.dir={tmp_path}/run")
    assert cfg.hydra.run.dir == f"{tmp_path}/run"
    assert cfg.hydra.output_subdir is None  # nothing written before validation


def test_typed_config_is_frozen():
    cfg = to_config({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.bit_width = 4  # type: ignore[misc]


def test_mapping_with_partial_keys_gets_defaults():
    cfg = to_config({"bit_width": 8, "calibration": {"samples": 4}})
    assert cfg.bit_width == 8 and cfg.calibration.samples == 4
    assert cfg.calibration.samples_per_step == 64


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"bit_width": 3}, "bit_width=3: weight bits must be 2, 4 or 8"),
        ({"act_bits": 1}, "act_bits=1"),
        ({"num_time_groups": 0}, "num_time_groups=0"),
        ({"smoothness_threshold": -0.1}, "smoothness_threshold=-0.1"),
        ({"smoothness_threshold": float("nan")}, "smoothness_threshold=nan"),
        ({"group_size": 0}, "group_size=0"),
        ({"seed": -1}, "seed=-1"),
        ({"model": {"path": "/no/such/checkpoint"}}, "model.path='/no/such/checkpoint'"),
        ({"calibration": {"samples": 0}}, "calibration.samples=0"),
        ({"sampling": {"num_samples": 0}}, "sampling.num_samples=0"),
        ({"wandb": {"mode": "sometimes"}}, "wandb.mode='sometimes'"),
        ({"interpretation": {"poor_below": 1.5}}, "interpretation.poor_below=1.5"),
        ({"interpretation": {"poor_below": 0.9}}, "must not exceed interpretation.excellent_above"),
        ({"interpretation": {"good_max_violations": -1}}, "interpretation.good_max_violations=-1"),
        (
            {"interpretation": {"good_max_frechet_ratio": 0.5}},
            "interpretation.good_max_frechet_ratio=0.5: must be >= 1",
        ),
        (
            {"interpretation": {"good_max_perplexity_ratio": float("inf")}},
            "interpretation.good_max_perplexity_ratio=inf: must be >= 1",
        ),
        (
            {"interpretation": {"poor_above_coverage_drop": 1.5}},
            "interpretation.poor_above_coverage_drop=1.5: must be within",
        ),
        (
            {"interpretation": {"good_max_final_mse": -1.0}},
            "interpretation.good_max_final_mse=-1.0: must be >= 0",
        ),
        (
            {"interpretation": {"good_max_final_mse": 20.0}},
            "interpretation.good_max_final_mse=20.0: must not exceed interpretation.poor_above",
        ),
        (
            {"interpretation": {"poor_below_token_agreement": 0.8}},
            "interpretation.good_min_token_agreement=0.7: must not be below interpretation.poor",
        ),
        (
            {"interpretation": {"good_min_token_agreement": float("nan")}},
            "interpretation.good_min_token_agreement=nan",
        ),
        ({"smoothness_threshold": "abc"}, "smoothness_threshold"),
        ({"bit_width": "two"}, "bit_width"),
        ({"bit_widht": 2}, "bit_widht"),
        ({"model": {"file": "x"}}, "model.file"),
        ({"act": {"mode": "bogus"}}, "act.mode='bogus': must be one of static, dynamic"),
        ({"act": {"mode": 3}}, "act.mode"),
        ({"act": {"rotation": "bogus"}}, "act.rotation='bogus': must be one of none, hadamard"),
        ({"act": {"rotation": 1}}, "act.rotation"),
        ({"act": {"rotating": "hadamard"}}, "act.rotating"),
        (
            {"act": {"rotation": "hadamard"}, "export": {"path": "/nonexistent/export"}},
            "act.rotation='hadamard': exports do not record the rotation yet",
        ),
        (
            {"act": {"rotation": "hadamard"}, "model": {"devices": 2}},
            "act.rotation='hadamard': not with parameters laid over devices (model.devices=2",
        ),
        ({"act": "dynamic"}, "act: is a section of keys"),
        (
            {"act": {"mode": "dynamic"}, "phases": {"enabled": True}},
            "act.mode='dynamic': the phase experiment compares static time-group parameters",
        ),
        (
            {"act": {"mode": "dynamic"}, "thermo": {"smoothing": {"enabled": True, "window": 1}}},
            "act.mode='dynamic': thermo",
        ),
        (
            {"act": {"mode": "dynamic"}, "time_groups": {"strategy": "adaptive"}},
            "time_groups.strategy=adaptive reshape static time-group parameters, which dynamic",
        ),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_bad_values_name_key_and_value(data, message):
    with pytest.raises(
        UserInputError, match=message.replace("(", r"\(").replace(".", r"\.")
    ) as err:
        to_config(data)
    assert "\n" not in str(err.value)


def test_validate_accepts_the_defaults_and_an_existing_path(tmp_path):
    validate_config(BaselineConfig())
    validate_config(to_config({"model": {"path": str(tmp_path)}}))


def hydra_error(*overrides: str) -> BaseException:
    with pytest.raises((HydraException, OmegaConfBaseException)) as err:
        composed(*overrides)
    return err.value


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("foo=1", "foo=1: unknown config key 'foo'"),
        ("model.foo=1", "model.foo=1: unknown config key 'model.foo'"),
        ("smoothness_threshold=abc", "smoothness_threshold=abc: Value 'abc' of type 'str'"),
        ("bit_width=2.5", "bit_width=2.5: Value '2.5' of type 'float'"),
        (
            "calibration=huge",
            (
                "Could not find 'calibration/huge'; Available options in "
                "'calibration': default, quick"
            ),
        ),
    ],
)
def test_hydra_composition_errors_become_one_line(override, expected):
    line = describe_config_error(hydra_error(override))
    assert line.startswith(expected)
    assert "\n" not in line


def test_struct_mode_rejects_new_keys_after_composition():
    cfg = composed()
    assert OmegaConf.is_struct(cfg)
    with pytest.raises(OmegaConfBaseException):
        cfg.bit_widht = 2


def _command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "WANDB_"))}
    return subprocess.run(
        [sys.executable, "-m", "thermojax.baseline", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_lists_every_config_group_and_option_and_the_defaults(tmp_path):
    proc = _command("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith("python -m thermojax.baseline [key=value ...]")
    groups_part = text[text.index("== Configuration groups ==") : text.index("== Config ==")]
    listed = {
        line.split(":")[0]: line.split(":")[1].strip().split(", ")
        for line in groups_part.splitlines()
        if re.match(r"^[a-z_]+: ", line)
    }
    folders = {
        d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in CONF.iterdir() if d.is_dir()
    }
    assert listed == folders
    assert "full" in listed["sweep"]
    config_part = text[text.index("== Config ==") :].split("\n", 2)[2]
    defaults = yaml.safe_load(config_part[: config_part.index("\n\n\n")])
    assert to_config(defaults) == BaselineConfig()
    assert list(tmp_path.iterdir()) == []  # --help runs nothing and writes nothing


def test_cfg_job_prints_the_composed_config_with_the_overrides(tmp_path):
    proc = _command(
        "bit_width=4", "num_time_groups=8", "calibration=quick", "--cfg", "job", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    printed = to_config(yaml.safe_load(proc.stdout))
    assert printed == to_config(composed("bit_width=4", "num_time_groups=8", "calibration=quick"))
    assert (printed.bit_width, printed.num_time_groups, printed.calibration.samples) == (4, 8, 16)
    assert list(tmp_path.iterdir()) == []
