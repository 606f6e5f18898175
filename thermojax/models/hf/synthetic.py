"""Synthetic checkpoints with Dream-7B's or LLaDA-8B's exact layout, for testing without the
real weights.

Dream 7B (``Dream-org/Dream-v0-Base-7B``) is Qwen2.5-7B trained as a masked-diffusion language
model: hidden size 3584, 28 layers, MLP width 18944, 28 query heads sharing 4 key-value heads
(head_dim 128), biases on q/k/v, a 152064-token vocabulary, an untied ``lm_head``, bf16, in
four ~5 GB shards (15.2 GB). :func:`write_dream_like` writes a checkpoint with the same tensor
names, shapes, ``config.json`` and sharding, filled with random weights whose statistics look
like a trained model's where quantization cares:

- linear weights (and the embedding) ``[out, in]``: normal, std ``0.02 * sqrt(3584 / in)``
  (0.02 at Dream's width, ``1/sqrt(fan_in)`` scaling elsewhere), except a few outlier input
  channels: 0.5% of the columns (at least one), each scaled by a factor drawn from [10, 30].
  The outlier channels depend only on the seed and the input width
  (:func:`outlier_channels`), so every tensor reading the residual stream shares them, as
  the hidden "massive activation" channels of real LLMs do;
- RMSNorm weights: ``1 + 0.05 * normal``; q/k/v biases: ``0.01 * normal``.

Normal values come from a 65536-entry table of standard-normal quantiles (exact to float32,
|z| <= 4.3) indexed by 16-bit words of a PCG64 stream seeded by ``(seed, tensor name)``: about
4x faster than ``Generator.standard_normal`` and, since everything is drawn from raw PCG64
words (whose stream numpy keeps stable), the same bytes for a seed on every numpy version. Each tensor is generated and written on its
own, so the full-size checkpoint is written holding one tensor (the 1.1 GB embedding) at a
time.

``scale=N`` shrinks the model about N-fold in width, keeping Dream's GQA ratio (7 query heads
per key-value head) and an even head_dim:

- ``kv_heads = max(1, 4 // N)``, ``heads = 7 * kv_heads``;
- ``head_dim = max(2, even_round(3584 / N / heads))``, ``hidden = heads * head_dim``
  (exactly ``3584 / N`` for N a power of two up to 256: 896 for N=4, 56 for N=64);
- ``intermediate = max(64, 64 * round(18944 / N / 64))`` and
  ``vocab = max(64, 64 * round(152064 / N / 64))``: multiples of 64 like Dream's.

``layers`` overrides the layer count (28; at most :data:`MAX_LAYERS`). A checkpoint larger than
the free space of the disk it goes to is refused before anything is written.

LLaDA 8B (``GSAI-ML/LLaDA-8B-Base`` / ``-Instruct``) is a Llama-like masked-diffusion model
under OLMo's names (:data:`~thermojax.models.hf.layouts.LLADA_LAYOUT`): ``d_model`` 4096, 32
layers, ``mlp_hidden_size`` 12288, 32 heads (as many key-value heads, head_dim 128), no biases,
a 126464-token vocabulary, an untied head (``model.transformer.ff_out``), bf16, in six ~3 GB
shards (16.03 GB; its tensors are stored grouped by kind, the order
:func:`~thermojax.models.hf.layouts.expected_shapes` lists them in, so a 3 GB limit gives the
same six shards). :func:`write_llada_like` writes it the same way (the same value rules, with
LLaDA's width 4096 where Dream's 3584 sets the weights' std). Its ``scale=N`` keeps multi-head
attention: ``heads = kv_heads = max(1, 32 // N)``, ``head_dim = max(2, even_round(4096 / N /
heads))``, ``d_model = heads * head_dim``, ``mlp_hidden_size`` and ``vocab_size`` (=
``embedding_size``) rounded to multiples of 64 as above; ``layers`` defaults to 32.

Command line::

    python -m thermojax.models.hf.synthetic OUT [--layout dream|llada] [--scale N]
        [--layers L] [--shard-gb G] [--seed S] [--dtype BF16]

Example:
    >>> import tempfile, pathlib
    >>> from thermojax.models.hf import open_checkpoint
    >>> folder = write_dream_like(pathlib.Path(tempfile.mkdtemp()) / "tiny", scale=112, layers=2)
    >>> checkpoint = open_checkpoint(folder)
    >>> checkpoint.config["hidden_size"], checkpoint.config["num_attention_heads"]
    (28, 7)
    >>> checkpoint.tensors["model.layers.1.mlp.down_proj.weight"].shape
    (28, 192)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from thermojax.errors import OneLineArgumentParser, UserInputError, os_error_message
from thermojax.files import atomic_write_text
from thermojax.models.hf.headers import TensorInfo
from thermojax.models.hf.layouts import (
    CONFIG_FILE,
    DTYPES,
    FLOAT_DTYPES,
    TensorLayout,
    expected_shapes,
    layout_of,
    shard_file_name,
)
from thermojax.models.hf.synthetic_configs import (
    DREAM_7B_CONFIG,
    LLADA_8B_CONFIG,
    LLADA_SHARD_BYTES,
    MAX_LAYERS,
    dream_like_config,
    llada_like_config,
    positive,
)
from thermojax.models.hf.writer import plan_shards, write_index, write_safetensors

__all__ = [
    "DREAM_7B_CONFIG",
    "LLADA_8B_CONFIG",
    "LLADA_SHARD_BYTES",
    "MAX_LAYERS",
    "OUTLIER_FACTORS",
    "OUTLIER_FRACTION",
    "dream_like_config",
    "llada_like_config",
    "main",
    "outlier_channels",
    "planned_shards",
    "write_dream_like",
    "write_llada_like",
]

OUTLIER_FRACTION = 0.005
"""The share of input channels of each linear weight that are outliers."""
OUTLIER_FACTORS = (10.0, 30.0)
"""An outlier channel's column is the normal column times a factor drawn uniformly from this."""

