"""The architecture of a diffusers ``UNet2DModel``, parsed and checked from its ``config.json``.

:class:`UNet2DConfig` holds what the forward pass needs: it is frozen and hashable, the static
argument of :func:`~thermojax.models.unet.network.apply`. :meth:`UNet2DConfig.tensor_shapes`
lists every tensor the network reads, by diffusers' name, with diffusers' shape (convolutions
``[out, in, kh, kw]``, linear layers ``[out, in]``): the layout a checkpoint must have.

Missing keys take diffusers' defaults (``UNet2DModel.__init__``, diffusers 0.42), so an old
``config.json`` that predates a key means what diffusers makes of it. Keys diffusers does not
know are ignored, as diffusers ignores them. What this implementation does not compute (Fourier
or learned time embeddings, class conditioning, the ``scale_shift`` time modulation, skip or
cross-attention blocks, resnet down/upsamplers, another activation) is refused with a
``ValueError`` naming the key and its value, instead of being silently computed wrong.

Example:
    >>> config = UNet2DConfig.from_dict({"block_out_channels": [32, 64],
    ...     "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    ...     "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 8,
    ...     "layers_per_block": 1})
    >>> config.time_embed_dim, config.attention_heads(64)
    (128, 8)
    >>> UNet2DConfig.from_dict({"class_embed_type": "timestep"})
    Traceback (most recent call last):
    ...
    ValueError: class_embed_type is not supported (only null), got 'timestep'
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DOWN_BLOCK_TYPES", "UP_BLOCK_TYPES", "UNet2DConfig", "read_json"]

DOWN_BLOCK_TYPES = ("DownBlock2D", "AttnDownBlock2D")
UP_BLOCK_TYPES = ("UpBlock2D", "AttnUpBlock2D")
_ACTIVATIONS = ("silu", "swish")  # diffusers' get_activation: both are x * sigmoid(x)

# Keys whose every value but the one here changes the computation or the tensors, with
# diffusers' default (the value a config without the key gets).
_ONLY = {
    "time_embedding_type": ("positional", "positional"),
    "class_embed_type": (None, None),
    "num_class_embeds": (None, None),
    "resnet_time_scale_shift": ("default", "default"),
    "downsample_type": ("conv", "conv"),
    "upsample_type": ("conv", "conv"),
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(key: str, value: object) -> int:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return value


def _non_negative_int(key: str, value: object) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    return value


def _number(key: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{key} must be positive, got {value!r}")
    return float(value)


def _flag(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")  # noqa: TRY004 (a bad value -> UserInputError)
    return value


def _names(key: str, value: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{key} must be a non-empty list of block types, got {value!r}")
    for name in value:
        if name not in allowed:
            raise ValueError(f"{key} entry {name!r} is not supported (only {', '.join(allowed)})")
    return tuple(value)


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON value of the file ``path`` (``OSError``; ``ValueError`` naming it when it is
    not valid JSON): a diffusers ``config.json`` or ``scheduler_config.json``."""
    text = Path(path).read_text("utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err


@dataclasses.dataclass(frozen=True)
class UNet2DConfig:
    """A ``UNet2DModel`` this implementation computes exactly; see the module docstring.

    Attributes mirror ``config.json``'s keys (lists become tuples). ``attention_head_dim``
    ``None`` means one head per attention block (diffusers then uses the block's width as the
    head dimension); ``mid_block_type`` ``None`` means no middle block.
    """

    in_channels: int = 3
    out_channels: int = 3
    sample_size: int | tuple[int, int] | None = None
    center_input_sample: bool = False
    time_embedding_dim: int | None = None
    freq_shift: float = 0.0
    flip_sin_to_cos: bool = True
    down_block_types: tuple[str, ...] = (
        "DownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
    )
    mid_block_type: str | None = "UNetMidBlock2D"
    up_block_types: tuple[str, ...] = (
        "AttnUpBlock2D",
        "AttnUpBlock2D",
        "AttnUpBlock2D",
        "UpBlock2D",
    )
    block_out_channels: tuple[int, ...] = (224, 448, 672, 896)
    layers_per_block: int = 2
    mid_block_scale_factor: float = 1.0
    downsample_padding: int = 1
    attention_head_dim: int | None = 8
    norm_num_groups: int = 32
    attn_norm_num_groups: int | None = None
    norm_eps: float = 1e-5
    add_attention: bool = True

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> UNet2DConfig:
        """Parse a ``config.json`` object, refusing what is not implemented (``ValueError``)."""
        if not isinstance(config, Mapping):
            raise ValueError(f"a UNet2DModel config must be a JSON object, got {config!r}")  # noqa: TRY004 (a bad value -> UserInputError)
        name = config.get("_class_name", "UNet2DModel")
        if name != "UNet2DModel":
            raise ValueError(f"_class_name must be 'UNet2DModel', got {name!r}")
        for key, (default, implemented) in _ONLY.items():
            value = config.get(key, default)
            if value != implemented:
                shown = "null" if implemented is None else repr(implemented)
                raise ValueError(f"{key} is not supported (only {shown}), got {value!r}")
        act_fn = config.get("act_fn", "silu")
        if act_fn not in _ACTIVATIONS:
            raise ValueError(f"act_fn is not supported (only 'silu' / 'swish'), got {act_fn!r}")
        base = cls()

        def get(key: str) -> Any:
            return config.get(key, getattr(base, key))

        down = _names("down_block_types", get("down_block_types"), DOWN_BLOCK_TYPES)
        up = _names("up_block_types", get("up_block_types"), UP_BLOCK_TYPES)
        channels = get("block_out_channels")
        if not isinstance(channels, list | tuple) or not channels:
            raise ValueError(f"block_out_channels must be a non-empty list, got {channels!r}")
        channels = tuple(_positive_int("block_out_channels", c) for c in channels)
        if not len(down) == len(up) == len(channels):
            raise ValueError(
                f"down_block_types, up_block_types and block_out_channels must have the same "
                f"length, got {len(down)}, {len(up)} and {len(channels)}"
            )
        mid = get("mid_block_type")
        if mid not in ("UNetMidBlock2D", None):
            raise ValueError(
                f"mid_block_type is not supported (only 'UNetMidBlock2D' or null), got {mid!r}"
            )
        head_dim = get("attention_head_dim")
        if head_dim is not None:
            head_dim = _positive_int("attention_head_dim", head_dim)
        time_dim = get("time_embedding_dim")
        if time_dim is not None:
            time_dim = _positive_int("time_embedding_dim", time_dim)
        attn_groups = get("attn_norm_num_groups")
        if attn_groups is not None:
            attn_groups = _positive_int("attn_norm_num_groups", attn_groups)
        size = get("sample_size")
        if isinstance(size, list | tuple):
            if len(size) != 2:
                raise ValueError(f"sample_size must be an integer or [height, width], got {size!r}")
            size = tuple(_positive_int("sample_size", side) for side in size)
        elif size is not None:
            size = _positive_int("sample_size", size)
        parsed = cls(
            in_channels=_positive_int("in_channels", get("in_channels")),
            out_channels=_positive_int("out_channels", get("out_channels")),
            sample_size=size,
            center_input_sample=_flag("center_input_sample", get("center_input_sample")),
            time_embedding_dim=time_dim,
            freq_shift=_number("freq_shift", get("freq_shift")),
            flip_sin_to_cos=_flag("flip_sin_to_cos", get("flip_sin_to_cos")),
            down_block_types=down,
            mid_block_type=mid,
            up_block_types=up,
            block_out_channels=channels,
            layers_per_block=_positive_int("layers_per_block", get("layers_per_block")),
            mid_block_scale_factor=_number(
                "mid_block_scale_factor", get("mid_block_scale_factor"), positive=True
            ),
            downsample_padding=_non_negative_int("downsample_padding", get("downsample_padding")),
            attention_head_dim=head_dim,
            norm_num_groups=_positive_int("norm_num_groups", get("norm_num_groups")),
            attn_norm_num_groups=attn_groups,
            norm_eps=_number("norm_eps", get("norm_eps"), positive=True),
            add_attention=_flag("add_attention", get("add_attention")),
        )
        parsed._check_sizes()
        return parsed

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> UNet2DConfig:
        """Parse a ``config.json`` file (``OSError`` / ``ValueError`` when it cannot be)."""
        return cls.from_dict(read_json(path))

    def _check_sizes(self) -> None:
        half = self.block_out_channels[0] // 2
        if half - self.freq_shift == 0:
            raise ValueError(
                f"freq_shift={self.freq_shift} divides the time frequencies by zero "
                f"(block_out_channels[0] // 2 = {half})"
            )
        for name, shape in self.tensor_shapes().items():
            if name.endswith("to_q.weight") and shape[0] == 0:
                width = shape[1]
                raise ValueError(
                    f"attention_head_dim={self.attention_head_dim} is wider than the "
                    f"{width} channels of {name.removesuffix('.to_q.weight')}"
                )
        for name, shape in self.tensor_shapes().items():
            key, groups = "norm_num_groups", self.norm_num_groups
            if name == "mid_block.attentions.0.group_norm.weight":
                key, groups = self._mid_attention_groups()
            elif not name.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
                continue
            if shape[0] % groups:
                raise ValueError(
                    f"{key}={groups} does not divide the {shape[0]} channels of "
                    f"{name.removesuffix('.weight')}"
                )

    def _mid_attention_groups(self) -> tuple[str, int]:
        if self.attn_norm_num_groups is not None:
            return "attn_norm_num_groups", self.attn_norm_num_groups
        return "norm_num_groups", self.norm_num_groups

    # ------------------------------------------------------------------ derived sizes

    @property
    def time_embed_dim(self) -> int:
        """The time embedding's width: ``time_embedding_dim``, else 4 x the first block's."""
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    def attention_heads(self, channels: int) -> int:
        """Heads of an attention block over ``channels`` channels (diffusers' rule)."""
        if self.attention_head_dim is None:
            return 1
        return channels // self.attention_head_dim

    def attention_head_size(self, channels: int) -> int:
        return channels if self.attention_head_dim is None else self.attention_head_dim

    def attention_groups(self, mid: bool) -> int:
        """Groups of an attention block's norm: the middle block's may differ."""
        return self._mid_attention_groups()[1] if mid else self.norm_num_groups

    def down_blocks(self) -> list[tuple[int, int, bool, bool]]:
        """Each down block's ``(in_channels, out_channels, attention, downsample)``."""
        blocks, previous = [], self.block_out_channels[0]
        last = len(self.block_out_channels) - 1
        for i, (kind, width) in enumerate(zip(self.down_block_types, self.block_out_channels)):
            blocks.append((previous, width, kind == "AttnDownBlock2D", i < last))
            previous = width
        return blocks

    def up_blocks(self) -> list[tuple[tuple[tuple[int, int], ...], bool, bool]]:
        """Each up block's resnets ``((in_channels, out_channels), ...)`` (the input already
        concatenated with its skip connection), ``attention`` and ``upsample``."""
        widths = tuple(reversed(self.block_out_channels))
        last = len(widths) - 1
        layers = self.layers_per_block + 1
        blocks, out = [], widths[0]
        for i, kind in enumerate(self.up_block_types):
            previous, out = out, widths[i]
            skip_in = widths[min(i + 1, last)]
            resnets = tuple(
                (
                    (previous if j == 0 else out) + (skip_in if j == layers - 1 else out),
                    out,
                )
                for j in range(layers)
            )
            blocks.append((resnets, kind == "AttnUpBlock2D", i < last))
        return blocks

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the network, by diffusers' name, with diffusers' shape."""
        shapes: dict[str, tuple[int, ...]] = {}
        first, time_dim = self.block_out_channels[0], self.time_embed_dim

        def conv(name: str, cin: int, cout: int, k: int = 3) -> None:
            shapes[f"{name}.weight"] = (cout, cin, k, k)
            shapes[f"{name}.bias"] = (cout,)

        def linear(name: str, cin: int, cout: int) -> None:
            shapes[f"{name}.weight"] = (cout, cin)
            shapes[f"{name}.bias"] = (cout,)

        def norm(name: str, width: int) -> None:
            shapes[f"{name}.weight"] = (width,)
            shapes[f"{name}.bias"] = (width,)

        def resnet(name: str, cin: int, cout: int) -> None:
            norm(f"{name}.norm1", cin)
            conv(f"{name}.conv1", cin, cout)
            linear(f"{name}.time_emb_proj", time_dim, cout)
            norm(f"{name}.norm2", cout)
            conv(f"{name}.conv2", cout, cout)
            if cin != cout:
                conv(f"{name}.conv_shortcut", cin, cout, k=1)

        def attention(name: str, width: int) -> None:
            inner = self.attention_heads(width) * self.attention_head_size(width)
            norm(f"{name}.group_norm", width)
            for projection in ("to_q", "to_k", "to_v"):
                linear(f"{name}.{projection}", width, inner)
            linear(f"{name}.to_out.0", inner, width)

        conv("conv_in", self.in_channels, first)
        linear("time_embedding.linear_1", first, time_dim)
        linear("time_embedding.linear_2", time_dim, time_dim)
        for i, (cin, cout, attn, down) in enumerate(self.down_blocks()):
            for j in range(self.layers_per_block):
                resnet(f"down_blocks.{i}.resnets.{j}", cin if j == 0 else cout, cout)
                if attn:
                    attention(f"down_blocks.{i}.attentions.{j}", cout)
            if down:
                conv(f"down_blocks.{i}.downsamplers.0.conv", cout, cout)
        if self.mid_block_type is not None:
            width = self.block_out_channels[-1]
            if self.add_attention:
                attention("mid_block.attentions.0", width)
            for j in range(2):
                resnet(f"mid_block.resnets.{j}", width, width)
        for i, (resnets, attn, up) in enumerate(self.up_blocks()):
            for j, (cin, cout) in enumerate(resnets):
                resnet(f"up_blocks.{i}.resnets.{j}", cin, cout)
                if attn:
                    attention(f"up_blocks.{i}.attentions.{j}", cout)
            if up:
                conv(f"up_blocks.{i}.upsamplers.0.conv", resnets[-1][1], resnets[-1][1])
        norm("conv_norm_out", first)
        conv("conv_out", first, self.out_channels)
        return shapes

    def num_parameters(self) -> int:
        return sum(math.prod(shape) for shape in self.tensor_shapes().values())
