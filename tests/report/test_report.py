"""The HTML report: escaped, self-contained, all sections present, and it renders in Chromium."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re

import jinja2
import markupsafe
import numpy as np
import pytest
from browser import chromium_screenshot, png_size
from html_reading import (
    cards,
    check_report_shows_the_run,
    num,
    parse,
    pct,
    section,
    table_after,
    table_rows,
)
from result_samples import W2_DIGITS_QUALITY, enhanced_result, make_result, phases_result

from thermojax.pipeline.results.schema import read_result, write_result
from thermojax.pipeline.settings import InterpretationConfig
from thermojax.report import BAND_COLORS, NO_VERDICT_COLOR, environment, render_report
from thermojax.report.charts import AXIS_LIMIT, bar_chart, line_chart, nice_ticks, scatter_chart
from thermojax.report.grids import digit_grid

HOSTILE_NAME = '<script>alert("x")</script> & <img src=x onerror=1>'


# Function-scoped (rendering takes milliseconds): each test renders the report itself, so that
# mutation testing maps every test that reads the page to the code that drew it.
@pytest.fixture
def result():
    return make_result(model_name=HOSTILE_NAME, num_layers=3, num_groups=5, threshold=0.05)


@pytest.fixture
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
    config_block = parse(html).find_all("pre")[-1].text()
    assert json.loads(config_block) == result.config
    assert config_block == re.sub(r"\s+", " ", json.dumps(result.config, indent=2))


def banded_result(band: str, seed: int):
    """A result whose band limits put its own smoothness score in ``band``, with the extra
    quality figures the digits evaluator reports."""
    score = make_result(num_layers=3, num_groups=5, threshold=0.05, seed=seed).smoothness_score
    poor_below, excellent_above = {
        "poor": (score + 0.01, score + 0.02),
        "good": (score - 0.01, score + 0.01),
        "excellent": (score - 0.02, score - 0.01),
    }[band]
    result = make_result(
        num_layers=3,
        num_groups=5,
        threshold=0.05,
        seed=seed,
        model_name=f"model-{band}-{seed}",
        interpretation=InterpretationConfig(poor_below=poor_below, excellent_above=excellent_above),
    )
    quality = dataclasses.replace(
        result.quality,
        frechet_quantized=5.0 + seed / 7,
        class_coverage_quantized=0.7,
        classifier_confidence_fp32=0.9 + seed / 1000,
        classifier_confidence_quantized=0.8 - seed / 1000,
        num_samples=64 + seed,
    )
    return dataclasses.replace(result, quality=quality)


@pytest.mark.parametrize(
    ("band", "seed"),
    [("poor", 1), ("good", 2), ("excellent", 3)],
    ids=["poor", "good", "excellent"],
)
def test_report_shows_this_runs_band_and_figures_where_it_shows_them(band, seed, tmp_path):
    """Each run's values, read back from its JSON, sit in the card, badge or row that shows them."""
    path = write_result(banded_result(band, seed), tmp_path / "baseline_metrics.json")
    data = json.loads(path.read_text())
    assert data["interpretation"]["band"] == band
    check_report_shows_the_run(render_report(read_result(path)), data, BAND_COLORS)


def test_report_headlines_the_quality_band_and_labels_the_smoothness_band(tmp_path):
    """The shipped INT2 digits: smooth parameters, destroyed samples."""
    result = make_result(
        num_layers=3, num_groups=5, threshold=0.05, quality_figures=W2_DIGITS_QUALITY
    )
    path = write_result(result, tmp_path / "baseline_metrics.json")
    data = json.loads(path.read_text())
    html = render_report(read_result(path))
    check_report_shows_the_run(html, data, BAND_COLORS)
    hero = parse(html).find("section", "hero")
    # The headline is the graded quality figure, the smoothness score a figure beside it.
    assert hero.find(cls="score").text() == "16.8x"
    assert hero.find(cls="muted").text() == "Frechet / fp32"
    assert hero.find(cls="secondary").text() == f"{result.smoothness_score:.3f} smoothness score"
    assert hero.find("span", "verdict").text() == "quality band: poor"
    assert hero.find("span", "smoothness").text() == "smoothness band: excellent"
    assert f"--band: {BAND_COLORS['poor']}" in hero.attrs["style"]
    summary = hero.find("p").text()
    assert summary.startswith("Sample quality is poor against fp32 (Frechet 16.8x fp32).")
    assert "rather than in jumps between groups" in summary
    checks = [li.text() for li in parse(html).find("ul", "quality-checks").find_all("li")]
    assert checks == [
        "\u2717 Frechet distance <= 1.5x fp32's (poor above 3x): 16.8x (389.30 vs 23.16)",
        "\u2717 class coverage at most 0.1 below fp32's (poor beyond 0.3): 50% vs 100%",
        "\u2717 final-sample MSE to fp32's <= 2 px^2 (poor above 18): 36.2",
    ]


