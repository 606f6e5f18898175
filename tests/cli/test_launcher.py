"""The thermojax Ray launcher (hydra/launcher=thermojax_ray), proven on a throwaway Hydra app.

The app (tests/fixtures/launcher_app) writes report.json atomically, raises on ``fail_on``, calls
sys.exit on ``exit_on``, and kills its own Ray worker once on ``die_on``. Every sweep runs in its
own session (``start_new_session``) so the test can find and stop exactly the processes it
started, including Ray processes that outlive a killed driver.
"""

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import psutil
import pytest
from omegaconf import OmegaConf

from hydra_plugins.thermojax_ray_launcher._cluster import short_temp_dir
from hydra_plugins.thermojax_ray_launcher._core import submission_order
from hydra_plugins.thermojax_ray_launcher._records import JOB_RECORD, job_is_complete

APP = Path(__file__).parents[1] / "fixtures" / "launcher_app" / "app.py"
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


def _session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getsid(proc.pid) == sid and proc.pid != os.getpid():
                found.append(proc)
        except (ProcessLookupError, PermissionError):
            continue
    return found


def _stop_session(sid: int, grace_s: float = 0.0) -> list[str]:
    """Kills what is left of a session this test started, after ``grace_s`` for it to exit by
    itself (Ray's workers exit a moment after the raylet); returns the names it found."""
    deadline = time.monotonic() + grace_s
    while (left := _session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    names = []
    for proc in left:
        try:
            names.append(proc.name())
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(left, timeout=10)
    return names


@pytest.fixture
def short_cache(monkeypatch):
    # Ray's socket paths live under the project cache; pytest's tmp_path is too long for them.
    with tempfile.TemporaryDirectory(prefix="tjx", dir="/tmp") as folder:
        monkeypatch.setenv("THERMOJAX_CACHE_DIR", folder)
        yield Path(folder)


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["HOME"] = str(home)  # Ray must not write an auth token into the real home
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        env.pop(name, None)
    return env


def _start_sweep(args: list[str], home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(APP), "-m", *args],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _run_sweep(args: list[str], home: Path, timeout: float = 150) -> tuple[int, str]:
    proc = _start_sweep(args, home)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        leaked = _stop_session(proc.pid, grace_s=10.0)
    assert not leaked, f"processes outlived the sweep: {leaked}"
    return proc.returncode, out


def _job_dirs(sweep_dir: Path) -> dict[int, Path]:
    """Job folders by the app's ``value``."""
    found = {}
    for job_dir in sweep_dir.iterdir():
        record = job_dir / JOB_RECORD
        if record.is_file():
            overrides = json.loads(record.read_text())["overrides"]
            value = next(o for o in overrides if o.startswith("value="))
            found[int(value.split("=")[1])] = job_dir
    return found


@pytest.mark.slow
def test_sweep_on_embedded_ray_records_failures_retries_dead_worker(tmp_path, short_cache):
    sweep_dir = tmp_path / "sweep"
    code, out = _run_sweep(
        [
            "value=1,2,3,4,5",
            "fail_on=3",
            "die_on=2",
            "exit_on=5",
            "record_sockets=true",
            # Exercise the copy-back path of multi-node clusters (here onto the same files).
            "hydra.launcher.copy_outputs=always",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        home=tmp_path,
    )
    # Failing configurations make the sweep fail, after every other one ran, in one line each.
    assert code == 1, out
    assert "ValueError: value=3 is the configured failure (recorded in" in out
    assert "2 of 5 jobs failed" in out
    assert "Traceback" not in out

    jobs = _job_dirs(sweep_dir)
    assert sorted(jobs) == [1, 2, 3, 4, 5]
    for value in (1, 2, 4):
        report = json.loads((jobs[value] / "report.json").read_text())
        assert report["value"] == value
        # Embedded Ray: on loopback only, its files under the project cache.
        assert report["gcs_address"].startswith("127.0.0.1:")
        assert report["listening"] and set(report["listening"]) <= LOOPBACK
        assert Path(report["ray_temp_dir"]) == short_cache / "ray"
        assert not (jobs[value] / "failure.json").exists()
    # The worker that killed itself was replaced and the job retried once.
    assert len((jobs[2] / "attempts.log").read_text().split()) == 2

    failure = json.loads((jobs[3] / "failure.json").read_text())
    assert failure["error_type"] == "ValueError"
    assert failure["message"] == "value=3 is the configured failure"
    assert "value=3" in failure["overrides"]
    assert "raise ValueError" in failure["traceback"]
    assert failure["worker_died"] is False
    exited = json.loads((jobs[5] / "failure.json").read_text())
    assert exited["message"] == "the job called sys.exit(2)"
    assert not (jobs[3] / "report.json").exists()
    assert not list(sweep_dir.glob("*/.*.tmp"))  # no temporaries of the copy-back left
    # Ray found its token in the environment and wrote none into $HOME.
    assert not (tmp_path / ".ray").exists()


@pytest.mark.slow
def test_sweep_killed_midway_resumes_with_every_report_once(tmp_path, short_cache):
    sweep_dir = tmp_path / "sweep"
    release = tmp_path / "release"
    # Job 3 holds (a file barrier) until released: the kill lands while it runs, whatever the
    # machine's speed; the resumed sweep finds the release file and lets it finish.
    args = [
        "value=1,2,3,4",
        "hold_on=3",
        f"release_file={release}",
        "hydra.launcher.num_cpus=1",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    proc = _start_sweep(args, home=tmp_path)
    deadline = time.monotonic() + 90
    while (
        len(list(sweep_dir.glob("*/report.json"))) < 2 or not list(sweep_dir.glob("*/held"))
    ) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate()
    # A SIGKILLed driver cannot stop its Ray; Ray's own reaper takes gcs and raylet, the
    # launcher's takes the rest: the agents and the worker holding job 3. Nothing is left.
    leaked = _stop_session(proc.pid, grace_s=15.0)
    assert not leaked, f"processes outlived the killed driver: {leaked}"
    assert f"the driver (pid {proc.pid}) died; stopped the" in out
    done_before = {p.parent.name for p in sweep_dir.glob("*/report.json")}
    assert 2 <= len(done_before) < 4
    (held,) = sweep_dir.glob("*/held")
    assert held.parent.name not in done_before

    release.touch()
    code, out = _run_sweep(args, home=tmp_path)
    assert code == 0, out
    assert f"({4 - len(done_before)} to run, {len(done_before)} already complete)" in out
    jobs = _job_dirs(sweep_dir)
    assert sorted(jobs) == [1, 2, 3, 4]
    for value, job_dir in jobs.items():
        assert json.loads((job_dir / "report.json").read_text())["value"] == value
        attempts = len((job_dir / "attempts.log").read_text().split())
        # Finished jobs were skipped, not re-run; an interrupted one ran again.
        assert attempts == 1 if job_dir.name in done_before else attempts >= 1
    assert len(list(sweep_dir.glob("*/report.json"))) == 4
    assert not list(sweep_dir.glob("*/.report.json.*"))  # the app's own temporaries


def test_basic_launcher_still_runs_in_process(tmp_path):
    sweep_dir = tmp_path / "sweep"
    code, out = _run_sweep(
        ["value=1,2", "hydra/launcher=basic", f"hydra.sweep.dir={sweep_dir}"], home=tmp_path
    )
    assert code == 0, out
    pids = {json.loads(p.read_text())["pid"] for p in sweep_dir.glob("*/report.json")}
    assert len(pids) == 1  # both jobs in the one driver process, no Ray workers


def test_unanswering_cluster_address_fails_fast_in_one_line(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, out = _run_sweep(
        [
            "value=1",
            f"hydra.launcher.address=127.0.0.1:{port}",
            "hydra.launcher.connect_timeout_s=3",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        home=tmp_path,
        timeout=60,
    )
    assert code == 1
    assert f"no Ray cluster answers at 127.0.0.1:{port} within 3 s" in out
    assert "Traceback" not in out
    assert not list((tmp_path / "sweep").glob("*/report.json"))


def _fake_job(job_dir: Path, overrides: list[str], report: str | None, *, hydra_dir: bool) -> None:
    job_dir.mkdir(parents=True)
    if hydra_dir:  # Hydra's record, when hydra.output_subdir is set
        (job_dir / ".hydra").mkdir()
        OmegaConf.save(OmegaConf.create(overrides), job_dir / ".hydra" / "overrides.yaml")
    else:  # the launcher's own record
        (job_dir / JOB_RECORD).write_text(json.dumps({"job_num": 0, "overrides": overrides}))
    if report is not None:
        (job_dir / "report.json").write_text(report)


@pytest.mark.parametrize("hydra_dir", [False, True], ids=["launcher-record", "hydra-record"])
@pytest.mark.parametrize(
    "recorded, report, expected",
    [
        (["bit_width=2"], '{"smoothness_score": 0.7}', True),
        (["bit_width=4"], '{"smoothness_score": 0.7}', False),
        (["bit_width=2"], '{"smoothness_score": 0.', False),
        (["bit_width=2"], "[1, 2]", False),
        (["bit_width=2"], None, False),
    ],
    ids=["complete", "other-overrides", "truncated", "not-an-object", "no-report"],
)
def test_resume_skips_only_complete_reports_of_the_same_job(
    tmp_path, recorded, report, expected, hydra_dir
):
    _fake_job(tmp_path / "0", recorded, report, hydra_dir=hydra_dir)
    assert job_is_complete(tmp_path / "0", "report.json", ["bit_width=2"]) is expected


def test_report_without_any_record_of_its_overrides_is_not_trusted(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "report.json").write_text("{}")
    assert not job_is_complete(tmp_path / "0", "report.json", [])


def test_long_cache_path_falls_back_to_a_short_ray_temp_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", str(tmp_path / ("x" * 60)))
    temp_dir, owned = short_temp_dir(None)
    try:
        assert owned and len(str(temp_dir)) <= 44 and temp_dir.is_dir()
    finally:
        temp_dir.rmdir()
    monkeypatch.setenv("THERMOJAX_CACHE_DIR", "/tmp/tjx")
    assert short_temp_dir(None) == (Path("/tmp/tjx/ray"), False)


def test_job_that_could_never_be_scheduled_is_refused_in_one_line(tmp_path, short_cache):
    code, out = _run_sweep(
        [
            "value=1,2",
            "+hydra.launcher.resources_per_job.TPU=4",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        home=tmp_path,
        timeout=90,
    )
    assert code == 1
    assert "each job asks for 4 TPU (hydra.launcher.resources_per_job.TPU)" in out
    assert "Traceback" not in out


def test_submission_order_puts_jobs_that_differ_early_side_by_side():
    grid = [(b, g, t) for b in (2, 4) for g in (2, 4, 8) for t in (0.1, 0.3)]  # Hydra's order
    jobs = [
        types.SimpleNamespace(overrides=[f"b={b}", f"g={g}", f"t={t}"], key=(b, g, t))
        for b, g, t in grid
    ]
    order = [job.key for job in submission_order(jobs)]
    assert sorted(order) == sorted(grid)  # a permutation: every job once
    assert order[:6] == [
        (2, 2, 0.1),
        (4, 2, 0.1),
        (2, 4, 0.1),
        (4, 4, 0.1),
        (2, 8, 0.1),
        (4, 8, 0.1),
    ]
    # Neighbours never differ only in the last key (the threshold variants that share a cache).
    assert all(a[:2] != b[:2] for a, b in itertools.pairwise(order))


def test_each_job_config_is_composed_once_and_handed_out_as_copies():
    from omegaconf import OmegaConf

    from hydra_plugins.thermojax_ray_launcher._core import compose_each_job_once

    class Loader:
        calls = 0

        def load_sweep_config(self, master_config, sweep_overrides):
            Loader.calls += 1
            return OmegaConf.create({"overrides": list(sweep_overrides)})

    loader, master = Loader(), OmegaConf.create({})
    compose_each_job_once(loader)
    compose_each_job_once(loader)  # idempotent: no second layer of memo
    first = loader.load_sweep_config(master_config=master, sweep_overrides=["a=1"])
    first.overrides.append("edited")
    second = loader.load_sweep_config(master, ["a=1"])
    other = loader.load_sweep_config(master, ["a=2"])
    assert Loader.calls == 2
    assert list(second.overrides) == ["a=1"] and list(other.overrides) == ["a=2"]
    # Handed over and forgotten: a third request composes again, nothing is kept.
    loader.load_sweep_config(master, ["a=1"])
    assert Loader.calls == 3


def test_the_module_hydra_scans_stays_light_and_defaults_to_thermojax_file_names():
    # Hydra imports ray_launcher at every start-up: it must not load thermojax (and with it JAX)
    # or Ray, so its file-name defaults are left unset and resolved from thermojax.files later.
    code = (
        "import sys\n"
        "from hydra_plugins.thermojax_ray_launcher.ray_launcher import ThermojaxRayLauncherConf\n"
        "conf = ThermojaxRayLauncherConf()\n"
        "print(conf.report_file, conf.failure_file)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'thermojax', 'jax', 'ray'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    ).stdout.splitlines()
    assert out == ["None None", "[]"]
    from hydra_plugins.thermojax_ray_launcher._records import failure_file, report_file
    from thermojax.files import FAILURE_JSON, REPORT_JSON

    assert (report_file(None), failure_file(None)) == (REPORT_JSON, FAILURE_JSON)
    assert report_file("report.json") == "report.json"
