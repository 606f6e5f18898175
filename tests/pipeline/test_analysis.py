"""Violation analysis, ArrowQuant V2's patterns, and the interpretation bands (limits from config)."""

from __future__ import annotations

import itertools

import pytest

from thermojax.pipeline.results.schema import Violation
from thermojax.pipeline.results.verdict import (
    analyze_violations,
    boundary_regions,
    detect_patterns,
    interpret,
    severity_label,
)
from thermojax.pipeline.settings import InterpretationConfig

LAYERS = ("a", "b", "c")
BANDS = InterpretationConfig()


def violation(layer: str, boundary: int, jump: float) -> Violation:
    severity = "high" if jump > 0.5 else "medium" if jump > 0.3 else "low"
    return Violation(layer, boundary, jump, 0.0, severity)


def time_groups(num_groups: int, num_timesteps: int = 1000) -> list[tuple[int, int]]:
    edges = [i * num_timesteps // num_groups for i in range(num_groups + 1)]
    return list(itertools.pairwise(edges))


def pattern_ids(violations, num_groups, bands=BANDS, layers=LAYERS):
    analysis = analyze_violations(violations, layer_names=layers, num_boundaries=num_groups - 1)
    return [
        p.id for p in detect_patterns(analysis, time_groups=time_groups(num_groups), bands=bands)
    ]


@pytest.mark.parametrize(
    ("severity", "label"), [(0, "none"), (1, "low"), (2, "medium"), (3, "high")]
)
def test_severity_labels(severity, label):
    assert severity_label(severity) == label


def test_severity_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="severity=4"):
        severity_label(4)


def test_analysis_counts_severities_boundaries_and_layers():
    vs = [violation("a", 0, 0.35), violation("a", 2, 0.9), violation("b", 2, 0.2)]
    analysis = analyze_violations(vs, layer_names=LAYERS, num_boundaries=4)
    assert analysis.severity_distribution == {"low": 1, "medium": 1, "high": 1}
    assert analysis.boundaries_involved == (0, 2)
    assert analysis.violations_per_boundary == (1, 0, 2, 0)
    assert analysis.violations_per_layer == {"a": 2, "b": 1, "c": 0}
    assert analysis.top_layers == ("a",)
    assert analysis.max_scale_jump == 0.9
    assert analysis.mean_scale_jump == pytest.approx((0.35 + 0.9 + 0.2) / 3)


def test_analysis_without_violations_is_all_zero():
    analysis = analyze_violations([], layer_names=LAYERS, num_boundaries=3)
    assert analysis.top_layers == () and analysis.max_scale_jump == 0.0
    assert analysis.mean_scale_jump == 0.0 and analysis.boundaries_involved == ()


def test_analysis_rejects_a_foreign_layer_or_boundary():
    with pytest.raises(ValueError, match="'z'"):
        analyze_violations([violation("z", 0, 0.4)], layer_names=LAYERS, num_boundaries=3)
    with pytest.raises(ValueError, match="boundary_idx=3"):
        analyze_violations([violation("a", 3, 0.4)], layer_names=LAYERS, num_boundaries=3)


@pytest.mark.parametrize(
    ("num_boundaries", "early", "late"),
    [(1, [0], [0]), (2, [0], [1]), (3, [0], [2]), (6, [0, 1], [4, 5]), (7, [0, 1, 2], [4, 5, 6])],
)
def test_boundary_regions_are_the_first_and_last_third(num_boundaries, early, late):
    first, last = boundary_regions(num_boundaries)
    assert list(first) == early and list(last) == late


@pytest.mark.parametrize(
    ("violations", "num_groups", "expected"),
    [
        ([], 4, []),
        (
            [violation("a", 0, 0.35), violation("b", 0, 0.32), violation("c", 2, 0.31)],
            4,
            ["early_boundaries"],
        ),
        (
            [violation("a", 5, 0.35), violation("b", 4, 0.32), violation("c", 0, 0.31)],
            7,
            ["late_boundaries"],
        ),
        (
            [violation("a", 0, 0.35), violation("b", 1, 0.32), violation("c", 2, 0.31)],
            4,
            ["uniform_spread"],
        ),
        ([violation("b", 1, 0.9)], 4, ["few_high_severity"]),
        (
            [
                violation("a", 1, 0.35),
                violation("a", 2, 0.32),
                violation("b", 3, 0.31),
                violation("c", 4, 0.31),
            ],
            7,
            ["layer_concentration"],
        ),
    ],
    ids=["none", "early", "late", "uniform", "few-high", "one-layer"],
)
def test_patterns(violations, num_groups, expected):
    assert pattern_ids(violations, num_groups) == expected


