"""The interpretation's reading of the chain's error budget (hand-built sections, no model run):
which time groups carry most of the error and which boundaries cost a measurable share of it."""

from __future__ import annotations

import pytest

from thermojax.pipeline.results.schema import ChainSection
from thermojax.pipeline.results.verdict import MEASURABLE_BOUNDARY_SHARE, chain_reading


def section(per_group, per_boundary, total=1.0) -> ChainSection:
    groups = len(per_group)
    return ChainSection(
        total=total,
        per_group=tuple(per_group),
        per_boundary=tuple(per_boundary),
        additivity=sum(per_group) / total if total else float("nan"),
        edges=tuple(range(0, 100 * groups + 1, 100)),
        steps_per_group=(10,) * groups,
        measure="final-state MSE",
        num_samples=16,
    )


def test_one_group_carrying_most_is_named_with_its_share():
    text, actions = chain_reading(section((0.1, 0.6, 0.2, 0.1), (0.0, 0.01, -0.02)))
    assert "most of the final error in time group g1 (t in [100, 200)): 60% of the" in text
    assert "g0" not in text and "g2" not in text
    assert "cost nothing measurable" in text
    assert actions[0].startswith("Most of the final error enters at the steps of g1 ")
    assert actions[1].startswith("Boundary smoothing (Phase 2) has little to gain")


def test_the_fewest_groups_reaching_half_are_named_largest_first():
    text, _ = chain_reading(section((0.3, 0.1, 0.35, 0.25), (0.0, 0.0, 0.0)))
    assert "time groups g2 (t in [200, 300)): 35%, g0 (t in [0, 100)): 30% of the groups'" in text
    assert "g3" not in text and "g1" not in text


def test_boundaries_past_the_share_are_named_by_sign_and_the_rest_are_not():
    limit = MEASURABLE_BOUNDARY_SHARE
    per_boundary = (-2 * limit, 0.9 * limit, 1.5 * limit, -0.5 * limit)
    text, actions = chain_reading(section((0.2,) * 5, per_boundary))
    assert (
        "The jump at b0 (t=100: 10%) raises the final error measurably (by more than 5% of" in text
    )
    assert "without it the final error is lower." in text
    assert "The jump at b2 (t=300: 8%) lowers the final error measurably" in text
    assert "its groups need their own parameters." in text
    assert "b1" not in text and "b3" not in text and "nothing measurable" not in text
    assert actions[-1].startswith("Smooth boundary b0 (Phase 2 boundary smoothing)")


def test_several_costly_jumps_are_listed_together():
    text, actions = chain_reading(section((0.5, 0.3, 0.2), (-0.2, -0.12), total=2.0))
    assert "The jumps at b0 (t=100: 10%), b1 (t=200: 6%) raise the final error" in text
    assert "without them" in text
    assert actions[-1].startswith("Smooth boundaries b0, b1 ")


@pytest.mark.parametrize(
    ("per_group", "per_boundary", "total", "expected"),
    [
        ((0.0, 0.0), (0.0,), 0.0, "measures no error"),
        ((0.4,), (), 0.4, "one time group"),
    ],
    ids=["no-error", "one-group"],
)
def test_nothing_to_read_says_so_and_suggests_nothing(per_group, per_boundary, total, expected):
    text, actions = chain_reading(section(per_group, per_boundary, total))
    assert expected in text and actions == ()
