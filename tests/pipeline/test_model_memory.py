"""A masked-diffusion LM's memory planned from its headers before any weight is read: the plan's
terms against a float64 count of their own, Dream 7B's plan on machines of several sizes, and
the one-line refusals naming the setting and a value that fits."""

from __future__ import annotations

import json
import logging
import math
import re

import numpy as np
import pytest

from thermojax.cli.config import to_config
from thermojax.errors import UserInputError
from thermojax.models.hf import open_checkpoint, write_dream_like
from thermojax.models.hf.layouts import expected_shapes
from thermojax.models.hf.synthetic import DREAM_7B_CONFIG
from thermojax.pipeline import run
from thermojax.pipeline.measure.model_memory import check_lm_memory, plan_checkpoint, plan_lm_memory

GB = 1e9


def _dream_7b_plan(*, itemsize: int = 2, bits: int = 4, num_samples: int = 2, length: int = 128):
    c = DREAM_7B_CONFIG
    return plan_lm_memory(
        expected_shapes(c),
        dtype_bytes=itemsize,
        vocab=c["vocab_size"],
        hidden=c["hidden_size"],
        intermediate=c["intermediate_size"],
        heads=c["num_attention_heads"],
        bits=bits,
        group_size=64,
        num_samples=num_samples,
        length=length,
    )


def test_the_plan_counts_each_term_from_the_shapes():
    c = DREAM_7B_CONFIG
    shapes = expected_shapes(c)
    plan = _dream_7b_plan()
    sizes = np.array([math.prod(s) for s in shapes.values()], np.float64)
    assert plan.parameters == 2 * sizes.sum()
    assert plan.parameters / GB == pytest.approx(15.23, abs=0.01)  # Dream 7B's bf16 shards
    # Every 2-D tensor but the (untied) embedding is a quantized linear layer: 4 bits each, a
    # float32 scale and a uint8 zero point per 64 of them.
    linear = np.array(
        [math.prod(s) for n, s in shapes.items() if len(s) == 2 and "embed" not in n], np.float64
    )
    assert len(linear) == 7 * c["num_hidden_layers"] + 1
    assert plan.packed == pytest.approx(float(np.sum(linear / 2 + np.ceil(linear / 64) * 5)))
    assert plan.largest_weight == 4 * c["vocab_size"] * c["hidden_size"]  # lm_head in float32
    n, length, v = 2, 128, c["vocab_size"]
    step = 4.0 * (
        3 * n * length * v
        + 4 * n * length * c["hidden_size"]
        + 3 * n * length * c["intermediate_size"]
        + 2 * n * c["num_attention_heads"] * length**2
    )
    assert plan.step == pytest.approx(step + plan.largest_weight)
    # The held-out bound scores its 32 windows 4 at a time (1 GiB of logits per call).
    assert plan.heldout == pytest.approx(step * 2 + plan.largest_weight)
    assert plan.needed == plan.parameters + plan.packed + plan.heldout
    assert plan.dtype == "bfloat16" and _dream_7b_plan(itemsize=4).dtype == "float32"


def test_dream_7b_on_machines_of_several_sizes():
    plan = _dream_7b_plan()
    check_lm_memory(plan, free=plan.needed)  # exactly enough: no refusal
    # The parameters and their packed copy alone are past a 16 GB accelerator: model.dtype.
    with pytest.raises(UserInputError) as refused:
        check_lm_memory(plan, free=16 * GB)
    assert str(refused.value).startswith("model.dtype=bfloat16: the parameters (15.2 GB)")
    # float32 on 36 GB: the run (37.9 GB) does not fit; at bfloat16 it would.
    with pytest.raises(UserInputError) as refused:
        check_lm_memory(_dream_7b_plan(itemsize=4), free=36 * GB)
    line = str(refused.value)
    assert line.startswith("model.dtype=float32: the parameters (30.5 GB)")
    assert line.endswith(
        "; model.dtype=bfloat16 (15.2 GB) fits; model.residency=apart (about 33.7 GB) fits"
    )
    check_lm_memory(plan, free=36 * GB)
    # The W4 run of 2 sequences of 128 tokens fits 24 GB (22.6 GB), its held-out bound's call
    # of 4 windows being the larger working set; 0.4 GB less and that call is what does not
    # fit: a shorter length does.
    assert plan.needed / GB == pytest.approx(22.6, abs=0.05) and plan.heldout > plan.step
    check_lm_memory(plan, free=24 * GB)
    free = plan.needed - 0.4 * GB
    with pytest.raises(UserInputError) as refused:
        check_lm_memory(plan, free=free)
    line = str(refused.value)
    assert line.startswith("sampling.length=128: the run needs about 22.6 GB and 22.2 GB")
    shorter = int(re.search(r"about sampling\.length=(\d+) fits", line).group(1))
    assert shorter < 128
    check_lm_memory(_dream_7b_plan(length=shorter), free=free)


def test_too_many_sequences_name_a_count_that_fits():
    plan = _dream_7b_plan(num_samples=64, length=64)
    free = plan.parameters + plan.packed + 8 * GB
    with pytest.raises(UserInputError) as refused:
        check_lm_memory(plan, free=free)
    line = str(refused.value)
    assert line.startswith("sampling.num_samples=64: the run needs about")
    fits = int(re.search(r"at most about (\d+) fit", line).group(1))
    assert 1 <= fits < 64
    check_lm_memory(_dream_7b_plan(num_samples=fits, length=64), free=free)
    with pytest.raises(UserInputError):
        check_lm_memory(_dream_7b_plan(num_samples=fits + 2, length=64), free=free)


def test_a_folder_is_planned_from_its_headers_at_the_run_dtype(tmp_path):
    folder = write_dream_like(tmp_path / "m", scale=112, layers=2)
    stored = sum(info.nbytes for info in open_checkpoint(folder).tensors.values())
    sizes = {"bits": 4, "group_size": 4, "num_samples": 2, "length": 8}
    as_stored = plan_checkpoint(str(folder), dtype=None, **sizes)
    assert as_stored.parameters == stored and as_stored.dtype == "bfloat16"
    assert plan_checkpoint(str(folder), dtype="float32", **sizes).parameters == 2 * stored
    too_long = json.loads((folder / "config.json").read_text())["max_position_embeddings"] + 1
    with pytest.raises(UserInputError, match=f"sampling.length={too_long}: exceeds the model's"):
        plan_checkpoint(str(folder), dtype=None, **{**sizes, "length": too_long})


def test_the_run_plans_before_it_loads(tmp_path, caplog):
    folder = write_dream_like(tmp_path / "m", scale=112, layers=1)
    config = to_config(
        {
            "model": {"path": str(folder), "run": "diffusion"},
            "bit_width": 4,
            "group_size": 4,
            "num_time_groups": 2,
            "sampling": {"num_samples": 2, "steps": 4, "length": 8},
            "calibration": {"samples": 2, "samples_per_step": 4},
            "wandb": {"mode": "disabled"},
        }
    )
    with caplog.at_level(logging.INFO, logger="thermojax"):
        run(config)
    messages = [r.getMessage() for r in caplog.records]
    planned = next(i for i, m in enumerate(messages) if m.startswith("memory plan: parameters"))
    loaded = next(i for i, m in enumerate(messages) if m.startswith("masked-diffusion LM "))
    assert planned < loaded
