"""A sweep job's W&B identity: the sweep it belongs to and a run name that says its configuration.

:func:`sweep_context` finds the Hydra multirun this process runs a job of (its name, folder, job
number, overrides and swept keys); :func:`run_name` names the job's run after what tells its
configuration apart (``W2-G4-t0.3``). :func:`thermojax.cli.tracking.make_tracker` uses both, and
:mod:`thermojax.cli.sweep_tracking` names the summary run's group with :func:`sweep_name`.

Example:
    >>> run_name({"bit_width": 4, "num_time_groups": 4, "smoothness_threshold": 0.3}, [])
    'W4-G4-t0.3'
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

__all__ = [
    "MULTIRUN_YAML",
    "RUN_NAME_TAGS",
    "RUN_NAME_VALUES",
    "run_name",
    "sweep_context",
    "sweep_name",
    "swept_keys",
]

MULTIRUN_YAML = "multirun.yaml"
"""The sweep's master config, which Hydra's sweeper writes into the sweep folder first."""

RUN_NAME_TAGS = {"seed": "s", "group_size": "g"}
"""Swept keys shown as a prefix and their value in a run name (``s1``, ``g128``)."""
RUN_NAME_VALUES = (
    "quant.method",
    "model",
    "experiment",
    "calibration",
    "time_groups.strategy",
    "act.mode",
    "act.rotation",
)
"""Swept keys shown by their value alone in a run name (``gptq``, ``pydoc-mdlm``, ``dynamic``,
``hadamard``)."""
_NAMED_KEYS = ("bit_width", "act_bits", "num_time_groups", "smoothness_threshold")
_UNNAMED_KEYS = ("sweep", "wandb", "hydra")


def _override_key(override: str) -> tuple[str, str]:
    key, _, value = str(override).lstrip("+~").partition("=")
    return key, value


def run_name(
    config: Mapping[str, Any], overrides: Sequence[str], swept: Sequence[str] | None = None
) -> str:
    """A sweep run's W&B name: what tells its configuration apart, e.g. ``W2-G4-t0.3``.

    Always weight bits (``W2``; ``W2A4`` when activations are not at 8 bits), time groups and
    threshold, from ``config``; then, for each of the job's ``overrides`` of another key that the
    sweep varies (``swept``; ``None``: every other override counts), a short tag: ``s1`` (seed),
    ``g128`` (group size), the value of ``quant.method`` / ``model`` / ``experiment`` /
    ``calibration`` / ``time_groups.strategy``, else ``key=value``. Two jobs of one sweep differ
    in some swept value, so their names differ.

    Example:
        >>> run_name({"bit_width": 2, "act_bits": 4, "num_time_groups": 8,
        ...           "smoothness_threshold": 0.3}, ["seed=1", "quant.method=gptq"])
        'W2A4-G8-t0.3-s1-gptq'
    """
    act = config.get("act_bits", 8)
    parts = [
        f"W{config['bit_width']}" + ("" if act == 8 else f"A{act}"),
        f"G{config['num_time_groups']}",
        f"t{config['smoothness_threshold']:g}",
    ]
    for override in overrides:
        key, value = _override_key(override)
        if key in _NAMED_KEYS or key.split(".")[0] in _UNNAMED_KEYS:
            continue
        if swept is not None and key not in swept:
            continue
        if key in RUN_NAME_TAGS:
            parts.append(f"{RUN_NAME_TAGS[key]}{value}")
        elif key in RUN_NAME_VALUES:
            parts.append(value)
        else:
            parts.append(f"{key}={value}")
    return "-".join(parts)


def swept_keys(params: Mapping[str, Any], multirun_yaml: Path) -> list[str] | None:
    """The keys a sweep varies: its preset's (``hydra.sweeper.params``) and the command line's
    sweep overrides (``a=1,2``, ``range(...)``) recorded in the sweep's ``multirun.yaml``.

    ``None`` when that file cannot be read (a job on a node without the sweep folder): then
    every override of a job is taken as swept.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        master = OmegaConf.load(multirun_yaml)
        parsed = OverridesParser.create().parse_overrides(
            [str(o) for o in master.hydra.overrides.task]
        )
    except Exception:  # noqa: BLE001 - unreadable or foreign: fall back to every override
        return None
    keys = {str(key) for key in params}
    keys.update(o.key_or_group for o in parsed if o.is_sweep_override())
    return sorted(keys)


def sweep_name(preset: str | None, sweep_dir: str | os.PathLike[str]) -> str:
    """A sweep's name, and so its W&B group: the preset (``sweep=NAME``), else its folder's name."""
    return str(preset) if preset else Path(sweep_dir).name


def sweep_context() -> dict[str, Any] | None:
    """The Hydra multirun this process runs a job of, or ``None`` (a single run, no Hydra).

    Returns:
        ``{"name", "preset", "dir", "job_num", "overrides", "swept"}``: ``name`` is the sweep
        preset (``sweep=NAME``) when one was chosen, else the sweep folder's name; ``overrides``
        are the job's own (``bit_width=2`` ...); ``swept`` the keys the sweep varies
        (:func:`swept_keys`).
    """
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:  # tracking works without Hydra installed
        return None
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(str(hydra_cfg.sweep.dir)).absolute()
    preset = hydra_cfg.runtime.choices.get("sweep")
    params = hydra_cfg.sweeper.get("params") or {}
    return {
        "name": sweep_name(preset, sweep_dir),
        "preset": str(preset) if preset else None,
        "dir": str(sweep_dir),
        "job_num": int(hydra_cfg.job.num),
        "overrides": [str(o) for o in hydra_cfg.overrides.task],
        "swept": swept_keys(params, sweep_dir / MULTIRUN_YAML),
    }
