"""``python -m thermojax.launch``: bad input fails in one bounded line; a real sweep is submitted
to a real Ray head on loopback and its results land where the command says.

The head is started with ``ray start`` in its own session (``start_new_session``), so the test
stops exactly the processes it started, by PID, and checks that none survive (never ``ray stop``,
which would stop every Ray on the machine).
"""

import json
import math
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from thermojax.cli.launch import build_entrypoint, sweep_presets
from thermojax.cli.launch import main as launch_main

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}
REPO = Path(__file__).resolve().parents[2]


def _launch(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "thermojax.launch", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_presets_are_the_yaml_files_of_the_sweep_group():
    group = Path(__file__).resolve().parents[2] / "conf" / "sweep"
    assert set(sweep_presets()) == {p.stem for p in group.glob("*.yaml")}
    assert {"smoke", "bits_x_groups", "thresholds", "full"} <= set(sweep_presets())


GRID_SIZES = {"smoke": 8, "bits_x_groups": 15, "thresholds": 18, "full": 36, "weights": 9}
"""The number of configurations each preset runs (README: Sweeps; ``full`` is the benchmark's 36)."""


def preset_jobs(name: str) -> list[list[str]]:
    """The job overrides Hydra's basic sweeper makes of ``-m sweep=NAME``, composed as Hydra does."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from thermojax.cli.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"sweep={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    (batch,) = BasicSweeper.split_arguments(overrides, None)
    return batch


@pytest.mark.parametrize("name", sorted(GRID_SIZES))
def test_each_preset_runs_its_grid(name):
    jobs = preset_jobs(name)
    assert len(jobs) == GRID_SIZES[name]
    assert len({tuple(job) for job in jobs}) == len(jobs)  # no configuration twice
    # The preset's own header says how many configurations it runs.
    header = (REPO / "conf" / "sweep" / f"{name}.yaml").read_text()
    stated = {int(n) for n in re.findall(r"(\d+)[- ]configurations?\b", header)}
    assert stated == {GRID_SIZES[name]}, (name, stated)


def test_full_is_bits_by_groups_by_thresholds():
    jobs = preset_jobs("full")
    grid = {tuple(sorted(job)) for job in jobs}
    expected = {
        (f"bit_width={b}", f"num_time_groups={g}", f"smoothness_threshold={t}")
        for b in (2, 4, 8)
        for g in (2, 4, 8, 16)
        for t in (0.1, 0.3, 0.5)
    }
    assert grid == expected


def test_readme_preset_table_matches_the_sweep_folder():
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+)` \| ([^|]+) \|", readme, flags=re.MULTILINE)
    listed = {name: grid for name, grid in rows if name in GRID_SIZES or " x " in grid}
    assert {"smoke", "bits_x_groups", "thresholds", "full"} <= set(listed)
    for name, grid in listed.items():
        assert name in sweep_presets(), name
        # "3 bits x 6 thresholds at 8 groups", "2 bits x 2 group counts x 2 thresholds, quick ..."
        factors = grid.split(",")[0].split(" at ")[0].split(" x ")
        counts = [int(factor.split()[0]) for factor in factors]
        assert math.prod(counts) == GRID_SIZES[name], (name, grid, counts)


def test_entrypoint_quotes_overrides_and_lets_the_head_expand_home():
    line = build_entrypoint(
        preset="smoke", overrides=["model.name=a b"], sweep_dir="$HOME/thermojax-sweeps/x y"
    )
    assert line == (
        "python -m thermojax.baseline -m sweep=smoke 'model.name=a b' "
        "hydra.sweep.dir=\"$HOME\"/'thermojax-sweeps/x y'"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sweep", "nope"], "error: unknown sweep preset 'nope' (available: "),
        (["bit_width=2"], "error: nothing to sweep: give --sweep NAME"),
        (
            ["--sweep", "smoke", "--sweep-dir", "out/x"],
            "error: --sweep-dir 'out/x' must be absolute",
        ),
        (
            ["--sweep", "smoke", "--forward-env", "THERMOJAX_NOT_SET"],
            "error: --forward-env: not set here: THERMOJAX_NOT_SET",
        ),
    ],
    ids=["unknown-preset", "nothing-to-sweep", "relative-sweep-dir", "missing-env"],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    # The command's main in this process (refused before any Ray is imported); the real
    # command, a process of its own, is test_bad_input_through_the_command's.
    with pytest.raises(SystemExit) as exited:
        launch_main(["--address", f"127.0.0.1:{_free_port()}", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1


def test_bad_input_through_the_command():
    proc = _launch("--address", f"127.0.0.1:{_free_port()}", "--sweep", "nope")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown sweep preset 'nope' (available: "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_refused_address_fails_at_once_in_one_line():
    port = _free_port()
    proc = _launch("--address", f"127.0.0.1:{port}", "--sweep", "smoke")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: no Ray job server answers at http://127.0.0.1:{port}")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_silent_address_fails_within_the_connect_timeout():
    # Accepts connections (kernel backlog) but never answers: the hang a firewall or a wrong
    # service produces.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        # A command that hung instead would be stopped (and the test failed) by the timeout.
        proc = _launch(
            "--address",
            f"127.0.0.1:{port}",
            "--sweep",
            "smoke",
            "--connect-timeout",
            "2",
            timeout=60,
        )
    assert proc.returncode == 2
    assert "within 2 s (timed out)" in proc.stderr, proc.stderr


def _session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid:
                found.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    return found


def _stop_session(sid: int) -> None:
    for proc in _session_processes(sid):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    deadline = time.monotonic() + 15
    while _session_processes(sid) and time.monotonic() < deadline:
        time.sleep(0.2)


def _listening_ips(sid: int) -> set[str]:
    pids = {p.pid for p in _session_processes(sid)}
    return {
        conn.laddr.ip
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids
    }


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head on 127.0.0.1 with token authentication, in its own session; stopped by PID."""
    short = Path(tempfile.mkdtemp(prefix="tjxh", dir="/tmp"))  # Ray's socket paths are short
    token = secrets.token_hex(32)
    env = dict(os.environ)
    env.update(
        HOME=str(tmp_path / "home"),  # no ~/.ray/auth_token written into the real home
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",  # the job's `python`
        THERMOJAX_CACHE_DIR=str(short / "cache"),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # keep "127.0.0.1" loopback (Ray rewrites it)
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
    )
    env.pop("RAY_ADDRESS", None)
    (tmp_path / "home").mkdir()
    dashboard = _free_port()
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head",
        "--node-ip-address=127.0.0.1", f"--port={_free_port()}",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={_free_port()}", f"--ray-client-server-port={_free_port()}",
        f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
        "--num-cpus=2", "--object-store-memory=80000000", f"--temp-dir={short / 'ray'}",
        "--disable-usage-stats",
    ]  # fmt: skip
    starter = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = starter.communicate(timeout=90)
        assert starter.returncode == 0, out
        yield {"url": f"http://127.0.0.1:{dashboard}", "env": env, "sid": starter.pid}
    finally:
        _stop_session(starter.pid)
        left = [p.pid for p in _session_processes(starter.pid)]
        shutil.rmtree(short, ignore_errors=True)
        assert not left, f"Ray processes survived the test: {left}"