def test_a_tie_between_layers_is_not_a_concentration():
    vs = [violation("a", 0, 0.35), violation("b", 0, 0.32)]
    assert "layer_concentration" not in pattern_ids(vs, 4)
    assert "layer_concentration" in pattern_ids([*vs, violation("a", 1, 0.31)], 4)


def test_few_high_severity_limit_comes_from_config():
    vs = [violation("a", 0, 0.9), violation("b", 1, 0.4), violation("c", 2, 0.4)]
    assert "few_high_severity" in pattern_ids(vs, 4)
    strict = InterpretationConfig(good_max_violations=2)
    assert "few_high_severity" not in pattern_ids(vs, 4, bands=strict)


def test_pattern_detail_names_the_timesteps_of_the_boundaries():
    vs = [violation("a", 0, 0.35), violation("b", 0, 0.32)]
    analysis = analyze_violations(vs, layer_names=LAYERS, num_boundaries=3)
    (early, *_) = detect_patterns(analysis, time_groups=time_groups(4), bands=BANDS)
    assert "0 (t=250)" in early.detail and early.action.startswith("Phase 2")


@pytest.mark.parametrize(
    ("violations", "pattern"),
    [
        ([violation("a", 0, 0.35), violation("b", 1, 0.32), violation("c", 2, 0.31)], 0),
        ([violation("b", 1, 0.9)], 0),
    ],
    ids=["uniform", "few-high"],
)
def test_phase3_stays_out_of_the_actions_where_it_is_measured_to_hurt(violations, pattern):
    """The masked-diffusion LM: Phase 3 raises its held-out bound (README, Phase 3 on the LM)."""
    analysis = analyze_violations(violations, layer_names=LAYERS, num_boundaries=3)
    advised = detect_patterns(analysis, time_groups=time_groups(4), bands=BANDS)
    kept_out = detect_patterns(
        analysis, time_groups=time_groups(4), bands=BANDS, advise_phase3=False
    )
    assert [p.id for p in advised] == [p.id for p in kept_out]
    assert "Phase 3" in advised[pattern].action
    assert "Phase 3 optimization" not in kept_out[pattern].action
    assert not kept_out[pattern].action.startswith("Phase 3")


@pytest.mark.parametrize(
    ("score", "band"),
    [
        (0.0, "poor"),
        (0.6499, "poor"),
        (0.65, "good"),
        (0.70, "good"),
        (0.78, "good"),
        (0.7801, "excellent"),
        (1.0, "excellent"),
    ],
)
def test_band_limits_follow_the_seed(score, band):
    got = interpret(
        smoothness_score=score,
        violations=(),
        boundary_scores=(0.9,),
        cosine_similarity=0.9,
        bands=BANDS,
    )
    assert got.band == band
    assert (got.poor_below, got.excellent_above) == (0.65, 0.78)


def test_band_limits_come_from_config():
    bands = InterpretationConfig(poor_below=0.9, excellent_above=0.95)
    got = interpret(
        smoothness_score=0.85,
        violations=(),
        boundary_scores=(0.9,),
        cosine_similarity=0.9,
        bands=bands,
    )
    assert got.band == "poor" and "0.90" in got.summary


def test_poor_baseline_checks_and_actions():
    vs = [violation("a", i % 3, 0.9 if i == 0 else 0.4) for i in range(5)]
    got = interpret(
        smoothness_score=0.5,
        violations=vs,
        boundary_scores=(0.4, 0.45, 0.8),
        cosine_similarity=0.6,
        bands=BANDS,
    )
    assert got.band == "poor"
    assert [c.met for c in got.checks] == [True, True, True]
    assert any("INT4" in a for a in got.actions) and any("Phase 3" in a for a in got.actions)


def test_good_baseline_checks_and_a_low_cosine_warning():
    vs = [violation("a", 0, 0.35), violation("b", 1, 0.7)]
    got = interpret(
        smoothness_score=0.7,
        violations=vs,
        boundary_scores=(0.65, 0.7, 0.5),
        cosine_similarity=0.6,
        bands=BANDS,
    )
    assert got.band == "good"
    assert [c.met for c in got.checks] == [True, True, False]
    assert got.actions[0].startswith("Proceed to Phase 2")
    assert "0.600" in got.actions[1]


def test_excellent_baseline_checks():
    got = interpret(
        smoothness_score=0.9,
        violations=[violation("a", 0, 0.25)],
        boundary_scores=(0.8, 0.75),
        cosine_similarity=0.8,
        bands=BANDS,
    )
    assert got.band == "excellent" and all(c.met for c in got.checks)
    got = interpret(
        smoothness_score=0.9,
        violations=[violation("a", 0, 0.31), violation("a", 1, 0.6)],
        boundary_scores=(0.8, 0.65),
        cosine_similarity=0.7,
        bands=BANDS,
    )
    assert [c.met for c in got.checks] == [False, False, False]
