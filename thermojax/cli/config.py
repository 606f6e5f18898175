"""Hydra's side of the settings: the schema in the ConfigStore, conversion, error one-liners.

``conf/config.yaml`` composes on top of the ``baseline_schema`` node registered here, so Hydra
rejects a misspelled key or a wrongly typed value (struct mode stays on). :func:`to_config` turns a
composed ``DictConfig`` (or a plain mapping, as sweeps and tests pass) into the frozen
:class:`~thermojax.pipeline.settings.BaselineConfig`, which validates its values when it is made.
This is the one place where a dict or a Hydra config becomes typed settings.

Example:
    >>> cfg = to_config({"bit_width": 4, "calibration": {"samples": 16}})
    >>> cfg.bit_width, cfg.calibration.samples, cfg.num_time_groups
    (4, 16, 4)
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import BooleanNode, FloatNode, IntegerNode, StringNode

from thermojax.errors import UserInputError
from thermojax.files import check_writable_folder
from thermojax.pipeline.settings import BaselineConfig
from thermojax.pipeline.settings.checks import shown

__all__ = [
    "SCHEMA_NAME",
    "ConfigRejected",
    "ValidateConfigCallback",
    "describe_config_error",
    "register_configs",
    "remove_if_fresh_and_empty",
    "to_config",
]

SCHEMA_NAME = "baseline_schema"


def _typed_time_groups(data: dict[str, Any]) -> dict[str, Any]:
    """A config mapping with ``time_groups.lambda`` renamed to the typed ``time_groups.lam``."""
    section = data.get("time_groups")
    if isinstance(section, Mapping) and "lambda" in section:
        data = dict(data)
        data["time_groups"] = {("lam" if k == "lambda" else k): v for k, v in section.items()}
    return data


_VALUE_NODES = {str: StringNode, float: FloatNode, int: IntegerNode, bool: BooleanNode}


def _time_groups_node() -> DictConfig:
    """``time_groups`` with the YAML key ``lambda``: typed value nodes (none takes null, as in
    the dataclass), unknown keys rejected."""
    defaults = BaselineConfig().to_dict()["time_groups"]
    node = OmegaConf.create(
        {
            name: _VALUE_NODES[type(value)](value, is_optional=False)
            for name, value in defaults.items()
        }
    )
    OmegaConf.set_struct(node, True)
    return node


def _typed_schema() -> DictConfig:
    """The schema as a writable structured DictConfig of :class:`BaselineConfig` (key ``lam``).

    OmegaConf marks nodes of frozen dataclasses read-only, which would reject every override;
    the typed objects stay frozen (``to_config``), only this composition node is writable.
    """
    node = OmegaConf.structured(BaselineConfig)
    _clear_readonly(node)
    return node


def _writable_schema() -> DictConfig:
    """The schema that composition may override, with the YAML key ``time_groups.lambda``.

    Every top-level value and section keeps its type (dataclass-typed sections reject unknown
    keys by themselves); only ``time_groups`` is a struct of typed value nodes, because its key
    ``lambda`` cannot be a dataclass field. Hydra puts the composed config in struct mode after
    adding its own ``hydra`` node, so the root flag stays unset here.
    """
    typed = _typed_schema()
    node = OmegaConf.create(
        {
            key: _time_groups_node() if key == "time_groups" else typed._get_node(key)
            for key in typed
        }
    )
    # A mapping section takes new keys (``quant.keep_bits={output:8}``); its values stay typed.
    OmegaConf.set_struct(node.quant.keep_bits, False)
    return node


@functools.cache
def _schemas() -> tuple[DictConfig, DictConfig]:
    """``(_writable_schema(), _typed_schema())``, built once: building them takes most of a
    conversion's time, and ``OmegaConf.merge`` copies its first argument, so they stay as built."""
    return _writable_schema(), _typed_schema()


_type_hints = functools.cache(typing.get_type_hints)


