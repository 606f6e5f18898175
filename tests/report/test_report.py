"""The HTML report: escaped, self-contained, all sections present, and it renders in Chromium."""

from __future__ import annotations

import itertools
import re

import jinja2
import markupsafe
import pytest
from browser import chromium_screenshot, png_size
from result_samples import make_result

from thermojax.report import environment, render_report
from thermojax.report.charts import bar_chart, line_chart, nice_ticks
from thermojax.report.grids import digit_grid

HOSTILE_NAME = '<script>alert("x")</script> & <img src=x onerror=1>'


@pytest.fixture(scope="module")
def result():
    return make_result(model_name=HOSTILE_NAME, num_layers=3, num_groups=5, threshold=0.05)


@pytest.fixture(scope="module")
def html(result) -> str:
    return render_report(result)


def test_user_strings_are_escaped(html):
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;img" in html


def test_report_is_self_contained(html):
    lowered = html.lower()
    for needle in ("http:", "https:", "//", "url(", "@import", "<link", "<iframe", "<object"):
        assert needle not in lowered, needle
    # no tag loads anything (the hostile model name only appears escaped, as text)
    assert re.search(r"<[^>]+\s(?:src|href|xlink:href|srcset)\s*=", lowered) is None
    assert "<style>" in html and "<svg" in html


def test_every_section_is_there(result, html):
    for heading in (
        "Boundaries",
        "Layers",
        "Per-timestep activation ranges",
        "Violations",
        "Patterns and interpretation",
        "Quality of quantized sampling",
        "Resolved configuration",
    ):
        assert heading in html, heading
    assert f">{result.smoothness_score:.3f}<" in html
    assert result.interpretation.band in html
    assert str(markupsafe.escape(result.interpretation.summary)) in html
    # one bar per boundary, one activation chart per layer, a threshold line
    assert html.count('class="bar-value') == result.num_time_groups - 1
    for layer in result.layers:
        assert f'aria-label="{layer.name}"' in html
    assert f"1 - threshold/2 = {1 - result.smoothness_threshold / 2:.2f}" in html
    # violations table: one row per violation
    assert html.count('class="sev"') == result.violation_count > 0
    # two digit grids of 16 images each
    assert html.count('aria-label="fp32 samples"') == 1
    assert html.count('aria-label="quantized samples (same noise)"') == 1
    assert "&#34;smoothness_threshold&#34;: 0.05" in html  # the config, escaped JSON


def test_templates_fail_loudly_on_undefined_names():
    template = environment().from_string("{{ r.nope }}")
    with pytest.raises(jinja2.UndefinedError):
        template.render(r={})


def test_nice_ticks_cover_the_range():
    ticks = nice_ticks(0.013, 0.87)
    assert ticks[0] <= 0.013 and ticks[-1] >= 0.87
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1 and steps.pop() in (0.1, 0.2, 0.25, 0.5)


def test_bar_chart_geometry():
    chart = bar_chart(
        [1.0, 0.5, 0.0],
        ["a", "b", "c"],
        title="t",
        y_label="y",
        colors=["#000"] * 3,
        rules=[(0.5, "half", "#f00")],
    )
    full, half, empty = chart.bars
    plot_height = chart.frame.bottom - chart.frame.top
    assert full.h == pytest.approx(plot_height) and half.h == pytest.approx(plot_height / 2)
    assert empty.h == pytest.approx(0.0)
    assert chart.rules[0].y1 == pytest.approx(half.y)


def test_line_chart_log_axis_and_steps():
    chart = line_chart(
        [("drift", [0, 1, 2], [1e-3, 1e-2, 1e-1])],
        title="t",
        x_label="x",
        y_label="y",
        steps=[("groups", [0, 1, 2], [1e-3, 1e-1])],
        log_y=True,
    )
    labels = [t.label for t in chart.y_ticks]
    assert labels == ["0.001", "0.01", "0.1"]
    ys = [float(p.split(",")[1]) for p in chart.series[0].points.split()]
    assert ys[0] - ys[1] == pytest.approx(ys[1] - ys[2])  # equal steps per decade
    assert len(chart.series[1].points.split()) == 4  # two flat segments


def test_digit_grid_maps_intensity_to_grey():
    grid = digit_grid([[[0.0, 16.0], [8.0, 0.0]]], title="d")
    fills = sorted(p.fill for p in grid.pixels)
    assert fills == ["rgb(0,0,0)", "rgb(128,128,128)"]  # white pixels are not drawn


def test_renders_in_chromium(html, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    png = tmp_path / "shot.png"
    dom = chromium_screenshot(page, png, tmp_path / "profile")
    assert png_size(png) == (1200, 3000)
    assert png.stat().st_size > 50_000  # charts and text, not a blank page
    # Chromium parsed the whole document: the last section is in its DOM, no script ran.
    assert "Resolved configuration" in dom and "<script" not in dom.lower()
    assert len(re.findall(r"<svg", dom)) >= 5


def test_many_groups_keep_the_charts_readable():
    chart = bar_chart(
        [0.9] * 199, [f"b{i}" for i in range(199)], title="t", y_label="y", colors=["#000"] * 199
    )
    assert sum(bool(bar.label) for bar in chart.bars) <= 8
    assert not any(bar.value for bar in chart.bars)  # too thin to carry their numbers
    html = render_report(make_result(num_layers=2, num_groups=200, num_timesteps=1000))
    assert "(200 groups)" in html  # the layer table summarises instead of listing 200 scales
