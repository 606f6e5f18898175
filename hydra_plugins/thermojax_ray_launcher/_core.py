"""How the thermojax Ray launcher runs a batch of Hydra jobs.

Driver side: plan every job (its config and folder), skip the ones whose complete report exists
(resume), start or join Ray, submit the rest as Ray tasks (retried when their worker dies), and
collect them as they finish, recording each failure in its job folder without stopping the others.
Worker side (``_run_job``): Hydra's own ``run_job``, so each job gets the usual folder, ``.hydra/``
files, logging and working-directory handling of the basic launcher.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf, open_dict

if TYPE_CHECKING:
    from hydra_plugins.thermojax_ray_launcher.ray_launcher import (
        ThermojaxRayLauncher,
        ThermojaxRayLauncherConf,
    )

log = logging.getLogger(__name__)

FAILURE_SCHEMA_VERSION = 1
# Ray's Unix socket paths (<temp>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store) must stay
# under 107 bytes; the part Ray appends is at most ~62 characters.
_MAX_TEMP_DIR_CHARS = 44


class JobFailed(RuntimeError):
    """A job's error, carried back from its Ray worker with the traceback as text.

    (Exception tracebacks do not survive pickling; the text does.)
    """

    def __init__(self, error_type: str, message: str, traceback_text: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.traceback_text = traceback_text

    def __reduce__(self) -> tuple[Any, ...]:
        return (JobFailed, (self.error_type, self.message, self.traceback_text))


class LauncherError(CompactHydraException):
    """A launcher setting or cluster problem, reported as one line."""


class SweepJobFailed(CompactHydraException):
    """What the sweep reports at its end for a failed job: one line, no traceback (it is in the
    job's failure file)."""


@dataclass
class _PlannedJob:
    idx: int
    overrides: list[str]
    config: DictConfig
    job_dir: Path


# ---------------------------------------------------------------- files in the job folder


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


JOB_RECORD = ".launcher_job.json"
"""Written by the launcher into each job folder before the job starts: which overrides it runs.

Hydra's own ``.hydra/overrides.yaml`` is not there when ``hydra.output_subdir`` is null."""


def _recorded_overrides(job_dir: Path) -> list[str] | None:
    record = job_dir / JOB_RECORD
    try:
        if record.is_file():
            overrides = json.loads(record.read_text(encoding="utf-8"))["overrides"]
        elif (job_dir / ".hydra" / "overrides.yaml").is_file():
            overrides = OmegaConf.to_container(
                OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")
            )
        else:
            return None
    except Exception:  # noqa: BLE001 - unreadable means "unknown"
        return None
    return [str(o) for o in overrides] if isinstance(overrides, list) else None


def job_is_complete(job_dir: Path, report_file: str, overrides: Sequence[str]) -> bool:
    """True when ``job_dir`` holds a complete report written for exactly these overrides.

    The report must parse as a JSON object (reports are written atomically, so a parseable one is
    whole), and the overrides recorded in the folder (the launcher's ``.launcher_job.json``, else
    Hydra's ``.hydra/overrides.yaml``) must be the same: a folder left by a different sweep into
    the same directory is re-run, not mistaken for this job.
    """
    report = job_dir / report_file
    if not report.is_file() or _recorded_overrides(job_dir) != list(overrides):
        return False
    try:
        return isinstance(json.loads(report.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def _remove_leftover_temporaries(job_dir: Path) -> None:
    """Delete the temporaries (``.NAME.*.tmp``) of atomic writes that a killed attempt left.

    Called while planning, before any job of this sweep starts, so no writer owns them.
    """
    for leftover in job_dir.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            leftover.unlink()
            log.info("removed %s, left by an interrupted attempt", leftover)


def _write_failure(
    job: _PlannedJob, failure_file: str, error: JobFailed, *, worker_died: bool
) -> Path:
    path = job.job_dir / failure_file
    record = {
        "schema_version": FAILURE_SCHEMA_VERSION,
        "job_num": job.idx,
        "overrides": job.overrides,
        "error_type": error.error_type,
        "message": error.message,
        "worker_died": worker_died,
        "traceback": error.traceback_text,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


# ---------------------------------------------------------------- worker side


def _collect_outputs(output_dir: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    root = Path(output_dir)
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.endswith(".tmp"):
            files[str(path.relative_to(root))] = path.read_bytes()
    return files


def _run_job(
    shared: tuple[Any, Any, Any],
    sweep_config: DictConfig,
    driver_node_id: str,
    copy_outputs: str,
) -> tuple[JobReturn, dict[str, bytes] | None]:
    """Runs one Hydra job inside a Ray worker; returns its JobReturn and, when the outputs are on
    another node than the driver, the job folder's files."""
    import ray

    hydra_context, task_function, singleton_state = shared
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)

    def guarded(cfg: DictConfig) -> Any:
        # A task that calls sys.exit (a CLI habit) must not take the Ray worker down with it:
        # that would look like a crash and be retried.
        try:
            return task_function(cfg)
        except SystemExit as exit_:
            raise RuntimeError(f"the job called sys.exit({exit_.code!r})") from exit_

    try:
        ret = run_job(
            hydra_context=hydra_context,
            task_function=guarded,
            config=sweep_config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except Exception as error:  # noqa: BLE001 - e.g. a callback's validation, outside the task
        ret = JobReturn(overrides=list(sweep_config.hydra.overrides.task), status=JobStatus.FAILED)
        ret.return_value = error
    if ret.status == JobStatus.FAILED:
        error = ret._return_value
        ret.return_value = JobFailed(
            type(error).__name__,
            str(error),
            "".join(traceback.format_exception(error)),
        )
    files = None
    here = ray.get_runtime_context().get_node_id()
    if copy_outputs == "always" or (copy_outputs == "auto" and here != driver_node_id):
        files = _collect_outputs(str(sweep_config.hydra.runtime.output_dir))
    return ret, files


# ---------------------------------------------------------------- Ray start / join


def _short_temp_dir(requested: str | None) -> tuple[Path, bool]:
    """The embedded Ray's temp folder, and whether it is ours to delete afterwards."""
    if requested is not None:
        path = Path(requested).expanduser().absolute()
        if len(str(path)) > _MAX_TEMP_DIR_CHARS:
            raise LauncherError(
                f"hydra.launcher.temp_dir={requested!r} is {len(str(path))} characters; Ray's "
                f"socket paths need it at most {_MAX_TEMP_DIR_CHARS}"
            )
        return path, False
    from thermojax.paths import cache_dir

    candidate = (cache_dir() / "ray").absolute()
    if len(str(candidate)) <= _MAX_TEMP_DIR_CHARS:
        return candidate, False
    return Path(tempfile.mkdtemp(prefix="tjxray-", dir="/tmp")), True


def _check_answers(address: str, timeout_s: float) -> None:
    """Fail fast, in one line, when a HOST:PORT cluster address does not accept connections."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise LauncherError(f"hydra.launcher.address={address!r} is not HOST:PORT or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        raise LauncherError(
            f"no Ray cluster answers at {address} within {timeout_s:g} s ({err}); "
            "check hydra.launcher.address or start the cluster"
        ) from None


def _cluster_address(settings: ThermojaxRayLauncherConf) -> str | None:
    return settings.address or os.environ.get("RAY_ADDRESS") or None


def _prepare_embedded_environment() -> None:
    """Environment for an embedded Ray; must run before Ray reads it (import, ray.init)."""
    # Keep every socket on 127.0.0.1. Ray otherwise resolves "127.0.0.1" to the host's routable
    # address; this switch (read when Ray is imported, and by the processes it spawns) makes it
    # use loopback, as it does on macOS and Windows.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    # Ray 2.60 turns token authentication on for a new local cluster and, without a token,
    # writes one to ~/.ray/auth_token. Give this process (and the cluster it spawns) a token in
    # the environment instead, unless the user chose a mode or a token. It stays set for the
    # process's lifetime: Ray caches the token it first reads.
    if "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    import ray  # noqa: F401 - after the environment is set
    from ray._private import ray_constants
    from ray._raylet import Config

    # In case Ray was imported before the environment was set (Ray refreshes its cached config
    # the same way when it enables token authentication itself).
    ray_constants.ENABLE_RAY_CLUSTER = False
    Config.initialize("")


def _start_embedded(settings: ThermojaxRayLauncherConf, temp_dir: Path) -> None:
    import ray

    temp_dir.mkdir(parents=True, exist_ok=True)
    context = ray.init(
        num_cpus=settings.num_cpus,
        object_store_memory=settings.object_store_memory,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=str(temp_dir),
        log_to_driver=settings.log_to_driver,
        configure_logging=False,
    )
    log.info(
        "started an embedded Ray on 127.0.0.1 (session %s)", context.address_info["session_dir"]
    )
    available = ray.cluster_resources()
    needs = [
        ("CPU", settings.cpus_per_job, "cpus_per_job"),
        ("GPU", settings.gpus_per_job, "gpus_per_job"),
        *(
            (str(k), float(v), f"resources_per_job.{k}")
            for k, v in settings.resources_per_job.items()
        ),
    ]
    for name, need, key in needs:
        if need > available.get(name, 0.0):
            raise LauncherError(
                f"each job asks for {need:g} {name} (hydra.launcher.{key}) but the embedded Ray "
                f"has {available.get(name, 0.0):g}; the jobs could never start"
            )


@contextlib.contextmanager
def _ray_session(settings: ThermojaxRayLauncherConf) -> Iterator[str]:
    """Joins the configured cluster, or starts an embedded loopback-only Ray; yields its mode.

    Whatever it started or joined is shut down on the way out, also on SIGTERM.
    """
    address = _cluster_address(settings)
    if address is None:
        _prepare_embedded_environment()
    import ray

    if ray.is_initialized():
        log.info("Ray is already initialized in this process; using it")
        yield "existing"
        return
    owned_temp: Path | None = None
    # SIGTERM (a scheduler's kill, `timeout`) would otherwise end the process without running the
    # `finally` below and leave an embedded cluster behind.
    previous = signal.getsignal(signal.SIGTERM)

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    try:
        if address is None:
            temp_dir, owned = _short_temp_dir(settings.temp_dir)
            owned_temp = temp_dir if owned else None
            _start_embedded(settings, temp_dir)
            mode = "embedded"
        else:
            _check_answers(address, settings.connect_timeout_s)
            ray.init(address=address, log_to_driver=settings.log_to_driver, configure_logging=False)
            log.info("joined the Ray cluster at %s", address)
            mode = "cluster"
        yield mode
    finally:
        signal.signal(signal.SIGTERM, previous)
        ray.shutdown()
        if owned_temp is not None:
            shutil.rmtree(owned_temp, ignore_errors=True)


# ---------------------------------------------------------------- driver side


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
    launcher: ThermojaxRayLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[_PlannedJob]:
    assert launcher.config is not None and launcher.hydra_context is not None
    planned = []
    for offset, overrides in enumerate(job_overrides):
        idx = initial_job_idx + offset
        sweep_config = launcher.hydra_context.config_loader.load_sweep_config(
            launcher.config, list(overrides)
        )
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
            sweep_config.hydra.job.num = idx
        HydraConfig.instance().set_config(sweep_config)
        job_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        planned.append(_PlannedJob(idx, list(overrides), sweep_config, job_dir.absolute()))
    return planned


def _labels(planned: list[_PlannedJob]) -> dict[int, str]:
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


def _skipped_return(job: _PlannedJob) -> JobReturn:
    ret = JobReturn()
    ret.overrides = job.overrides
    ret.cfg = job.config
    ret.hydra_cfg = job.config
    ret.working_dir = str(job.job_dir)
    ret.task_name = str(job.config.hydra.job.name)
    ret.status = JobStatus.COMPLETED
    ret.return_value = None
    return ret


def _failed_return(job: _PlannedJob, error: JobFailed) -> JobReturn:
    ret = _skipped_return(job)
    ret.status = JobStatus.FAILED
    ret.return_value = error
    return ret


def _write_copied_outputs(job_dir: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        _atomic_write_bytes(job_dir / relative, data)


@contextlib.contextmanager
def _progress_on_console() -> Iterator[None]:
    """Make the launcher's progress lines visible even when the app turned Hydra's logging off
    (``hydra/hydra_logging: none``, as the baseline does)."""
    if log.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[sweep] %(message)s"))
    previous_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)


def launch(
    launcher: ThermojaxRayLauncher,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    """Runs every job; returns their JobReturns in job order (failed ones with status FAILED)."""
    setup_globals()
    assert launcher.config is not None
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    with _progress_on_console():
        return _launch(launcher, job_overrides, initial_job_idx)


def _launch(
    launcher: ThermojaxRayLauncher,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[JobReturn]:
    settings = launcher.settings
    assert launcher.config is not None
    if settings.copy_outputs not in ("auto", "always", "never"):
        raise LauncherError(
            f"hydra.launcher.copy_outputs={settings.copy_outputs!r}; use auto, always or never"
        )
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)

    planned = _plan(launcher, job_overrides, initial_job_idx)
    labels = _labels(planned)
    results: dict[int, JobReturn] = {}
    to_run = []
    for job in planned:
        _remove_leftover_temporaries(job.job_dir)
        if settings.resume and job_is_complete(job.job_dir, settings.report_file, job.overrides):
            log.info(
                "#%d %s: complete report found, skipped",
                job.idx,
                labels[job.idx],
            )
            results[job.idx] = _skipped_return(job)
        else:
            # A failure recorded by an earlier attempt no longer describes this job.
            with contextlib.suppress(FileNotFoundError):
                (job.job_dir / settings.failure_file).unlink()
            record = {"job_num": job.idx, "overrides": job.overrides}
            _atomic_write_text(job.job_dir / JOB_RECORD, json.dumps(record) + "\n")
            to_run.append(job)
    log.info(
        "Ray launcher: %d jobs (%d to run, %d already complete), sweep folder %s",
        len(planned),
        len(to_run),
        len(planned) - len(to_run),
        sweep_dir,
    )
    failures: list[tuple[_PlannedJob, Path]] = []
    if to_run:
        with _ray_session(settings):
            import ray
            from ray.exceptions import RayError, RayTaskError

            assert launcher.hydra_context is not None
            shared = ray.put(
                (launcher.hydra_context, launcher.task_function, Singleton.get_state())
            )
            remote_job = ray.remote(
                num_cpus=settings.cpus_per_job,
                num_gpus=settings.gpus_per_job,
                resources=dict(settings.resources_per_job) or None,
                max_retries=settings.max_retries,
                retry_exceptions=False,
            )(_run_job)
            driver_node = ray.get_runtime_context().get_node_id()
            started = time.monotonic()
            pending = {
                remote_job.remote(shared, job.config, driver_node, settings.copy_outputs): job
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
                            _write_copied_outputs(job.job_dir, files)
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
                        path = _write_failure(
                            job, settings.failure_file, error, worker_died=worker_died
                        )
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
