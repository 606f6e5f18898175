"""``python -m thermojax.launch --address ADDR [--sweep NAME] [overrides ...]``: submit a sweep to a
Ray cluster as a Ray job.

The job runs ``python -m thermojax.baseline -m [sweep=NAME] [overrides ...]`` on the cluster's head
node, with this project folder as its runtime environment (``working_dir``, without ``.venv``,
outputs and git data), so the cluster runs the code you have here. Inside the job the Ray launcher
finds the cluster through ``$RAY_ADDRESS`` and fans the configurations out over its nodes; every
job's outputs are gathered into one sweep folder on the head node, printed here.

``ADDR`` is the head's dashboard / job server (``http://HOST:8265``; ``HOST:PORT`` is read as
http). With Ray's token authentication on (``RAY_AUTH_MODE=token``), the token comes from
``$RAY_AUTH_TOKEN`` or the file Ray reads (``$RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``).

Example:
    python -m thermojax.launch --address http://127.0.0.1:8265 --sweep smoke --wait
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from thermojax.errors import OneLineArgumentParser, UserInputError

__all__ = ["PROJECT_ROOT", "SWEEPS_DIR", "build_entrypoint", "main", "sweep_presets"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SWEEPS_DIR = PROJECT_ROOT / "conf" / "sweep"

# What the runtime environment leaves out of the uploaded project folder (gitignore syntax; a
# leading "/" anchors a pattern at the project root, so that e.g. conf/wandb/ stays in).
RUNTIME_EXCLUDES = [
    "/.venv/",
    "/.git/",
    "/outputs/",
    "/multirun/",
    "/wandb/",
    "/.cache/",
    "/build/",
    "/dist/",
    "*.egg-info/",
    "__pycache__/",
    ".pytest_cache/",
    ".hypothesis/",
    ".ruff_cache/",
]
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
MAX_TIMEOUT_S = 1e9
"""The longest ``--connect-timeout`` / ``--wait-timeout`` (about 31 years): a socket timeout
above about 9.2e9 s overflows the platform's clock (``OverflowError``)."""


def sweep_presets() -> list[str]:
    """The names of the presets in ``conf/sweep/`` (``sweep=NAME``)."""
    return sorted(path.stem for path in SWEEPS_DIR.glob("*.yaml"))


def _job_server_url(address: str) -> str:
    url = address if "://" in address else f"http://{address}"
    if not url.startswith(("http://", "https://")):
        raise UserInputError(
            f"--address {address!r}: give the head's job server as http://HOST:PORT "
            "(the dashboard port, 8265 by default), not a ray:// or GCS address"
        )
    try:
        host = urllib.parse.urlsplit(url).hostname  # ValueError: a bad IPv6 host
        _ = urllib.parse.urlsplit(url).port  # ValueError: a port out of range or not a number
    except ValueError as err:
        raise UserInputError(f"--address {address!r}: {err}") from None
    if not host or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise UserInputError(
            f"--address {address!r}: not a URL http://HOST:PORT (no host, or a space or "
            "control character)"
        )
    return url.rstrip("/")


def _auth_headers() -> dict[str, str]:
    from ray._private.authentication.http_token_authentication import (
        get_auth_headers_if_auth_enabled,
    )
    from ray.exceptions import AuthenticationError

    try:
        return dict(get_auth_headers_if_auth_enabled({}))
    except AuthenticationError:
        raise UserInputError(
            "RAY_AUTH_MODE=token but no token found: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) "
            "to the cluster's token"
        ) from None


