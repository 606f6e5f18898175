"""The family seam is real: a toy family, defined in this file alone, runs the whole baseline
command (JSON, HTML report, phase table) without a line of thermojax knowing it.

The toy is a linear denoiser on a 4-dim state with T = 20 steps, its folder recognised by a
marker file, its samples compared with fp32 by its own kind of sample (drift and the final
samples' distance), graded by its own rule and previewed by its own template partial.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from thermojax.cli import baseline as baseline_module
from thermojax.cli.config import to_config
from thermojax.core.quant import QTensor
from thermojax.models.base import dense, run_sampler
from thermojax.pipeline.families import DiffusionFamily, LoadedModel, register_family
from thermojax.pipeline.families.base import check_model
from thermojax.pipeline.quality.drift import drift_figures
from thermojax.pipeline.quality.grading import grade, graded
from thermojax.pipeline.quality.kind import (
    FigureLabel,
    QualityKind,
    SampleQuality,
    register_quality_kind,
)
from thermojax.pipeline.results.schema import read_result

MARKER = "toy-denoiser.json"


@struct.dataclass
class ToyDenoiser:
    """``x_{t-1} = x_t - 0.1 * x_t @ W + noise``: one quantizable 4 x 4 layer."""

    weight: jax.Array
    family: ClassVar[str] = "toy-linear"
    name: ClassVar[str] = "toy-linear"
    num_timesteps: ClassVar[int] = 20
    layer_names: ClassVar[tuple[str, ...]] = ("w",)
    layer_input_widths: ClassVar[tuple[int, ...]] = (4,)
    data_shape: ClassVar[tuple[int, ...]] = (4,)
    state_size: ClassVar[int] = 4
    reference: ClassVar[None] = None

    def quantizable_weights(self) -> dict[str, jax.Array]:
        return {"w": self.weight}

    def num_parameters(self) -> int:
        return int(self.weight.size)

    def denoise(self, weights, x_t, t, *, act_hook=None):
        x = x_t if act_hook is None else act_hook(0, x_t, t)
        # A layer's weight is its [in, out] kernel, or packed: a QTensor of the [out, in]
        # transpose, dequantized here, where the layer uses it.
        w = weights["w"]
        kernel = dense(w, x).T if isinstance(w, QTensor) else dense(w, x)
        return x @ kernel, (x_t,)

    def initial_state(self, key, num_samples):
        return jax.random.normal(key, (num_samples, 4))

    def step(self, weights, x_t, t, key, *, act_hook=None):
        eps, inputs = self.denoise(weights, x_t, t, act_hook=act_hook)
        return x_t - 0.1 * eps + 0.01 * jax.random.normal(key, x_t.shape), inputs

    def sample(self, weights=None, *, key, num_samples, act_hook=None, sampler=None):
        weights = self.quantizable_weights() if weights is None else weights
        x0, trajectory, _ = run_sampler(
            self, weights, key=key, num_samples=num_samples, act_hook=act_hook, sampler=sampler
        )
        return x0, trajectory

    def to_pixels(self, x):
        return np.asarray(x)


@dataclasses.dataclass(frozen=True, kw_only=True)
class VectorQuality(SampleQuality):
    kind: ClassVar[str] = "toy-vector"
    final_distance: float = math.nan
    norm_fp32: float = math.nan
    norm_quantized: float = math.nan


def evaluate_vectors(model, fp32, quantized, edges, weight_report, **_: Any) -> VectorQuality:
    traj_f, traj_q = np.asarray(fp32.trajectory, np.float64), np.asarray(quantized.trajectory)
    x_f, x_q = np.asarray(fp32.x0, np.float64), np.asarray(quantized.x0, np.float64)
    return VectorQuality(
        **drift_figures(model, fp32, quantized, edges, np.mean((traj_q - traj_f) ** 2, (1, 2))),
        final_distance=float(np.mean(np.linalg.norm(x_q - x_f, axis=1))),
        norm_fp32=float(np.mean(np.linalg.norm(x_f, axis=1))),
        norm_quantized=float(np.mean(np.linalg.norm(x_q, axis=1))),
        model_cosine=float(weight_report.model_cosine),
        num_samples=len(x_f),
    )


def grade_vectors(quality: VectorQuality, bands: Any) -> list:
    distance = quality.final_distance
    return [graded(grade(distance, 0.05, 0.5), f"distance {distance:.3f}", "distance <= 0.05", "")]


PARTIAL = """{% macro cards(r) %}<div class="card"><div class="label">Toy distance</div>
<div class="value">{{ r.quality.final_distance | num(4) }}</div></div>{% endmacro %}
{% macro section(r) %}<h2>Toy vectors</h2><p id="toy">{{ r.quality.norm_fp32 | num(4) }}</p>
{% endmacro %}"""


class ToyFamily(DiffusionFamily):
    name = "toy-linear"
    description = "the toy linear denoiser"

    def recognises(self, config) -> bool:
        path = config.model.path
        return path is not None and (Path(path) / MARKER).is_file()

    def load(self, config) -> LoadedModel:
        weight = json.loads((Path(config.model.path) / MARKER).read_text())["weight"]
        model = ToyDenoiser(jnp.asarray(weight, jnp.float32))
        check_model(config, model)
        return LoadedModel(model)


@pytest.fixture(scope="module")
def toy_family(tmp_path_factory):
    """The toy family and its kind of sample, registered as a plugin would register them."""
    from thermojax.pipeline.families import registry
    from thermojax.pipeline.quality import kind as kinds

    templates = tmp_path_factory.mktemp("toy-templates")
    (templates / "samples").mkdir()
    (templates / "samples" / "_toy-vector.html.j2").write_text(PARTIAL)
    kind = register_quality_kind(
        QualityKind(
            name="toy-vector",
            type=VectorQuality,
            evaluate=evaluate_vectors,
            compared=("drift_mean", "final_distance"),
            fp32_reference=("norm_fp32",),
            labels={"final_distance": FigureLabel("final distance", False, 4, 3)},
            grade=grade_vectors,
            template_folder=str(templates),
        )
    )
    family = ToyFamily()
    family.quality = kind
    register_family(family)
    yield family
    registry._FAMILIES.pop(family.name)  # leave the registries as other tests expect them
    kinds._KINDS.pop(kind.name)


@pytest.fixture
def toy_folder(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    weight = np.eye(4) + 0.1 * np.random.default_rng(0).standard_normal((4, 4))
    (folder / MARKER).write_text(json.dumps({"weight": weight.tolist()}))
    return folder


def execute(tmp_path, monkeypatch, folder: Path, **settings: Any) -> Mapping[str, Path]:
    """The baseline command's own function, in this process, with the cache in tmp_path."""
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(baseline_module, "enable_compilation_cache", lambda: None)
    config = {
        "model": {"path": str(folder)},
        "bit_width": 4,
        "group_size": 4,
        "num_time_groups": 4,
        "calibration": {"samples": 8, "samples_per_step": 8},
        "sampling": {"num_samples": 8},
        "wandb": {"mode": "disabled"},
        **settings,
    }
    return baseline_module.execute(to_config(config), tmp_path / "out")