def _shape_error(cls: type, data: Mapping[str, Any], prefix: str = "") -> str:
    """The first value of ``data`` whose shape does not fit the dataclass ``cls``: a list where
    a mapping goes or the other way round, a list or mapping inside a list or mapping of plain
    values, an unknown key in a list's element; ``""`` if none. OmegaConf names no key for the
    first, lets the second through (``phases.windows=[[1]]``) and names only the field for the
    third."""
    hints = _type_hints(cls)
    for key, value in data.items():
        hint = hints.get("lam" if key == "lambda" and "lam" in hints else key)
        if hint is None:
            continue  # an unknown key: OmegaConf names it
        if typing.get_origin(hint) is typing.Union:  # Optional[X]
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        name, origin = f"{prefix}{key}", typing.get_origin(hint)
        if dataclasses.is_dataclass(hint):
            found = (
                _shape_error(hint, value, f"{name}.")
                if isinstance(value, Mapping)
                else f"{name}: is a section of keys, got {shown(value)}"
            )
            if found:
                return found
        elif origin in (list, dict):
            wanted = list if origin is list else Mapping
            if isinstance(value, list | tuple | Mapping) and not isinstance(value, wanted):
                what = "a list [...]" if origin is list else "a mapping {key: value, ...}"
                return f"{name}: takes {what}, got {shown(value)}"
            element = typing.get_args(hint)[-1]
            if not isinstance(value, list | tuple | Mapping):
                continue  # a scalar: OmegaConf names the key and the type
            items = list(value.values() if isinstance(value, Mapping) else value)
            for index, item in enumerate(items):
                if dataclasses.is_dataclass(element) and isinstance(item, Mapping):
                    fields = {f.name for f in dataclasses.fields(element)}
                    unknown = sorted(set(map(str, item)) - fields)
                    if unknown:
                        return (
                            f"{name}[{index}]: unknown key {shown(unknown[0])} (known: "
                            f"{', '.join(sorted(fields))})"
                        )
                    try:  # the element's types, here where its place in the list is known
                        OmegaConf.merge(OmegaConf.structured(element), dict(item))
                    except OmegaConfBaseException as exc:
                        field = getattr(exc, "full_key", None) or ""
                        first = str(exc).strip().splitlines()[0] if str(exc) else ""
                        return f"{name}[{index}].{field}: {first}" if field else f"{name}: {first}"
                elif not dataclasses.is_dataclass(element) and isinstance(
                    item, list | tuple | Mapping
                ):
                    return f"{name}: takes plain {element.__name__} values, got {shown(value)}"
    return ""


def _clear_readonly(node: DictConfig) -> None:
    node._set_flag("readonly", None)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _clear_readonly(child)


