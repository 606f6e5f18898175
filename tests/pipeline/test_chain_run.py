"""``thermo.chain_budget.enabled``: the chain's error budget measured by a run of the shipped
digits DDPM, saved in the result's ``chain`` section, shown in the report, the console and W&B;
off by default, where the run, its numbers and its cache keys are what they were; refused in one
line before any work where it has no measure (a masked-diffusion LM, a weight-only checkpoint,
dynamic activations, a per-timestep schedule).

The runs are tiny (W4A4, DDIM 20 steps, 16 samples, 16 calibration samples, 8-sample chains):
the three real runs take about 12 s together on two shared cores, compilation included, so no
test here is marked slow.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from html_reading import parse
from rich.console import Console

from thermojax.cli.config import to_config
from thermojax.cli.runlog import print_summary
from thermojax.cli.tracking import summary_metrics, tracked_metrics
from thermojax.errors import UserInputError
from thermojax.files import REPORT_JSON
from thermojax.models import load_model
from thermojax.models.base import SamplerSpec
from thermojax.pipeline import run
from thermojax.pipeline.cache.stages import StageCache
from thermojax.pipeline.families.weight_only import WEIGHT_ONLY
from thermojax.pipeline.measure.chain import FINAL_ERROR, chain_budget
from thermojax.pipeline.measure.sampling import ActParams
from thermojax.pipeline.results.schema import read_result, write_result
from thermojax.pipeline.results.verdict import MEASURABLE_BOUNDARY_SHARE
from thermojax.pipeline.run.stages import CHAIN_STAGE, STAGES, stage_names
from thermojax.pipeline.weights.quantize import quantize_weights
from thermojax.report import render_report

TINY = {
    "bit_width": 4,
    "act_bits": 4,
    "calibration": {"samples": 16, "samples_per_step": 16},
    "sampling": {"num_samples": 16, "sampler": "ddim", "steps": 20},
}
CHAIN_SAMPLES = 8  # not sampling.num_samples: the section says which count it ran
ON = {**TINY, "thermo": {"chain_budget": {"enabled": True, "samples": CHAIN_SAMPLES}}}
ENHANCED = {
    **ON,
    "thermo": {**ON["thermo"], "smoothing": {"enabled": True, "level": "group", "window": 1}},
    "time_groups": {"strategy": "adaptive", "min_group_size": 2},
}
SECTION_KEYS = {
    "total",
    "per_group",
    "per_boundary",
    "additivity",
    "edges",
    "steps_per_group",
    "measure",
    "num_samples",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``"on"``, ``"off"`` and ``"enhanced"`` results of the tiny run, each computed in a cache
    of its own (no entry shared: the numbers off are computed, not read back from the run with
    it on)."""
    found = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, settings in (("off", TINY), ("on", ON), ("enhanced", ENHANCED)):
            patch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path_factory.mktemp(f"cache-{name}")))
            found[name] = run(to_config(settings))
    return found


@pytest.fixture(scope="module")
def saved(runs, tmp_path_factory) -> Path:
    """``baseline_metrics.json`` of the run with the budget on."""
    return write_result(runs["on"], tmp_path_factory.mktemp("job") / REPORT_JSON)


def test_the_json_chain_section_is_the_budget_of_the_runs_own_inputs(runs, saved):
    result = runs["on"]
    chain = json.loads(saved.read_text())["chain"]
    assert set(chain) == SECTION_KEYS
    assert chain["measure"] == FINAL_ERROR and chain["num_samples"] == CHAIN_SAMPLES
    groups = result.num_time_groups
    assert len(chain["per_group"]) == groups == 4 and len(chain["per_boundary"]) == groups - 1
    # The run's time groups, on the model's timesteps; the sampler's 20 steps spread over them.
    assert chain["edges"] == [a for a, _ in result.time_groups] + [result.num_timesteps]
    assert chain["steps_per_group"] == [5, 5, 5, 5]
    # The library, called here with what the run used: its weights (minmax W4), the activation
    # parameters saved in the result (float32, exact in the JSON), its sampler and its seed.
    model = load_model()
    qweights, _ = quantize_weights(model, bits=4, group_size=64)
    act_params = ActParams(
        np.array([layer.scales for layer in result.layers], np.float32),
        np.array([layer.zero_points for layer in result.layers], np.float32),
        np.array(chain["edges"]),
        result.act_bits,
    )
    direct = chain_budget(
        model,
        qweights=qweights,
        act_params=act_params,
        num_samples=CHAIN_SAMPLES,
        seed=0,
        sampler=SamplerSpec("ddim", steps=20, eta=0.0),
    )
    # The same program on the same inputs: equal up to float64 printing.
    assert chain["total"] == pytest.approx(direct.total, rel=1e-12)
    np.testing.assert_allclose(chain["per_group"], direct.per_group, rtol=1e-12)
    np.testing.assert_allclose(chain["per_boundary"], direct.per_boundary, rtol=1e-12)
    assert chain["total"] > 0 and all(v > 0 for v in chain["per_group"])
    # Errors injected at different steps do not add up; additivity is measured, not assumed.
    # It is sum(per_group) / total by definition; its value here (about 0.5-0.6 on these tiny
    # chains, 0.65-0.9 on larger ones) is only checked to be of the order of the total.
    assert chain["additivity"] == pytest.approx(sum(chain["per_group"]) / chain["total"])
    assert 0.25 < chain["additivity"] < 2.0


