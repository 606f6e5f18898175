"""The phase experiment: variants, parameters measured on what the sampler uses, the table.

The end-to-end test runs the real command (``experiment=phases`` with a reduced seed count and
variant list) and recomputes every figure of its table from the per-run records with numpy.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from phase_experiment import SEEDS, VARIANTS
from smoothing_reference import ref_smooth_boundaries, ref_smooth_groups

from thermojax.cli.config import to_config
from thermojax.core.timegroups import group_activation_params, uniform_edges
from thermojax.errors import UserInputError
from thermojax.pipeline.measure.calibrate import CalibrationStats
from thermojax.pipeline.quality.kind import quality_kind
from thermojax.pipeline.run.phases import phase_table, record_file_name
from thermojax.pipeline.run.variants import (
    Smoothing,
    Variant,
    baseline_variant,
    build_variants,
    compute_parameters,
    config_variant,
)

QMAX = 255


def window_max_jumps(schedule: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Independent float64 reference: per boundary, the largest |s[t+1] - s[t]| / s[t] in its window.

    Boundary b (between groups b-1 and b) owns the second half of group b-1 (all of it when b-1
    is the first group) and the first half of group b (all of it when b is the last group), so
    the windows tile [0, T); step t -> t+1 belongs to the window that holds t+1.
    """
    s = np.asarray(schedule, np.float64)
    num_timesteps = s.shape[-1]
    sizes = np.diff(edges)
    num_groups = len(sizes)
    starts = [edges[b] - (sizes[0] if b == 1 else sizes[b - 1] // 2) for b in range(1, num_groups)]
    starts.append(num_timesteps)
    jumps = np.abs(np.diff(s, axis=-1)) / s[..., :-1]
    out = np.zeros(s.shape[:-1] + (num_groups - 1,))
    for b in range(num_groups - 1):
        steps = [t for t in range(num_timesteps - 1) if starts[b] <= t + 1 < starts[b + 1]]
        out[..., b] = jumps[..., steps].max(axis=-1)
    return out


def synthetic_stats(num_layers=3, num_timesteps=48, samples=16, seed=0) -> CalibrationStats:
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, num_timesteps)
    width = 0.5 + 2.0 * t[None, :] * rng.uniform(0.5, 1.5, (num_layers, 1))
    width = width * np.exp(rng.normal(0.0, 0.05, (num_layers, num_timesteps)))
    values = rng.uniform(-1.0, 1.0, (num_layers, num_timesteps, samples)) * width[..., None]
    values = (values + 0.3 * width[..., None]).astype(np.float32)
    return CalibrationStats(
        layer_names=tuple(f"layer{i}" for i in range(num_layers)),
        act_min=values.min(-1),
        act_max=values.max(-1),
        act_mean=values.mean(-1),
        act_std=values.std(-1),
        act_samples=values,
    )


@pytest.fixture(scope="module")
def stats() -> CalibrationStats:
    return synthetic_stats()


def compute(stats, variant, num_groups=4):
    cfg = to_config({})
    return compute_parameters(
        stats,
        variant,
        num_groups=num_groups,
        act_bits=8,
        threshold=0.05,
        optimization=cfg.thermo.optimization,
    )


def test_baseline_variant_is_the_group_parameters(stats):
    p = compute(stats, baseline_variant())
    edges = uniform_edges(48, 4)
    scales, zps = group_activation_params(stats.act_min, stats.act_max, edges, bits=8)
    np.testing.assert_array_equal(p.edges, edges)
    np.testing.assert_array_equal(p.param_edges, edges)
    np.testing.assert_allclose(p.scales, np.asarray(scales), rtol=0)
    np.testing.assert_array_equal(p.zero_points, np.asarray(zps))


@pytest.mark.parametrize("method", ["linear", "cubic", "sigmoid"])
def test_smoothed_schedule_is_measured_per_window(stats, method):
    variant = Variant("s", "phase 2", smoothing=Smoothing(method, 5))
    p = compute(stats, variant)
    assert p.scales.shape == (3, 48) and p.param_edges.tolist() == list(range(49))
    # The schedule is the baseline's group parameters blended across each boundary; zero points
    # as applied: the blend rounded to the nearest integer in [0, qmax].
    base = compute(stats, baseline_variant())
    want_scales = ref_smooth_boundaries(base.scales, base.edges, 5, method)
    want_zps = ref_smooth_boundaries(base.zero_points, base.edges, 5, method)
    np.testing.assert_allclose(p.scales, want_scales, rtol=2e-6)
    assert_rounded_to_nearest(p.zero_points, want_zps)
    assert p.zero_points.min() >= 0 and p.zero_points.max() <= QMAX
    expected = window_max_jumps(p.scales, p.edges)
    np.testing.assert_allclose(p.metrics.windows.scale_jumps, expected, rtol=1e-5)
    # The windowed view never reports more than the baseline's boundary jump for a linear blend
    # of increasing ranges (each step is a fraction of it).
    if method == "linear":
        assert np.all(p.metrics.windows.scale_jumps <= base.metrics.windows.scale_jumps + 1e-6)


def test_reference_window_helper_matches_group_metrics_for_constant_groups(stats):
    """Self-check of the reference: piecewise-constant schedules give the group jumps."""
    base = compute(stats, baseline_variant())
    schedule = np.repeat(base.scales, np.diff(base.edges), axis=1)
    s = base.scales.astype(np.float64)
    np.testing.assert_allclose(
        window_max_jumps(schedule, base.edges), np.abs(np.diff(s, axis=1)) / s[:, :-1], rtol=1e-6
    )


def assert_rounded_to_nearest(zero_points: np.ndarray, blended: np.ndarray) -> None:
    """``zero_points`` is ``blended`` rounded to the nearest integer, ties (float32 round-off
    of a half-integer) either way."""
    want = np.clip(np.round(blended), 0, QMAX)
    tie = np.abs(blended - np.floor(blended) - 0.5) < 1e-3
    assert np.any(want != np.floor(blended))  # the case tells nearest from rounding down
    np.testing.assert_array_equal(zero_points[~tie], want[~tie])
    assert np.all(np.abs(zero_points - want) <= tie)


@pytest.mark.parametrize(("method", "window"), [("linear", 1), ("cubic", 2), ("sigmoid", 3)])
def test_group_level_smoothing_stays_per_group(stats, method, window):
    variant = Variant("g", "phase 2 (groups)", smoothing=Smoothing(method, window, "group"))
    p = compute(stats, variant)
    assert p.scales.shape == (3, 4) and p.param_edges.tolist() == p.edges.tolist()
    base = compute(stats, baseline_variant())
    # Each group's parameters become the kernel-weighted mean of its neighbours' (float64 loop).
    want_scales = ref_smooth_groups(base.scales, window, method)
    assert not np.allclose(want_scales, base.scales)  # smoothing changes them
    np.testing.assert_allclose(p.scales, want_scales, rtol=2e-6)
    assert_rounded_to_nearest(p.zero_points, ref_smooth_groups(base.zero_points, window, method))
    assert p.metrics.windows.smoothness_score.mean() > base.metrics.windows.smoothness_score.mean()


def test_phase3_reports_iterations_and_keeps_integer_zero_points(stats):
    p = compute(stats, Variant("o", "phase 3", markov_weight=10.0))
    opt = p.optimization
    assert opt.iterations.shape == (3,) and np.all(opt.iterations >= 1)
    np.testing.assert_array_equal(p.zero_points, np.clip(np.round(opt.zero_points), 0, QMAX))
    np.testing.assert_array_equal(p.scales, opt.scales)
    base = compute(stats, baseline_variant())
    assert np.mean(opt.markov_penalty_after) <= np.mean(opt.markov_penalty_before)
    assert p.metrics.windows.smoothness_score.mean() >= base.metrics.windows.smoothness_score.mean()


def test_adaptive_window_larger_than_a_group_is_a_user_error(stats):
    variant = Variant(
        "a", "combination", strategy="adaptive", lam=0.0, smoothing=Smoothing("linear", 12)
    )
    with pytest.raises(UserInputError, match="thermo.smoothing.window=12: larger than a group"):
        compute(stats, variant, num_groups=6)


def test_record_file_names_are_safe_and_distinct():
    names = {record_file_name(i, v, s) for i, v in enumerate(["a+b", "a b", "a/b"]) for s in (0, 1)}
    assert len(names) == 6
    assert all("/" not in n and " " not in n and "+" not in n for n in names)
    assert record_file_name(4, "adaptive+smooth", 1) == "04-adaptive_smooth-seed1.json"


def test_variants_from_config_and_unknown_names():
    cfg = to_config({"phases": {"enabled": True}})
    names = [v.name for v in build_variants(cfg)]
    assert names[0] == "baseline" and len(names) == len(set(names))
    assert {"smooth-cubic-w25", "smooth-groups-linear-w1", "phase3-mw10", "adaptive-lam0.1"} <= set(
        names
    )
    assert {"adaptive+smooth", "smooth+phase3", "adaptive+smooth+phase3"} <= set(names)
    cfg = to_config({"phases": {"enabled": True, "variants": ["phase3-mw1"]}})
    assert [v.name for v in build_variants(cfg)] == ["baseline", "phase3-mw1"]
    cfg = to_config({"phases": {"enabled": True, "variants": ["nope"]}})
    with pytest.raises(UserInputError, match=r"phases.variants=\['nope'\]: unknown variant"):
        build_variants(cfg)


def test_config_variant_describes_the_single_run():
    cfg = to_config(
        {
            "thermo": {"smoothing": {"enabled": True, "method": "cubic", "window": 10}},
            "time_groups": {"strategy": "adaptive", "lambda": 0.2, "min_group_size": 10},
        }
    )
    variant = config_variant(cfg)
    assert variant.phase == "combination" and variant.per_timestep
    assert variant.lam == 0.2 and variant.smoothing == Smoothing("cubic", 10, "timestep", 10.0)
    assert variant.markov_weight is None


def test_group_level_config_smooths_the_groups_of_the_single_run(stats):
    cfg = to_config(
        {
            "thermo": {
                "smoothing": {"enabled": True, "level": "group", "window": 2, "method": "cubic"}
            }
        }
    )
    variant = config_variant(cfg)
    assert variant.phase == "phase 2" and not variant.per_timestep
    assert variant.smoothing == Smoothing("cubic", 2, "group", 10.0)
    p = compute(stats, variant)
    base = compute(stats, baseline_variant())
    np.testing.assert_allclose(p.scales, ref_smooth_groups(base.scales, 2, "cubic"), rtol=2e-6)


def fake_records(rng, variants=("baseline", "a", "b"), seeds=(3, 4, 5), family="image"):
    records = []
    for i, name in enumerate(variants):
        for seed in seeds:
            record = {m: float(rng.normal()) for m in quality_kind(family).phase_spreads()}
            record.update(
                index=i,
                variant=name,
                phase="phase 2",
                description=name,
                seed=seed,
                edges=[0, 5, 10],
                drift_per_group=rng.normal(size=2).tolist(),
                drift_per_timestep=rng.normal(size=10).tolist(),
                param_time_s=float(rng.uniform()),
                param_compile_s=0.0,
                sampling_time_s=float(rng.uniform(0.5, 1.0)),
            )
            records.append(record)
    return records


@pytest.mark.parametrize("family", ["image", "text"])
def test_phase_table_is_mean_and_sample_std_of_the_records(family):
    rng = np.random.default_rng(1)
    records = fake_records(rng, family=family)
    rows = phase_table(records, kind=quality_kind(family))
    assert [r["variant"] for r in rows] == ["baseline", "a", "b"]
    check_table(rows, records, family)
    other = quality_kind("text" if family == "image" else "image").compared
    assert not any(m in row or m in row["paired_delta"] for row in rows for m in other[1:])


def test_a_figure_missing_from_the_records_is_left_out_not_averaged():
    """A masked-diffusion LM without held-out text has no held-out perplexity: no row and no
    paired delta carries one (rather than a NaN mean)."""
    records = fake_records(np.random.default_rng(2), family="text")
    for record in records:
        del record["heldout_perplexity_quantized"]
    rows = phase_table(records, kind=quality_kind("text"))
    assert all("heldout_perplexity_quantized" not in row for row in rows)
    assert all(set(row["paired_delta"]) == set(quality_kind("text").compared[:-1]) for row in rows)


def check_table(rows, records, family="image"):
    """Every figure of the table from the records, recomputed with numpy (float64)."""
    by = {}
    for r in records:
        by.setdefault(r["variant"], []).append(r)
    base = {r["seed"]: r for r in by["baseline"]}
    base_row = next(r for r in rows if r["variant"] == "baseline")
    for row in rows:
        runs = by[row["variant"]]
        assert row["num_seeds"] == len(runs)
        for m in quality_kind(family).phase_spreads():
            values = np.array([r[m] for r in runs], np.float64)
            assert row[m]["mean"] == pytest.approx(values.mean(), rel=1e-12, abs=1e-15)
            std = values.std(ddof=1) if len(values) > 1 else 0.0
            assert row[m]["std"] == pytest.approx(std, rel=1e-9, abs=1e-15)
        groups = np.array([r["drift_per_group"] for r in runs], np.float64)
        for g, spread in enumerate(row["drift_per_group"]):
            assert spread["mean"] == pytest.approx(groups[:, g].mean(), rel=1e-12, abs=1e-15)
            assert spread["std"] == pytest.approx(groups[:, g].std(ddof=1), rel=1e-9, abs=1e-15)
        np.testing.assert_allclose(
            row["drift_per_timestep"],
            np.mean([r["drift_per_timestep"] for r in runs], axis=0),
            rtol=1e-12,
        )
        for m in quality_kind(family).compared:
            delta = np.array([r[m] - base[r["seed"]][m] for r in runs], np.float64)
            assert row["paired_delta"][m]["mean"] == pytest.approx(delta.mean(), abs=1e-12)
            assert row["paired_delta"][m]["std"] == pytest.approx(delta.std(ddof=1), abs=1e-12)
        param = np.mean([r["param_time_s"] for r in runs])
        assert row["param_time_s"] == pytest.approx(param, rel=1e-12)
        assert row["param_extra_s"] == pytest.approx(param - base_row["param_time_s"], abs=1e-12)
        ratio = row["sampling_time_s"]["mean"] / base_row["sampling_time_s"]["mean"]
        assert row["sampling_ratio"] == pytest.approx(ratio, rel=1e-12)


# --- end to end: the real command --------------------------------------------------------------


@pytest.fixture(scope="module")
def phase_run(phase_experiment):
    """The folder of the suite's one real phase experiment (tests/phase_experiment.py: VARIANTS
    over SEEDS seeds, W&B offline), made once per test run and also read by test_tracking."""
    out, _ = phase_experiment
    return out


@pytest.mark.slow
def test_phase_experiment_end_to_end(phase_run):
    out = phase_run
    table = json.loads((out / "phases.json").read_text())
    metrics = json.loads((out / "baseline_metrics.json").read_text())
    assert metrics["phases"] == table  # the same table in both places
    records = [json.loads(p.read_text()) for p in sorted((out / "phases").glob("*.json"))]
    names = ["baseline", *VARIANTS]
    assert len(records) == len(names) * SEEDS
    assert sorted({r["variant"] for r in records}) == sorted(names)
    assert table["seeds"] == [0, 1] and sorted({r["seed"] for r in records}) == [0, 1]
    assert [row["variant"] for row in table["rows"]] == names
    check_table(table["rows"], records)
    # fp32 samples are shared per seed: every variant of a seed saw the same fp32 reference.
    for seed in (0, 1):
        fp32 = {r["frechet_fp32"] for r in records if r["seed"] == seed}
        assert len(fp32) == 1
    fp32_by_seed = [next(r["frechet_fp32"] for r in records if r["seed"] == s) for s in (0, 1)]
    assert table["fp32"]["frechet_fp32"]["mean"] == pytest.approx(np.mean(fp32_by_seed), rel=1e-12)
    # Parameters do not depend on the seed: no spread in smoothness or violations.
    for row in table["rows"]:
        assert row["smoothness_score"]["std"] == 0 and row["violation_count"]["std"] == 0
    # The CSV carries the same numbers.
    with open(out / "phases.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["variant"] for r in rows] == names
    for line, row in zip(rows, table["rows"], strict=True):
        assert float(line["final_mse_mean"]) == row["final_mse"]["mean"]
        assert float(line["frechet_quantized_std"]) == row["frechet_quantized"]["std"]
        assert float(line["drift_group3_mean"]) == row["drift_per_group"][3]["mean"]
        assert (
            float(line["final_mse_paired_delta_mean"]) == row["paired_delta"]["final_mse"]["mean"]
        )
    # The baseline row is the run's own baseline: same calibration, same noise (seed 0).
    base0 = next(r for r in records if r["variant"] == "baseline" and r["seed"] == 0)
    assert base0["final_mse"] == pytest.approx(metrics["quality"]["final_mse"], rel=1e-12)
    assert base0["smoothness_score"] == pytest.approx(metrics["smoothness_score"], rel=1e-6)
    html = (out / "baseline_metrics.html").read_text()
    assert "Phase table: every variant on one calibration" in html
    for name in names:
        assert f"<td>{name}</td>" in html
    assert html.count("<svg") >= 3 + html.count("digits")  # scatter + drift charts drawn


@pytest.mark.slow
def test_phase_records_are_complete_json(phase_run):
    for path in (phase_run / "phases").glob("*.json"):
        record = json.loads(path.read_text())
        assert len(record["drift_per_timestep"]) == 1000
        assert len(record["drift_per_group"]) == 4
        assert path.name == record_file_name(record["index"], record["variant"], record["seed"])
    assert not list(phase_run.rglob(".*.tmp"))  # atomic writes left no temp files