_CHUNK = 1 << 22
"""Elements generated per step: the temporaries stay ~16 MB for any tensor."""
_WEIGHT_STD = 0.02
_NORM_STD = 0.05
_BIAS_STD = 0.01


MAX_SHARD_GB = 1e6
"""The largest ``--shard-gb`` (a petabyte: in effect no limit); the limit becomes a whole number
of bytes, which 1e308 GB (an infinite float) is not."""


def _free_bytes(out: Path) -> int:
    """Free bytes of the file system ``out`` would be on (its nearest existing folder)."""
    existing = out.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing if existing.is_dir() else existing.parent).free


def outlier_channels(width: int, *, seed: int = 0) -> np.ndarray:
    """The outlier input channels (sorted column indices) of every weight with ``width`` inputs.

    Example:
        >>> outlier_channels(3584, seed=0).size  # 0.5% of Dream's hidden size
        18
    """
    count = max(1, round(OUTLIER_FRACTION * width))
    stream = np.random.PCG64(np.random.SeedSequence([seed, width, 0x0071]))
    # A random permutation from raw bits (not Generator.choice): stable across numpy versions.
    return np.sort(np.argsort(stream.random_raw(width), kind="stable")[:count])


def _uniform(stream: np.random.PCG64, low: float, high: float, size: int) -> np.ndarray:
    """Uniform floats in [low, high) from the top 53 bits of raw words (version-stable)."""
    return low + (high - low) * ((stream.random_raw(size) >> 11) * 2.0**-53)


@lru_cache(maxsize=1)
def _normal_quantiles() -> np.ndarray:
    """The 65536 standard-normal quantiles at (i + 0.5) / 65536, float64."""
    inverse = statistics.NormalDist().inv_cdf
    return np.array([inverse((i + 0.5) / 65536) for i in range(65536)])


