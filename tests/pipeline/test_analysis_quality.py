"""The quality band (quantized samples against fp32's), the verdict, and what they advise.

Hand-built quality figures at and around each limit of both families; the shipped models'
measured rows (README's tables) land where the limits' reasons say they should.
"""

from __future__ import annotations

import dataclasses

import pytest

from thermojax.pipeline.quality.image import ImageQuality
from thermojax.pipeline.quality.text import TextQuality
from thermojax.pipeline.results.verdict import interpret, quality_band
from thermojax.pipeline.settings import InterpretationConfig

BANDS = InterpretationConfig()
DRIFT = {"drift_per_timestep": (0.1, 0.2), "drift_per_group": (0.15,), "drift_mean": 0.15}


def image(frechet_ratio=1.0, coverage=(1.0, 1.0), final_mse=0.05, fp32_frechet=20.0):
    """Digits DDPM figures: Frechet ``fp32_frechet * frechet_ratio``, coverage (fp32, quantized)."""
    return ImageQuality(
        **DRIFT,
        final_mse=final_mse,
        frechet_fp32=fp32_frechet,
        frechet_quantized=fp32_frechet * frechet_ratio,
        class_coverage_fp32=coverage[0],
        class_coverage_quantized=coverage[1],
    )


def text(heldout_ratio=1.0, agreement=0.85, generative_ratio=1.0, heldout=True):
    """Masked-diffusion LM figures."""
    return TextQuality(
        **DRIFT,
        token_agreement=agreement,
        generative_perplexity_fp32=6.0,
        generative_perplexity_quantized=6.0 * generative_ratio,
        heldout_perplexity_fp32=8.0 if heldout else None,
        heldout_perplexity_quantized=8.0 * heldout_ratio if heldout else None,
    )


def verdict(quality, *, score=0.95, bit_width=2, act_bits=8, bands=BANDS):
    return interpret(
        smoothness_score=score,
        violations=(),
        boundary_scores=(0.9, 0.9),
        cosine_similarity=0.9,
        bands=bands,
        quality=quality,
        bit_width=bit_width,
        act_bits=act_bits,
    )


