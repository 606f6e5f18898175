"""Where the Ray launcher's jobs run: a configured Ray cluster, or an embedded local Ray.

:func:`ray_session` joins the cluster (``hydra.launcher.address`` or ``$RAY_ADDRESS``) or starts a
loopback-only Ray for the sweep, and shuts down whatever it started or joined, also on SIGTERM;
should the driver be killed outright, :mod:`._reaper` stops the embedded Ray's processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException

from hydra_plugins.thermojax_ray_launcher._conf import ThermojaxRayLauncherConf

log = logging.getLogger(__name__)

# Ray's Unix socket paths (<temp>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store) must stay
# under 107 bytes; the part Ray appends is at most ~62 characters.
MAX_TEMP_DIR_CHARS = 44


class LauncherError(CompactHydraException):
    """A launcher setting or cluster problem, reported as one line."""


def short_temp_dir(requested: str | None) -> tuple[Path, bool]:
    """The embedded Ray's temp folder, and whether it is ours to delete afterwards."""
    if requested is not None:
        path = Path(requested).expanduser().absolute()
        if len(str(path)) > MAX_TEMP_DIR_CHARS:
            raise LauncherError(
                f"hydra.launcher.temp_dir={requested!r} is {len(str(path))} characters; Ray's "
                f"socket paths need it at most {MAX_TEMP_DIR_CHARS}"
            )
        return path, False
    from thermojax.files import cache_dir

    candidate = (cache_dir() / "ray").absolute()
    if len(str(candidate)) <= MAX_TEMP_DIR_CHARS:
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


def _dismiss(reaper: subprocess.Popen[bytes]) -> None:
    """Tell the reaper that Ray was stopped properly, and let it end."""
    assert reaper.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        reaper.stdin.write(b"done\n")
        reaper.stdin.close()
    try:
        reaper.wait(timeout=10)
    except subprocess.TimeoutExpired:
        reaper.kill()
        reaper.wait()


@contextlib.contextmanager
def ray_session(settings: ThermojaxRayLauncherConf) -> Iterator[str]:
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
    reaper: subprocess.Popen[bytes] | None = None
    try:
        if address is None:
            temp_dir, owned = short_temp_dir(settings.temp_dir)
            owned_temp = temp_dir if owned else None
            # Should this process be killed outright (SIGKILL, the OOM killer), the reaper stops
            # the embedded Ray's agents and workers, which would otherwise outlive it.
            reaper = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("_reaper.py")), str(os.getpid())],
                stdin=subprocess.PIPE,
            )
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
        if reaper is not None:
            _dismiss(reaper)
        if owned_temp is not None:
            shutil.rmtree(owned_temp, ignore_errors=True)