def register_configs() -> None:
    """Register the schema in Hydra's ConfigStore under ``baseline_schema``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=SCHEMA_NAME, node=_writable_schema())


def to_config(cfg: BaselineConfig | DictConfig | Mapping[str, Any]) -> BaselineConfig:
    """Convert a composed config or a (partial) mapping to a typed, validated ``BaselineConfig``.

    A mapping may leave keys out (defaults apply); unknown keys and wrong types are errors.

    Raises:
        UserInputError: an unknown key, a value of the wrong type or an invalid value.
    """
    if isinstance(cfg, BaselineConfig):
        typed = cfg
    else:
        data: Any = {}
        try:
            if isinstance(cfg, DictConfig):
                cfg = copy.deepcopy(cfg)
                if "hydra" in cfg:
                    with read_write(cfg), open_dict(cfg):
                        del cfg["hydra"]
                data = OmegaConf.to_container(cfg, resolve=True)
            else:
                data = dict(cfg)
            shape = _shape_error(BaselineConfig, data) if isinstance(data, Mapping) else ""
            if shape:
                raise UserInputError(shape)
            # Keys and types as the user writes them (time_groups.lambda), then the typed object.
            writable, typed_schema = _schemas()
            checked = OmegaConf.to_container(OmegaConf.merge(writable, data))
            merged = OmegaConf.merge(typed_schema, _typed_time_groups(checked))
            typed = OmegaConf.to_object(merged)
        except OmegaConfBaseException as exc:
            raise UserInputError(describe_config_error(exc)) from None
    return typed


_UNKNOWN_KEY_RE = re.compile(
    r"Could not override '(?P<key>[^']+)'.*?use \+(?P<override>\S+)", re.DOTALL
)
_MERGE_RE = re.compile(r"Error merging override (?P<override>\S+)")


def describe_config_error(exc: BaseException) -> str:
    """One line for a Hydra or OmegaConf configuration error, naming the key and the value.

    Hydra reports composition errors (unknown key, value of the wrong type, missing group
    option) over several lines, with OmegaConf's error as the cause; this keeps what the user
    needs: the override as typed, the key, and why it was rejected.
    """
    text = str(exc).strip()
    text = text.removeprefix("In 'config': ").strip()
    cause = exc.__cause__
    cause_line = str(cause).strip().splitlines()[0] if cause is not None and str(cause) else ""
    unknown = _UNKNOWN_KEY_RE.search(text)
    if unknown:
        return (
            f"{unknown.group('override')}: unknown config key '{unknown.group('key')}' "
            "(`python -m thermojax.baseline --cfg job` lists the keys)"
        )
    merge = _MERGE_RE.search(text)
    if merge and cause_line:
        return f"{merge.group('override')}: {cause_line}"
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        first = text.splitlines()[0] if text else type(exc).__name__
        if "not in struct" in first or re.search(r"Key '[^']+' not in '", first):
            return f"unknown config key '{key}'"
        return f"{key}: {first}" if key else first
    kept: list[str] = []
    listing = False
    for line in text.splitlines():
        stripped = line.strip().rstrip(".")
        if stripped.startswith(("Config search path", "Set the environment variable")):
            break
        if not stripped:
            continue
        if listing and line[:1].isspace():  # an option under "Available options in ...:"
            kept[-1] += (" " if kept[-1].endswith(":") else ", ") + stripped
            continue
        kept.append(stripped)
        listing = stripped.endswith(":")
    return "; ".join(kept) if kept else type(exc).__name__


class ConfigRejected(BaseException):
    """Carries a :class:`UserInputError` out of a Hydra callback.

    Hydra turns an ``Exception`` raised in a callback into a warning and starts the job anyway;
    a ``BaseException`` passes through, so a rejected config stops before Hydra creates the run
    folder. ``thermojax.cli.baseline.main`` prints it as one ``error:`` line.
    """

    def __init__(self, error: UserInputError) -> None:
        super().__init__(str(error))
        self.error = error


_fresh_run_dirs: dict[Path, Path] = {}
"""Run folder -> its topmost ancestor that did not exist before this run (set by the callback)."""


def remove_if_fresh_and_empty(run_dir: str | os.PathLike[str]) -> None:
    """Remove ``run_dir`` and the parents Hydra created for it, if this run created them and
    they are still empty (a user error found after Hydra made the folder leaves nothing)."""
    path = Path(run_dir).resolve()
    top = _fresh_run_dirs.get(path)
    if top is None:
        return
    while True:
        try:
            path.rmdir()
        except OSError:
            return
        if path == top:
            return
        path = path.parent


class ValidateConfigCallback(Callback):
    """Hydra callback: validate the composed config before Hydra creates the run directory.

    A bad value (``bit_width=3``) then leaves nothing behind, not even an empty run folder. It
    also records whether the run folder is new, so that a user error found later (one that
    needs the model, e.g. ``num_time_groups`` above its T) can remove the empty folder again.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Raise :class:`ConfigRejected` for an invalid value."""
        try:
            to_config(config)
            # Before any work: a run folder through a file, on a read-only mount or where this
            # user may not write fails now, not after the run (Hydra makes the folder next).
            check_writable_folder(str(config.hydra.run.dir), what="hydra.run.dir", create=False)
            if config.get("export") is not None and config.export.get("path") is not None:
                export = Path(str(config.export.path)).expanduser()
                check_writable_folder(export.parent, what="export.path's folder", create=False)
        except UserInputError as exc:
            raise ConfigRejected(exc) from None
        run_dir = Path(str(config.hydra.run.dir)).resolve()
        top = run_dir
        while not top.parent.exists():
            top = top.parent
        if not run_dir.exists():
            _fresh_run_dirs[run_dir] = top