def test_the_section_reads_back_and_old_files_without_it_still_read(runs, tmp_path):
    result = runs["on"]
    back = read_result(write_result(result, tmp_path / REPORT_JSON))
    assert back.chain == result.chain
    data = result.to_dict()
    del data["chain"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    assert read_result(old).chain is None


def test_off_leaves_the_result_without_a_chain_and_every_number_as_it_was(runs):
    off, on = runs["off"], runs["on"]
    assert off.chain is None and "chain" not in off.to_dict()
    assert "chain budget" not in off.timings_s and CHAIN_STAGE in on.timings_s
    assert off.config["thermo"]["chain_budget"] == {"enabled": False, "samples": None}
    # The interpretation reads the budget on top of what it said without it.
    assert on.interpretation.summary.startswith(f"{off.interpretation.summary} The chain's")
    assert on.interpretation.actions[-len(off.interpretation.actions) :] == (
        off.interpretation.actions
    )
    assert without_times(off) == without_times(on)
    np.testing.assert_array_equal(off.samples["quantized"], on.samples["quantized"])
    # Both computed every entry in their own cache folder.
    assert (
        off.cache == on.cache == {"calibration": "miss", "fp32_samples": "miss", "quality": "miss"}
    )


def test_an_enhanced_run_budgets_the_parameters_its_sampler_used(runs):
    result = runs["enhanced"]
    assert result.enhancement is not None and result.baseline is not None
    edges = tuple(a for a, _ in result.time_groups) + (result.num_timesteps,)
    assert result.chain.edges == edges != (0, 250, 500, 750, 1000)  # the adaptive groups
    assert sum(result.chain.steps_per_group) == 20
    assert len(result.chain.per_group) == result.num_time_groups
    # Other parameters, so another budget than the uniform baseline's.
    assert result.chain.total != runs["on"].chain.total


def without_times(result) -> dict:
    """The JSON of ``result`` less what differs between two runs of one configuration (wall
    times, the environment) and what the switch itself adds (its config entry, the section,
    the interpretation's reading of it)."""
    varying = {"chain", "config", "timings_s", "quantization_time_s", "environment"}
    data = {k: v for k, v in result.to_dict().items() if k not in varying}
    data["interpretation"] = {
        k: v for k, v in data["interpretation"].items() if k not in ("summary", "actions")
    }
    data["weights"] = {
        k: v for k, v in data["weights"].items() if k not in ("seconds", "bytes_per_second")
    }
    return data


def test_the_switch_re_keys_no_cache_entry():
    model = load_model()
    qweights, _ = quantize_weights(model, bits=4, group_size=64)
    off = to_config(TINY).to_dict()
    before_the_option = {**off, "thermo": dict(off["thermo"])}
    del before_the_option["thermo"]["chain_budget"]
    keys = {
        name: StageCache(model, config, qweights).quality_key()
        for name, config in (
            ("off", off),
            ("on", to_config(ON).to_dict()),
            ("before the option", before_the_option),
        )
    }
    assert len(set(keys.values())) == 1, keys


def test_the_stages_are_the_baselines_unless_it_is_on():
    assert stage_names(to_config(TINY)) == STAGES
    assert stage_names(to_config(ON)) == (*STAGES, CHAIN_STAGE)


def test_the_report_console_and_wandb_show_the_budget(runs, saved):
    on, off = read_result(saved), runs["off"]
    page = render_report(on)
    assert 'aria-label="Chain error budget: final error by the time group' in page
    assert page.count('class="compact chain-budget"') == 1
    assert "Chain error budget" not in render_report(off)
    printed = io.StringIO()
    print_summary(Console(file=printed, width=400), on, {"json": saved})
    (line,) = [text for text in printed.getvalue().splitlines() if "chain budget" in text]
    assert f"{CHAIN_SAMPLES} samples" in line and f"total {on.chain.total:.4g}" in line
    metrics = tracked_metrics(on)
    assert metrics["chain/total"] == on.chain.total
    assert metrics["chain/additivity"] == on.chain.additivity
    assert [metrics[f"chain/group_{g}"] for g in range(4)] == list(on.chain.per_group)
    assert [metrics[f"chain/boundary_{b}"] for b in range(3)] == list(on.chain.per_boundary)
    assert not any(key.startswith("chain/") for key in summary_metrics(off))


def test_the_interpretation_names_where_the_error_enters_and_which_jumps_cost_it(saved):
    """The run's own budget, read back: the summary on the page and the console's next steps
    name the groups with most of the groups' summed error and exactly the boundaries whose
    |cost| passes MEASURABLE_BOUNDARY_SHARE of the total."""
    result = read_result(saved)
    chain, summary = result.chain, result.interpretation.summary
    shares = np.asarray(chain.per_group) / np.sum(chain.per_group)
    top = int(np.argmax(shares))
    assert f"g{top} (t in [{chain.edges[top]}, {chain.edges[top + 1]})): {shares[top]:.0%}" in (
        summary
    )
    measurable = [
        b
        for b, cost in enumerate(chain.per_boundary)
        if abs(cost) > MEASURABLE_BOUNDARY_SHARE * chain.total
    ]
    for b in range(len(chain.per_boundary)):
        assert (f"b{b} (t={chain.edges[b + 1]}: " in summary) == (b in measurable), b
    if not measurable:
        assert "the jumps between time groups cost nothing measurable" in summary
    hero = parse(render_report(result)).find("section", "hero")
    assert hero.find("p").text() == " ".join(summary.split())
    assert "The chain's error budget puts most of the final error in time group" in summary
    printed = io.StringIO()
    print_summary(Console(file=printed, width=2000), result, {"json": saved})
    (line,) = [text for text in printed.getvalue().splitlines() if text.startswith("  next:")]
    assert f"Most of the final error enters at the steps of g{top} " in line


def refused_before_any_stage(config) -> str:
    """The one-line refusal of ``run(config)``, checked to come before any stage started."""
    started: list[str] = []
    with pytest.raises(UserInputError) as info:
        run(config, progress=lambda stage, index, total: started.append(stage))
    assert started == []
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_masked_diffusion_lm_with_it_on_is_one_line_before_any_work():
    config = to_config({"model": {"shipped": "pydoc-mdlm"}, "thermo": ON["thermo"]})
    assert refused_before_any_stage(config).startswith(
        "thermo.chain_budget.enabled=True: a masked-diffusion LM has no chain error budget"
    )


def test_a_weight_only_checkpoint_with_it_on_is_one_line():
    with pytest.raises(UserInputError, match="a checkpoint measured weight-only has no chain"):
        WEIGHT_ONLY.check(to_config(ON))


def with_chain(**extra) -> dict:
    """``ON`` with ``extra`` sections, ``thermo`` merged with its ``chain_budget``."""
    thermo = {**ON["thermo"], **extra.pop("thermo", {})}
    thermo["chain_budget"] = {**ON["thermo"]["chain_budget"], **thermo["chain_budget"]}
    return {**ON, **extra, "thermo": thermo}


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"act": {"mode": "dynamic"}}, "act.mode=dynamic quantizes each token"),
        (
            {"thermo": {"smoothing": {"enabled": True, "window": 5}}},
            "thermo.smoothing.level=timestep makes a per-timestep schedule",
        ),
        ({"thermo": {"chain_budget": {"samples": 0}}}, "thermo.chain_budget.samples=0: must be"),
    ],
    ids=["dynamic", "per-timestep-schedule", "no-samples"],
)
def test_what_it_cannot_budget_is_refused_by_the_settings(extra, needle):
    with pytest.raises(UserInputError) as info:
        to_config(with_chain(**extra))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_group_level_smoothing_and_adaptive_groups_are_budgeted():
    """Their parameters stay one per time group: the settings take them."""
    for extra in (
        {"thermo": {"smoothing": {"enabled": True, "level": "group", "window": 1}}},
        {"time_groups": {"strategy": "adaptive"}},
    ):
        assert to_config(with_chain(**extra)).thermo.chain_budget.enabled
    assert dataclasses.asdict(to_config(TINY).thermo.chain_budget) == {
        "enabled": False,
        "samples": None,
    }
