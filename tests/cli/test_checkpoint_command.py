"""`python -m thermojax.baseline model.path=HF_FOLDER`: a user's checkpoint, measured weight-only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from thermojax.models.hf import write_dream_like

pytestmark = pytest.mark.slow


def command(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "thermojax.baseline", *args, "wandb=disabled"],
        check=False,
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
            "THERMOJAX_CACHE_DIR": str(tmp_path / "cache"),
            "JAX_PLATFORMS": "cpu",
            "NO_COLOR": "1",
        },
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt") / "dream-like"
    return write_dream_like(folder, scale=64, layers=2, max_shard_bytes=400_000)


def test_the_command_measures_a_sharded_checkpoint_weight_only(checkpoint, tmp_path):
    out = tmp_path / "run"
    proc = command(
        [f"model.path={checkpoint}", "bit_width=4", "group_size=8", f"hydra.run.dir={out}"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "baseline_metrics.json").read_text())
    assert data["mode"] == "weight-only" and data["quality"] is None
    assert data["model_name"] == "dream-like"
    quantized = [t for t in data["weights"]["tensors"] if t["bits"] is not None]
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert not (out / "samples.npz").exists()
    html = (out / "baseline_metrics.html").read_text()
    assert "weight-only" in html and "No per-timestep activation statistics" in html
    worst = min(quantized, key=lambda t: t["cosine"])
    assert worst["name"] in html
    assert "weight-only, INT4 weights" in proc.stdout
    assert "no per-timestep activation statistics" in proc.stdout


def test_a_truncated_shard_is_one_line_and_nothing_is_written(checkpoint, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    shards = sorted(checkpoint.glob("*.safetensors"))
    for file in checkpoint.iterdir():
        data = file.read_bytes()
        (broken / file.name).write_bytes(data[:-100] if file == shards[-1] else data)
    out = tmp_path / "never"
    proc = command([f"model.path={broken}", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: model.path=")
    assert shards[-1].name in lines[0] and "truncated" in lines[0]
    assert not out.exists()


def test_a_weight_only_sweep_and_its_comparison_page(checkpoint, tmp_path):
    sweep = tmp_path / "sweep"
    proc = command(
        [
            "-m",
            "sweep=weights",
            f"model.path={checkpoint}",
            "bit_width=4,8",
            "group_size=4,8",
            "hydra/launcher=basic",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    reports = sorted(sweep.glob("*/baseline_metrics.json"))
    assert len(reports) == 4
    data = [json.loads(p.read_text()) for p in reports]
    sizes = {
        (d["bit_width"], d["config"]["group_size"]): d["weights"]["total_quantized_bytes"]
        for d in data
    }
    cosine = {(d["bit_width"], d["config"]["group_size"]): d["cosine_similarity"] for d in data}
    assert sizes[(4, 8)] < sizes[(8, 8)] and sizes[(4, 8)] < sizes[(4, 4)]
    compare = subprocess.run(
        [sys.executable, "-m", "thermojax.compare", str(sweep)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compare.returncode == 0, compare.stderr
    page = (sweep / "comparison.html").read_text()
    assert "Weight cosine over bit width and group size" in page
    for (bits, group), value in cosine.items():  # each cell shows its run's cosine
        assert f"INT{bits}, group {group}: weight cosine {value:.5f}" in page
    assert "Smoothness over bit width" not in page  # no smoothness without statistics
