"""``python -m thermojax.baseline [key=value ...]``: the baseline-metrics command.

Hydra composes ``conf/`` on top of the typed schema; this module only turns the config into a
:class:`~thermojax.pipeline.settings.BaselineConfig`, calls :func:`execute` (which anyone can call without
Hydra) and turns user mistakes into one ``error: ...`` line with exit status 2.

Outputs, in Hydra's run directory (``hydra.run.dir=...``): ``baseline_metrics.json``,
``baseline_metrics.html``, ``baseline_metrics.log``, ``samples.npz`` and, unless
``wandb.mode=disabled``, the W&B run under ``wandb/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
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
from thermojax.errors import UserInputError, command_boundary, os_error_message
from thermojax.files import (
    RUN_LOG,
    TEMPORARY_SUFFIX,
    cache_dir,
    check_writable_folder,
    publish_staged,
    remove_temporaries,
    staged_path,
)

__all__ = ["enable_compilation_cache", "execute", "main"]

log = logging.getLogger("thermojax.baseline")


def enable_compilation_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache in ``thermojax.files.cache_dir() / "jax"``.

    A warm cache skips XLA compilation of the calibration and sampling scans on later runs. A
    cache folder that takes no files is a warning (the run compiles everything), never an end;
    returns ``None`` then.
    """
    import jax

    path = cache_dir() / "jax"
    try:
        check_writable_folder(path, what="THERMOJAX_CACHE_DIR")
    except UserInputError as err:
        log.warning("%s; running without the compilation and stage caches", err)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Cache every program that took noticeable time to compile, not only those above 1 s.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def execute(config: BaselineConfig, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Run the baseline, write every output into ``out_dir``, track it, print a summary.

    ``baseline_metrics.json`` is the completion marker a sweep's resume trusts, so it is written
    first and renamed into place last: it waits under a temporary name
    (:func:`thermojax.files.staged_path`, ``.baseline_metrics.json.pending.tmp``, which the
    launcher removes on resume) while the other outputs, the W&B run (finished) and the log are
    written. A kill at any point leaves either no JSON (the job reruns) or every output. Every
    file is written atomically.

    A report that fails to render is a bug in the report, never a lost run: the JSON, samples
    and log are written, the traceback goes to the log, the console gets one warning naming
    ``baseline_metrics.html``, and the run ends normally (exit status 0: its numbers are
    complete, and a sweep must not rerun or count as failed a job whose report exists).

    Before any work ``out_dir`` (and ``export.path``'s folder) must take a new file, and the
    temporaries a killed run left in ``out_dir`` are removed (each logged). The W&B run is
    written into a temporary folder and moved into ``out_dir/wandb`` once finished, so a kill
    leaves no stub run for ``wandb sync``.

    On a :class:`UserInputError` (e.g. ``num_time_groups`` above the model's T) nothing is
    written and the error propagates. A full disk or a folder that stops taking files
    (:data:`thermojax.errors.ENVIRONMENT_ERRNOS`) and Ctrl-C are logged in one line (the log is
    still written when it can be) and propagate, the ``OSError`` as a :class:`UserInputError`. On
    any other failure the log is still written, with the traceback, and the error propagates.

    Returns:
        The written files keyed ``json``, ``html`` (unless the report failed to render),
        ``samples``, ``log`` (and the phase table's).
    """
    from rich.console import Console

    from thermojax.cli.outputs import OUTPUT_FILES, write_outputs
    from thermojax.cli.runlog import RunLog, print_summary, stage_progress
    from thermojax.cli.tracking import make_tracker
    from thermojax.pipeline import run

    out = Path(out_dir)
    check_writable_folder(out, what="output folder (hydra.run.dir)")
    if config.export.path is not None:  # made at the end of the run: checked before it
        export = Path(config.export.path).expanduser()
        check_writable_folder(export.parent, what="export.path's folder", create=False)
    final_json = out / OUTPUT_FILES["json"]
    pending_json = staged_path(final_json)
    console = Console(stderr=True)
    run_log = RunLog()
    wandb_staging: Path | None = None
    with run_log.attached(console):
        try:
            for left in remove_temporaries(out):
                log.info("removed %s, left by an earlier run killed while writing", left)
            cache = enable_compilation_cache()
            log.info("output folder %s; JAX compilation cache %s", out.resolve(), cache)
            with stage_progress(console) as on_stage:
                result = run(config, progress=on_stage)
            files = write_outputs(result, out, json_path=pending_json)
            if config.wandb.mode != "disabled":
                wandb_staging = Path(
                    tempfile.mkdtemp(dir=out, prefix=".wandb.", suffix=TEMPORARY_SUFFIX)
                )
            tracker = make_tracker(
                config.wandb,
                run_dir=out if wandb_staging is None else wandb_staging,
                name=out.resolve().name,
                config=result.config,
            )
            tracker.log(result, files)
            tracker.finish()
            if wandb_staging is not None:
                _publish_wandb_runs(wandb_staging, out / "wandb")
        except UserInputError:
            raise  # nothing written: the caller reports it as one line
        except BaseException as err:
            user_caused = _user_caused(err, out)
            if user_caused is None:
                log.exception("baseline run failed")
            else:  # one line for the console (the caller's); the log says it too
                log.info("baseline run stopped: %s", user_caused)
            pending_json.unlink(missing_ok=True)
            if wandb_staging is not None:  # a stub W&B run that `wandb sync` must not find
                shutil.rmtree(wandb_staging, ignore_errors=True)
            with contextlib.suppress(OSError):  # a full disk takes no log either
                files = {"log": run_log.write(out / RUN_LOG)}
            if isinstance(err, OSError) and user_caused is not None:
                raise UserInputError(user_caused) from err
            raise
        files["json"] = final_json
        files["log"] = out / RUN_LOG
        log.info("%s goes into place once this log is written", final_json)
        log.info("done")
    run_log.write(out / RUN_LOG)
    publish_staged(final_json)  # the completion marker, after everything else
    print_summary(Console(), result, files)
    return files


def _user_caused(err: BaseException, out: Path) -> str | None:
    """What to log instead of a traceback for an interrupt or an environmental ``OSError``."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted"
    if isinstance(err, OSError):
        return os_error_message(err, f"into the output folder {str(out)!r}")
    return None


def _publish_wandb_runs(staging: Path, wandb_dir: Path) -> None:
    """Move the finished W&B run out of its staging folder into ``<run dir>/wandb``.

    W&B writes the run while it happens; a kill then leaves a stub run that ``wandb sync``
    would upload as a real one. Staged in a temporary (``.wandb.*.tmp``, which a rerun removes),
    only a finished run reaches ``wandb/``. Its links (``latest-run``, ``debug.log``) are
    relative and move with it.
    """
    staged = staging / "wandb"
    if staged.is_dir():
        wandb_dir.mkdir(exist_ok=True)
        for entry in sorted(staged.iterdir(), key=lambda e: e.is_symlink()):
            target = wandb_dir / entry.name
            if target.is_symlink() or target.is_file():
                target.unlink()
            os.replace(entry, target)
    shutil.rmtree(staging, ignore_errors=True)


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


def _hydra_app() -> None:
    """The Hydra app with its errors as :class:`UserInputError`\\ s (one line each)."""
    register_configs()
    previous = os.environ.get("HYDRA_FULL_ERROR")
    # Let exceptions reach us instead of Hydra's multi-line report, so that we print one line;
    # bugs still show their full traceback.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _app()
    except ConfigRejected as exc:
        raise exc.error from None
    except (CompactHydraException, OmegaConfBaseException) as exc:
        raise UserInputError(describe_config_error(exc)) from None
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def main() -> None:
    """Run the Hydra app: a user or config mistake, a path that takes no files or a full disk
    ends in one ``error:`` line and exit 2, Ctrl-C in one line and exit 130
    (:func:`thermojax.errors.command_boundary`); a bug shows its traceback."""
    command_boundary(_hydra_app, name="thermojax.baseline")


if __name__ == "__main__":
    main()
