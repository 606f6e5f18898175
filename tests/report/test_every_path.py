"""Every way a run can start, for every family: its report rendered from the saved JSON and read
back, and its console summary (issue 23).

Each run is built once per session, on the smallest settings that take its path, by the baseline
command's own function (``thermojax.cli.baseline.execute``, in this process); a test asks for
it by name, so ``-k`` builds only what it selects. From each run's ``baseline_metrics.json``
alone (:func:`~thermojax.pipeline.results.schema.read_result`, as the report and the comparison
read it) the HTML is rendered again and must be the page the run wrote; it must parse with
every element closed, escape the user's model name, and show the run's key figures where a
reader looks for them, read back against the JSON. The console summary printed from the saved
result must be the one the run printed, and name the verdict (or say there is none).

Paths and where they are rendered (H: HTML from a real run of the path; C: its console summary):

| family | start | test |
|---|---|---|
| digits DDPM | fresh | H+C ``tests/cli/test_baseline.py`` (first_run, INT2); here as ``digits-exported``'s run |
| digits DDPM | exported (``export.path``) | H+C here: ``digits-exported`` |
| digits DDPM | from its export (``model.path=``) | H+C here: ``digits-from-export`` |
| digits DDPM | enhanced (Phase 2 + 3, adaptive groups) | H ``tests/pipeline/test_runner_enhanced.py``; H+C here: ``digits-enhanced`` |
| digits DDPM | phases | H ``tests/pipeline/test_phases.py`` (2 seeds); H+C here: ``digits-phases`` (1 seed) |
| digits DDPM | ``calibration.stats`` | refused, one line: ``tests/pipeline/test_checkpoint_run.py::test_statistics_need_enough_steps_and_a_checkpoint`` |
| masked-diffusion LM | fresh (shipped ``pydoc-mdlm``) | H ``tests/pipeline/test_language_model.py::test_the_shipped_language_model_through_the_command``; H+C here as ``lm-exported``'s run |
| masked-diffusion LM | exported | H+C here: ``lm-exported`` |
| masked-diffusion LM | from its export | H+C here: ``lm-from-export`` |
| masked-diffusion LM | enhanced | H+C here: ``lm-enhanced`` |
| masked-diffusion LM | phases | H+C here: ``lm-phases`` (H in memory: ``test_language_model.py::test_phases_and_enhancements_...``) |
| masked-diffusion LM | weight-only (``model.run=weight-only``), exported | H+C here: ``lm-weight-only-exported`` |
| masked-diffusion LM | from that weight-only export | H+C here: ``lm-weight-only-from-export`` |
| masked-diffusion LM | ``calibration.stats`` | refused, one line: here, ``test_an_lm_with_activation_statistics_is_one_line`` |
| weight-only (HF) | fresh, no statistics | H+C ``tests/cli/test_checkpoint_command.py::test_the_command_measures_a_sharded_checkpoint_weight_only``; here as ``hf-exported``'s run |
| weight-only (HF) | fresh, ``calibration.stats`` | H+C here: ``hf-stats`` (H in memory: ``test_checkpoint_run.py::test_statistics_give_...``) |
| weight-only (HF) | exported, without / with statistics | H+C here: ``hf-exported`` / ``hf-stats-exported`` |
| weight-only (HF) | from its export, without / with activations | H+C here: ``hf-from-export`` / ``hf-stats-from-export`` |
| weight-only (HF) | enhanced / phases / export of an export | refused, one line: ``test_checkpoint_run.py::test_impossible_combinations_are_one_line`` / ``::test_the_exported_checkpoint_reports_...`` |
| toy family (a plugin) | fresh / phases | H ``tests/pipeline/test_toy_family.py`` |
| any | the report fails to render | here: ``test_a_report_that_cannot_render_loses_nothing_else`` |
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from html_reading import (
    VOID,
    cards,
    check_report_shows_the_run,
    num,
    parse,
    pct,
    section,
    table_after,
    table_rows,
)
from result_samples import make_result
from rich.console import Console

import thermojax.pipeline
from thermojax.cli import baseline as baseline_module
from thermojax.cli import outputs as outputs_module
from thermojax.cli.config import to_config
from thermojax.cli.runlog import print_summary
from thermojax.errors import UserInputError
from thermojax.models.hf import write_dream_like
from thermojax.pipeline.measure.activation_stats import write_activation_stats
from thermojax.pipeline.results.schema import Result, read_result
from thermojax.report import BAND_COLORS, render_report

MODEL_NAME = '<script>alert("x")</script> & <b>run</b>'
"""Every run's ``model.name``: the report must show it as text, never as markup."""
ESCAPED_NAME = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;run&lt;/b&gt;"
HF_GROUP = 8  # divides every width of the scale-64 synthetic layout (hidden 56)
STAT_LAYERS = ("model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj")
STAT_STEPS = 40

