"""The compressed-tensors ``pack-quantized`` layout of a quantized checkpoint
(``export.format=compressed-tensors``): the Hugging Face folder that vLLM, SGLang,
llm-compressor and transformers load for integer weights, holding thermojax's own codes, scales
and zero points, unchanged.

A quantized linear layer ``X.weight`` ``[out, in]`` of ``bits`` and ``group_size`` is stored as
compressed-tensors 0.20 writes it (``PackedQuantizationCompressor``, ``pack_to_int32``)::

    X.weight_packed      int32 [out, ceil(in * bits / 32)]: each row's codes as one
                           little-endian bit stream, element i in bits [i * bits, (i + 1) * bits)
                           (32 / bits codes per int32, the lowest bits first; the row's last
                           word padded with zero bits)
    X.weight_scale       float32 [out, in / group_size]: thermojax's scales as they are
    X.weight_zero_point  int32 [ceil(out * bits / 32), in / group_size]: the zero points
                           packed the same way along the output axis (the library's
                           ``packed_dim=0``)
    X.weight_shape       int64 [2]: [out, in]

The library holds signed codes ``q`` in ``[-2**(bits-1), 2**(bits-1))`` and zero points
likewise, dequantizes ``(q - zp) * scale`` and packs ``q + 2**(bits-1)``. thermojax's unsigned
code ``c`` and zero point ``z`` (``(c - z) * scale``) are ``q = c - 2**(bits-1)`` and
``zp = z - 2**(bits-1)``: the offsets cancel in the value, and the packed fields are ``c`` and
``z`` themselves. In float32 both compute ``(c - z) * scale`` the same way, bit for bit.

``config.json`` gains ``quantization_config`` (:func:`quantization_config`). The library packs
1 to 8 bits, so 2-, 4- and 8-bit layers are all written; serving kernels take fewer
(:data:`SERVED_BITS`).

Example:
    >>> import numpy as np
    >>> pack_int32(np.arange(8, dtype=np.uint8)[None], 4)  # 8 codes of 4 bits: one word
    array([[1985229328]], dtype=int32)
    >>> hex(1985229328)  # element 0 in the lowest bits
    '0x76543210'
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from thermojax.core.quant import QTensor, pack_codes, unpack_codes

__all__ = [
    "COMPRESSED_TENSORS",
    "CT_VERSION",
    "SERVED_BITS",
    "SIDECAR_DIR",
    "ct_stored_entries",
    "from_compressed_tensors",
    "pack_int32",
    "quantization_config",
    "served_config",
    "to_compressed_tensors",
    "unpack_int32",
    "warn_unserved",
]

log = logging.getLogger(__name__)

COMPRESSED_TENSORS = "compressed-tensors"
"""``export.format``'s value for this layout."""
CT_VERSION = "0.20.1"
"""The compressed-tensors release whose format this follows and was checked against
(``tools/check_compressed_tensors.py``); ``quantization_config.version``."""
SERVED_BITS = (4, 8)
"""The bit widths vLLM's compressed-tensors W*A16 scheme takes with zero points (asymmetric;
``WNA16_ZP_SUPPORTED_TYPES_MAP`` in the vLLM releases read): a 2-bit layer is written
(compressed-tensors and transformers read it) with a warning."""
SIDECAR_DIR = "thermojax"
"""The folder that holds thermojax's activation parameters in a compressed-tensors export: vLLM
loads every top-level ``*.safetensors`` file of a folder without an index as weights."""

_SUFFIXES = {"packed": "_packed", "scale": "_scale", "zero_point": "_zero_point", "shape": "_shape"}


def _words(count: int, bits: int) -> int:
    return math.ceil(count * bits / 32)


