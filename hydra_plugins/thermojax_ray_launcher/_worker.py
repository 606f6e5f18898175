"""The worker side of the Ray launcher: one Hydra job inside a Ray task.

``run_job`` is Hydra's own, so each job gets the usual folder, ``.hydra/`` files, logging and
working-directory handling of the basic launcher. This module imports no thermojax code unless
the sweep shares its stage cache through the head store (:mod:`._head_store`): the workers of a
sweep of some other Hydra app pay for nothing of it.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, run_job, setup_globals
from omegaconf import DictConfig

NODE_ID_VARIABLE = "THERMOJAX_RAY_NODE_ID"
NODE_IP_VARIABLE = "THERMOJAX_RAY_NODE_IP"
"""Set in the worker's environment before each job: the Ray node id and IP the job runs on."""


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


def collect_outputs(output_dir: str) -> dict[str, bytes]:
    """Every file under the job folder, by its relative path (the driver skips temporaries)."""
    files: dict[str, bytes] = {}
    root = Path(output_dir)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(root))] = path.read_bytes()
    return files


@contextlib.contextmanager
def _peer_store(head_store: tuple[Any, str, str] | None) -> Iterator[None]:
    """The head store as the stage cache's peer store while the job runs (none: as it was)."""
    if head_store is None:
        yield
        return
    from hydra_plugins.thermojax_ray_launcher._head_store import HeadStoreClient
    from thermojax.pipeline.cache.store import set_peer_store

    actor, marker, where = head_store
    client = HeadStoreClient(actor, marker, where)
    previous = set_peer_store(client)
    try:
        yield
    finally:
        set_peer_store(previous)
        client.close()


def run_job_in_worker(
    shared: tuple[Any, Any, Any],
    sweep_config: DictConfig,
    driver_node_id: str,
    copy_outputs: str,
    environment: dict[str, str],
    head_store: tuple[Any, str, str] | None = None,
) -> tuple[JobReturn, dict[str, bytes] | None]:
    """Runs one Hydra job inside a Ray worker; returns its JobReturn and, when the outputs are on
    another node than the driver, the job folder's files.

    ``environment`` (the driver's ``forward_env`` variables) is set in the worker first. A Ray
    worker serves one driver (one sweep), whose jobs all send the same, so a worker reused for
    the next job carries nothing over that differs. ``head_store`` (the sweep's actor, the
    driver's marker name and the actor's node), when given, is the stage cache's peer store
    for the job's duration.
    """
    import ray

    hydra_context, task_function, singleton_state = shared
    os.environ.update(environment)
    # Where the job runs, for the app to record (thermojax puts it in its report's environment).
    context = ray.get_runtime_context()
    os.environ[NODE_ID_VARIABLE] = context.get_node_id()
    os.environ[NODE_IP_VARIABLE] = ray.util.get_node_ip_address()
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

    with _peer_store(head_store):
        try:
            ret = run_job(
                hydra_context=hydra_context,
                task_function=guarded,
                config=sweep_config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        except Exception as error:  # noqa: BLE001 - e.g. a callback's validation, outside the task
            ret = JobReturn(
                overrides=list(sweep_config.hydra.overrides.task), status=JobStatus.FAILED
            )
            ret.return_value = error
    if ret.status == JobStatus.FAILED:
        error = ret._return_value
        ret.return_value = JobFailed(
            type(error).__name__,
            str(error),
            "".join(traceback.format_exception(error)),
        )
    files = None
    if copy_outputs == "always" or (
        copy_outputs == "auto" and context.get_node_id() != driver_node_id
    ):
        files = collect_outputs(str(sweep_config.hydra.runtime.output_dir))
    return ret, files
