"""The settings of the thermojax Ray launcher (``hydra.launcher.*``), in a module of their own.

A leaf: it imports nothing of the plugin (nor Ray, thermojax or JAX), so every other module of the
plugin can import it, and ``ray_launcher`` registers it with Hydra's ConfigStore. No
``from __future__ import annotations``: OmegaConf reads these fields' types to build the
structured config.
"""

from dataclasses import dataclass, field

# hydra.launcher.copy_outputs: when a job's output files are copied back to the driver's sweep
# folder.
COPY_OUTPUTS = ("auto", "always", "never")
# hydra.launcher.cache_sharing: how the jobs share the stage cache.
CACHE_SHARING = ("auto", "head", "folder")


@dataclass
class ThermojaxRayLauncherConf:
    """Settings of the Ray launcher (``hydra.launcher.*``).

    Attributes:
        address: a Ray cluster to send the jobs to (``HOST:PORT`` of its GCS, or ``auto``). Null:
            ``$RAY_ADDRESS`` when set (as inside a submitted Ray job), otherwise an embedded local
            Ray is started for this sweep, on 127.0.0.1 only, and stopped at the end.
        num_cpus: CPUs of the embedded Ray (null: all cores). Ignored when joining a cluster.
        object_store_memory: bytes for the embedded Ray's object store. Ignored when joining a
            cluster (Ray refuses to connect when it is set).
        temp_dir: the embedded Ray's session folder (null: ``<project cache>/ray``, or a short
            folder under /tmp when that path is too long for Ray's Unix sockets).
        connect_timeout_s: how long to wait for a cluster address to answer before giving up.
        log_to_driver: stream the jobs' stdout/stderr to this console (each job also logs to
            its own folder).
        cpus_per_job: Ray CPUs each job reserves.
        gpus_per_job: Ray GPUs each job reserves (a fraction shares one GPU).
        resources_per_job: other Ray resources each job reserves, e.g. 4 TPU chips on a TPU VM:
            ``+hydra.launcher.resources_per_job.TPU=4``.
        max_retries: how often a job is re-run after its Ray worker died (crash, OOM kill,
            preempted node). Exceptions raised by the job are not retried: they are recorded.
        resume: skip a job whose folder already holds a complete ``report_file`` written for the
            same overrides.
        report_file: the file (relative to the job folder) whose presence marks a finished job
            (null: thermojax's report, ``thermojax.files.REPORT_JSON``).
        failure_file: where a failed job's error is recorded, relative to the job folder (null:
            ``thermojax.files.FAILURE_JSON``, where ``python -m thermojax.compare`` looks).
        copy_outputs: ``auto`` copies a job's output files back to the sweep folder of the
            driver when the job ran on another node; ``always`` / ``never`` force it.
        forward_env: names of the driver's environment variables that every job gets (those
            set here; Ray's workers otherwise see the environment their node was started
            with). ``THERMOJAX_CACHE_DIR`` by default: point it at storage every node mounts at
            the same path, and the whole cluster shares one stage cache.
        cache_sharing: how jobs on different nodes share the stage cache. ``folder``: through
            ``THERMOJAX_CACHE_DIR`` alone (one cache per cluster on shared storage, one per node
            otherwise). ``head``: also through a store on the driver's node that hands each
            entry to the jobs that need it and lets one job compute it (once per cluster
            without shared storage; entries kept in the driver's cache folder). ``auto``:
            ``head`` when joining a cluster (or an already running Ray of several nodes),
            ``folder`` for the embedded Ray.
    """

    _target_: str = "hydra_plugins.thermojax_ray_launcher.ray_launcher.ThermojaxRayLauncher"
    address: str | None = None
    num_cpus: int | None = None
    object_store_memory: int | None = 100_000_000
    temp_dir: str | None = None
    connect_timeout_s: float = 20.0
    log_to_driver: bool = False
    cpus_per_job: float = 1.0
    gpus_per_job: float = 0.0
    resources_per_job: dict[str, float] = field(default_factory=dict)
    max_retries: int = 2
    resume: bool = True
    # Null defaults: the names are thermojax.files' (this module stays light: Hydra imports it
    # at every start-up, and importing thermojax loads JAX).
    report_file: str | None = None
    failure_file: str | None = None
    copy_outputs: str = "auto"
    forward_env: list[str] = field(default_factory=lambda: ["THERMOJAX_CACHE_DIR"])
    cache_sharing: str = "auto"