def test_report_of_an_older_result_shows_the_smoothness_band_and_no_verdict(tmp_path):
    data = make_result(num_layers=3, num_groups=5, threshold=0.05).to_dict()
    for key in ("quality_band", "quality_detail", "quality_checks", "verdict"):
        del data["interpretation"][key]
    data["schema_version"] = 4
    path = tmp_path / "baseline_metrics.json"
    path.write_text(json.dumps(data))
    html = render_report(read_result(path))
    check_report_shows_the_run(html, data, BAND_COLORS)
    hero = parse(html).find("section", "hero")
    assert not hero.find_all("span", "verdict")
    assert f"--band: {NO_VERDICT_COLOR}" in hero.attrs["style"]
    assert "Quality band" not in html and "quality band" not in html


def test_band_colours_differ_per_band():
    assert set(BAND_COLORS) == {"poor", "fair", "good", "excellent"}
    assert len({*BAND_COLORS.values(), NO_VERDICT_COLOR}) == 5


def test_report_of_a_result_read_back_equals_the_report_of_the_result(result, tmp_path):
    path = write_result(result, tmp_path / "baseline_metrics.json")
    assert render_report(read_result(path)) == render_report(result)


def test_stage_timings_and_environment_are_listed(result):
    root = parse(render_report(result))
    rows = {}
    for table in root.find_all("table"):
        for tr in table.find_all("tr"):
            cells = [c.text() for c in tr.find_all("td")]
            if len(cells) == 2:
                rows[cells[0]] = cells[1]
    for stage, seconds in result.timings_s.items():
        assert rows[stage] == f"{seconds:.2f}"
    for key, value in result.environment.items():
        assert rows[key] == value


