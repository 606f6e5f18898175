"""How the thermojax Ray launcher runs a batch of Hydra jobs (the driver side).

Plan every job (its config and folder), skip the ones whose complete report exists (resume),
start or join Ray (:mod:`._cluster`), submit the rest as Ray tasks (:mod:`._worker`; retried when
their worker dies), and collect them as they finish, recording each failure in its job folder
(:mod:`._records`) without stopping the others.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.errors import CompactHydraException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from hydra_plugins.thermojax_ray_launcher._cluster import LauncherError, ray_session
from hydra_plugins.thermojax_ray_launcher._conf import (
    CACHE_SHARING,
    COPY_OUTPUTS,
    ThermojaxRayLauncherConf,
)
from hydra_plugins.thermojax_ray_launcher._records import (
    PlannedJob,
    failure_file,
    job_is_complete,
    prepare_to_run,
    remove_leftover_temporaries,
    report_file,
    write_copied_outputs,
    write_failure,
)
from hydra_plugins.thermojax_ray_launcher._worker import JobFailed, run_job_in_worker

log = logging.getLogger(__name__)
# The launcher's modules log below this one; the console handler goes here.
_package_log = logging.getLogger("hydra_plugins.thermojax_ray_launcher")


class SweepJobFailed(CompactHydraException):
    """What the sweep reports at its end for a failed job: one line, no traceback (it is in the
    job's failure file)."""


def compose_each_job_once(config_loader: Any) -> None:
    """Make ``config_loader.load_sweep_config`` remember what it composed, for this process.

    Hydra's sweeper composes every job's config to validate the batch and throws it away; the
    launcher then needs the same configs (job folders, the config each worker runs). Composing
    costs ~70 ms a job (2.5 s of a 36-job sweep's driver); a copy of the remembered result costs
    ~3 ms. The first request composes and gets a deep copy; the second gets the remembered
    config itself and it is forgotten; later ones compose again. So no caller sees another's
    edits, and nothing stays behind.
    """
    original = config_loader.load_sweep_config
    if getattr(original, "composes_once", False):
        return
    composed: dict[tuple[int, tuple[str, ...]], DictConfig] = {}

    def load_sweep_config(master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        # The master config object lives for the whole multirun, so its id is a stable key.
        key = (id(master_config), tuple(sweep_overrides))
        if key in composed:
            # Second (the launcher's) request: hand it over and forget it, so the loader (which
            # travels to every Ray worker inside the Hydra context) carries no configs along.
            return composed.pop(key)
        composed[key] = original(master_config, list(sweep_overrides))
        return copy.deepcopy(composed[key])

    load_sweep_config.composes_once = True  # type: ignore[attr-defined]
    config_loader.load_sweep_config = load_sweep_config


def _plan(
    config: DictConfig,
    config_loader: Any,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[PlannedJob]:
    planned = []
    for offset, overrides in enumerate(job_overrides):
        idx = initial_job_idx + offset
        sweep_config = config_loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
            sweep_config.hydra.job.num = idx
        HydraConfig.instance().set_config(sweep_config)
        job_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        planned.append(PlannedJob(idx, list(overrides), sweep_config, job_dir.absolute()))
    return planned


def _labels(planned: list[PlannedJob]) -> dict[int, str]:
    """Each job's overrides that differ between the jobs (what the console needs to tell them
    apart), e.g. ``bit_width=2 num_time_groups=4``."""
    common = set.intersection(*(set(job.overrides) for job in planned)) if planned else set()
    return {
        job.idx: " ".join(o for o in filter_overrides(job.overrides) if o not in common)
        or " ".join(filter_overrides(job.overrides))
        for job in planned
    }


def submission_order(jobs: Sequence[Any]) -> list[Any]:
    """The jobs (anything with ``overrides``) reordered so that neighbours differ early.

    Hydra's sweeper varies the last swept key fastest, so neighbouring jobs usually differ only
    in it; in a sweep whose jobs share cached stages (the baseline's threshold variants share
    calibration, samples and quality), two workers that start neighbours at the same time would
    compute one entry while the other waits for it. Submitting in reverse-lexicographic order of
    the override values (the first key fastest) makes jobs that run side by side need different
    entries. Ray starts tasks roughly in submission order; results stay in job order.
    """
    first_seen: dict[tuple[int, str], int] = {}
    ranks = []
    for job in jobs:
        rank = []
        for position, override in enumerate(job.overrides):
            rank.append(first_seen.setdefault((position, override), len(first_seen)))
        ranks.append(tuple(reversed(rank)))
    return [job for _, job in sorted(zip(ranks, jobs, strict=True), key=lambda pair: pair[0])]


def _skipped_return(job: PlannedJob) -> JobReturn:
    ret = JobReturn()
    ret.overrides = job.overrides
    ret.cfg = job.config
    ret.hydra_cfg = job.config
    ret.working_dir = str(job.job_dir)
    ret.task_name = str(job.config.hydra.job.name)
    ret.status = JobStatus.COMPLETED
    ret.return_value = None
    return ret


def _failed_return(job: PlannedJob, error: JobFailed) -> JobReturn:
    ret = _skipped_return(job)
    ret.status = JobStatus.FAILED
    ret.return_value = error
    return ret


@contextlib.contextmanager
def _progress_on_console() -> Iterator[None]:
    """Make the launcher's progress lines visible even when the app turned Hydra's logging off
    (``hydra/hydra_logging: none``, as the baseline does)."""
    if _package_log.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[sweep] %(message)s"))
    previous_level = _package_log.level
    _package_log.addHandler(handler)
    _package_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        _package_log.removeHandler(handler)
        _package_log.setLevel(previous_level)


def launch(
    settings: ThermojaxRayLauncherConf,
    *,
    config: DictConfig,
    hydra_context: HydraContext,
    task_function: TaskFunction,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    """Runs every job; returns their JobReturns in job order (failed ones with status FAILED).

    ``settings`` are the launcher's (``hydra.launcher.*``); ``config``, ``hydra_context`` and
    ``task_function`` are what Hydra gave the launcher's ``setup``.

    With a failed job, runs the end-of-multirun callbacks here: Hydra's sweeper raises on the
    first failed return and would skip them, though every job has run (thermojax's writes the
    comparison, failures included, and its W&B summary run).
    """
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    with _progress_on_console():
        results = _launch(
            settings, config, hydra_context, task_function, job_overrides, initial_job_idx
        )
    if any(ret.status == JobStatus.FAILED for ret in results):
        hydra_context.callbacks.on_multirun_end(
            config=config, config_name=config.hydra.job.config_name
        )
    return results


def _uses_head_store(sharing: str, mode: str) -> bool:
    """Whether the sweep's jobs share the stage cache through the head store (the launcher's
    ``cache_sharing``; ``mode`` is :func:`ray_session`'s)."""
    if sharing != "auto":
        return sharing == "head"
    if mode == "cluster":
        return True
    if mode == "existing":
        import ray

        return sum(bool(node.get("Alive")) for node in ray.nodes()) > 1
    return False


@contextlib.contextmanager
def _head_store(driver_node: str) -> Iterator[tuple[Any, str, str] | None]:
    """Starts the sweep's head store on the driver's node, over the driver's cache folder;
    yields what each job needs to reach it (``None``: that folder takes no files, so each node
    keeps to its own). Says at the end what it handed over."""
    import ray

    from hydra_plugins.thermojax_ray_launcher._head_store import place_marker, start_head_store
    from thermojax.pipeline.cache.store import entries_dir

    folder = entries_dir().absolute()
    try:
        marker = place_marker(folder)
    except OSError as err:
        log.warning(
            "the driver's cache folder %s takes no files (%s); no head store, each node "
            "computes the entries it lacks",
            folder,
            err.strerror or err,
        )
        yield None
        return
    where = ray.util.get_node_ip_address()
    actor = start_head_store(folder, driver_node)
    log.info("stage cache shared through the head store on node %s (entries in %s)", where, folder)
    try:
        yield actor, marker.name, where
        with contextlib.suppress(Exception):  # a lost actor has nothing to say
            counts = ray.get(actor.stats.remote(), timeout=10)
            log.info(
                "head store: %d entries handed out, %d received, %d computed under a lease "
                "(%d taken over from a lost worker)",
                counts["handed_out"],
                counts["received"],
                counts["leases"],
                counts["taken_over"],
            )
    finally:
        marker.unlink(missing_ok=True)


def _launch(
    settings: ThermojaxRayLauncherConf,
    config: DictConfig,
    hydra_context: HydraContext,
    task_function: TaskFunction,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    if settings.copy_outputs not in COPY_OUTPUTS:
        raise LauncherError(
            f"hydra.launcher.copy_outputs={settings.copy_outputs!r}; use auto, always or never"
        )
    if settings.cache_sharing not in CACHE_SHARING:
        raise LauncherError(
            f"hydra.launcher.cache_sharing={settings.cache_sharing!r}; use auto, head or folder"
        )
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)

    report_name = report_file(settings.report_file)
    failure_name = failure_file(settings.failure_file)
    planned = _plan(config, hydra_context.config_loader, job_overrides, initial_job_idx)
    labels = _labels(planned)
    results: dict[int, JobReturn] = {}
    to_run = []
    for job in planned:
        remove_leftover_temporaries(job.job_dir)
        if settings.resume and job_is_complete(job.job_dir, report_name, job.overrides):
            log.info(
                "#%d %s: complete report found, skipped",
                job.idx,
                labels[job.idx],
            )
            results[job.idx] = _skipped_return(job)
        else:
            prepare_to_run(job, failure_name)
            to_run.append(job)
    log.info(
        "Ray launcher: %d jobs (%d to run, %d already complete), sweep folder %s",
        len(planned),
        len(to_run),
        len(planned) - len(to_run),
        sweep_dir,
    )
    failures: list[tuple[PlannedJob, Path]] = []
    if to_run:
        with ray_session(settings) as mode, contextlib.ExitStack() as stack:
            import ray
            from ray.exceptions import RayError, RayTaskError

            shared = ray.put((hydra_context, task_function, Singleton.get_state()))
            remote_job = ray.remote(
                num_cpus=settings.cpus_per_job,
                num_gpus=settings.gpus_per_job,
                resources=dict(settings.resources_per_job) or None,
                max_retries=settings.max_retries,
                retry_exceptions=False,
            )(run_job_in_worker)
            driver_node = ray.get_runtime_context().get_node_id()
            head_store = None
            if _uses_head_store(settings.cache_sharing, mode):
                head_store = stack.enter_context(_head_store(driver_node))
            started = time.monotonic()
            forwarded = {
                name: os.environ[name] for name in settings.forward_env if name in os.environ
            }
            pending = {
                remote_job.remote(
                    shared, job.config, driver_node, settings.copy_outputs, forwarded, head_store
                ): job
                for job in submission_order(to_run)
            }
            finished = 0
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job = pending.pop(ref)
                    finished += 1
                    label = labels[job.idx]
                    try:
                        ret, files = ray.get(ref)
                        if files is not None:
                            write_copied_outputs(job.job_dir, files)
                        worker_died = False
                    except RayError as err:
                        # The worker died more often than max_retries allows, or Ray could not
                        # run the task at all (e.g. an argument that does not unpickle).
                        ret = _failed_return(
                            job,
                            JobFailed(
                                type(err).__name__, str(err).strip().splitlines()[0], str(err)
                            ),
                        )
                        worker_died = not isinstance(err, RayTaskError)
                    if ret.status == JobStatus.FAILED:
                        error = ret._return_value
                        assert isinstance(error, JobFailed)
                        path = write_failure(job, failure_name, error, worker_died=worker_died)
                        failures.append((job, path))
                        log.error(
                            "[%d/%d] #%d %s FAILED: %s (recorded in %s)",
                            finished,
                            len(to_run),
                            job.idx,
                            label,
                            error,
                            path,
                        )
                    else:
                        log.info(
                            "[%d/%d] #%d %s done (%.1f s into the sweep)",
                            finished,
                            len(to_run),
                            job.idx,
                            label,
                            time.monotonic() - started,
                        )
                    results[job.idx] = ret
    if failures:
        log.error(
            "%d of %d jobs failed; their errors are in: %s",
            len(failures),
            len(planned),
            ", ".join(str(path) for _, path in failures),
        )
        for job, path in failures:
            error = results[job.idx]._return_value
            results[job.idx].return_value = SweepJobFailed(
                f"{error} (recorded in {path}); {len(failures)} of {len(planned)} jobs failed"
            )
    return [results[job.idx] for job in planned]