DIGITS = {
    "model": {"name": MODEL_NAME},
    "bit_width": 4,
    "group_size": 16,
    "calibration": {"samples": 8, "samples_per_step": 8},
    "sampling": {"num_samples": 8},
    "thermo": {"optimization": {"max_iterations": 20}},
    "wandb": {"mode": "disabled"},
}
LM = {
    "model": {"shipped": "pydoc-mdlm", "name": MODEL_NAME},
    "bit_width": 4,
    "num_time_groups": 4,
    "calibration": {"samples": 4, "samples_per_step": 4},
    "sampling": {"num_samples": 4, "steps": 8, "length": 32},
    # conf/model/pydoc-mdlm.yaml's sizes, scaled to 8 steps (groups of 2)
    "thermo": {"smoothing": {"window": 1}, "optimization": {"max_iterations": 20}},
    "phases": {"windows": [1], "min_group_size": 1},
    "wandb": {"mode": "disabled"},
}


def merged(base: dict, **extra: Any) -> dict:
    """``base`` with ``extra``'s sections merged in (one level deep)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def hf(folder: Path, **extra: Any) -> dict:
    """A weight-only run of ``folder`` (a Hugging Face folder or its export)."""
    return merged(
        {
            "model": {"path": str(folder), "name": MODEL_NAME},
            "bit_width": 4,
            "group_size": HF_GROUP,
            "num_time_groups": 4,
            "wandb": {"mode": "disabled"},
        },
        **extra,
    )


PATHS: dict[str, Callable[[Runs], dict]] = {
    "digits-exported": lambda runs: merged(DIGITS, export={"path": str(runs.root / "digits-q")}),
    "digits-from-export": lambda runs: merged(
        DIGITS, model={"path": str(runs.export_of("digits-exported"))}
    ),
    "digits-enhanced": lambda runs: merged(
        DIGITS,
        thermo={
            "smoothing": {"enabled": True, "method": "cubic", "window": 20},
            "optimization": {"enabled": True, "max_iterations": 20},
        },
        time_groups={"strategy": "adaptive", "lambda": 0.05, "min_group_size": 40},
    ),
    "digits-phases": lambda runs: merged(
        DIGITS,
        phases={
            "enabled": True,
            "seeds": 1,
            "markov_weights": [1.0],
            "variants": ["smooth-linear-w25", "phase3-mw1"],
        },
    ),
    "lm-exported": lambda runs: merged(
        LM, export={"path": str(runs.root / "lm-q"), "orbax": False}
    ),
    "lm-from-export": lambda runs: merged(LM, model={"path": str(runs.export_of("lm-exported"))}),
    "lm-enhanced": lambda runs: merged(
        LM, thermo={"smoothing": {"enabled": True, "window": 1, "method": "linear"}}
    ),
    "lm-phases": lambda runs: merged(
        LM,
        phases={
            "enabled": True,
            "seeds": 1,
            "markov_weights": [1.0],
            "variants": ["smooth-linear-w1", "phase3-mw1"],
        },
    ),
    "lm-weight-only-exported": lambda runs: {
        "model": {"shipped": "pydoc-mdlm", "run": "weight-only", "name": MODEL_NAME},
        "bit_width": 4,
        "export": {"path": str(runs.root / "lm-weights-q"), "orbax": False},
        "wandb": {"mode": "disabled"},
    },
    "lm-weight-only-from-export": lambda runs: {
        "model": {"path": str(runs.export_of("lm-weight-only-exported")), "name": MODEL_NAME},
        "bit_width": 4,
        "wandb": {"mode": "disabled"},
    },
    "hf-exported": lambda runs: hf(
        runs.hf_folder(), export={"path": str(runs.root / "hf-q"), "orbax": False}
    ),
    "hf-from-export": lambda runs: hf(runs.export_of("hf-exported")),
    "hf-stats": lambda runs: hf(runs.hf_folder(), calibration={"stats": runs.stats_file()}),
    "hf-stats-exported": lambda runs: hf(
        runs.hf_folder(),
        calibration={"stats": runs.stats_file()},
        export={"path": str(runs.root / "hf-stats-q")},
    ),
    "hf-stats-from-export": lambda runs: hf(runs.export_of("hf-stats-exported")),
}
"""Each path's settings, from the session's :class:`Runs` (for the folders it needs)."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished run: what ``execute`` returned and what it printed to stdout."""

    config: dict
    files: dict[str, Path]
    printed: str