def test_enhanced_report_sets_each_baseline_figure_beside_the_enhanced_one(tmp_path):
    """The "Baseline vs enhanced" table from the saved JSON: both values, the change, and
    whether it went the good way for that figure."""
    result = enhanced_result()
    # A baseline with a lower final MSE than the enhanced run (worse), a higher drift (better),
    # a higher class coverage (worse) and the same Frechet distance.
    worse = dataclasses.replace(
        result.baseline.quality,
        final_mse=0.0625,
        drift_mean=result.quality.drift_mean * 2,
        class_coverage_quantized=1.0,
        frechet_quantized=result.quality.frechet_quantized,  # unchanged: neither way
    )
    result = dataclasses.replace(
        result, baseline=dataclasses.replace(result.baseline, quality=worse)
    )
    path = write_result(result, tmp_path / "baseline_metrics.json")
    data = json.loads(path.read_text())
    html = render_report(read_result(path))
    check_report_shows_the_run(html, data, BAND_COLORS)
    base, enh, q = data["baseline"], data["enhancement"], data["quality"]
    bq = base["quality"]
    figures = [
        ("Smoothness score (parameters used)", base["metrics"]["smoothness_score"],
         data["smoothness_score"], 4, True),
        ("Violations", base["metrics"]["violation_count"], data["violation_count"], 0, False),
        ("Smoothness score, group-level view", base["metrics"]["smoothness_score"],
         enh["group_view"]["smoothness_score"], 4, True),
        ("Trajectory drift (mean)", bq["drift_mean"], q["drift_mean"], 5, False),
        ("Final-sample MSE vs fp32", bq["final_mse"], q["final_mse"], 4, False),
        ("Frechet distance to real digits", bq["frechet_quantized"], q["frechet_quantized"], 3,
         False),
        ("Class coverage", bq["class_coverage_quantized"], q["class_coverage_quantized"], 2, True),
    ]  # fmt: skip
    root = parse(html)
    (table,) = [t for e in section(root, "Baseline vs enhanced")[:2] for t in e.find_all("table")]
    shown = [
        ([c.text() for c in tr.find_all("td")], tr.find_all("td")[-1].classes)
        for tr in table.find_all("tr")
        if tr.find_all("td")
    ]
    expected = []
    for label, before, after, digits, higher_is_better in figures:
        change = after - before
        verdict = (
            set() if change == 0 else {"better" if (change > 0) == higher_is_better else "worse"}
        )
        cells = (
            [str(before), str(after)] if digits == 0 else [num(before, digits), num(after, digits)]
        )
        expected.append(([label, *cells, f"{change:+.{digits}f}"], {"num"} | verdict))
    assert shown == expected
    # Both "better" and "worse" and an unchanged figure occur in this case.
    assert {"better", "worse"} <= set().union(*(classes for _, classes in shown))
    assert any(classes == {"num"} for _, classes in shown)

    boundary_rows = table_rows(root.find_all("table")[1])
    assert boundary_rows == [
        [
            f"b{i}",
            str(base["time_groups"][i][1]),
            num(base["metrics"]["boundary_scores"][i]),
            str(data["time_groups"][i][1]),
            num(score),
            num(enh["group_view"]["boundary_scores"][i]),
        ]
        for i, score in enumerate(data["boundary_scores"])
    ]
    opt = enh["optimization"]
    phase3 = next(
        t for t in root.find_all("table") if "iterations" in t.text() and "converged" in t.text()
    )
    assert table_rows(phase3) == [
        [
            layer["name"],
            str(opt["iterations"][i]),
            "yes" if opt["converged"][i] else "no (max_iterations)",
            f"{num(opt['initial_loss'][i], 4)} / {num(opt['final_loss'][i], 4)}",
            f"{opt['quant_error_before'][i]:.3g} / {opt['quant_error_after'][i]:.3g}",
            f"{opt['markov_penalty_before'][i]:.3g} / {opt['markov_penalty_after'][i]:.3g}",
        ]
        for i, layer in enumerate(data["layers"])
    ]
    jumps = ", ".join(
        f"{layer['name']} {pct(jump)}"
        for layer, jump in zip(data["layers"], enh["max_step_scale_jump"], strict=True)
    )
    assert f"Largest consecutive-timestep scale jump per layer (enhanced): {jumps}." in root.text()


def test_phase_table_rows_are_the_saved_rows(tmp_path):
    path = write_result(phases_result(), tmp_path / "baseline_metrics.json")
    data = json.loads(path.read_text())
    root = parse(render_report(read_result(path)))
    tables = [t for e in section(root, "Phase table: every variant on one calibration")
              for t in e.find_all("table")]  # fmt: skip
    rows, drift_rows = table_rows(tables[0]), table_rows(tables[1])
    expected, expected_drift = [], []
    for row in data["phases"]["rows"]:
        deltas = [
            (row["paired_delta"][name], digits)
            for name, digits in (
                ("final_mse", 3),
                ("frechet_quantized", 2),
                ("class_coverage_quantized", 2),
            )
        ]
        expected.append(
            [
                row["variant"],
                row["phase"],
                num(row["smoothness_score"]["mean"], 4),
                num(row["violation_count"]["mean"], 1),
                f"{row['drift_mean']['mean']:.4g} \u00b1 {row['drift_mean']['std']:.2g}",
                f"{num(row['final_mse']['mean'])} \u00b1 {num(row['final_mse']['std'])}",
                (
                    f"{num(row['frechet_quantized']['mean'], 2)} \u00b1 "
                    f"{num(row['frechet_quantized']['std'], 2)}"
                ),
                (
                    f"{pct(row['class_coverage_quantized']['mean'], 0)} \u00b1 "
                    f"{pct(row['class_coverage_quantized']['std'], 0)}"
                ),
                # A delta the JSON has as null (NaN) shows as "n/a", like every missing figure.
                *(
                    f"{'n/a' if d['mean'] is None else format(d['mean'], f'+.{k}f')} \u00b1 "
                    f"{'n/a' if d['std'] is None else format(d['std'], f'.{k}f')}"
                    for d, k in deltas
                ),
                f"{1000 * row['param_extra_s']:+.1f} ms",
                f"{row['sampling_ratio']:.2f}x",
            ]
        )
        expected_drift.append(
            [row["variant"], row["description"]]
            + [f"{d['mean']:.4g} \u00b1 {d['std']:.2g}" for d in row["drift_per_group"]]
        )
    assert rows == expected and len(rows) == len(data["phases"]["rows"])
    assert any(any(c.startswith("n/a") for c in row) for row in rows)  # the NaN row is there
    assert drift_rows == expected_drift


