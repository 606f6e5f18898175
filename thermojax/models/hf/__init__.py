"""Users' Hugging Face checkpoints: validated, streamed reading and writing of safetensors folders.

- :func:`open_checkpoint` checks a folder (``config.json`` + ``model.safetensors`` or an index
  and its shards) without reading weights and gives a :class:`SafetensorsFolder` that reads one
  tensor at a time; every problem is a one-line :class:`CheckpointError` naming file and tensor.
- :func:`write_safetensors`, :func:`write_index`, :func:`plan_shards` write checkpoints the same
  way, streamed and atomically published.
- :func:`expected_shapes` knows the Qwen2/Dream and LLaDA tensor layouts from ``config.json``.
- :func:`write_dream_like` and :func:`write_llada_like` write a synthetic checkpoint with
  Dream-7B's or LLaDA-8B's layout, at any scale.

Example:
    >>> import tempfile, pathlib
    >>> from thermojax.models.hf import write_dream_like  # loads on first use
    >>> folder = write_dream_like(pathlib.Path(tempfile.mkdtemp()) / "m", scale=112, layers=1)
    >>> checkpoint = open_checkpoint(folder)
    >>> checkpoint.total_bytes == sum(i.nbytes for i in checkpoint.tensors.values())
    True
"""

from thermojax.models.hf.headers import CheckpointError, TensorInfo
from thermojax.models.hf.layouts import expected_shapes, shard_file_name
from thermojax.models.hf.reader import SafetensorsFolder, open_checkpoint
from thermojax.models.hf.writer import plan_shards, write_index, write_safetensors

__all__ = [
    "CheckpointError",
    "SafetensorsFolder",
    "TensorInfo",
    "expected_shapes",
    "open_checkpoint",
    "plan_shards",
    "shard_file_name",
    "write_dream_like",
    "write_index",
    "write_llada_like",
    "write_safetensors",
]


def __getattr__(name: str) -> object:
    # The writers load on first use, so `python -m thermojax.models.hf.synthetic` does not
    # find its module already imported by this package (runpy warns about that).
    if name in ("write_dream_like", "write_llada_like"):
        from thermojax.models.hf import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
