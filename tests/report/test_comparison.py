"""The comparison page's charts and rendering, from hand-built summaries (no sweep folder).

tests/cli/test_compare.py runs the command on a sweep folder; these check the pieces it draws with:
the report toolkit's heatmap and scatter, and a page with nothing completed.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from result_samples import make_result

from thermojax.cli.outputs import write_comparison
from thermojax.files import REPORT_JSON
from thermojax.pipeline.results.sweep import collect
from thermojax.report.comparison import (
    COLUMNS,
    SweepSummary,
    quality_scatter,
    render_comparison,
    smoothness_heatmap,
)
from thermojax.report.grids import heatmap, ramp


def row(bits: int, groups: int, threshold: float, smoothness: float, drift: float) -> dict:
    values = dict.fromkeys(COLUMNS)
    values.update(
        job=f"{bits}-{groups}-{threshold}",
        status="ok",
        bit_width=bits,
        num_time_groups=groups,
        smoothness_threshold=threshold,
        smoothness_score=smoothness,
        violation_count=1,
        drift_mean=drift,
    )
    return values


def test_heatmap_colours_span_the_values_and_marks_missing_cells():
    h = heatmap(
        [[0.5, 1.0], [0.75, None]],
        row_labels=["a", "b"],
        column_labels=["x", "y"],
        title="t",
        missing_tooltip="not run",
    )
    fills = [cell.fill for cell in h.cells]
    assert fills[:3] == [ramp(0.0), ramp(1.0), ramp(0.5)]
    assert (h.cells[3].text, h.cells[3].tooltip) == ("-", "not run")
    assert (h.low, h.high) == (0.5, 1.0)
    # Row r, column c sits at left + c * width, top + r * height: rows never overlap columns.
    assert h.cells[1].x > h.cells[0].x and h.cells[2].y > h.cells[0].y
    assert [t.label for t in h.column_ticks] == ["x", "y"]
    assert all(h.left <= c.x and c.x + c.w <= h.right <= h.width for c in h.cells)


def test_heatmap_of_equal_values_takes_the_middle_of_the_ramp():
    h = heatmap([[0.8, 0.8]], row_labels=["a"], column_labels=["x", "y"], title="t")
    assert {cell.fill for cell in h.cells} == {ramp(0.5)}


def test_heatmap_rejects_values_that_do_not_match_the_labels():
    with pytest.raises(ValueError, match="rows=2"):
        heatmap([[1.0]], row_labels=["a", "b"], column_labels=["x"], title="t")


def test_smoothness_heatmap_averages_thresholds_and_seeds():
    rows = [row(2, 4, 0.1, 0.9, 0.3), row(2, 4, 0.3, 0.8, 0.3), row(4, 8, 0.1, 0.99, 0.1)]
    h = smoothness_heatmap(rows)
    texts = {cell.tooltip: cell.text for cell in h.cells}
    assert texts["INT2, 4 groups: mean smoothness 0.8500 over 2 run(s)"] == "0.850"
    assert texts["not run"] == "-"  # INT2 x 8 groups and INT4 x 4 groups were not run
    assert len(h.cells) == 4


def test_quality_scatter_colours_by_bit_width_and_leaves_out_missing_values():
    rows = [row(2, 4, 0.1, 0.9, 0.3), row(4, 4, 0.1, 0.95, 0.1), row(8, 4, 0.1, 0.99, math.nan)]
    chart = quality_scatter(rows, "drift_mean", "mean drift", {"pearson": None, "n": 2})
    assert chart.title == "mean drift: Pearson r = n/a (n = 2)"
    assert len(chart.points) == 2
    assert [name for name, _ in chart.legend] == ["INT2", "INT4"]
    assert chart.points[0].color != chart.points[1].color
    assert "INT4, 4 groups, threshold 0.1" in chart.points[1].tooltip


def test_page_with_only_failures_has_no_charts_but_lists_them():
    failed = dict.fromkeys(COLUMNS)
    failed.update(job="0", status="failed", error="ValueError: <b>bad</b>")
    summary = SweepSummary(
        sweep_dir="/sweep",
        rows=(failed,),
        failures=(
            {"job": "0", "overrides": ["a=1"], "error_type": "ValueError", "message": "<b>bad</b>"},
        ),
        correlations={
            "smoothness_vs_drift_mean": {"pearson": None, "n": 0},
            "smoothness_vs_frechet_quantized": {"pearson": None, "n": 0},
        },
    )
    page = render_comparison(summary)
    assert "<svg" not in page
    assert "ValueError: &lt;b&gt;bad&lt;/b&gt;" in page
    assert "0 configurations completed" in page


def test_a_language_model_sweep_sets_its_held_out_perplexity_against_smoothness():
    """A masked-diffusion LM's runs have no Frechet distance: the page's second scatter, card
    and table column are its held-out perplexity bound, with that figure's correlation."""
    rows = []
    for bits, smoothness, ppl in ((2, 0.97, 8.4), (4, 0.98, 7.2), (8, 0.99, 7.17)):
        values = row(bits, 4, 0.3, smoothness, 0.1)
        values["heldout_perplexity_quantized"] = ppl
        rows.append(values)
    correlation = {"pearson": -0.875, "n": 3}
    summary = SweepSummary(
        sweep_dir="/sweep",
        rows=tuple(rows),
        failures=(),
        correlations={
            "smoothness_vs_drift_mean": {"pearson": None, "n": 3},
            "smoothness_vs_heldout_perplexity_quantized": correlation,
        },
    )
    page = render_comparison(summary)
    assert "Frechet" not in page
    assert "r(smoothness, held-out perplexity (quantized))" in page and "-0.875" in page
    assert "held-out perplexity (quantized): Pearson r = -0.875 (n = 3)" in page
    assert all(f'<td class="num">{ppl:.3f}</td>' in page for ppl in (8.4, 7.2, 7.17))


