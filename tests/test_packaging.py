"""A wheel carries everything a non-editable install needs: configs, presets, checkpoint, templates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built once for this module's tests."""
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = folder.glob("thermojax-*.whl")
    return built


@pytest.mark.slow
def test_wheel_ships_configs_presets_checkpoint_and_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())

    data = "thermojax-0.1.0.data/data/share/thermojax/conf/"
    configs = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert {"config.yaml", "sweep/smoke.yaml", "sweep/full.yaml"} <= configs
    assert {data + name for name in configs} <= names

    package = {p.relative_to(REPO).as_posix() for p in (REPO / "thermojax").rglob("*")}
    shipped = {
        name
        for name in package
        if name.endswith((".safetensors", ".json", ".j2", ".css")) and "__pycache__" not in name
    }
    assert any(name.endswith("denoiser.safetensors") for name in shipped)
    assert shipped <= names
    assert "hydra_plugins/thermojax_ray_launcher/ray_launcher.py" in names
    assert not any(name.startswith("hydra_plugins/__init__") for name in names)


@pytest.mark.slow
def test_a_non_editable_install_runs_the_command_outside_a_checkout(wheel, tmp_path):
    """The wheel in a virtual environment of its own (the dependencies seen through a path
    entry to this environment's site-packages, where the editable install's finder does not
    run), the command run from a folder that is no checkout: its configs come from
    <prefix>/share/thermojax/conf, its checkpoint and templates from the installed package."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q"]
        + [str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir())
    (Path(site) / "dependencies.pth").write_text(f"{ours}\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "WANDB_"))}
    env.update(THERMOJAX_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path), JAX_PLATFORMS="cpu")
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import thermojax, thermojax.cli.baseline as b; print(thermojax.__file__, b.config_dir())",
        ],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert Path(where[0]).is_relative_to(venv) and not Path(where[0]).is_relative_to(REPO)
    assert Path(where[1]) == venv / "share" / "thermojax" / "conf"
    out = work / "run"
    proc = subprocess.run(
        [str(python), "-m", "thermojax.baseline", "bit_width=4", "num_time_groups=2"]
        + ["calibration=quick", "sampling.num_samples=16", "wandb=disabled"]
        + [f"hydra.run.dir={out}"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "baseline_metrics.json").read_text())
    assert (data["bit_width"], data["num_time_groups"]) == (4, 2)
    assert data["config"]["calibration"]["samples"] == 16  # the quick preset, from share/
    assert {p.name for p in out.iterdir()} == {
        "baseline_metrics.json",
        "baseline_metrics.html",
        "baseline_metrics.log",
        "samples.npz",
    }
    assert "Resolved configuration" in (out / "baseline_metrics.html").read_text()
    help_text = subprocess.run(
        [str(python), "-m", "thermojax.baseline", "--help"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    presets = sorted(p.stem for p in (REPO / "conf" / "sweep").glob("*.yaml"))
    assert f"sweep: {', '.join(presets)}" in help_text and "full" in presets


def test_config_dir_is_the_source_checkout_here():
    from thermojax.cli.baseline import config_dir

    assert Path(config_dir()) == REPO / "conf"


def test_data_files_ship_every_config_and_every_sweep_preset():
    """pyproject's data-files, read as setuptools reads them: each conf/ YAML, every preset of
    conf/sweep/ (``full`` included), lands in share/thermojax/conf/ at its own relative path."""
    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"
    ]
    shipped = {
        f"{target}/{path.name}"
        for target, patterns in data_files.items()
        for pattern in patterns
        for path in REPO.glob(pattern)
    }
    configs = {
        f"share/thermojax/conf/{p.relative_to(REPO / 'conf').as_posix()}"
        for p in (REPO / "conf").rglob("*.yaml")
    }
    assert configs == shipped
    presets = {p.stem for p in (REPO / "conf" / "sweep").glob("*.yaml")}
    assert {"smoke", "bits_x_groups", "thresholds", "full", "weights"} <= presets
