"""The pipeline stages that the runs of a sweep share, cached on disk (``thermojax.pipeline.cache.store``).

Four entries, each keyed by a hash of exactly what it depends on, so every job of a sweep, and
every later sweep on the same cache folder (``thermojax.files.cache_dir()``), computes each one
once; two workers asking for the same entry at the same time compute it once (per-key lock):

- **calibration** statistics: the denoiser (:func:`model_fingerprint`), the quantized weights
  the run actually uses (:func:`qweights_fingerprint`: every layer's codes, scales, zero points,
  bits and group size, whatever produced them: ``quant.*``, or an exported checkpoint's codes
  reloaded as they are), ``bit_width``, ``group_size``, ``calibration.samples``,
  ``calibration.samples_per_step``, ``seed`` and ``CALIBRATION_VERSION``. Not the ``quant``
  settings themselves (the weights they produced are in the key), ``num_time_groups``,
  ``smoothness_threshold`` or ``act_bits`` (calibration runs with fp32 activations).
- **fp32 samples**: the denoiser, ``seed``, ``sampling.num_samples`` and ``SAMPLING_VERSION``.
- Both also the sampler that runs (``sampling.*`` / ``calibration.*``: name, steps, eta) unless it
  is the full DDPM sampler, so that entries written before samplers were a choice stay valid.
- **quantized sampling + quality**: the denoiser, the quantized weights (as for calibration),
  the quality reference (classifier, held-out text), and the resolved config minus
  :data:`QUALITY_INDEPENDENT_KEYS` (the threshold, the interpretation bands, W&B settings, the
  display name and the chain's error budget), plus ``QUALITY_VERSION``. The key is computed
  from the config dict with those keys removed, so a config section added later is part of it
  without anyone remembering to add it: threshold variants of one configuration share
  everything but the violation analysis. A key added once entries existed (:data:`KEYS_ADDED_LATER`, e.g. ``act.mode``) is
  left out while it holds the value every earlier run had, so its default keeps their entries.

- **weights** of a weight-only run (a checkpoint thermojax cannot run, without ``export.path``):
  the checkpoint's fingerprint (its config and every shard's header and size, cheap for any
  size; :meth:`~thermojax.models.hf.SafetensorsFolder.fingerprint`) with each file's
  modification time (an edit of the weights in place keeps the headers but not the time), the
  rules, ``bit_width``, ``group_size``, the outlier threshold and ``WEIGHTS_VERSION``: a sweep's
  threshold and time-group variants of one checkpoint stream it once.

Each run records what it found in ``Result.cache`` (entry name -> ``"hit"`` or ``"miss"``) and in
its log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thermojax.core.quant import QTensor
from thermojax.files import read_json_file
from thermojax.models.base import DiffusionModel, SamplerSpec
from thermojax.pipeline.cache.checks import check_entry
from thermojax.pipeline.cache.fingerprints import (
    checkpoint_model_fingerprint,
    model_fingerprint,
    network_fingerprint,
    qweights_fingerprint,
    reference_fingerprint,
)
from thermojax.pipeline.cache.store import (
    cache_key,
    entry_path,
    get_or_compute,
)
from thermojax.pipeline.families.registry import evaluate_quality
from thermojax.pipeline.measure.calibrate import CALIBRATION_VERSION, CalibrationStats, calibrate
from thermojax.pipeline.measure.sampling import ActParams, Samples, sample
from thermojax.pipeline.quality.kind import SampleQuality, quality_from_dict
from thermojax.pipeline.settings import sampler_specs
from thermojax.pipeline.weights.quantize import WeightReport
from thermojax.pipeline.weights.section import WeightsSection

__all__ = [
    "KEYS_ADDED_LATER",
    "QUALITY_INDEPENDENT_KEYS",
    "QUALITY_VERSION",
    "SAMPLING_VERSION",
    "WEIGHTS_VERSION",
    "QualityEntry",
    "StageCache",
    "checkpoint_model_fingerprint",
    "model_fingerprint",
    "network_fingerprint",
    "qweights_fingerprint",
    "reference_fingerprint",
    "sample_and_evaluate",
    "weights_key",
    "weights_section",
]

log = logging.getLogger(__name__)

SAMPLING_VERSION = 2
"""Bump when :func:`thermojax.pipeline.measure.sampling.sample` draws different numbers for the same inputs."""

QUALITY_VERSION = 2
"""Bump when quantized sampling, activation parameters or quality metrics change their numbers."""

WEIGHTS_VERSION = 1
"""Bump when weight-only quantization (:mod:`thermojax.pipeline.weights.stream`) or its measures
change their numbers."""

QUALITY_INDEPENDENT_KEYS = (
    ("smoothness_threshold",),
    ("interpretation",),
    ("wandb",),
    ("model", "name"),
    ("model", "residency"),
    ("export",),
    ("thermo", "chain_budget"),
)
"""Config paths that do not change quantized samples or their quality (only the analysis and
presentation after them, where a copy of the quantized model is written, whether the reference
and the quantized model are held together, or the chain's error budget measured after them):
removed from the config before it is hashed into the quality key."""


KEYS_ADDED_LATER: dict[tuple[str, ...], Any] = {
    ("act", "mode"): "static",
    ("act", "rotation"): "none",
    ("act", "mask_aware"): False,
    ("act", "granularity"): "tensor",
    ("act", "channel_groups"): 8,
}
"""Config paths added after quality entries were written, each with the value that every run
before it had: hashed into the quality key only when they hold another value (a section left
empty goes too). A default run keeps its entries, and a path added here (one line each, with
the value that keeps the old numbers) re-keys no entry, not even those of the paths before it
set to other values."""


def _without_earlier_values(node: Mapping[str, Any], path: tuple[str, ...], value: Any) -> dict:
    """``node`` without ``path`` if it holds ``value``, and without sections that left empty."""
    out = dict(node)
    head, rest = path[0], path[1:]
    if head not in out:
        return out
    if not rest:
        if out[head] == value:
            del out[head]
        return out
    if isinstance(out[head], Mapping):
        out[head] = _without_earlier_values(out[head], rest, value)
        if not out[head]:
            del out[head]
    return out


def _without(config: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in config.items()}
    for path in paths:
        node: Any = out
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


def _hashed_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the quality key hashes of the config: less :data:`QUALITY_INDEPENDENT_KEYS`, and
    less each of :data:`KEYS_ADDED_LATER` that holds its earlier value."""
    hashed = _without(config, QUALITY_INDEPENDENT_KEYS)
    for path, value in KEYS_ADDED_LATER.items():
        hashed = _without_earlier_values(hashed, path, value)
    return hashed


@dataclasses.dataclass(frozen=True)
class QualityEntry:
    """What threshold variants share after calibration: quantized samples and their quality.

    Attributes:
        quality: the evaluator's :class:`~thermojax.pipeline.quality.kind.SampleQuality`.
        quantized_x0: the quantized samples ``[N, *data_shape]`` (pixel range), same noise as
            fp32. (Their trajectory is not kept: only ``quality`` needs it.)
    """

    quality: SampleQuality
    quantized_x0: np.ndarray

    def save(self, path: Path) -> None:
        """One ``.npz``: the samples, and the quality as JSON text (NaN allowed)."""
        with open(path, "wb") as handle:
            np.savez(
                handle,
                quality=np.asarray(json.dumps(self.quality.to_dict(), allow_nan=True)),
                quantized_x0=_sample_array(self.quantized_x0),
            )

    @classmethod
    def load(cls, path: Path) -> QualityEntry:
        """Inverse of :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            fields = json.loads(str(data["quality"]))
            x0 = _sample_array(data["quantized_x0"])
        # An entry written before quality kinds has no kind: quality_from_dict reads it.
        return cls(quality=quality_from_dict(fields), quantized_x0=x0)


def _sample_array(x0: Any) -> np.ndarray:
    """Samples as stored: token ids stay int32, pixels float32."""
    x0 = np.asarray(x0)
    return x0.astype(np.int32 if np.issubdtype(x0.dtype, np.integer) else np.float32)


def sample_and_evaluate(
    model: DiffusionModel,
    fp32: Samples,
    *,
    qweights: Mapping[str, QTensor],
    act_params: ActParams,
    weight_report: WeightReport,
    num_samples: int,
    seed: int,
) -> QualityEntry:
    """Quantized sampling from the fp32 noise, and its quality against ``fp32``.

    Args:
        fp32: fp32 samples with the same ``num_samples`` and ``seed``; the quantized samples run
            their sampler.
        qweights, act_params: the quantized weights and per-group activation parameters.
        weight_report: from :func:`~thermojax.pipeline.weights.quantize.quantize_weights`.
    """
    quantized = sample(
        model,
        weights=qweights,
        act_params=act_params,
        num_samples=num_samples,
        seed=seed,
        sampler=fp32.sampler,
    )
    quality = evaluate_quality(
        model,
        fp32,
        quantized,
        act_params.edges,
        weight_report,
        qweights=qweights,
        act_params=act_params,
        seed=seed,
    )
    return QualityEntry(quality=quality, quantized_x0=quantized.x0)


def _save_samples(samples: Samples, path: Path) -> None:
    spec = samples.sampler or SamplerSpec()
    with open(path, "wb") as handle:
        np.savez(
            handle,
            x0=samples.x0,
            trajectory=samples.trajectory,
            timesteps=samples.timesteps,
            sampler=np.asarray(json.dumps(dataclasses.asdict(spec), sort_keys=True)),
        )


def _load_samples(path: Path) -> Samples:
    with np.load(path, allow_pickle=False) as data:
        # An entry written before samplers were a choice ran the full DDPM sampler.
        known = "sampler" in data.files
        spec = SamplerSpec(**json.loads(str(data["sampler"]))) if known else SamplerSpec()
        return Samples(
            x0=_sample_array(data["x0"]),
            trajectory=np.asarray(data["trajectory"]),
            sampler=None if spec == SamplerSpec() else spec,
            timesteps=np.asarray(data["timesteps"], np.int32) if known else None,
        )


def _sampler_key(spec: SamplerSpec) -> dict[str, Any]:
    """What a cache key adds for a sampler: nothing for the full DDPM sampler (so entries written
    before samplers were a choice stay valid), else its name, steps and eta."""
    return {} if spec == SamplerSpec() else {"sampler": dataclasses.asdict(spec)}


class StageCache:
    """The cached stages of one run; ``record`` tells which entries were hits or misses, and
    ``waited_s`` how long each waited for another worker that was computing it.

    Args:
        model: the loaded model.
        config: the run's resolved config as a dict (``BaselineConfig.to_dict()``).
        qweights: the quantized weights the run uses (layer name -> QTensor, quantized at the
            config's ``bit_width`` and ``group_size`` or reloaded from an export): calibrated
            with, and part of the calibration and quality keys.
        cache_dir: the cache folder (default ``thermojax.files.cache_dir()``).
        model_id: the model's fingerprint when its arrays are not all in memory
            (:func:`checkpoint_model_fingerprint`); ``None``: :func:`model_fingerprint`.

    Example:
        >>> cached = StageCache(model, config.to_dict(), qweights)  # doctest: +SKIP
        >>> stats = cached.calibration()  # doctest: +SKIP
        >>> cached.record  # doctest: +SKIP
        {'calibration': 'hit'}
    """

    def __init__(
        self,
        model: DiffusionModel,
        config: Mapping[str, Any],
        qweights: Mapping[str, QTensor],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        model_id: str | None = None,
    ) -> None:
        self.model = model
        self.config = dict(config)
        self.qweights = qweights
        self.cache_dir = cache_dir
        self.model_id = model_fingerprint(model) if model_id is None else model_id
        self.weights_id = qweights_fingerprint(qweights)
        self.record: dict[str, str] = {}
        self.waited_s: dict[str, float] = {}
        """Seconds each entry waited for another worker computing it (not this run's work)."""
        self.sampler, self.calibration_sampler = sampler_specs(self.config)

    def _get(
        self,
        name: str,
        key: str,
        compute: Callable[[], Any],
        *,
        save: Callable[[Any, Path], None],
        load: Callable[[Path], Any],
        suffix: str,
    ) -> Any:
        computed = False

        def counted() -> Any:
            nonlocal computed
            computed = True
            return compute()

        def waited(seconds: float) -> None:
            self.waited_s[name] = seconds

        def checked(path: Path) -> Any:  # a stored entry that does not fit is recomputed
            return check_entry(name, load(path), model=self.model, config=self.config)

        value = get_or_compute(
            key,
            counted,
            save=save,
            load=checked,
            suffix=suffix,
            cache_dir=self.cache_dir,
            name=name,
            on_wait=waited,
        )
        self.record[name] = "miss" if computed else "hit"
        log.info("cache %s: %s (key %s)", self.record[name], name, key[:16])
        return value

    def stored(self, name: str) -> Any | None:
        """The stored ``fp32_samples`` or ``quality`` entry (recorded as a hit), or ``None``
        (nothing recorded): a look that computes nothing and waits for nobody, for a run that
        computes the entry in parts (its reference and quantized model held apart) and stores
        it whole with :meth:`fp32_samples` / :meth:`quality` after."""
        key_of, load = {
            "fp32_samples": (self.fp32_samples_key, _load_samples),
            "quality": (self.quality_key, QualityEntry.load),
        }[name]
        key = key_of()
        path = entry_path(key, suffix=".npz", cache_dir=self.cache_dir)
        try:
            found = path.is_file()
        except OSError:
            found = False
        if not found:
            return None
        try:
            value = check_entry(name, load(path), model=self.model, config=self.config)
        except Exception:  # noqa: BLE001 - unreadable or unfit: get_or_compute recomputes it
            return None
        self.record[name] = "hit"
        log.info("cache hit: %s (key %s)", name, key[:16])
        return value

    def calibration_key(self) -> str:
        """The key of this run's calibration statistics."""
        cfg = self.config
        return cache_key(
            kind="calibration",
            version=CALIBRATION_VERSION,
            model=self.model_id,
            weights=self.weights_id,
            bit_width=cfg["bit_width"],
            group_size=cfg["group_size"],
            samples=cfg["calibration"]["samples"],
            samples_per_step=cfg["calibration"]["samples_per_step"],
            seed=cfg["seed"],
            **_sampler_key(self.calibration_sampler),
            # added later: a key without it is the statistics of all positions together
            **({"mask_aware": True} if self._mask_aware else {}),
            **({"channel_groups": self._channel_groups} if self._channel_groups > 1 else {}),
        )

    @property
    def _mask_aware(self) -> bool:
        return bool((self.config.get("act") or {}).get("mask_aware", False))

    @property
    def _channel_groups(self) -> int:
        """K of ``act.granularity=channel`` (1 for ``tensor``: the whole input)."""
        act = self.config.get("act") or {}
        return int(act.get("channel_groups", 8)) if act.get("granularity") == "channel" else 1

    def calibration(self) -> CalibrationStats:
        """Calibration statistics for this run's weights, from the cache or computed."""
        cfg = self.config
        return self._get(
            "calibration",
            self.calibration_key(),
            lambda: calibrate(
                self.model,
                bit_width=cfg["bit_width"],
                group_size=cfg["group_size"],
                num_samples=cfg["calibration"]["samples"],
                seed=cfg["seed"],
                samples_per_step=cfg["calibration"]["samples_per_step"],
                qweights=self.qweights,
                sampler=self.calibration_sampler,
                mask_aware=self._mask_aware,
                channel_groups=self._channel_groups,
            ),
            save=lambda stats, path: stats.save(path),
            load=CalibrationStats.load,
            suffix=".npz",
        )

    def fp32_samples_key(self) -> str:
        """The key of the fp32 samples (and their trajectory)."""
        return cache_key(
            kind="fp32_samples",
            version=SAMPLING_VERSION,
            model=self.model_id,
            seed=self.config["seed"],
            num_samples=self.config["sampling"]["num_samples"],
            **_sampler_key(self.sampler),
        )

    def fp32_samples(self, model: Callable[[], DiffusionModel] | None = None) -> Samples:
        """fp32 samples with the config's seed and sample count, from the cache or sampled
        (by ``model()`` when given: the full-precision model of a run that holds it apart from
        the quantized one, read in only on a miss)."""
        return self._get(
            "fp32_samples",
            self.fp32_samples_key(),
            lambda: sample(
                self.model if model is None else model(),
                num_samples=self.config["sampling"]["num_samples"],
                seed=self.config["seed"],
                sampler=self.sampler,
            ),
            save=_save_samples,
            load=_load_samples,
            suffix=".npz",
        )

    def quality_key(self) -> str:
        """The key of the quantized samples and quality: the config minus
        ``QUALITY_INDEPENDENT_KEYS``, the denoiser, the quantized weights and the quality
        reference."""
        return cache_key(
            kind="quality",
            version=QUALITY_VERSION,
            model=self.model_id,
            weights=self.weights_id,
            reference=reference_fingerprint(self.model),
            config=_hashed_config(self.config),
        )

    def quality(self, compute: Callable[[], QualityEntry]) -> QualityEntry:
        """The run's samples and quality: cached, or ``compute()`` (which samples and evaluates;
        it may call :meth:`fp32_samples`)."""
        return self._get(
            "quality",
            self.quality_key(),
            compute,
            save=lambda entry, path: entry.save(path),
            load=QualityEntry.load,
            suffix=".npz",
        )


def weights_key(config: Mapping[str, Any], checkpoint: Any, *, outlier_sigmas: float) -> str:
    """The key of a weight-only run's ``weights`` section (module doc).

    Args:
        config: the run's resolved config as a dict.
        checkpoint: the opened :class:`~thermojax.models.hf.SafetensorsFolder`.
        outlier_sigmas: the outlier threshold the measures use.
    """
    files = ["config.json", *checkpoint.shards]
    return cache_key(
        kind="weights",
        version=WEIGHTS_VERSION,
        checkpoint=checkpoint.fingerprint(),
        modified={file: os.stat(Path(checkpoint.path) / file).st_mtime_ns for file in files},
        rules=config["weights"]["rules"],
        bit_width=config["bit_width"],
        group_size=config["group_size"],
        outlier_sigmas=outlier_sigmas,
    )


def weights_section(
    key: str,
    compute: Callable[[], WeightsSection],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[WeightsSection, str]:
    """A weight-only run's ``weights`` section from the cache, or ``compute()``d and stored;
    with ``"hit"`` or ``"miss"``. On a hit its ``seconds`` and ``bytes_per_second`` are those of
    the run that computed it."""
    computed = False

    def counted() -> WeightsSection:
        nonlocal computed
        computed = True
        return compute()

    def save(section: WeightsSection, path: Path) -> None:
        path.write_text(json.dumps(section.to_dict(), allow_nan=False))

    section = get_or_compute(
        key,
        counted,
        save=save,
        # Strict: an entry holding NaN or Infinity (never written: allow_nan=False) is not one
        # this cache stored whole, and is recomputed.
        load=lambda path: WeightsSection.from_dict(read_json_file(path, strict=True)),
        suffix=".json",
        cache_dir=cache_dir,
    )
    state = "miss" if computed else "hit"
    log.info("cache %s: weights (key %s)", state, key[:16])
    return section, state