def check_job_server(url: str, *, timeout_s: float) -> str:
    """The Ray version the job server at ``url`` runs.

    Raises:
        UserInputError: if nothing answers within ``timeout_s`` (connect and response together
            are bounded), or the answer is not a Ray job server's.
    """
    request = urllib.request.Request(f"{url}/api/version", headers=_auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.loads(response.read().decode("utf-8"))
        return str(body["ray_version"])
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise UserInputError(
                f"the Ray job server at {url} refused the request (HTTP {err.code}); with token "
                "authentication, set RAY_AUTH_TOKEN to the cluster's token"
            ) from None
        raise UserInputError(
            f"{url} answered HTTP {err.code}, not as a Ray job server; is this the head's "
            "dashboard port (default 8265)?"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserInputError(
            f"no Ray job server answers at {url} within {timeout_s:g} s ({reason}); "
            "is the head running, and is this its dashboard port (default 8265)?"
        ) from None
    except (ValueError, KeyError):
        raise UserInputError(f"{url} answered, but not as a Ray job server") from None


def build_entrypoint(
    *, preset: str | None, overrides: Sequence[str], sweep_dir: str, python: str = "python"
) -> str:
    """The shell command the Ray job runs on the head node."""
    args = [python, "-m", "thermojax.baseline", "-m"]
    if preset is not None:
        args.append(f"sweep={preset}")
    args.extend(overrides)
    # The folder may start with $HOME, to be expanded by the head's shell: quote the rest only.
    if sweep_dir.startswith("$HOME/"):
        directory = '"$HOME"/' + shlex.quote(sweep_dir.removeprefix("$HOME/"))
    else:
        directory = shlex.quote(sweep_dir)
    return f"{shlex.join(args)} hydra.sweep.dir={directory}"


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(
        prog="python -m thermojax.launch",
        description="Submit a thermojax sweep to a Ray cluster as a Ray job.",
    )
    parser.add_argument("--address", required=True, help="the head's job server, http://HOST:8265")
    parser.add_argument("--sweep", metavar="NAME", help="a preset from conf/sweep/ (sweep=NAME)")
    parser.add_argument(
        "--sweep-dir",
        help="the sweep folder on the head node (absolute, or starting with $HOME/); "
        "default $HOME/thermojax-sweeps/NAME-TIMESTAMP",
    )
    parser.add_argument("--python", default="python", help="the interpreter on the cluster")
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS")
    parser.add_argument("--wait", action="store_true", help="follow the job until it ends")
    parser.add_argument("--wait-timeout", type=float, default=3600.0, metavar="SECONDS")
    parser.add_argument(
        "--forward-env",
        action="append",
        default=[],
        metavar="NAME",
        help="pass this local environment variable to the job (e.g. WANDB_API_KEY); "
        "visible to anyone who can read the cluster's job list",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. bit_width=2,4")
    args = parser.parse_args(argv)
    timeouts = {"--connect-timeout": args.connect_timeout, "--wait-timeout": args.wait_timeout}
    for flag, seconds in timeouts.items():
        if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT_S):
            parser.error(
                f"{flag} {seconds:g}: must be a positive number of seconds, at most "
                f"{MAX_TIMEOUT_S:g}"
            )
    return args


def _wait(client: object, job_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    status = "PENDING"
    while time.monotonic() < deadline:
        status = str(client.get_job_status(job_id)).rsplit(".", 1)[-1]  # type: ignore[attr-defined]
        if status in TERMINAL_STATES:
            return status
        time.sleep(1.0)
    return status


def submit(
    *,
    address: str,
    sweep: str | None,
    overrides: Sequence[str],
    sweep_dir: str | None = None,
    python: str = "python",
    connect_timeout_s: float = 10.0,
    wait: bool = False,
    wait_timeout_s: float = 3600.0,
    forward_env: Sequence[str] = (),
) -> int:
    """Submit a sweep to the Ray job server at ``address``; returns the process exit status.

    The arguments are the command line's (``--address``, ``--sweep``, the overrides,
    ``--sweep-dir``, ``--python``, ``--connect-timeout``, ``--wait``, ``--wait-timeout``,
    ``--forward-env``), as plain values.
    """
    if not (PROJECT_ROOT / "conf").is_dir() or not SWEEPS_DIR.is_dir():
        raise UserInputError(
            f"{PROJECT_ROOT} is not a thermojax source checkout (no conf/): the job "
            "uploads the project folder, so run this from a clone (pip install -e .)"
        )
    if sweep is not None and sweep not in sweep_presets():
        raise UserInputError(
            f"unknown sweep preset {sweep!r} (available: {', '.join(sweep_presets())})"
        )
    if sweep is None and not any("," in o or "(" in o for o in overrides):
        raise UserInputError(
            "nothing to sweep: give --sweep NAME or overrides such as bit_width=2,4"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = sweep or "custom"
    sweep_dir = sweep_dir or f"$HOME/thermojax-sweeps/{name}-{stamp}"
    if not (sweep_dir.startswith("$HOME/") or os.path.isabs(sweep_dir)):
        raise UserInputError(
            f"--sweep-dir {sweep_dir!r} must be absolute (or start with $HOME/): a relative one "
            "would land in the job's temporary working folder"
        )
    missing = [name for name in forward_env if name not in os.environ]
    if missing:
        raise UserInputError(f"--forward-env: not set here: {', '.join(missing)}")

    url = _job_server_url(address)
    version = check_job_server(url, timeout_s=connect_timeout_s)
    from ray.job_submission import JobSubmissionClient

    # Ray logs every packaging step of the upload at INFO; keep the console to our summary.
    logging.getLogger("ray").setLevel(logging.ERROR)
    client = JobSubmissionClient(url)
    entrypoint = build_entrypoint(
        preset=sweep, overrides=overrides, sweep_dir=sweep_dir, python=python
    )
    job_id = client.submit_job(
        entrypoint=entrypoint,
        submission_id=f"thermojax-{name}-{stamp}-{uuid.uuid4().hex[:6]}",
        runtime_env={
            "working_dir": str(PROJECT_ROOT),
            "excludes": RUNTIME_EXCLUDES,
            "env_vars": {name: os.environ[name] for name in forward_env},
        },
        metadata={"thermojax_sweep": name, "sweep_dir": sweep_dir},
    )
    print(f"submitted Ray job {job_id} to {url} (Ray {version})")
    print(f"  runs:    {entrypoint}")
    print(f"  results: {sweep_dir} on the head node")
    print(f"  follow:  ray job logs --address {url} --follow {job_id}")
    print(f"  compare: python -m thermojax.compare {sweep_dir}   (on the head, or after copying)")
    if not wait:
        return 0
    status = _wait(client, job_id, wait_timeout_s)
    print(f"job {job_id}: {status}")
    if status != "SUCCEEDED":
        logs = client.get_job_logs(job_id).strip().splitlines()
        print("\n".join(logs[-20:]), file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """The command line; a user mistake or an unreachable cluster ends in one ``error:`` line."""
    args = _parse(argv)
    try:
        code = submit(
            address=args.address,
            sweep=args.sweep,
            overrides=args.overrides,
            sweep_dir=args.sweep_dir,
            python=args.python,
            connect_timeout_s=args.connect_timeout,
            wait=args.wait,
            wait_timeout_s=args.wait_timeout,
            forward_env=args.forward_env,
        )
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    main()