@pytest.mark.timeout(60)
def test_reports_with_absurd_finite_values_are_compared_and_drawn(tmp_path):
    """Reports someone edited to 1e308, -1e308 or a subnormal (finite, so strict JSON reads them)
    beside ordinary ones: ``compare`` writes its three outputs, the correlations stay finite or
    ``None``, and every chart coordinate is a finite number."""
    sweep = tmp_path / "sweep"
    for job, (bits, value) in enumerate(
        [(2, None), (4, None), (8, 1e308), (4, -1e308), (2, 5e-324)]
    ):
        data = make_result(seed=job, bit_width=bits).to_dict()
        if value is not None:
            for key in ("smoothness_score", "min_boundary_score", "mean_boundary_score"):
                data[key] = value
            for key in ("cosine_similarity", "model_size_mb", "smoothness_threshold"):
                data[key] = value
            data["quality"] |= {k: value for k in ("drift_mean", "frechet_quantized", "final_mse")}
        (sweep / str(job)).mkdir(parents=True)
        (sweep / str(job) / REPORT_JSON).write_text(json.dumps(data))
    summary = collect(sweep)
    assert [row["status"] for row in summary.rows] == ["ok"] * 5
    for correlation in summary.correlations.values():
        assert correlation["pearson"] is None or -1 <= correlation["pearson"] <= 1
    files = write_comparison(summary, tmp_path / "out")
    page = files["html"].read_text()
    assert "<svg" in page
    coordinates = re.findall(r'\b(?:x|y|x1|y1|x2|y2|cx|cy|width|height)="([^"]*)"', page)
    coordinates += [v for p in re.findall(r'points="([^"]*)"', page) for v in re.split("[ ,]", p)]
    assert coordinates and all(math.isfinite(float(v)) for v in coordinates if v)
    assert json.loads(files["json"].read_text())["configurations"]
