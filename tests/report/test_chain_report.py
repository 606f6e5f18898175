"""The report's chain error budget: a chart of each time group's error over its span with the
boundaries' costs at their edges, and a table of the saved figures, only when the result has a
``chain`` section (hand-built results: no model run)."""

from __future__ import annotations

import dataclasses

import pytest
from html_reading import parse
from result_samples import make_result

from thermojax.pipeline.results.schema import ChainSection, read_result, write_result
from thermojax.report import render_report

HOSTILE = '<script>alert("x")</script> & <img src=x onerror=1>'
CHART = 'aria-label="Chain error budget: final error by the time group its steps are quantized in"'


def with_chain(result, *, measure: str = "final-state MSE", additivity: float = 0.75):
    edges = tuple(a for a, _ in result.time_groups) + (result.num_timesteps,)
    per_group = (0.02, 0.04, 0.01, 0.005)
    return dataclasses.replace(
        result,
        chain=ChainSection(
            total=0.1,
            per_group=per_group,
            per_boundary=(-0.01, 0.0038, 0.0027),
            additivity=additivity,
            edges=edges,
            steps_per_group=(25, 25, 25, 25),
            measure=measure,
            num_samples=16,
        ),
    )


@pytest.fixture
def result():
    return with_chain(make_result(num_groups=4, num_timesteps=100), measure=HOSTILE)


def chain_svg(html: str) -> str:
    start = html.index(CHART)
    return html[html.rindex("<svg", 0, start) : html.index("</svg>", start)]


def test_the_chart_draws_each_group_over_its_span_and_marks_each_boundary(result):
    svg = chain_svg(render_report(result))
    assert svg.count("<polygon") == len(result.chain.per_group)  # one bar per group
    assert svg.count("<polyline") == 1  # the total across the groups
    for b, cost in enumerate(result.chain.per_boundary):
        assert f">b{b} {cost:+.2g}</text>" in svg


def test_the_table_lists_the_saved_figures(result):
    page = parse(render_report(result))
    (table,) = page.find_all("table", cls="chain-budget")
    rows = [[cell.text() for cell in row.find_all("td")] for row in table.find_all("tr")]
    rows = [row for row in rows if row]
    assert rows[0] == ["g0", "[0, 25)", "25", "0.02", "20.0%"]
    assert rows[3] == ["g3", "[75, 100)", "25", "0.005", "5.0%"]
    assert rows[4] == ["b0 (g0 \u2192 g1)", "25", "", "-0.01", ""]
    assert rows[6] == ["b2 (g2 \u2192 g3)", "75", "", "+0.0027", ""]
    assert "add up to 75% of the total" in page.text()


def test_the_measure_is_escaped(result):
    html = render_report(result)
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;img" in html


def test_a_total_of_zero_shows_no_shares(tmp_path):
    result = with_chain(make_result(num_groups=4, num_timesteps=100), additivity=float("nan"))
    result = dataclasses.replace(
        result, chain=dataclasses.replace(result.chain, total=0.0, per_group=(0.0,) * 4)
    )
    back = read_result(write_result(result, tmp_path / "r.json"))  # NaN saved as null
    page = parse(render_report(back))
    assert "add up to n/a of the total" in page.text()
    assert CHART in render_report(back)


def test_no_section_no_chart():
    html = render_report(make_result(num_groups=4, num_timesteps=100))
    assert "Chain error budget" not in html and "chain-budget" not in html