@pytest.mark.parametrize(
    ("quality", "band"),
    [
        (image(frechet_ratio=0.9), "good"),
        (image(frechet_ratio=1.5), "good"),
        (image(frechet_ratio=1.51), "fair"),
        (image(frechet_ratio=3.0), "fair"),
        (image(frechet_ratio=3.01), "poor"),
        (image(coverage=(1.0, 0.9)), "good"),
        (image(coverage=(0.8, 0.7)), "good"),  # 0.8 - 0.7 is 0.10000000000000009 in floats
        (image(coverage=(1.0, 0.8)), "fair"),
        (image(coverage=(1.0, 0.7)), "fair"),
        (image(coverage=(1.0, 0.6)), "poor"),
        (image(coverage=(0.9, 1.0)), "good"),  # more classes than fp32 is no loss
        (image(final_mse=2.0), "good"),
        (image(final_mse=2.01), "fair"),
        (image(final_mse=18.0), "fair"),
        (image(final_mse=18.01), "poor"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_image_band_at_and_around_each_limit(quality, band):
    assert quality_band(quality, bands=BANDS).band == band


@pytest.mark.parametrize(
    ("quality", "band"),
    [
        (text(heldout_ratio=0.98), "good"),
        (text(heldout_ratio=1.05), "good"),
        (text(heldout_ratio=1.06), "fair"),
        (text(heldout_ratio=1.25), "fair"),
        (text(heldout_ratio=1.26), "poor"),
        (text(agreement=0.7), "good"),
        (text(agreement=0.69), "fair"),
        (text(agreement=0.3), "fair"),
        (text(agreement=0.29), "poor"),
        # held-out text decides over a noisy generative perplexity
        (text(heldout_ratio=1.0, generative_ratio=1.6), "good"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_text_band_at_and_around_each_limit(quality, band):
    assert quality_band(quality, bands=BANDS).band == band


@pytest.mark.parametrize(
    ("generative_ratio", "band"),
    [
        (1.0, "good"),
        (1.05, "good"),
        (1 / 1.05, "good"),
        (1.2, "fair"),
        (1.3, "poor"),
        (0.7, "poor"),
    ],
)
def test_an_lm_without_heldout_text_is_banded_on_generative_perplexity_either_way(
    generative_ratio, band
):
    """Samples the fp32 model finds much more predictable than its own changed too."""
    got = quality_band(text(generative_ratio=generative_ratio, heldout=False), bands=BANDS)
    assert got.band == band
    (perplexity, agreement) = got.checks
    assert perplexity.criterion.startswith("generative perplexity within 1.05x of fp32's")
    assert "no held-out text" in perplexity.criterion
    assert perplexity.value.startswith(f"{generative_ratio:.2f}x (")
    assert agreement.criterion.startswith("token agreement")


def test_the_worst_figure_sets_the_band_and_names_it():
    got = quality_band(image(frechet_ratio=1.2, coverage=(1.0, 0.8), final_mse=30.0), bands=BANDS)
    assert got.band == "poor" and got.detail == "final MSE 30 px^2"
    assert [c.met for c in got.checks] == [True, False, False]
    assert [c.value for c in got.checks] == ["1.20x (24.00 vs 20.00)", "80% vs 100%", "30"]
    # two figures equally bad: the first one (Frechet) names the band
    got = quality_band(image(frechet_ratio=5.0, final_mse=30.0), bands=BANDS)
    assert got.detail == "Frechet 5.00x fp32"


def test_limits_come_from_config():
    lenient = InterpretationConfig(poor_above_frechet_ratio=10.0, good_max_final_mse=10.0)
    w4 = image(frechet_ratio=3.57, final_mse=7.4)
    assert quality_band(w4, bands=BANDS).band == "poor"
    assert quality_band(w4, bands=lenient).band == "fair"
    assert "poor above 10x" in quality_band(w4, bands=lenient).checks[0].criterion


def test_no_quality_or_no_figures_means_no_band():
    assert quality_band(None, bands=BANDS) == (None, "", ())
    no_reference = ImageQuality(**DRIFT)  # a model without an image reference
    assert quality_band(no_reference, bands=BANDS).band is None
    got = verdict(None)
    assert (got.quality_band, got.verdict, got.quality_checks) == (None, None, ())
    assert got.band == "excellent"
    assert "no verdict on the model" in got.summary
    assert got.actions == ("Smoothness is already good; Phase 2/3 can still improve accuracy",)


# The shipped models' measured figures (README; fp32 from the same seed): DDPM at 64 and 256
# samples, the masked-diffusion LM over 16 samples, seed 0.
MEASURED = {
    "DDPM W8 (64)": (image(0.928, (1.0, 1.0), 0.048, 23.16), "good"),
    "DDPM W8 (256)": (image(10.51 / 10.78, (1.0, 1.0), 0.056, 10.78), "good"),
    "DDPM W4 (64)": (image(3.57, (1.0, 1.0), 7.40, 23.16), "poor"),
    "DDPM W4 (256)": (image(77.7 / 10.78, (1.0, 1.0), 8.12, 10.78), "poor"),
    "DDPM W2 (64)": (image(389.3 / 23.16, (1.0, 0.5), 36.2, 23.16), "poor"),
    "LM W8A8": (text(7.197 / 7.162, 0.852), "good"),
    "LM W4A8": (text(7.246 / 7.162, 0.817), "good"),
    "LM W2A8": (text(8.397 / 7.162, 0.503), "fair"),
    "LM W8A4": (text(9.961 / 7.162, 0.315), "poor"),
    "LM W4A4": (text(10.065 / 7.162, 0.342), "poor"),
    "LM W2A4": (text(13.24 / 7.162, 0.263), "poor"),
}


@pytest.mark.parametrize(("quality", "band"), MEASURED.values(), ids=MEASURED)
def test_the_shipped_models_measured_rows(quality, band):
    assert quality_band(quality, bands=BANDS).band == band


def test_smooth_but_poor_says_the_error_is_in_the_weights_not_the_jumps():
    """W2 digits: smoothness 0.952 ("excellent") while the samples are destroyed."""
    got = verdict(MEASURED["DDPM W2 (64)"][0], score=0.952, bit_width=2)
    assert got.band == "excellent" and got.verdict == got.quality_band == "poor"
    assert got.summary.startswith("Sample quality is poor against fp32 (Frechet 16.8x fp32).")
    assert "excellent smoothness band" in got.summary
    assert (
        "The smoothness band is excellent, so the error is in the quantized weights" in got.summary
    )
    assert "rather than in jumps between groups" in got.summary
    (advice,) = got.actions
    assert "more weight bits (bit_width=4)" in advice
    assert "a better weight quantizer" in advice and "weights.rules" in advice
    assert "Phase 2" not in advice and "Phase 3" not in advice


@pytest.mark.parametrize("score", [0.5, 0.98], ids=["rough", "smooth"])
def test_an_lm_is_not_advised_phase3_which_raises_its_heldout_bound(score):
    """README, Phase 3 on the LM: +0.14/+0.22 held-out at markov_weight 0, +0.10-0.15 at 1-10."""
    got = verdict(MEASURED["LM W4A8"][0], score=score, bit_width=4)
    assert got.verdict == "good"
    assert not any("Phase 3 (" in a or "Phase 2/3" in a for a in got.actions)
    if got.band != "poor":
        assert "calibration.samples_per_step=1024" in got.actions[-1]
    images = verdict(image(1.1), score=score, bit_width=4)
    assert any("Phase 3 (" in a or "Phase 2/3" in a for a in images.actions)


def test_smooth_but_poor_at_four_bit_activations_names_the_activations_first():
    got = verdict(MEASURED["LM W8A4"][0], score=0.98, bit_width=8, act_bits=4)
    assert got.verdict == "poor"
    assert got.actions[0].startswith("Try more activation bits (act_bits=8): at A4")
    assert "more weight bits" not in got.actions[1]  # already 8 bits
    assert "a better weight quantizer" in got.actions[1]


def test_rough_and_poor_keeps_the_smoothness_advice_after_the_weight_advice():
    got = verdict(image(frechet_ratio=5.0), score=0.5)
    assert (got.band, got.verdict) == ("poor", "poor")
    assert "Both the quantized weights or ranges and the jumps between groups" in got.summary
    assert got.actions[0].startswith("For the weights, try more weight bits")
    assert "Increase the number of time groups (num_time_groups)" in got.actions


def test_the_verdict_is_the_quality_band_whatever_the_smoothness_band():
    for score, band in ((0.5, "poor"), (0.7, "good"), (0.9, "excellent")):
        for quality, expected in ((image(), "good"), (image(2.0), "fair"), (image(9.0), "poor")):
            got = verdict(quality, score=score)
            assert (got.band, got.verdict, got.quality_band) == (band, expected, expected)
    rough_but_fine = verdict(image(1.1), score=0.5)
    assert rough_but_fine.actions[0] == (
        "Sample quality is within the good limits of fp32's (Frechet 1.10x fp32)"
    )
    assert rough_but_fine.summary.startswith("Sample quality is good against fp32")


def test_fair_quality_gets_the_same_advice_as_poor():
    fair = verdict(MEASURED["LM W2A8"][0], score=0.98, bit_width=2)
    assert fair.verdict == "fair" and "(bit_width=4)" in fair.actions[0]
    assert "held-out perplexity 1.17x fp32" in fair.summary


def test_interpretation_keeps_the_config_limits_in_its_criteria():
    strict = dataclasses.replace(BANDS, good_max_frechet_ratio=1.1)
    got = verdict(image(1.2), bands=strict)
    assert got.verdict == "fair"
    assert got.quality_checks[0].criterion == "Frechet distance <= 1.1x fp32's (poor above 3x)"