def test_templates_fail_loudly_on_undefined_names():
    template = environment().from_string("{{ r.nope }}")
    with pytest.raises(jinja2.UndefinedError):
        template.render(r={})


def test_nice_ticks_cover_the_range():
    ticks = nice_ticks(0.013, 0.87)
    assert ticks[0] <= 0.013 and ticks[-1] >= 0.87
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1 and steps.pop() in (0.1, 0.2, 0.25, 0.5)


ABSURD_RANGES = [
    (0.9, 0.9 + math.ulp(0.9)),  # two values a rounding apart: the step moved no tick (hang)
    (1e10, 1e10 + math.ulp(1e10)),
    (1e308, 1e308),  # the span doubled to inf (OverflowError)
    (-1e308, 1e308),
    (0.0, 1.7e308),
    (5e-324, 5e-324),  # the step underflowed to 0 (math domain error)
    (0.0, math.inf),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("lo", "hi"), ABSURD_RANGES, ids=[f"{lo:g}..{hi:g}" for lo, hi in ABSURD_RANGES]
)
def test_nice_ticks_of_absurd_ranges_are_a_few_finite_ticks_at_once(lo, hi):
    ticks = [float(t) for t in nice_ticks(lo, hi)]
    assert 2 <= len(ticks) <= 12 and all(math.isfinite(t) for t in ticks)
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
    assert ticks[0] <= min(max(lo, -AXIS_LIMIT), AXIS_LIMIT)
    assert ticks[-1] >= min(max(hi, -AXIS_LIMIT), AXIS_LIMIT)


def test_charts_of_absurd_values_have_finite_coordinates():
    """A corrupt report's 1e308 or 5e-324 is drawn off the axis' end, never at inf or NaN."""
    values = [0.5, 1e308, -1e308, 5e-324]
    lines = line_chart([("a", [0, 1, 2, 3], values)], title="t", x_label="x", y_label="y")
    logs = line_chart(
        [("a", [0, 1, 2, 3], [1e-320, 1e308, 1.0, 2.0])],
        title="t",
        x_label="x",
        y_label="y",
        log_y=True,
    )
    scatter = scatter_chart(
        [("a", 1e308, 1e308, 1e308), ("b", 0.5, 0.5, 0.1), ("c", -1e308, 5e-324, 0.0)],
        title="t",
        x_label="x",
        y_label="y",
    )
    numbers = [
        float(v) for chart in (lines, logs) for v in re.split("[ ,]", chart.series[0].points)
    ]
    numbers += [t.pos for chart in (lines, logs, scatter) for t in chart.y_ticks]
    numbers += [v for p in scatter.points for v in (p.x, p.y, p.y_low, p.y_high)]
    assert all(math.isfinite(v) for v in numbers)
    assert logs.y_ticks[0].label == "1e-300"  # the axis stops at 1 / AXIS_LIMIT


def test_fractional_zero_points_are_rounded_not_truncated():
    """An enhanced run's group view of its schedule has fractional zero points."""
    result = make_result(num_layers=1, num_groups=3)
    layer = dataclasses.replace(result.layers[0], zero_points=(20.9, 13.2, 127.5))
    rows = table_rows(
        table_after(parse(render_report(dataclasses.replace(result, layers=(layer,)))), "Layers")
    )
    assert rows[0][-1] == "21, 13, 128"


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