@pytest.mark.slow
def test_smoke_sweep_submitted_to_a_loopback_head_lands_in_the_sweep_dir(ray_head, tmp_path):
    assert _listening_ips(ray_head["sid"]) <= LOOPBACK

    # Token authentication: without the cluster's token the job server refuses, in one line,
    # whether or not this side knows that the cluster wants one.
    anonymous = {k: v for k, v in ray_head["env"].items() if k != "RAY_AUTH_TOKEN"}
    unaware = {k: v for k, v in anonymous.items() if k != "RAY_AUTH_MODE"}
    for env, message in (
        (anonymous, "error: RAY_AUTH_MODE=token but no token found"),
        (unaware, "refused the request (HTTP 401)"),
    ):
        refused = _launch("--address", ray_head["url"], "--sweep", "smoke", env=env)
        assert refused.returncode == 2, refused.stderr
        assert message in refused.stderr and len(refused.stderr.strip().splitlines()) == 1

    sweep_dir = tmp_path / "sweep"
    proc = _launch(
        "--address", ray_head["url"], "--sweep", "smoke", "--sweep-dir", str(sweep_dir), "--wait",
        # Shrink the preset to one calibration and its two thresholds.
        "bit_width=2", "num_time_groups=2", "wandb.mode=disabled",
        env=ray_head["env"], timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job_id = re.search(r"submitted Ray job (\S+) to ", proc.stdout).group(1)
    assert f"results: {sweep_dir} on the head node" in proc.stdout
    assert f"job {job_id}: SUCCEEDED" in proc.stdout

    reports = sorted(sweep_dir.glob("*/baseline_metrics.json"))
    assert len(reports) == 2
    runs = [json.loads(path.read_text()) for path in reports]
    assert {(r["bit_width"], r["num_time_groups"]) for r in runs} == {(2, 2)}
    assert sorted(r["smoothness_threshold"] for r in runs) == [0.1, 0.3]
    assert not list(sweep_dir.glob("*/failure.json"))
    # The jobs ran on the head's Ray (the job driver joined it), not on an embedded one.
    assert not (Path(ray_head["env"]["THERMOJAX_CACHE_DIR"]) / "ray").exists()
    assert _listening_ips(ray_head["sid"]) <= LOOPBACK


CLUSTER_FILES = sorted((Path(__file__).parents[2] / "launch").glob("*.yaml"))


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=[p.stem for p in CLUSTER_FILES])
def test_cluster_file_is_valid_for_ray_up_and_follows_the_rules(path):
    import copy

    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = path.read_text()
    config = yaml.safe_load(raw)
    validate_config(prepare_config(copy.deepcopy(config)))  # Ray's own schema and defaults

    assert 0 < config["idle_timeout_minutes"] <= 30
    workers = [t for name, t in config["available_node_types"].items() if name != "head"]
    assert workers and all(t["min_workers"] == 0 for t in workers)
    node_configs = [t["node_config"] for t in workers]
    preemptible = [
        nc.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
        or nc.get("schedulingConfig", {}).get("preemptible") is True
        for nc in node_configs
    ]
    assert all(preemptible)
    # The project is uploaded and installed on every node.
    assert config["file_mounts"]["~/thermojax"] == "."
    assert any("pip install" in c and "~/thermojax" in c for c in config["setup_commands"])
    # Token authentication everywhere; the job server only on the head's loopback.
    for command in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        assert "RAY_AUTH_MODE=token" in command
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][1]
    # Secrets only from the environment: nothing that looks like a key in the file.
    assert not re.search(
        r"AKIA[0-9A-Z]{16}|(api_key|secret|password|token)\s*:", raw, re.IGNORECASE
    )