class Runs:
    """Builds each path's run on first use, once per session, into ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._runs: dict[str, Run] = {}
        self._hf: Path | None = None

    def hf_folder(self) -> Path:
        """A synthetic Hugging Face folder of Dream 7B's layout (an architecture thermojax
        measures weight-only), two layers at 1/64 of the widths."""
        if self._hf is None:
            self._hf = write_dream_like(self.root / "dream", scale=64, layers=2)
        return self._hf

    def stats_file(self) -> str:
        """Per-step activation statistics of two of :meth:`hf_folder`'s layers (README: "Your
        own checkpoint")."""
        path = self.root / "stats.safetensors"
        if not path.exists():
            rng = np.random.default_rng(1)
            lo = -rng.uniform(0.5, 3.0, (len(STAT_LAYERS), STAT_STEPS)).astype(np.float32)
            hi = rng.uniform(0.5, 3.0, (len(STAT_LAYERS), STAT_STEPS)).astype(np.float32)
            write_activation_stats(path, STAT_LAYERS, lo, hi, (lo + hi) / 2, (hi - lo) / 4)
        return str(path)

    def export_of(self, name: str) -> Path:
        """The quantized checkpoint the run ``name`` wrote."""
        return Path(self.get(name).config["export"]["path"])

    def get(self, name: str) -> Run:
        if name not in self._runs:
            config = PATHS[name](self)
            printed = io.StringIO()
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("THERMOJAX_CACHE_DIR", str(self.root / "cache"))
                # JAX's persistent cache is a process-wide setting: left off in this process.
                mp.setattr(baseline_module, "enable_compilation_cache", lambda: None)
                with contextlib.redirect_stdout(printed):
                    files = baseline_module.execute(to_config(config), self.root / name)
            self._runs[name] = Run(config, dict(files), printed.getvalue())
        return self._runs[name]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("every-path"))


class _BalanceChecker(HTMLParser):
    """Every element closed, in order (void elements excepted)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> at line {self.getpos()[0]} closes {self.open[-3:]}")
        else:
            self.open.pop()


def check_well_formed(html: str) -> None:
    checker = _BalanceChecker()
    checker.feed(html)
    checker.close()
    assert checker.problems == [], checker.problems[:5]
    assert checker.open == [], checker.open


def summary_of(result: Result, files: dict[str, Path]) -> str:
    """The console summary of ``result``, as ``execute`` prints it into a pipe (no colour)."""
    buffer = io.StringIO()
    print_summary(Console(file=buffer, color_system=None), result, files)
    return buffer.getvalue()


def plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


# ---------------------------------------------------------------------------- the key figures


def check_weight_only_report(root, data: dict) -> None:
    w = data["weights"]
    assert root.find("h1").text() == f"Weight-only quantization: {data['model_name']}"
    hero = root.find("section", "hero")
    assert hero.find(cls="score").text() == num(w["model_cosine"], 4)
    assert hero.find("span", "band").text() == "weight-only"
    assert not root.find_all("span", "verdict")  # no samples: no verdict
    shown = cards(root)
    quantized = [t for t in w["tensors"] if t["bits"] is not None]
    assert shown["Quantized tensors"]["value"] == f"{len(quantized)} / {len(w['tensors'])}"
    assert shown["Compression"]["value"] == f"{num(w['compression_vs_source'], 2)}x"
    assert shown["Size"]["value"] == f"{w['total_quantized_bytes'] / 1e9:.4g} GB"
    worst = table_rows(table_after(root, "Quantized tensors"))[0]
    lowest = min(quantized, key=lambda t: (t["cosine"], t["name"]))
    assert worst[0] == lowest["name"] and worst[5] == num(lowest["cosine"], 4), worst
    if data["smoothness_score"] is None:
        assert "Smoothness score" not in shown
        assert "No per-timestep activation statistics were given" in hero.text()
    else:
        band = data["interpretation"]["band"]
        assert shown["Smoothness score"]["value"] == num(data["smoothness_score"])
        assert shown["Smoothness score"]["note"] == f"smoothness band: {band}"
        assert shown["Violations"]["value"] == str(data["violation_count"])
        layers = [row[0] for row in table_rows(table_after(root, "Layers"))]
        assert layers == [layer["name"] for layer in data["layers"]]


def check_text_report(root, data: dict) -> None:
    """The masked-diffusion LM's page: hero, verdict, the text figures and the samples."""
    name, q = data["model_name"], data["quality"]
    kind = "Enhanced" if data.get("enhancement") else "Baseline"
    assert root.find("h1").text() == f"{kind} Markov smoothness: {name}"
    hero = root.find("section", "hero")
    # The graded quality figure leads (held-out bound / fp32), the smoothness score beside it.
    ratio = q["heldout_perplexity_quantized"] / q["heldout_perplexity_fp32"]
    assert hero.find(cls="score").text() == f"{ratio:.2f}x"
    assert hero.find(cls="muted").text() == "held-out bound / fp32"
    assert hero.find(cls="smoothness-score").text() == num(data["smoothness_score"])
    assert hero.find("span", "verdict").text() == (
        f"quality band: {data['interpretation']['verdict']}"
    )
    shown = cards(root)
    assert shown["Weight cosine similarity"]["value"] == num(data["cosine_similarity"], 4)
    assert shown["Violations"]["value"] == str(data["violation_count"])
    assert shown["Token agreement"]["value"] == pct(q["token_agreement"])
    assert shown["Generative perplexity fp32 / quantized"]["value"] == (
        f"{num(q['generative_perplexity_fp32'], 2)} / {num(q['generative_perplexity_quantized'], 2)}"
    )
    heldout = shown["Held-out perplexity fp32 / quantized"]["value"]
    assert (
        heldout
        == f"{num(q['heldout_perplexity_fp32'], 2)} / {num(q['heldout_perplexity_quantized'], 2)}"
    )
    samples = [pre.text() for pre in root.find_all("pre", "sample")]
    pairs = zip(q["sample_text_fp32"], q["sample_text_quantized"], strict=False)
    expected = [" ".join(text.split()) for pair in pairs for text in pair]
    assert samples == expected


