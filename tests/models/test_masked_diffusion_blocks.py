"""LLaDA's sampler in the masked-diffusion sampler: semi-autoregressive blocks and the
low-confidence rule, against a float64 numpy re-implementation of LLaDA's ``generate`` loop
(``ML-GSAI/LLaDA``, ``generate.py``), and through the LM model and the pipeline."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thermojax.cli.config import to_config
from thermojax.errors import UserInputError
from thermojax.models.masked_diffusion import UNMASKING_RULES, reveal_plan, sample

V = 7
MASK = 6
# Chi-square critical value at p = 1e-4 with 4 degrees of freedom (scipy.stats.chi2.ppf).
CHI2_CRITICAL_4 = 23.51


def llada_transfer_counts(block_masked: int, steps: int) -> list[int]:
    """LLaDA's ``get_num_transfer_tokens`` for one row: the block's masked count over its
    steps, the remainder one each on the first steps."""
    counts = [block_masked // steps] * steps
    for i in range(block_masked % steps):
        counts[i] += 1
    return counts


def llada_generate(logits_np, prompt, *, steps, gen_length, block_length):
    """LLaDA's ``generate`` at temperature 0 with ``remasking='low_confidence'``, in float64,
    every row of the batch its own top-k; the trajectory after each step. Among equal
    confidences the lower position first (``torch.topk`` leaves that order open)."""
    num_samples, size = prompt.shape
    x = np.full((num_samples, size + gen_length), MASK, np.int64)
    x[:, :size] = prompt
    assert gen_length % block_length == 0
    num_blocks = gen_length // block_length
    assert steps % num_blocks == 0
    steps = steps // num_blocks
    trajectory = []
    for block in range(num_blocks):
        start, end = size + block * block_length, size + (block + 1) * block_length
        block_masked = (x[:, start:end] == MASK).sum(axis=1)
        counts = [llada_transfer_counts(int(m), steps) for m in block_masked]
        for i in range(steps):
            mask_index = x == MASK
            logits = np.asarray(logits_np(x), np.float64)
            x0 = np.argmax(logits, axis=-1)  # add_gumbel_noise at temperature 0: the logits
            p = np.exp(logits - logits.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            x0_p = np.take_along_axis(p, x0[..., None], axis=-1)[..., 0]
            x0_p[:, end:] = -np.inf
            x0 = np.where(mask_index, x0, x)
            confidence = np.where(mask_index, x0_p, -np.inf)
            for j in range(num_samples):
                chosen = np.argsort(-confidence[j], kind="stable")[: counts[j][i]]
                x[j, chosen] = x0[j, chosen]
            trajectory.append(x.copy())
    return np.stack(trajectory)


def neighbour_logits(length, seed, xp):
    """Logits that depend on both neighbours of a position (revealing one changes the others'),
    ``[MASK]`` impossible (LLaDA keeps its logit; this sampler removes it: the same then)."""
    rng = np.random.default_rng(seed)
    left, right, position = (2.0 * rng.normal(size=s) for s in ((V, V), (V, V), (length, V)))
    tables = [np.asarray(t, np.float32) if xp is jnp else t for t in (left, right, position)]
    left, right, position = (xp.asarray(t) for t in tables)

    def logits(tokens):
        z = left[xp.roll(tokens, 1, axis=1)] + right[xp.roll(tokens, -1, axis=1)] + position[None]
        return xp.where(xp.arange(V) == MASK, -xp.inf, z)

    return logits


def run_blocks(logits_fn, **overrides):
    kwargs = {"key": jax.random.key(0), "num_samples": 3, "mask_token_id": MASK, "vocab_size": V}
    kwargs.update(overrides)
    return sample(logits_fn, **kwargs)


# --- the schedule -------------------------------------------------------------------------


def test_reveal_plan_worked_cases():
    counts, block_end = reveal_plan(8, 6, block_length=4)  # 2 blocks of 3 steps: 4 = 2 + 1 + 1
    assert counts.tolist() == [2, 1, 1, 2, 1, 1] and block_end.tolist() == [4, 4, 4, 8, 8, 8]
    counts, block_end = reveal_plan(4, 8, block_length=2)  # more steps than positions
    assert counts.tolist() == [1, 1, 0, 0, 1, 1, 0, 0] and block_end.tolist() == [2] * 4 + [4] * 4
    assert counts.dtype == block_end.dtype == np.int32
    counts, block_end = reveal_plan(10, 4)  # no blocks: Dream's schedule, all eligible
    assert counts.tolist() == [2, 2, 2, 4] and block_end is None


@settings(max_examples=80, deadline=None)
@given(
    num_blocks=st.integers(1, 8),
    block_length=st.integers(1, 40),
    steps_per_block=st.integers(1, 50),
)
def test_reveal_plan_is_lladas_per_block_split(num_blocks, block_length, steps_per_block):
    counts, block_end = reveal_plan(
        num_blocks * block_length, num_blocks * steps_per_block, block_length=block_length
    )
    expected = []
    for _ in range(num_blocks):  # every position of a block is masked when it starts
        expected += llada_transfer_counts(block_length, steps_per_block)
    assert counts.tolist() == expected
    assert counts.min() >= 0 and counts.sum() == num_blocks * block_length
    ends = [(k // steps_per_block + 1) * block_length for k in range(len(expected))]
    assert block_end.tolist() == ends


@settings(max_examples=80, deadline=None)
@given(
    num_positions=st.integers(1, 120),
    num_steps=st.integers(1, 64),
    block_length=st.integers(1, 130),
)
def test_reveal_plan_refuses_what_llada_asserts_against(num_positions, num_steps, block_length):
    whole_blocks = num_positions % block_length == 0
    if whole_blocks and num_steps % (num_positions // block_length) == 0:
        assert reveal_plan(num_positions, num_steps, block_length=block_length)[0].sum() == (
            num_positions
        )
        return
    name = "num_steps" if whole_blocks else "block_length"
    with pytest.raises(ValueError, match=f"{name}=") as raised:
        reveal_plan(num_positions, num_steps, block_length=block_length)
    assert str(num_positions // block_length if whole_blocks else num_positions) in str(
        raised.value
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((10, 4), {"block_length": 4}, "block_length=4 must divide the 10 positions"),
        ((12, 4), {"block_length": 4}, "num_steps=4 must be a multiple of the 3 blocks"),
        ((12, 6), {"block_length": 0}, "block_length must be an integer >= 1"),
        ((12, 6), {"block_length": 2.0}, "block_length must be an integer >= 1"),
    ],
    ids=["positions", "steps", "zero", "float"],
)
def test_reveal_plan_errors_name_the_values(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        reveal_plan(*args, **kwargs)


# --- the sampler against LLaDA's loop -------------------------------------------------------


@pytest.mark.parametrize(
    ("gen_length", "block_length", "steps", "prompt"),
    [(8, 4, 4, ()), (12, 4, 6, (1, 2)), (12, 3, 8, (0,)), (10, 10, 5, (3, 3, 3))],
    ids=["2-blocks", "3-blocks-prompt", "4-blocks-2-steps", "one-block"],
)
def test_low_confidence_blocks_match_lladas_generate_in_float64(
    gen_length, block_length, steps, prompt
):
    size = len(prompt)
    length = size + gen_length
    # Three different prompts of the same length, so the rows differ (LLaDA's batch).
    prompts = np.array([[(t + row) % MASK for t in prompt] for row in range(3)], np.int64)
    prompts = prompts.reshape(3, size)
    out = run_blocks(
        lambda tokens, step: neighbour_logits(length, 5, jnp)(tokens),
        length=length,
        num_steps=steps,
        unmasking="low-confidence",
        block_length=block_length,
        prompt=jnp.asarray(prompts, jnp.int32) if size else None,
    )
    reference = llada_generate(
        neighbour_logits(length, 5, np),
        prompts,
        steps=steps,
        gen_length=gen_length,
        block_length=block_length,
    )
    np.testing.assert_array_equal(np.asarray(out.trajectory), reference)


@settings(max_examples=6, deadline=None)
@given(
    num_blocks=st.integers(1, 3),
    block_length=st.integers(1, 4),
    steps_per_block=st.integers(1, 3),
    size=st.integers(0, 2),
    seed=st.integers(0, 3),
)
def test_low_confidence_blocks_match_lladas_generate_for_any_plan(
    num_blocks, block_length, steps_per_block, size, seed
):
    gen_length, steps = num_blocks * block_length, num_blocks * steps_per_block
    length = size + gen_length
    prompts = np.arange(3 * size).reshape(3, size) % MASK
    out = run_blocks(
        lambda tokens, step: neighbour_logits(length, seed, jnp)(tokens),
        length=length,
        num_steps=steps,
        unmasking="low-confidence",
        block_length=block_length,
        prompt=jnp.asarray(prompts, jnp.int32) if size else None,
    )
    reference = llada_generate(
        neighbour_logits(length, seed, np),
        prompts,
        steps=steps,
        gen_length=gen_length,
        block_length=block_length,
    )
    np.testing.assert_array_equal(np.asarray(out.trajectory), reference)


@pytest.mark.parametrize("rule", UNMASKING_RULES)
def test_every_rule_reveals_block_by_block_on_the_plan(rule):
    size, block_length, steps = 2, 3, 6  # 9 generated positions: 3 blocks of 2 steps
    length = size + 9
    out = run_blocks(
        lambda tokens, step: neighbour_logits(length, 1, jnp)(tokens),
        num_samples=5,
        length=length,
        num_steps=steps,
        unmasking=rule,
        temperature=1.0,
        top_p=0.9,
        block_length=block_length,
        prompt=jnp.array([4, 4]),
    )
    counts, _ = reveal_plan(9, steps, block_length=block_length)
    reveal = np.asarray(out.reveal_step)[:, size:]
    block_of_step = reveal // 2
    block_of_position = np.arange(9) // block_length
    np.testing.assert_array_equal(block_of_step, np.broadcast_to(block_of_position, (5, 9)))
    for row in reveal:
        np.testing.assert_array_equal(np.bincount(row, minlength=steps), counts)
    assert not np.any(np.asarray(out.tokens) == MASK)


def test_without_blocks_the_low_confidence_rule_is_the_confidence_rule_at_temperature_0():
    # Temperature 0: the same argmax, scored by the same softmax: the same samples.
    logits_fn = lambda tokens, step: neighbour_logits(9, 2, jnp)(tokens)
    low, confident = (
        run_blocks(logits_fn, length=9, num_steps=4, unmasking=rule)
        for rule in ("low-confidence", "confidence")
    )
    np.testing.assert_array_equal(np.asarray(low.trajectory), np.asarray(confident.trajectory))


# --- the low-confidence rule's distribution -------------------------------------------------

# Position 0 peaked, position 1 flat: tempering (T = 3) moves them towards uniform at different
# rates, so scoring by the untempered probability (LLaDA) and by the tempered one (Dream's
# "confidence") reveal different positions first.
P0 = np.array([0.8, 0.17, 0.02, 0.01])
P1 = np.array([0.3, 0.26, 0.23, 0.21])
TEMPERATURE = 3.0


def first_reveal_probabilities(score0, score1, q0, q1):
    """P(position i revealed first with token a) when each position draws its candidate from
    ``q_i`` and the higher score goes first (position 0 on a tie): ``[2, 4]`` in float64."""
    out = np.zeros((2, 4))
    for a in range(4):
        for b in range(4):
            if score0[a] >= score1[b]:
                out[0, a] += q0[a] * q1[b]
            else:
                out[1, b] += q0[a] * q1[b]
    return out


def test_low_confidence_scores_the_draw_by_its_untempered_probability():
    logits = np.zeros((2, 5))
    logits[:, :4] = np.log(np.stack([P0, P1])) + 3.0
    logits[:, 4] = 30.0  # [MASK] is removed, however likely
    fixed = jnp.asarray(logits, jnp.float32)
    out = sample(
        lambda tokens, step: jnp.broadcast_to(fixed, (*tokens.shape, 5)),
        key=jax.random.key(11),
        num_samples=4000,
        length=2,
        num_steps=2,
        mask_token_id=4,
        vocab_size=5,
        unmasking="low-confidence",
        temperature=TEMPERATURE,
        block_length=2,  # one block, one position per step
    )
    reveal, tokens = np.asarray(out.reveal_step), np.asarray(out.tokens)
    first = np.argmax(reveal == 0, axis=1)
    observed = np.zeros((2, 4))
    np.add.at(observed, (first, tokens[np.arange(4000), first]), 1)
    tempered = [p ** (1 / TEMPERATURE) / np.sum(p ** (1 / TEMPERATURE)) for p in (P0, P1)]
    llada = first_reveal_probabilities(P0, P1, *tempered)
    dream = first_reveal_probabilities(*tempered, *tempered)

    def chi_square(expected):
        kept = expected > 0
        assert np.all(observed[~kept] == 0)
        e = expected[kept] * observed.sum()
        return float(np.sum((observed[kept] - e) ** 2 / e))

    assert int((llada > 0).sum()) == 5  # 4 degrees of freedom
    assert chi_square(llada) < CHI2_CRITICAL_4
    # Scored by the tempered probability, position 0 would often go first with token 1.
    assert dream[0, 1] > 0.25 and chi_square(dream) > 100 * CHI2_CRITICAL_4


# --- the LM model, its cache identity and the pipeline -------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from thermojax.models.hf import write_dream_like

    return write_dream_like(tmp_path_factory.mktemp("lm") / "dream", scale=112, layers=1)


def test_the_lm_model_steps_through_lladas_blocks(folder):
    from thermojax.models.dream import load_dream, shift_logits
    from thermojax.models.dream.diffusion import MaskedDiffusionLM
    from thermojax.pipeline.cache.stages import model_fingerprint
    from thermojax.pipeline.measure.sampling import sample as sample_model

    lm = load_dream(folder)
    options = {"length": 14, "steps": 6, "unmasking": "low-confidence", "prompt": (7, 8)}
    model = MaskedDiffusionLM.create(lm, block_length=4, **options)
    samples = sample_model(model, num_samples=2, seed=0)
    trajectory = np.asarray(samples.trajectory)[::-1]  # step order
    core = sample(
        lambda tokens, step: shift_logits(lm.forward(None, tokens)[0]),
        key=jax.random.key(0),
        num_samples=2,
        length=14,
        num_steps=6,
        mask_token_id=model.options.mask_token_id,
        vocab_size=lm.vocab_size,
        unmasking="low-confidence",
        block_length=4,
        prompt=jnp.array([7, 8]),
    )  # temperature 0: deterministic, whatever the keys
    np.testing.assert_array_equal(trajectory, np.asarray(core.trajectory))
    assert model.schedule.tolist() == [2, 2, 2, 2, 2, 2]
    revealed = trajectory != model.options.mask_token_id
    for k, end in enumerate([6, 6, 10, 10, 14, 14]):  # blocks [2, 6), [6, 10), [10, 14)
        assert not revealed[k, :, end:].any()
        assert revealed[k, :, :end].all() == (k % 2 == 1)  # a block's 2 steps fill it
    plain = MaskedDiffusionLM.create(lm, **options)
    assert model.config["blocks"] == 4 and "blocks" not in plain.config  # one block: keys as before
    assert model_fingerprint(model) != model_fingerprint(plain)
    assert model_fingerprint(model) != model_fingerprint(
        dataclasses.replace(model, options=dataclasses.replace(model.options, block_length=2))
    )
    with pytest.raises(ValueError, match="num_steps=5 must be a multiple of the 3 blocks"):
        MaskedDiffusionLM.create(lm, block_length=4, **{**options, "steps": 5})


def lm_settings(folder, **sampling):
    return to_config(
        {
            "model": {"path": str(folder), "run": "diffusion"},
            "bit_width": 4,
            "group_size": 4,
            "num_time_groups": 4,
            "calibration": {"samples": 4, "samples_per_step": 8},
            "sampling": {"num_samples": 4, "steps": 8, "length": 16, **sampling},
        }
    )


@pytest.mark.parametrize(
    ("block_length", "steps", "reason"),
    [
        (5, 8, "block_length=5 must divide the 16 positions to generate"),
        (4, 6, "num_steps=6 must be a multiple of the 4 blocks of block_length=4"),
    ],
    ids=["length", "steps"],
)
def test_blocks_that_do_not_fit_are_one_line_naming_the_settings(
    folder, block_length, steps, reason
):
    from thermojax.pipeline import run

    with pytest.raises(UserInputError) as refused:
        run(lm_settings(folder, block_length=block_length, steps=steps))
    message = str(refused.value)
    named = f"sampling.block_length={block_length}, sampling.steps={steps}, sampling.length=16: "
    assert "\n" not in message and f"{named}{reason}" in message


def test_the_digits_ddpm_refuses_block_length():
    from thermojax.pipeline import run

    with pytest.raises(UserInputError) as refused:
        run(to_config({"sampling": {"block_length": 32}}))
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("sampling.block_length=32: only for a masked-diffusion LM")


@pytest.mark.slow
def test_the_shipped_lm_runs_lladas_sampler(tmp_path):
    """``model=pydoc-mdlm sampling.unmasking=low-confidence sampling.block_length=8`` in this
    process, on the smallest settings: 32 positions in 4 blocks, 8 steps."""
    from thermojax.pipeline import run

    config = {
        "model": {"shipped": "pydoc-mdlm"},
        "bit_width": 4,
        "num_time_groups": 4,
        "calibration": {"samples": 2, "samples_per_step": 4},
        "sampling": {
            "num_samples": 2,
            "steps": 8,
            "length": 32,
            "unmasking": "low-confidence",
            "block_length": 8,
        },
        "thermo": {"smoothing": {"window": 1}},
        "phases": {"windows": [1], "min_group_size": 1},
        "wandb": {"mode": "disabled"},
    }
    result = run(to_config(config))
    assert result.sampler["description"] == (
        "masked-diffusion unmasking (low-confidence, blocks of 8), 8 steps"
    )
    assert result.config["sampling"]["block_length"] == 8
    data = result.to_dict()["quality"]
    assert len(data["drift_per_timestep"]) == 8
    assert 0 <= data["token_agreement"] <= 1
    assert np.isfinite(data["generative_perplexity_fp32"])
    tokens = np.asarray(result.samples["fp32"])
    assert tokens.shape == (2, 32) and not np.any(tokens == 256)  # 256: its [MASK]


def test_blocks_that_do_not_fit_the_shipped_lm_end_the_command_in_one_line(
    tmp_path, monkeypatch, capsys
):
    # Through the command's own main in this process: Hydra takes sampling.block_length, the
    # model's T = 64 steps and L = 128 positions refuse blocks of 5.
    import os

    from in_process import run_main

    from thermojax.cli.baseline import main

    args = ["model=pydoc-mdlm", "sampling.block_length=5", "wandb.mode=disabled"]
    args += [f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_main(
        main, args, env=dict(os.environ), cwd=tmp_path, monkeypatch=monkeypatch, capsys=capsys
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert (
        "sampling.block_length=5, sampling.steps=64, sampling.length=128: block_length=5"
        in (lines[0])
    )
    assert not (tmp_path / "run" / "baseline_metrics.json").exists()
