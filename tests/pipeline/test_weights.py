"""The digits run's ``weights`` section: every parameter once, honest bytes, the same outlier
share and cosine as the streaming weight-only code (an independent implementation) finds."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from thermojax.core.quant import storage_bytes
from thermojax.models import load_model
from thermojax.pipeline.weights.quantize import model_weights_section, quantize_weights
from thermojax.pipeline.weights.stream import quantize_tensor


@pytest.fixture(scope="module")
def section():
    model = load_model()
    qweights, report = quantize_weights(model, bits=4, group_size=64)
    return (
        model,
        qweights,
        model_weights_section(
            model, qweights, report, seconds=0.5, source_format="thermojax-digits-ddpm"
        ),
    )


def test_every_parameter_is_listed_once_with_honest_bytes(section):
    model, qweights, w = section
    assert sum(int(np.prod(row.shape)) for row in w.tensors) == model.num_parameters()
    names = [row.name for row in w.tensors]
    assert len(names) == len(set(names))
    assert w.total_source_bytes == 4 * model.num_parameters() == w.fp32_bytes
    quantized = [row for row in w.tensors if row.quantized]
    assert [row.name for row in quantized] == [f"{n}.kernel" for n in model.layer_names]
    for row, name in zip(quantized, model.layer_names, strict=True):
        assert row.quantized_bytes == storage_bytes(qweights[name])
        assert (row.bits, row.group_size) == (4, 64)
    kept = [row for row in w.tensors if not row.quantized]
    assert all(row.quantized_bytes == row.source_bytes for row in kept)
    assert w.total_quantized_bytes == sum(row.quantized_bytes for row in w.tensors)
    assert [b.name for b in w.blocks] == list(model.layer_names)
    assert w.bytes_per_second == pytest.approx(w.total_source_bytes / 0.5)


def test_figures_agree_with_the_streaming_weight_only_code(section):
    model, _, w = section
    by_name = {row.name: row for row in w.tensors}
    kernels = model.quantizable_weights()
    for name in model.layer_names:
        kernel = np.asarray(jax.device_get(kernels[name]), np.float32).T
        _, sums = quantize_tensor(kernel, bits=4, group_size=64)
        row = by_name[f"{name}.kernel"]
        assert row.outlier_share == pytest.approx(sums.outlier_share, abs=1e-12), name
        assert row.cosine == pytest.approx(sums.cosine, rel=1e-5), name
        assert row.sqnr_db == pytest.approx(sums.sqnr_db, abs=1e-3), name
    assert any(row.outlier_share > 0 for row in w.tensors if row.quantized)