def check_phase_table(root, data: dict) -> None:
    rows = table_rows(table_after(root, "Phase table: every variant on one calibration"))
    table = data["phases"]["rows"]
    assert [row[0] for row in rows] == [row["variant"] for row in table]
    assert [row[2] for row in rows] == [num(row["smoothness_score"]["mean"], 4) for row in table]


def check_enhanced(root, data: dict) -> None:
    rows = {row[0]: row for row in table_rows(table_after(root, "Baseline vs enhanced"))}
    base = data["baseline"]["metrics"]
    assert rows["Smoothness score (parameters used)"][1:3] == [
        num(base["smoothness_score"], 4),
        num(data["smoothness_score"], 4),
    ]
    assert rows["Violations"][1:3] == [str(base["violation_count"]), str(data["violation_count"])]
    assert data["enhancement"]["description"] in " ".join(
        e.text() for e in section(root, "Baseline vs enhanced")
    )


def check_console(text: str, data: dict, files: dict[str, Path]) -> None:
    """The summary names the run, its verdict (or prints none), and what the path adds."""
    lines = text.splitlines()
    assert lines[0].startswith(f"{data['model_name']}: "), lines[0]
    interpretation = data["interpretation"]
    verdict = interpretation["verdict"] if interpretation is not None else None
    if verdict is None:
        assert "quality band" not in text  # no samples: no verdict claimed
    else:
        assert f"quality band: {verdict} ({interpretation['quality_detail']})" in text
    if data["mode"] == "weight-only":
        assert f"weight-only, INT{data['bit_width']} weights" in lines[0]
    if data["smoothness_score"] is None:
        assert "no per-timestep activation statistics" in text
    else:
        band = interpretation["band"]
        assert f"smoothness {data['smoothness_score']:.4f} (smoothness band: {band})" in text
    export = (data.get("weights") or {}).get("export_path")
    if export is not None:
        assert f"quantized checkpoint: {export}" in text
    if data.get("enhancement"):
        assert f"enhanced: {data['enhancement']['description']}" in text
    if data.get("phases"):
        assert f"phase table: {len(data['phases']['rows'])} variants" in text
        assert f"full phase table: {files['phases_csv']}" in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    "path",
    # The weight-only paths take a second or two each; the runs that sample are slow.
    [
        name if name.startswith("hf-") else pytest.param(name, marks=pytest.mark.slow)
        for name in PATHS
    ],
)
def test_the_report_and_summary_of_every_path_come_from_its_saved_json(runs, path):
    run = runs.get(path)
    json_path = run.files["json"]
    data = json.loads(json_path.read_text())
    result = read_result(json_path)
    html = render_report(result)
    assert html == run.files["html"].read_text(), "the page is not its saved JSON's"
    check_well_formed(html)
    assert "<script" not in html.lower() and ESCAPED_NAME in html
    root = parse(html)
    title = root.find("title").text()
    assert data["model_name"] == MODEL_NAME and MODEL_NAME in title
    assert f"INT{data['bit_width']}" in title
    if data["mode"] == "weight-only":
        check_weight_only_report(root, data)
    elif data["quality"]["kind"] == "image":
        check_report_shows_the_run(html, data, BAND_COLORS)
    else:
        check_text_report(root, data)
    if data.get("enhancement"):
        check_enhanced(root, data)
    if data.get("phases"):
        check_phase_table(root, data)
    export = (data.get("weights") or {}).get("export_path")
    if export is not None:  # the path in a <code>
        if data["config"]["export"]["path"] is not None:
            assert f"Quantized checkpoint written to {export} ." in root.text()
        else:
            assert f"The quantized checkpoint {export} , its codes run as they are." in root.text()
    text = summary_of(result, run.files)
    assert text == plain(run.printed), "the summary is not its saved JSON's"
    check_console(text, data, run.files)


