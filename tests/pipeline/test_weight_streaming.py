"""A model whose linear layers are larger than the one-program limit (a 7B model's are 30 GB at
float32) is quantized and measured one layer at a time, holding one layer's copies at a time:
the same codes as the one-program path and the same figures to float32 rounding. The limit is
lowered here so the shipped LM takes the streaming path."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from thermojax.models import shipped_path
from thermojax.models.dream.loading import load_masked_diffusion
from thermojax.pipeline.weights import quantize as quantize_module
from thermojax.pipeline.weights.quantize import quantize_weights


@pytest.fixture(scope="module")
def model():
    return load_masked_diffusion(shipped_path("pydoc-mdlm"))


def test_the_lm_offers_its_weights_transposed_when_looked_up(model):
    weights = model.quantizable_weights()
    assert list(weights) == list(model.layer_names) and len(weights) == len(model.layer_names)
    name = model.layer_names[0]
    np.testing.assert_array_equal(weights[name], np.asarray(model.lm.params[name]).T)


@pytest.mark.parametrize("bits", [2, 4])
def test_layer_by_layer_gives_the_one_program_numbers(model, bits, monkeypatch):
    whole, whole_report = quantize_weights(model, bits=bits, group_size=64)
    monkeypatch.setattr(quantize_module, "STREAM_BYTES", 0)
    assert quantize_module._streams(model)
    streamed, report = quantize_weights(model, bits=bits, group_size=64)
    assert streamed.keys() == whole.keys()
    for name, q in whole.items():
        for leaf, other in zip(jax.tree.leaves(q), jax.tree.leaves(streamed[name]), strict=True):
            np.testing.assert_array_equal(leaf, other)
    np.testing.assert_allclose(report.layer_cosine, whole_report.layer_cosine, rtol=1e-6)
    np.testing.assert_allclose(report.layer_sqnr_db, whole_report.layer_sqnr_db, rtol=1e-5)
    assert report.model_cosine == pytest.approx(whole_report.model_cosine, abs=1e-6)
    assert report.quantized_bytes == whole_report.quantized_bytes
    assert report.fp32_bytes == whole_report.fp32_bytes
