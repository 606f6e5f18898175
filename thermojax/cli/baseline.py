"""``python -m thermojax.baseline [key=value ...]``: the baseline-metrics command.

Hydra composes ``conf/`` on top of the typed schema; this module only turns the config into a
:class:`~thermojax.pipeline.settings.BaselineConfig`, calls :func:`execute` (which anyone can call without
Hydra) and turns user mistakes into one ``error: ...`` line with exit status 2.

Outputs, in Hydra's run directory (``hydra.run.dir=...``): ``baseline_metrics.json``,
``baseline_metrics.html``, ``baseline_metrics.log``, ``samples.npz`` and, unless
``wandb.mode=disabled``, the W&B run under ``wandb/``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from thermojax.cli.config import (
    BaselineConfig,
    ConfigRejected,
    describe_config_error,
    register_configs,
    remove_if_fresh_and_empty,
    to_config,
)
from thermojax.errors import UserInputError
from thermojax.files import RUN_LOG, cache_dir, publish_staged, staged_path

__all__ = ["enable_compilation_cache", "execute", "main"]

log = logging.getLogger("thermojax.baseline")


def enable_compilation_cache() -> Path:
    """Turn on JAX's persistent compilation cache in ``thermojax.files.cache_dir() / "jax"``.

    A warm cache skips XLA compilation of the calibration and sampling scans on later runs.
    """
    import jax

    path = cache_dir() / "jax"
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Cache every program that took noticeable time to compile, not only those above 1 s.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def execute(config: BaselineConfig, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Run the baseline, write every output into ``out_dir``, track it, print a summary.

    ``baseline_metrics.json`` is the completion marker a sweep's resume trusts, so it is renamed
    into place last: the other outputs, the W&B run (finished) and the log come first, and the
    JSON waits under a temporary name (:func:`thermojax.files.staged_path`,
    ``.baseline_metrics.json.pending.tmp``, which the launcher removes on resume). A kill at any point leaves either no JSON (the job reruns) or every
    output. Every file is written atomically.

    On a :class:`UserInputError` (e.g. ``num_time_groups`` above the model's T) nothing is
    written and the error propagates. On any other failure the log is still written, with the
    traceback, and the error propagates.

    Returns:
        The written files keyed ``json``, ``html``, ``samples``, ``log`` (and the phase table's).
    """
    from rich.console import Console

    from thermojax.cli.outputs import OUTPUT_FILES, write_outputs
    from thermojax.cli.runlog import RunLog, print_summary, stage_progress
    from thermojax.cli.tracking import make_tracker
    from thermojax.pipeline import run

    out = Path(out_dir)
    final_json = out / OUTPUT_FILES["json"]
    pending_json = staged_path(final_json)
    console = Console(stderr=True)
    run_log = RunLog()
    with run_log.attached(console):
        try:
            cache = enable_compilation_cache()
            log.info("output folder %s; JAX compilation cache %s", out.resolve(), cache)
            with stage_progress(console) as on_stage:
                result = run(config, progress=on_stage)
            files = write_outputs(result, out, json_path=pending_json)
            tracker = make_tracker(
                config.wandb, run_dir=out, name=out.resolve().name, config=result.config
            )
            tracker.log(result, files)
            tracker.finish()
        except UserInputError:
            raise  # nothing written: the caller reports it as one line
        except BaseException:
            log.exception("baseline run failed")
            pending_json.unlink(missing_ok=True)
            files = {"log": run_log.write(out / RUN_LOG)}
            raise
        files["json"] = final_json
        files["log"] = out / RUN_LOG
        log.info("%s goes into place once this log is written", final_json)
        log.info("done")
    run_log.write(out / RUN_LOG)
    publish_staged(final_json)  # the completion marker, after everything else
    print_summary(Console(), result, files)
    return files


def config_dir() -> str:
    """Where the Hydra configs live.

    ``conf/`` beside the package in a source checkout (what ``make`` installs, editable); a wheel
    installs a copy under ``<prefix>/share/thermojax/conf`` (pyproject's data-files).
    """
    source = Path(__file__).resolve().parents[2] / "conf"
    if (source / "config.yaml").is_file():
        return str(source)
    return str(Path(sys.prefix) / "share" / "thermojax" / "conf")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _app(cfg: DictConfig) -> None:
    out_dir = HydraConfig.get().runtime.output_dir
    try:
        config = to_config(cfg)
        execute(config, out_dir)
    except UserInputError as exc:
        remove_if_fresh_and_empty(out_dir)
        if HydraConfig.get().mode == RunMode.RUN:
            # Not an Exception: Hydra would print its own "Error executing job" line first.
            raise ConfigRejected(exc) from None
        raise  # in a sweep, the launcher records this job as failed


def main() -> None:
    """Run the Hydra app; a user or config mistake ends in one ``error:`` line and exit 2."""
    register_configs()
    previous = os.environ.get("HYDRA_FULL_ERROR")
    # Let exceptions reach us instead of Hydra's multi-line report, so that we print one line;
    # bugs still show their full traceback.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _app()
    except ConfigRejected as exc:
        _fail(str(exc.error))
    except UserInputError as exc:
        _fail(str(exc))
    except (CompactHydraException, OmegaConfBaseException) as exc:
        _fail(describe_config_error(exc))
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
