"""The quantized checkpoint's folder: the packed codes themselves, not fake-quantized floats, in
safetensors, with a JSON map of what is where; its file names and stored tensor names.

An exported folder (a Hugging Face checkpoint,
:func:`~thermojax.pipeline.checkpoint.export.export_checkpoint`)::

    config.json                        the source's config.json, byte for byte
    tokenizer.json, *.py, ...          the source's other small files a loader reads (the
                                         tokenizer, generation settings, remote code:
                                         COMPANION_PATTERNS), copied as they are
    model.safetensors                  or the source's shards, same names, same tensor -> shard
    model-00001-of-0000N.safetensors   assignment, in the source's order:
                                         NAME.qcodes  uint8, the packed codes of a quantized NAME
                                         NAME.qscale  float32, one scale per group
                                         NAME.qzero   uint8, one zero point per group
                                         NAME         a kept tensor, at its stored dtype
    model.safetensors.index.json       when the source was sharded: every stored tensor's shard
    activations.safetensors            when activation parameters are given: "edges" int32
                                         [S + 1], "scales" float32 [L, S], "zero_points"
                                         float32 [L, S] (S = G time groups, or S = T for a
                                         per-timestep schedule, edges = 0, 1, ..., T)
    orbax/<shard stem>/part-NNN/       the same quantized tensors as Orbax (OCDBT) checkpoints of
                                         {NAME: QTensor}, each at most 256 MiB of one shard's
                                         tensors, since Orbax holds a whole pytree in memory
                                         while it saves (reload.restore_orbax_copy); optional,
                                         reloading never needs it
    quantization.json                  the map (written last)

For the digits DDPM
(:func:`~thermojax.pipeline.checkpoint.export_digits.export_digits`) the folder holds the digits ``model.json`` instead
of ``config.json`` (with a ``quantization`` entry), the checkpoint's ``classifier.safetensors``
(the same bytes), and one ``model.safetensors`` that
holds each layer's quantized kernel under the layer's name (``block0.qcodes`` ...: the
``[out, in]`` transposed kernel, as :func:`~thermojax.pipeline.weights.quantize.quantize_weights` stores
it) and its bias (``block0/bias``, float32).

For a masked-diffusion LM that thermojax ran
(:func:`~thermojax.pipeline.checkpoint.export_lm.export_masked_lm`) the folder is the Hugging Face
one above, holding the codes the run sampled for every linear layer (``lm_head`` included;
its bits may differ per layer with ``quant.keep_bits``) instead of the rules' choice, and its
``source`` adds ``"family": "masked-diffusion-lm"``, ``"network_fingerprint"``, ``"shipped"``
(the shipped LM's name, or null), ``"quant"`` (the settings that made the codes; the digits
export records them too) and ``"dtype"`` (the run's ``model.dtype``, or null: a run of the
export loads its source at it, the dtype its ``network_fingerprint`` was taken at).

With ``export.format=compressed-tensors`` a masked-diffusion LM's folder is the same Hugging
Face folder in the layout serving stacks load
(:mod:`~thermojax.pipeline.checkpoint.compressed_tensors`): each quantized ``X.weight`` as
``X.weight_packed``, ``X.weight_scale``, ``X.weight_zero_point`` and ``X.weight_shape``,
``config.json`` with a ``quantization_config``, the activation parameters in
``thermojax/activations.safetensors`` (out of the loaders' ``*.safetensors`` glob), no Orbax
copy, and ``quantization.json`` with ``"export_format": "compressed-tensors"`` and those four
stored tensors (roles ``packed``, ``scale``, ``zero_point``, ``shape``) per quantized tensor.

A quantized tensor ``NAME`` of shape ``[..., n]`` with ``bits`` and ``group_size`` is
:class:`~thermojax.core.quant.QTensor`'s own storage: ``NAME.qcodes`` is ``[..., n * bits / 8]``,
``p = 8 / bits`` codes per byte, planar within each group (byte ``b`` of a group holds the
codes of the group's elements ``b + k * group_size / p``, element ``k`` in bits
``[k * bits, (k + 1) * bits)``); ``NAME.qscale`` and ``NAME.qzero`` are ``[..., n / group_size]``;
``value = (code - zero) * scale``.

``quantization.json``::

    {"format": "thermojax-quantized", "format_version": 1,
     "model_format": "huggingface-safetensors" | "thermojax-digits-ddpm",
     "config_file": "config.json" | "model.json",
     "export_format": "compressed-tensors" (absent: thermojax's own layout),
     "source": {"fingerprint": ..., "path": ..., ...} (digits: also "model", "num_parameters";
                "path" null for the shipped model), "bits": 4, "group_size": 64,
     "outlier_sigmas": 6.0,
     "rules": [{"include", "exclude", "bits", "group_size", "text"}, ...] (null for digits),
     "shards": [file, ...], "copied": [file, ...] (the companion files; [] for digits),
     "tensors": {NAME: {"file", "shape", "dtype" (as stored in the source),
                        "bits", "group_size", "symmetric", "rule"     (null when kept),
                        "stored": {"codes"|"scale"|"zero_point"|"values":
                                   {"name", "dtype", "shape"}},
                        "orbax": the Orbax checkpoint holding it (quantized, with orbax),
                        "report": {"cosine", "sqnr_db", "outlier_share",
                                   "source_bytes", "quantized_bytes"},
                        digits kernels also: "source_name" ("block0/kernel"),
                                             "source_shape" ([in, out])}, ...},
     "report": {totals, "blocks": [...]},
     "activations": null | {"file", "bits", "layer_names", "num_layers", "num_params",
                            "num_timesteps", "per_timestep"},
     "orbax": "orbax" | null}

The tensors are listed in the source's order; ``report`` holds the checkpoint's totals and its
per-block figures (:class:`~thermojax.pipeline.weights.stream.WeightOnlyReport` less the per-tensor
list, which is in ``tensors``).

Writing goes into a hidden temporary sibling folder (``.OUT.<random>.tmp``) that is renamed to
``OUT`` only when everything is written and flushed: a killed export leaves at most that hidden
folder, never one named ``OUT``; an existing non-empty ``OUT`` is refused, never overwritten.
:func:`thermojax.pipeline.checkpoint.reload.load_quantized` reloads either kind bit for bit, one shard at a time.
"""

