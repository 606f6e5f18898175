"""Enhanced single runs: baseline beside enhanced, metrics on the parameters used, config.

The enhanced run and a plain baseline run share the calibration and the sampling noise, so the
enhanced run's ``baseline`` section must equal the plain run's figures exactly. Every bad value of
the new config keys ends in one ``error: KEY=VALUE: reason`` line, exit status 2, nothing written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from smoothing_reference import ref_smooth_groups
from test_phases import window_max_jumps

from thermojax.cli.baseline import main
from thermojax.cli.config import register_configs, to_config
from thermojax.cli.outputs import write_outputs
from thermojax.pipeline import run, stage_names
from thermojax.pipeline.results.schema import read_result

CONF = Path(__file__).resolve().parents[2] / "conf"

BAD_VALUES = [
    (["thermo.smoothing.window=0"], "thermo.smoothing.window=0: "),
    (
        ["thermo.smoothing.enabled=true", "thermo.smoothing.window=300"],
        "thermo.smoothing.window=300: larger than a group",
    ),
    (
        [
            "thermo.smoothing.enabled=true",
            "time_groups.strategy=adaptive",
            "time_groups.min_group_size=10",
            "thermo.smoothing.window=25",
        ],
        "thermo.smoothing.window=25: larger than a group",
    ),
    (
        [
            "thermo.smoothing.enabled=true",
            "thermo.smoothing.level=group",
            "thermo.smoothing.window=4",
        ],
        "thermo.smoothing.window=4: ",
    ),
    (["thermo.smoothing.method=quadratic"], "thermo.smoothing.method='quadratic': must be one of"),
    (["thermo.smoothing.level=layer"], "thermo.smoothing.level='layer': must be one of"),
    (["thermo.smoothing.steepness=0"], "thermo.smoothing.steepness=0.0: "),
    (["thermo.smoothing.window=abc"], "thermo.smoothing.window=abc"),
    (["thermo.optimization.markov_weight=-1"], "thermo.optimization.markov_weight=-1.0: "),
    (["thermo.optimization.kl_weight=-0.5"], "thermo.optimization.kl_weight=-0.5: "),
    (["thermo.optimization.entropy_weight=-2"], "thermo.optimization.entropy_weight=-2.0: "),
    (["thermo.optimization.learning_rate=0"], "thermo.optimization.learning_rate=0.0: "),
    (["thermo.optimization.grad_clip=-1"], "thermo.optimization.grad_clip=-1.0: "),
    (["thermo.optimization.max_iterations=0"], "thermo.optimization.max_iterations=0: "),
    (["thermo.optimization.patience=0"], "thermo.optimization.patience=0: "),
    (
        ["thermo.optimization.convergence_threshold=-1e-3"],
        "thermo.optimization.convergence_threshold=-0.001: ",
    ),
    (["time_groups.strategy=greedy"], "time_groups.strategy='greedy': must be one of"),
    (["time_groups.lambda=-0.1"], "time_groups.lambda=-0.1: "),
    (["time_groups.lambda=much"], "time_groups.lambda=much"),
    (["time_groups.cost=l1"], "time_groups.cost='l1': must be one of"),
    (["time_groups.min_group_size=0"], "time_groups.min_group_size=0: "),
    (
        ["time_groups.strategy=adaptive", "time_groups.min_group_size=300"],
        "time_groups.min_group_size=300: must be <= T // num_time_groups = 250",
    ),
    (["time_groups.lam=0.1"], "time_groups.lam=0.1: unknown config key"),
    (["experiment=phases", "phases.seeds=0"], "phases.seeds=0: "),
    (["experiment=phases", "phases.windows=[0]"], "phases.windows=0: "),
    (["experiment=phases", "phases.windows=[400]"], "phases.windows=400: larger than a group"),
    (["experiment=phases", "phases.methods=[quad]"], "phases.methods='quad': must be one of"),
    (["experiment=phases", "phases.markov_weights=[-1]"], "phases.markov_weights=-1.0: "),
    (["experiment=phases", "phases.variants=[nope]"], "phases.variants=['nope']: unknown variant"),
]


@pytest.mark.parametrize(("args", "named"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_value_is_one_line_exit_2_and_writes_nothing(
    args, named, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / "cache"))
    # In-process, Hydra would look for conf/ as a package beside the module; this makes it resolve
    # config_path against thermojax/baseline.py, as `python -m thermojax.baseline` does.
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(
        sys, "argv", ["thermojax.baseline", *args, "wandb=disabled", f"hydra.run.dir={work}/run"]
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert named in lines[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert list(work.iterdir()) == []


def composed(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_experiment_phases_takes_bit_width_from_the_command_line():
    cfg = to_config(composed("experiment=phases", "bit_width=4"))
    assert cfg.bit_width == 4 and cfg.phases.enabled and cfg.phases.seeds >= 5
    assert not cfg.enhanced  # the single run stays the baseline
    assert stage_names(cfg)[-1] == "phase experiment"


def test_new_keys_reach_the_typed_config():
    cfg = to_config(
        composed(
            "thermo.smoothing.enabled=true",
            "thermo.smoothing.method=sigmoid",
            "thermo.smoothing.steepness=6",
            "thermo.optimization.enabled=true",
            "thermo.optimization.markov_weight=0.5",
            "time_groups.strategy=adaptive",
            "time_groups.lambda=0.2",
            "time_groups.min_group_size=30",
        )
    )
    assert cfg.thermo.smoothing.method == "sigmoid" and cfg.thermo.smoothing.steepness == 6.0
    assert cfg.thermo.optimization.markov_weight == 0.5
    assert cfg.time_groups.lam == 0.2 and cfg.to_dict()["time_groups"]["lambda"] == 0.2
    assert cfg.enhanced
    assert to_config(cfg.to_dict()) == cfg  # a Result's config reads back
    names = stage_names(cfg)
    assert names.index("enhance parameters") < names.index("sample fp32")
    assert names.index("sample enhanced") < names.index("evaluate quality")


# --- an enhanced run beside a plain baseline run -------------------------------------------------

COMMON = {
    "calibration": {"samples": 16, "samples_per_step": 32},
    "sampling": {"num_samples": 16},
    "wandb": {"mode": "disabled"},
}
ENHANCED = {
    **COMMON,
    "thermo": {
        "smoothing": {"enabled": True, "method": "cubic", "window": 20},
        "optimization": {"enabled": True, "markov_weight": 1.0, "max_iterations": 60},
    },
    "time_groups": {"strategy": "adaptive", "lambda": 0.05, "min_group_size": 40},
}
GROUP_SMOOTHED = {
    **COMMON,
    "thermo": {"smoothing": {"enabled": True, "level": "group", "method": "linear", "window": 1}},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("enhanced")
    mp = pytest.MonkeyPatch()
    mp.setenv("THERMOJAX_CACHE_DIR", str(root / "cache"))
    try:
        plain = run(to_config(COMMON))
        enhanced = run(to_config(ENHANCED))
        grouped = run(to_config(GROUP_SMOOTHED))  # same calibration and fp32 samples (cache)
    finally:
        mp.undo()
    write_outputs(plain, root / "plain")
    write_outputs(enhanced, root / "enhanced")
    write_outputs(grouped, root / "groups")
    return root


@pytest.mark.slow
def test_baseline_section_is_the_plain_run(runs):
    plain = json.loads((runs / "plain" / "baseline_metrics.json").read_text())
    data = json.loads((runs / "enhanced" / "baseline_metrics.json").read_text())
    assert "baseline" not in plain and "enhancement" not in plain
    base = data["baseline"]
    assert base["metrics"]["smoothness_score"] == plain["smoothness_score"]
    assert base["metrics"]["violation_count"] == plain["violation_count"]
    assert base["metrics"]["boundary_scores"] == plain["boundary_scores"]
    assert base["time_groups"] == plain["time_groups"]
    assert base["scales"] == [layer["scales"] for layer in plain["layers"]]
    assert base["quality"] == plain["quality"]  # same calibration, same noise
    with (
        np.load(runs / "plain" / "samples.npz") as a,
        np.load(runs / "enhanced" / "samples.npz") as b,
    ):
        np.testing.assert_array_equal(b["baseline_quantized"], a["quantized"])
        np.testing.assert_array_equal(b["fp32"], a["fp32"])
        assert not np.array_equal(b["quantized"], a["quantized"])


@pytest.mark.slow
def test_top_level_measures_the_schedule_used(runs):
    data = json.loads((runs / "enhanced" / "baseline_metrics.json").read_text())
    enh = data["enhancement"]
    assert enh["per_timestep"] and enh["strategy"] == "adaptive"
    edges = np.array([a for a, _ in data["time_groups"]] + [data["num_timesteps"]])
    assert np.diff(edges).min() >= 40  # min_group_size
    schedule = np.array(enh["schedule_scales"], np.float64)
    assert schedule.shape == (len(data["layers"]), 1000)
    # Each boundary reports the largest per-step jump inside its window.
    expected = window_max_jumps(schedule, edges)
    got = np.array([layer["scale_jumps"] for layer in data["layers"]])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    jumps = np.abs(np.diff(schedule, axis=1)) / schedule[:, :-1]
    np.testing.assert_allclose(enh["max_step_scale_jump"], jumps.max(axis=1), rtol=1e-5)
    # The group-level view: each group's mean scale, jumps between consecutive groups.
    means = np.add.reduceat(schedule, edges[:-1], axis=1) / np.diff(edges)
    np.testing.assert_allclose(
        enh["group_view"]["scale_jumps"],
        np.abs(np.diff(means, axis=1)) / means[:, :-1],
        rtol=1e-4,
        atol=5e-6,  # float32 group sums; the jump is a difference of near-equal means
    )
    assert data["violation_count"] == int((got > data["smoothness_threshold"]).sum())
    # Zero points as applied: integers.
    zps = np.array(enh["schedule_zero_points"])
    assert np.array_equal(zps, np.round(zps))


@pytest.mark.slow
def test_group_level_smoothing_is_what_the_enhanced_run_samples_with(runs):
    plain = json.loads((runs / "plain" / "baseline_metrics.json").read_text())
    data = json.loads((runs / "groups" / "baseline_metrics.json").read_text())
    enh = data["enhancement"]
    assert not enh["per_timestep"] and enh["smoothing"]["level"] == "group"
    assert data["time_groups"] == plain["time_groups"]
    base_scales = np.array([layer["scales"] for layer in plain["layers"]], np.float64)
    base_zps = np.array([layer["zero_points"] for layer in plain["layers"]], np.float64)
    assert data["baseline"]["scales"] == base_scales.tolist()
    # The top level holds the smoothed group parameters: each group the kernel-weighted mean of
    # itself and its neighbours (float64 loop), zero points rounded to the nearest integer.
    scales = np.array([layer["scales"] for layer in data["layers"]], np.float64)
    zps = np.array([layer["zero_points"] for layer in data["layers"]], np.float64)
    want = ref_smooth_groups(base_scales, 1, "linear")
    assert not np.allclose(want, base_scales)
    np.testing.assert_allclose(scales, want, rtol=2e-6)
    blended = ref_smooth_groups(base_zps, 1, "linear")
    tie = np.abs(blended - np.floor(blended) - 0.5) < 1e-3
    np.testing.assert_array_equal(zps[~tie], np.round(blended)[~tie])
    # ... and the sampler used them: other samples than the baseline's, from the same noise.
    assert data["baseline"]["quality"] == plain["quality"]
    assert data["quality"]["final_mse"] != plain["quality"]["final_mse"]
    with np.load(runs / "groups" / "samples.npz") as samples:
        np.testing.assert_array_equal(
            samples["fp32"], np.load(runs / "plain" / "samples.npz")["fp32"]
        )
        mse = np.mean((samples["quantized"].astype(np.float64) - samples["fp32"]) ** 2)
    assert mse == pytest.approx(data["quality"]["final_mse"], rel=1e-12)


@pytest.mark.slow
def test_optimization_reports_iterations_convergence_and_history(runs):
    data = json.loads((runs / "enhanced" / "baseline_metrics.json").read_text())
    opt = data["enhancement"]["optimization"]
    assert opt["target"] == "timesteps" and opt["settings"]["max_iterations"] == 60
    for steps, history, converged in zip(
        opt["iterations"], opt["loss_history"], opt["converged"], strict=True
    ):
        assert 1 <= steps <= 60 and len(history) == steps
        assert converged or steps == 60
        assert all(np.isfinite(history))
    # The best iterate is returned; the starting point is the first one scored.
    for final, initial in zip(opt["final_loss"], opt["initial_loss"], strict=True):
        assert final <= initial * (1 + 1e-6)


@pytest.mark.slow
def test_report_shows_baseline_beside_enhanced(runs):
    result = read_result(runs / "enhanced" / "baseline_metrics.json")
    html = (runs / "enhanced" / "baseline_metrics.html").read_text()
    assert "Baseline vs enhanced" in html and "Phase 3 transition optimization" in html
    section = html[html.index("Baseline vs enhanced") : html.index("<h3>Boundary scores")]
    assert f"{result.baseline.metrics.smoothness_score:.4f}" in section
    assert f"{result.smoothness_score:.4f}" in section
    assert f"{result.baseline.quality.final_mse:.4f}" in section
    assert f"{result.quality.final_mse:.4f}" in section
    assert "Phase 3 loss per layer" in html  # the loss-history chart
    plain = (runs / "plain" / "baseline_metrics.html").read_text()
    assert "Baseline vs enhanced" not in plain


@pytest.mark.parametrize("version", [1, 2])
def test_older_schema_files_still_read(version):
    from result_samples import make_result

    from thermojax.pipeline.results.schema import SCHEMA_VERSION, Result

    data = make_result(num_layers=2, num_groups=3, threshold=0.1).to_dict()
    assert SCHEMA_VERSION == 7 and data["schema_version"] == 7
    assert not {"baseline", "enhancement", "phases", "weights"} & set(data)  # omitted when absent
    del data["mode"]  # schema 3's addition
    del data["quality"]["kind"]  # schema 7's
    data["schema_version"] = version
    old = Result.from_dict(data)
    assert old.schema_version == version and old.baseline is None and old.phases is None
    assert old.mode == "diffusion" and old.weights is None


def test_a_schema_4_phase_table_reads_as_the_image_familys():
    """Before schema 5 the fp32 reference sat at the top of the table as ``fp32_frechet`` and
    ``fp32_class_coverage``; such a file reads back with those figures in ``fp32``."""
    from result_samples import phases_result

    from thermojax.pipeline.results.schema import Result

    data = phases_result().to_dict()
    table = data["phases"]
    fp32 = table.pop("fp32")
    del table["family"]
    table["fp32_frechet"], table["fp32_class_coverage"] = (
        fp32["frechet_fp32"],
        fp32["class_coverage_fp32"],
    )
    data["schema_version"] = 4
    old = Result.from_dict(data).phases
    assert old.family == "image" and old.fp32 == phases_result().phases.fp32
    assert old.compared() == (
        "drift_mean",
        "final_mse",
        "frechet_quantized",
        "class_coverage_quantized",
    )
