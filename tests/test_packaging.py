"""A wheel carries everything a non-editable install needs: configs, presets, checkpoint, templates."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_configs_presets_checkpoint_and_templates(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("thermojax-*.whl")
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


def test_config_dir_is_the_source_checkout_here():
    from thermojax.cli.baseline import config_dir

    assert Path(config_dir()) == REPO / "conf"