def test_an_lm_with_activation_statistics_is_one_line(tmp_path):
    """The one start that does not exist for an LM: it is calibrated by running it."""
    given = write_activation_stats(
        tmp_path / "stats.safetensors", ["a"], *(np.zeros((1, 8), np.float32),) * 4
    )
    needle = f"calibration.stats={str(given)!r}: only for checkpoints thermojax cannot run"
    with pytest.raises(UserInputError, match=re.escape(needle)) as info:
        thermojax.pipeline.run(to_config(merged(LM, calibration={"stats": str(given)})))
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- a report that fails


def test_a_report_that_cannot_render_loses_nothing_else(tmp_path, monkeypatch, capsys):
    """A bug in the report: the run keeps its complete JSON, samples and log (with the
    traceback), the console gets one warning naming the report and the error, an earlier run's
    page is not left beside the new numbers, and the run ends normally (exit status 0)."""
    result = make_result()
    out = tmp_path / "run"
    out.mkdir()
    (out / "baseline_metrics.html").write_text("an earlier run's page")

    def broken(_: Result) -> str:
        raise RuntimeError("template bug\nsecond line")

    monkeypatch.setattr(outputs_module, "render_report", broken)
    monkeypatch.setattr(thermojax.pipeline, "run", lambda config, progress=None: result)
    monkeypatch.setattr(baseline_module, "enable_compilation_cache", lambda: None)
    monkeypatch.setenv("COLUMNS", "400")  # the warning on one line however long
    files = baseline_module.execute(to_config({"wandb": {"mode": "disabled"}}), out)
    assert "html" not in files
    assert sorted(p.name for p in out.iterdir()) == [
        "baseline_metrics.json",
        "baseline_metrics.log",
        "samples.npz",
    ]
    data = json.loads(files["json"].read_text())
    assert data == json.loads(json.dumps(result.to_dict()))  # complete: every number
    assert Result.from_dict(data).to_dict() == result.to_dict()
    with np.load(files["samples"]) as samples:
        np.testing.assert_array_equal(samples["quantized"], result.samples["quantized"])
    log = files["log"].read_text()
    assert "Traceback" in log and "RuntimeError: template bug" in log
    assert log.rstrip().endswith("done")
    captured = capsys.readouterr()
    warnings = [line for line in plain(captured.err).splitlines() if line.strip()]
    assert len(warnings) == 1, warnings
    assert "baseline_metrics.html not written" in warnings[0]
    assert "RuntimeError: template bug second line" in warnings[0]
    assert "Traceback" not in captured.err
    assert f"outputs: {out}/" in captured.out  # the summary still printed


def test_write_outputs_keeps_the_json_when_the_report_fails(tmp_path, monkeypatch, caplog):
    """Called directly (as tools do): the JSON lands under its own name, with no staged
    temporary left, and the failure is a warning record, not an exception."""

    def broken(_: Result) -> str:
        raise ValueError("no such chart")

    monkeypatch.setattr(outputs_module, "render_report", broken)
    result = make_result()
    with caplog.at_level(logging.INFO, logger="thermojax.cli.outputs"):
        paths = outputs_module.write_outputs(result, tmp_path)
    assert set(paths) == {"json", "samples"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline_metrics.json", "samples.npz"]
    assert read_result(paths["json"]).to_dict() == result.to_dict()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "ValueError: no such chart" in warned[0].getMessage()
    assert any(r.exc_info for r in caplog.records if r.levelno == logging.INFO)