def test_a_toy_family_runs_the_whole_baseline_command(
    toy_family, toy_folder, tmp_path, monkeypatch
):
    files = execute(tmp_path, monkeypatch, toy_folder)
    data = json.loads(files["json"].read_text())
    quality = data["quality"]
    assert quality["kind"] == "toy-vector" and len(quality["drift_per_timestep"]) == 20
    assert set(quality) >= {"final_distance", "norm_fp32", "norm_quantized"}
    assert "final_mse" not in quality and "token_agreement" not in quality
    assert data["model_name"] == "toy-linear" and data["num_timesteps"] == 20
    assert data["sampler"]["description"] == "toy-linear sampler, 20 steps"
    assert data["config"]["sampling"]["sampler"] is None
    verdict = data["interpretation"]
    assert verdict["quality_detail"].startswith("distance ") and verdict["verdict"] is not None
    result = read_result(files["json"])
    assert result.quality == VectorQuality(**{k: v for k, v in quality.items() if k != "kind"})
    html = files["html"].read_text()
    assert "Toy distance" in html and f'<p id="toy">{quality["norm_fp32"]:.4f}</p>' in html
    assert "Frechet" not in html and "Token" not in html
    with np.load(files["samples"]) as samples:
        assert samples["fp32"].shape == (8, 4)


def test_a_toy_familys_phase_table(toy_family, toy_folder, tmp_path, monkeypatch):
    phases = {
        "enabled": True,
        "seeds": 2,
        "windows": [1],
        "min_group_size": 1,
        "variants": ["smooth-linear-w1", "phase3-mw1"],
    }
    files = execute(tmp_path, monkeypatch, toy_folder, phases=phases)
    table = json.loads(files["phases_json"].read_text())
    assert table["family"] == "toy-vector" and set(table["fp32"]) == {"norm_fp32"}
    assert [row["variant"] for row in table["rows"]] == [
        "baseline",
        "smooth-linear-w1",
        "phase3-mw1",
    ]
    for row in table["rows"]:
        assert set(row["paired_delta"]) == {"drift_mean", "final_distance"}
        assert row["final_distance"]["mean"] >= 0 and "final_mse" not in row
    header = files["phases_csv"].read_text().splitlines()[0].split(",")
    assert "final_distance_mean" in header and "final_distance_paired_delta_mean" in header
    assert "final distance" in files["html"].read_text()


def test_what_a_toy_family_does_not_take_is_refused_before_any_work(
    toy_family, toy_folder, tmp_path, monkeypatch
):
    from thermojax.errors import UserInputError

    with pytest.raises(UserInputError, match="the toy linear denoiser has no quantized checkpoint"):
        execute(tmp_path, monkeypatch, toy_folder, export={"path": str(tmp_path / "ckpt")})
    with pytest.raises(UserInputError, match="sampling.unmasking='random': only for a masked-diff"):
        execute(tmp_path, monkeypatch, toy_folder, sampling={"unmasking": "random"})
    assert not (tmp_path / "out" / "baseline_metrics.json").exists()