from __future__ import annotations

__all__ = [
    "ACTIVATIONS_FILE",
    "COMPANION_PATTERNS",
    "DIGITS_CLASSIFIER",
    "DIGITS_CONFIG",
    "DIGITS_FORMAT",
    "FORMAT",
    "FORMAT_VERSION",
    "HF_CONFIG",
    "HF_FORMAT",
    "ORBAX_DIR",
    "QUANTIZATION_FILE",
    "STORED_SUFFIXES",
    "stored_entries",
]

FORMAT = "thermojax-quantized"
FORMAT_VERSION = 1
QUANTIZATION_FILE = "quantization.json"
ACTIVATIONS_FILE = "activations.safetensors"
ORBAX_DIR = "orbax"
HF_FORMAT = "huggingface-safetensors"
DIGITS_FORMAT = "thermojax-digits-ddpm"
HF_CONFIG = "config.json"
DIGITS_CONFIG = "model.json"
DIGITS_CLASSIFIER = "classifier.safetensors"
STORED_SUFFIXES = {"codes": ".qcodes", "scale": ".qscale", "zero_point": ".qzero"}
COMPANION_PATTERNS = ("*.json", "*.txt", "*.py", "*.model", "*.tiktoken", "*.jinja", "*.md")
"""The source's top-level files an export copies beside the weights (tokenizer files, generation
settings, remote modelling code, the model card): not ``config.json`` (copied anyway), the
safetensors index (written anew) or a ``quantization.json``; weights in other formats never."""


def stored_entries(name: str, qtensor_shape: tuple[int, ...], bits: int, group_size: int):
    lead, width = qtensor_shape[:-1], qtensor_shape[-1]
    return {
        "codes": (name + STORED_SUFFIXES["codes"], "U8", (*lead, width * bits // 8)),
        "scale": (name + STORED_SUFFIXES["scale"], "F32", (*lead, width // group_size)),
        "zero_point": (name + STORED_SUFFIXES["zero_point"], "U8", (*lead, width // group_size)),
    }