# --- what each chart is drawn from --------------------------------------------------------------


@pytest.fixture
def drawn(monkeypatch):
    """Every chart the report draws, by kind: the arguments the toolkit got from the Result."""
    from thermojax import report

    calls: dict[str, list[tuple[tuple, dict]]] = {}
    for name in ("bar_chart", "line_chart", "scatter_chart", "digit_grid"):
        real = getattr(report, name)

        def record(*args, _real=real, _name=name, **kwargs):
            calls.setdefault(_name, []).append((args, kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(report, name, record)
    return calls


def by_title(calls, kind):
    return {kwargs["title"]: (args, kwargs) for args, kwargs in calls.get(kind, [])}


def test_boundary_chart_is_the_boundary_scores_coloured_by_violation(drawn):
    result = make_result(num_layers=3, num_groups=5, threshold=0.2, seed=4)
    render_report(result)
    (args, kwargs) = by_title(drawn, "bar_chart")["Boundary scores (mean over layers)"]
    values, labels = args
    assert list(values) == list(result.boundary_scores)
    assert labels == [f"b{i}" for i in range(4)]
    assert kwargs["sublabels"] == [f"t={b}" for _, b in result.time_groups[:4]]
    involved = set(result.violation_analysis.boundaries_involved)
    assert 0 < len(involved) < 4  # both colours occur
    assert kwargs["colors"] == ["#c0392b" if i in involved else "#5d9c59" for i in range(4)]
    assert kwargs["rules"] == [(1 - 0.2 / 2, "1 - threshold/2 = 0.90", "#c0392b")]


def test_scale_and_activation_charts_are_each_layers_parameters_and_ranges(drawn):
    result = make_result(num_layers=3, num_groups=5, threshold=0.05, seed=5)
    render_report(result)
    charts = by_title(drawn, "line_chart")
    args, kwargs = charts["Activation scale of each layer across time groups"]
    assert [(n, list(x), list(s)) for n, x, s in args[0]] == [
        (layer.name, list(range(5)), list(layer.scales)) for layer in result.layers
    ]
    scales = np.array([layer.scales for layer in result.layers])
    assert kwargs["log_y"] == bool(scales.max() / scales.min() > 20)
    assert kwargs["x_tick_labels"] == [
        f"g{g} [{a},{b})" for g, (a, b) in enumerate(result.time_groups)
    ]
    assert kwargs["x_range"] == (-0.5, 4.5)
    edges = [a for a, _ in result.time_groups] + [result.num_timesteps]
    qmax = 2**result.act_bits - 1
    for layer in result.layers:
        _, kwargs = charts[layer.name]
        ((band, t, lo, hi),) = kwargs["bands"]
        assert band == "observed min..max" and list(t) == list(range(result.num_timesteps))
        assert list(lo) == list(layer.activation_min) and list(hi) == list(layer.activation_max)
        (_, top_edges, top), (_, bottom_edges, bottom) = kwargs["steps"]
        assert list(top_edges) == list(bottom_edges) == edges
        s, z = np.array(layer.scales, np.float64), np.array(layer.zero_points, np.float64)
        np.testing.assert_allclose(top, (qmax - z) * s, rtol=1e-12)
        np.testing.assert_allclose(bottom, -z * s, rtol=1e-12)
        assert kwargs["v_rules"] == [(e, f"b{i}") for i, e in enumerate(edges[1:-1])]


def test_drift_chart_and_digit_grids_are_the_quality_and_the_samples(drawn):
    result = make_result(num_layers=2, num_groups=4, seed=6)
    render_report(result)
    args, kwargs = by_title(drawn, "line_chart")["Trajectory drift, quantized vs fp32 (same noise)"]
    ((name, steps, drift),) = args[0]
    assert name == "mean squared drift of x_t"
    assert list(steps) == list(range(result.num_timesteps))
    assert list(drift) == list(result.quality.drift_per_timestep) and kwargs["log_y"] is True
    edges = [a for a, _ in result.time_groups[1:]]
    assert kwargs["v_rules"] == [(e, f"b{i}") for i, e in enumerate(edges)]
    grids = by_title(drawn, "digit_grid")
    assert grids["fp32 samples"][0] == (result.sample_preview.fp32,)
    assert grids["quantized samples (same noise)"][0] == (result.sample_preview.quantized,)
    assert result.sample_preview.fp32 != result.sample_preview.quantized


def test_loss_chart_is_each_layers_loss_history(drawn):
    result = enhanced_result()
    render_report(result)
    title = "Phase 3 loss per layer (relative to the starting quantization error)"
    args, _ = by_title(drawn, "line_chart")[title]
    history = result.enhancement.optimization.loss_history
    assert [(n, list(x), list(h)) for n, x, h in args[0]] == [
        (layer.name, list(range(len(h))), list(h))
        for layer, h in zip(result.layers, history, strict=True)
    ]


def test_many_groups_get_about_ten_group_ticks(drawn):
    result = make_result(num_layers=2, num_groups=25, num_timesteps=100)
    render_report(result)
    _, kwargs = by_title(drawn, "line_chart")["Activation scale of each layer across time groups"]
    assert kwargs["x_tick_values"] == [float(g) for g in range(0, 25, 3)]
    assert kwargs["x_tick_labels"] == [f"g{g}" for g in range(0, 25, 3)]
    assert kwargs["markers"] is False  # more than 16 groups: no point markers


def test_phase_charts_are_each_variants_paired_change_and_drift(drawn):
    result = phases_result()
    render_report(result)
    rows = result.phases.rows
    scatters = {k: v for k, v in by_title(drawn, "scatter_chart").items() if "paired by" in k}
    assert len(scatters) == 2
    for metric, label in (
        ("final_mse", "final-sample MSE"),
        ("frechet_quantized", "Frechet distance"),
    ):
        title = (
            f"Smoothness vs {label} change from the baseline, paired by seed "
            f"(mean +- std over {len(result.phases.seeds)} seeds)"
        )
        args, kwargs = scatters[title]
        assert list(args[0]) == [
            (
                row.variant,
                row.smoothness_score.mean,
                row.paired_delta[metric].mean,
                row.paired_delta[metric].std,
            )
            for row in rows
        ]
        colors = dict(zip([r.phase for r in rows], kwargs["colors"], strict=True))
        assert colors["baseline"] != colors["phase 2"]
    lines = by_title(drawn, "line_chart")
    seeds = len(result.phases.seeds)
    args, kwargs = lines[f"Trajectory drift per timestep per variant (mean over {seeds} seeds)"]
    assert [(n, list(x), list(y)) for n, x, y in args[0]] == [
        (row.variant, list(range(100)), list(row.drift_per_timestep)) for row in rows
    ]
    assert kwargs["log_y"] is True
    edges = result.phases.drift_group_edges
    assert kwargs["v_rules"] == [(e, f"b{i}") for i, e in enumerate(edges[1:-1])]
    args, _ = lines["Trajectory drift per timestep relative to the baseline's (mean over seeds)"]
    base = np.asarray(rows[0].drift_per_timestep, np.float64)
    for (name, x, y), row in zip(args[0], rows, strict=True):
        want = np.ones_like(base)
        mine = np.asarray(row.drift_per_timestep, np.float64)
        np.divide(mine, base, out=want, where=base > 0)  # 1 where the baseline has no drift
        assert name == row.variant and list(x) == list(range(100))
        np.testing.assert_array_equal(y, want)


def test_phase_drift_charts_thin_long_runs_to_about_250_points(drawn):
    result = phases_result()
    long_rows = tuple(
        dataclasses.replace(row, drift_per_timestep=tuple(float(t + i) for t in range(1000)))
        for i, row in enumerate(result.phases.rows)
    )
    result = dataclasses.replace(result, phases=dataclasses.replace(result.phases, rows=long_rows))
    render_report(result)
    lines = by_title(drawn, "line_chart")
    args, _ = lines["Trajectory drift per timestep per variant (mean over 3 seeds)"]
    _, x, y = args[0][1]
    assert list(x) == list(range(0, 1000, 4)) and list(y) == [
        float(t + 1) for t in range(0, 1000, 4)
    ]
    args, _ = lines["Trajectory drift per timestep relative to the baseline's (mean over seeds)"]
    _, x, y = args[0][1]
    np.testing.assert_allclose(y, [(t + 1) / t if t else 1.0 for t in range(0, 1000, 4)])


@pytest.mark.parametrize(
    ("threshold", "drawn_rule"), [(0.0, True), (2.0, True), (2.5, False)], ids=["0", "2", "2.5"]
)
def test_threshold_line_is_drawn_while_it_is_inside_the_score_axis(drawn, threshold, drawn_rule):
    render_report(make_result(num_layers=2, num_groups=3, threshold=threshold))
    (_, kwargs) = by_title(drawn, "bar_chart")["Boundary scores (mean over layers)"]
    line = 1 - threshold / 2
    assert kwargs["rules"] == (
        [(line, f"1 - threshold/2 = {line:.2f}", "#c0392b")] if drawn_rule else []
    )


@pytest.mark.parametrize(("groups", "every"), [(8, None), (9, 1), (21, 3)], ids=["8", "9", "21"])
def test_group_ticks_name_every_group_up_to_eight(drawn, groups, every):
    result = make_result(num_layers=2, num_groups=groups, num_timesteps=105)
    render_report(result)
    _, kwargs = by_title(drawn, "line_chart")["Activation scale of each layer across time groups"]
    if every is None:
        assert kwargs["x_tick_labels"] == [
            f"g{g} [{a},{b})" for g, (a, b) in enumerate(result.time_groups)
        ]
    else:
        assert kwargs["x_tick_labels"] == [f"g{g}" for g in range(0, groups, every)]


def test_scales_spanning_more_than_twenty_fold_get_a_log_axis(drawn):
    result = make_result(num_layers=2, num_groups=3)
    wide = dataclasses.replace(result.layers[0], scales=(0.001, 0.01, 0.05))
    narrow = dataclasses.replace(result.layers[0], scales=(0.001, 0.01, 0.02))
    render_report(dataclasses.replace(result, layers=(wide, result.layers[1])))
    render_report(dataclasses.replace(result, layers=(narrow, narrow)))
    charts = [
        kwargs
        for _, kwargs in drawn["line_chart"]
        if kwargs["title"] == "Activation scale of each layer across time groups"
    ]
    assert [(c["log_y"], c["y_label"]) for c in charts] == [(True, "scale (log)"), (False, "scale")]


def test_missing_figures_read_n_a(tmp_path):
    result = make_result(num_layers=2, num_groups=3)
    quality = dataclasses.replace(
        result.quality, class_coverage_quantized=float("nan"), frechet_quantized=float("nan")
    )
    path = write_result(dataclasses.replace(result, quality=quality), tmp_path / "r.json")
    shown = cards(parse(render_report(read_result(path))))
    assert shown["Class coverage fp32 / quantized"]["value"] == "100% / n/a"
    assert shown["Frechet fp32 / quantized"]["value"] == "3.50 / n/a"
    assert shown["Frechet distance"]["value"] == "n/a"


def test_the_weight_quantizer_is_shown_from_the_saved_config(tmp_path):
    """The method, GPTQ's Hessian weighting and kept bits come from ``config.quant``; a result
    written before the option existed reads as minmax."""
    base = make_result(num_layers=2, threshold=0.1)
    quant = {"method": "gptq", "hessian": "sensitivity", "keep_bits": {"output": 8}}
    result = dataclasses.replace(base, config={**base.config, "quant": quant})
    path = write_result(result, tmp_path / "baseline_metrics.json")
    page = render_report(read_result(path))
    assert "gptq, Hessian sensitivity; output at 8 bits" in page
    old = dataclasses.replace(base, config={k: v for k, v in base.config.items() if k != "quant"})
    assert old.weight_method() == "minmax"
    assert "Weight quantizer" in render_report(old)