def _tensor_stream(seed: int, name: str) -> np.random.PCG64:
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:16], "little")
    return np.random.PCG64(np.random.SeedSequence([seed, key]))


def _synthetic_tensor(
    name: str, shape: tuple[int, ...], *, dtype: str, seed: int, norm: bool, width: int
) -> np.ndarray:
    """One tensor's values; depends only on (seed, name, shape, dtype, norm, width): a norm's
    weight, else a bias (1-D), else a weight whose std is 0.02 at ``width`` inputs."""
    stream = _tensor_stream(seed, name)
    cols = shape[-1]
    rows = math.prod(shape[:-1])
    if len(shape) == 1 and norm:
        loc, std, channels = 1.0, _NORM_STD, None
    elif len(shape) == 1:
        loc, std, channels = 0.0, _BIAS_STD, None
    else:
        loc, std = 0.0, _WEIGHT_STD * math.sqrt(width / cols)
        channels = outlier_channels(cols, seed=seed)
        factors = _uniform(stream, *OUTLIER_FACTORS, channels.size).astype(np.float32)
    values = (loc + std * _normal_quantiles()).astype(np.float32)
    target = DTYPES[dtype]
    bits = np.dtype(f"<u{target.itemsize}")
    table = values.astype(target).view(bits)

    out = np.empty((rows, cols), target)
    out_bits = out.view(bits)
    step = max(1, _CHUNK // cols)
    for start in range(0, rows, step):
        block = min(step, rows - start)
        words = stream.random_raw(-(-block * cols // 4)).view("<u2")[: block * cols]
        codes = words.reshape(block, cols)
        out_bits[start : start + block] = table[codes]
        if channels is not None:
            outliers = values[codes[:, channels]] * factors
            out[start : start + block, channels] = outliers.astype(target)
    return out.reshape(shape)


def planned_shards(
    config: dict[str, object], *, dtype: str = "BF16", max_shard_bytes: int
) -> list[list[str]]:
    """The tensor names of each shard of a checkpoint of ``config`` (without writing it): its
    tensors in :func:`~thermojax.models.hf.layouts.expected_shapes`' order, cut greedily at
    ``max_shard_bytes`` like ``transformers`` (:func:`~thermojax.models.hf.writer.plan_shards`).

    Example:
        >>> plan = planned_shards(llada_like_config(), max_shard_bytes=LLADA_SHARD_BYTES)
        >>> len(plan), plan[0][:2]
        (6, ['model.transformer.wte.weight', 'model.transformer.ln_f.weight'])
    """
    return plan_shards(_tensor_infos(config, dtype), max_shard_bytes)


def _tensor_infos(config: dict[str, object], dtype: str) -> list[TensorInfo]:
    shapes = expected_shapes(config)
    itemsize = DTYPES[dtype].itemsize
    return [
        TensorInfo(name, "", dtype, shape, math.prod(shape) * itemsize)
        for name, shape in shapes.items()
    ]


def _norm_names(layout: TensorLayout, layers: int) -> frozenset[str]:
    """The RMSNorm weights of a ``layers``-block checkpoint (drawn near 1)."""
    blocks = (
        layout.block_tensor(i, suffix)
        for i in range(layers)
        for suffix in (layout.attention_norm, layout.mlp_norm)
    )
    return frozenset((*blocks, layout.final_norm))


def _write_like(
    out: str | os.PathLike[str],
    config: dict[str, object],
    *,
    scale: int,
    layers: int,
    width: int,
    max_shard_bytes: int,
    dtype: str,
    seed: int,
    progress: Callable[[str], None] | None,
) -> Path:
    """Write the synthetic checkpoint of ``config`` (checked) into the new folder ``out``;
    ``width`` is the full-size model's, at which a weight's std is 0.02."""
    out = Path(out)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserInputError(f"seed must be a non-negative integer, got {seed!r}")
    max_shard_bytes = positive("max_shard_bytes", max_shard_bytes)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserInputError(f"{str(out)!r}: exists and is not an empty folder; choose a new one")

    infos = _tensor_infos(config, dtype)
    shapes = {info.name: info.shape for info in infos}
    total = sum(info.nbytes for info in infos)
    free = _free_bytes(out)
    if total > free:
        raise UserInputError(
            f"{str(out)!r}: the checkpoint needs {total / 1e9:.3g} GB and its disk has "
            f"{free / 1e9:.3g} GB free"
        )
    plan = plan_shards(infos, max_shard_bytes)
    provenance = {"scale": scale, "layers": layers, "seed": seed}
    metadata = {"format": "pt", "thermojax_synthetic": json.dumps(provenance, sort_keys=True)}
    norms = _norm_names(layout_of(config), layers)

    def produce(name: str) -> np.ndarray:
        return _synthetic_tensor(
            name, shapes[name], dtype=dtype, seed=seed, norm=name in norms, width=width
        )

    weight_map: dict[str, str] = {}
    for k, names in enumerate(plan):
        file = shard_file_name(k, len(plan))
        started = time.perf_counter()
        path = write_safetensors(
            out / file, [(n, dtype, shapes[n]) for n in names], produce, metadata=metadata
        )
        weight_map |= dict.fromkeys(names, file)
        if progress is not None:
            seconds = time.perf_counter() - started
            size = path.stat().st_size
            progress(
                f"{file}: {len(names)} tensors, {size / 1e9:.2f} GB in {seconds:.1f} s "
                f"({size / 1e6 / max(seconds, 1e-9):.0f} MB/s)"
            )
    if len(plan) > 1:
        write_index(out, weight_map, total)
    atomic_write_text(out / CONFIG_FILE, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def write_dream_like(
    out: str | os.PathLike[str],
    *,
    scale: int = 1,
    layers: int | None = None,
    max_shard_bytes: int = 5 * 10**9,
    dtype: str = "BF16",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write a synthetic checkpoint with Dream-7B's layout (scaled) into the new folder ``out``.

    Shards, then the index, then ``config.json`` (last, so a folder whose writing was
    interrupted does not open as a checkpoint), each published atomically. Deterministic: the
    same arguments give the same bytes.

    Args:
        out: a folder that does not exist yet, or is empty.
        scale: the width divisor N (module doc); 1 is the full 7.6B-parameter model, 15.2 GB.
        layers: the number of layers (default Dream's 28).
        max_shard_bytes: the shard size limit; one shard is ``model.safetensors``, more get
            ``model-0000k-of-0000n.safetensors`` and ``model.safetensors.index.json``.
        dtype: ``"BF16"`` (Dream's), ``"F16"`` or ``"F32"``.
        seed: the random seed.
        progress: called with a line per shard written (e.g. ``print``).

    Returns:
        ``out``.

    Raises:
        UserInputError: ``out`` exists and is not an empty folder, or a bad argument.

    Example:
        >>> import tempfile, pathlib
        >>> folder = write_dream_like(pathlib.Path(tempfile.mkdtemp()) / "m", scale=112,
        ...                           layers=2, max_shard_bytes=150_000)
        >>> sorted(p.name for p in folder.iterdir())  # doctest: +NORMALIZE_WHITESPACE
        ['config.json', 'model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors',
         'model.safetensors.index.json']
    """
    config = dream_like_config(scale=scale, layers=layers, dtype=dtype)
    return _write_like(
        out,
        config,
        scale=scale,
        layers=config["num_hidden_layers"],
        width=DREAM_7B_CONFIG["hidden_size"],
        max_shard_bytes=max_shard_bytes,
        dtype=dtype,
        seed=seed,
        progress=progress,
    )


def write_llada_like(
    out: str | os.PathLike[str],
    *,
    scale: int = 1,
    layers: int | None = None,
    max_shard_bytes: int = LLADA_SHARD_BYTES,
    dtype: str = "BF16",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write a synthetic checkpoint with LLaDA-8B's layout (scaled) into the new folder ``out``.

    Like :func:`write_dream_like` (the same value rules, files, order of writing and
    determinism), with LLaDA's names, ``config.json`` and 3 GB shards.

    Args:
        out: a folder that does not exist yet, or is empty.
        scale: the width divisor N (module doc); 1 is the full 8.0B-parameter model, 16.0 GB.
        layers: the number of layers (default LLaDA's 32).
        max_shard_bytes: the shard size limit (default LLaDA's: six shards at ``scale=1``).
        dtype: ``"BF16"`` (LLaDA's), ``"F16"`` or ``"F32"``.
        seed: the random seed.
        progress: called with a line per shard written (e.g. ``print``).

    Returns:
        ``out``.

    Raises:
        UserInputError: ``out`` exists and is not an empty folder, or a bad argument.

    Example:
        >>> import tempfile, pathlib
        >>> from thermojax.models.hf import open_checkpoint
        >>> folder = write_llada_like(pathlib.Path(tempfile.mkdtemp()) / "m", scale=64, layers=1)
        >>> checkpoint = open_checkpoint(folder)
        >>> down = checkpoint.tensors["model.transformer.blocks.0.ff_out.weight"]
        >>> checkpoint.architecture, down.shape, len(checkpoint.tensors)
        ('llada', (64, 192), 12)
    """
    config = llada_like_config(scale=scale, layers=layers, dtype=dtype)
    return _write_like(
        out,
        config,
        scale=scale,
        layers=config["n_layers"],
        width=LLADA_8B_CONFIG["d_model"],
        max_shard_bytes=max_shard_bytes,
        dtype=dtype,
        seed=seed,
        progress=progress,
    )


_WRITERS = {
    "dream": (write_dream_like, 5 * 10**9),
    "llada": (write_llada_like, LLADA_SHARD_BYTES),
}
"""``--layout``: the writer and its default shard size limit."""


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: ``python -m thermojax.models.hf.synthetic OUT [options]``."""
    parser = OneLineArgumentParser(
        prog="python -m thermojax.models.hf.synthetic",
        description=(
            "Write a synthetic checkpoint with Dream-7B's or LLaDA-8B's layout (random weights)."
        ),
    )
    parser.add_argument("out", type=Path, help="a new (or empty) folder")
    parser.add_argument(
        "--layout", choices=sorted(_WRITERS), default="dream", help="whose layout (dream)"
    )
    parser.add_argument("--scale", type=int, default=1, help="width divisor (1: full size)")
    parser.add_argument(
        "--layers", type=int, default=None, help="layer count (default Dream's 28, LLaDA's 32)"
    )
    parser.add_argument(
        "--shard-gb", type=float, default=None, help="shard size limit, GB (Dream 5, LLaDA 3)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=FLOAT_DTYPES, default="BF16")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    write, default_shard_bytes = _WRITERS[args.layout]
    if args.shard_gb is None:
        args.shard_gb = default_shard_bytes / 1e9
    if not (math.isfinite(args.shard_gb) and 0 < args.shard_gb <= MAX_SHARD_GB):
        print(
            f"error: --shard-gb {args.shard_gb}: must be a positive number of GB, at most "
            f"{MAX_SHARD_GB:g}",
            file=sys.stderr,
        )
        return 2
    try:
        folder = write(
            args.out,
            scale=args.scale,
            layers=args.layers,
            max_shard_bytes=max(1, round(args.shard_gb * 1e9)),
            dtype=args.dtype,
            seed=args.seed,
            progress=print,
        )
    except (UserInputError, OSError) as err:
        message = str(err) if isinstance(err, UserInputError) else os_error_message(err)
        if message is None:  # not the user's path or disk: a bug
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    size = sum(p.stat().st_size for p in folder.iterdir())
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        f"wrote {folder}: {size / 1e9:.2f} GB in {seconds:.1f} s "
        f"({size / 1e6 / max(seconds, 1e-9):.0f} MB/s), peak RSS {peak_rss:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