def ct_stored_entries(
    name: str, shape: tuple[int, ...], bits: int, group_size: int
) -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """The stored tensors of a quantized ``name`` (``X.weight``) of ``shape`` ``[out, in]``:
    role -> ``(stored name, dtype, shape)`` (module doc).

    Raises:
        ValueError: a tensor that is not a linear layer's 2-D ``.weight``.
    """
    if len(shape) != 2 or not name.endswith(".weight"):
        raise ValueError(
            f"{name}: shape {list(shape)}; compressed-tensors packs a linear layer's 2-D .weight"
        )
    out, width = shape
    return {
        "packed": (name + _SUFFIXES["packed"], "I32", (out, _words(width, bits))),
        "scale": (name + _SUFFIXES["scale"], "F32", (out, width // group_size)),
        "zero_point": (
            name + _SUFFIXES["zero_point"],
            "I32",
            (_words(out, bits), width // group_size),
        ),
        "shape": (name + _SUFFIXES["shape"], "I64", (2,)),
    }


def pack_int32(values: np.ndarray, bits: int) -> np.ndarray:
    """Codes ``[rows, n]`` in ``[0, 2**bits)`` -> int32 ``[rows, ceil(n * bits / 32)]``, each
    row one little-endian bit stream (element ``i`` in bits ``[i * bits, (i + 1) * bits)``),
    zero-padded to whole words: compressed-tensors' ``pack_to_int32`` for 2, 4 and 8 bits."""
    rows, n = values.shape
    per_word, per_byte = 32 // bits, 8 // bits
    padded = np.zeros((rows, _words(n, bits) * per_word), np.uint8)
    padded[:, :n] = values
    lanes = padded.reshape(rows, -1, per_byte)
    stream = lanes[:, :, 0].copy()
    for k in range(1, per_byte):
        stream |= lanes[:, :, k] << np.uint8(k * bits)
    return stream.view("<i4").astype(np.int32, copy=False)


def unpack_int32(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_int32`: int32 ``[rows, words]`` -> uint8 ``[rows, count]``."""
    stream = np.ascontiguousarray(packed, "<i4").view(np.uint8)
    per_byte, mask = 8 // bits, np.uint8((1 << bits) - 1)
    codes = np.empty((*stream.shape, per_byte), np.uint8)
    for k in range(per_byte):
        codes[..., k] = (stream >> np.uint8(k * bits)) & mask
    return codes.reshape(stream.shape[0], -1)[:, :count]


def to_compressed_tensors(q: QTensor) -> dict[str, np.ndarray]:
    """A 2-D QTensor's stored tensors, by role of :func:`ct_stored_entries` (module doc)."""
    zero = np.asarray(q.zero_point)
    return {
        "packed": pack_int32(unpack_codes(q), q.bits),
        "scale": np.asarray(q.scale, np.float32),
        "zero_point": np.ascontiguousarray(pack_int32(np.ascontiguousarray(zero.T), q.bits).T),
        "shape": np.asarray(q.shape, np.int64),
    }


def from_compressed_tensors(
    arrays: Mapping[str, np.ndarray],
    *,
    shape: tuple[int, ...],
    bits: int,
    group_size: int,
    symmetric: bool = False,
) -> QTensor:
    """The QTensor of :func:`to_compressed_tensors`'s arrays, bit for bit (numpy leaves of its
    own: the codes are re-laid, not views of the file).

    Raises:
        ValueError: a ``weight_shape`` other than ``shape``.
    """
    stored_shape = tuple(int(d) for d in np.asarray(arrays["shape"]).reshape(-1))
    if stored_shape != tuple(shape):
        raise ValueError(f"weight_shape {list(stored_shape)}, but the tensor is {list(shape)}")
    rows, width = shape
    codes = unpack_int32(arrays["packed"], bits, width)
    zero = unpack_int32(np.ascontiguousarray(np.asarray(arrays["zero_point"]).T), bits, rows)
    return QTensor(
        codes=pack_codes(codes, bits=bits, group_size=group_size),
        scale=np.asarray(arrays["scale"]),
        zero_point=np.ascontiguousarray(zero.T),
        shape=tuple(shape),
        bits=bits,
        group_size=group_size,
        symmetric=symmetric,
    )


def quantization_config(
    layers: Mapping[str, tuple[int, int]], *, every_linear: bool = True
) -> dict[str, Any]:
    """``config.json``'s ``quantization_config`` for quantized linear layers, weight name ->
    ``(bits, group_size)``.

    One config group per ``(bits, group_size)``, asymmetric integer weights in groups (the
    library's ``W4A16_ASYM`` preset at the run's settings), the fields as compressed-tensors'
    ``QuantizationConfig`` dumps them and ``ModelCompressor.update_config`` writes them. When
    ``every_linear`` (every linear layer of the model is among ``layers``) and there is one
    group, it targets ``Linear`` and ``ignore`` is empty; otherwise each group targets its layers
    by name, so that no layer matches two groups and no unquantized layer matches any (a
    checkpoint quantized by rules, whose module types the tensor names do not tell).

    Example:
        >>> config = quantization_config({"a.weight": (4, 64), "b.weight": (4, 64)})
        >>> config["config_groups"]["group_0"]["targets"], config["ignore"]
        (['Linear'], [])
    """
    by_scheme: dict[tuple[int, int], list[str]] = {}
    for name, scheme in layers.items():
        by_scheme.setdefault(scheme, []).append(name.removesuffix(".weight"))
    groups = {}
    for index, ((bits, group_size), modules) in enumerate(by_scheme.items()):
        groups[f"group_{index}"] = {
            "targets": ["Linear"] if every_linear and len(by_scheme) == 1 else modules,
            "weights": {
                "num_bits": int(bits),
                "type": "int",
                "symmetric": False,
                "group_size": int(group_size),
                "strategy": "group",
                "dynamic": False,
            },
            "input_activations": None,
            "output_activations": None,
            "format": "pack-quantized",
        }
    return {
        "config_groups": groups,
        "format": "pack-quantized",
        "global_compression_ratio": None,
        "ignore": [],
        "kv_cache_scheme": None,
        "moe_sparsity_config": None,
        "quant_method": COMPRESSED_TENSORS,
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": CT_VERSION,
    }


def warn_unserved(bits: Iterable[int]) -> None:
    """Log that layers of ``bits`` outside :data:`SERVED_BITS` are written but not served."""
    unserved = sorted(set(bits) - set(SERVED_BITS))
    if unserved:
        log.warning(
            "export.format=%s: %s-bit layers are written (compressed-tensors and transformers "
            "read them), but vLLM's kernels take %s bits only",
            COMPRESSED_TENSORS,
            "/".join(map(str, unserved)),
            " and ".join(map(str, SERVED_BITS)),
        )


def served_config(
    config_text: str,
    layers: Mapping[str, tuple[int, int]],
    *,
    tie_key: str | None = None,
    every_linear: bool = True,
) -> str:
    """The source's ``config.json`` text with the :func:`quantization_config` of ``layers``
    (weight name -> bits, group size), and with ``tie_key`` false when the source ties its head
    to the embedding and the folder holds the head's own codes (a loader that ties them would
    drop those)."""
    config = json.loads(config_text)
    config["quantization_config"] = quantization_config(layers, every_linear=every_linear)
    if tie_key is not None:
        config[tie_key] = False
    return json.dumps(config, indent=2) + "\n"
