"""Shared test set-up: JAX on the CPU, strict about implicit rank promotion, and hypothesis
derandomized so that every run of the suite draws the same examples."""

import gc
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest
from hypothesis import settings

jax.config.update("jax_numpy_rank_promotion", "raise")

# The same examples every run, no example database carried between runs: a failure reproduces
# from the test alone. HYPOTHESIS_PROFILE=explore draws fresh examples when hunting for bugs.
settings.register_profile("thermojax", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "thermojax"))


# Modules whose tests start Ray (embedded, a loopback head, a two-node cluster) or share the
# suite's phase experiment with one that does: one xdist group, so that one worker runs them
# one after another (two Ray instances starting at once on one machine race for its ports).
SERIAL_MODULES = frozenset(
    {
        "tests/cli/test_checkpoint_command.py",
        "tests/cli/test_cluster.py",
        "tests/cli/test_launch.py",
        "tests/cli/test_launcher.py",
        "tests/cli/test_sweep.py",
        "tests/cli/test_tracking.py",
        "tests/cli/test_wandb_comparison.py",
        "tests/pipeline/test_cache_peers.py",
        "tests/pipeline/test_phases.py",
    }
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n N --dist loadgroup`` (make test): a module's tests run on one worker,
    so its module fixtures are built once; the Ray modules share one group. A test's own
    ``xdist_group`` mark wins."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            module = item.nodeid.split("::", 1)[0]
            group = "ray" if module in SERIAL_MODULES else module
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="module", autouse=True)
def _compiled_programs_of_the_module_only():
    """Every jitted program a test module compiled is dropped after it (``jax.clear_caches``).

    One pytest process runs the whole suite and would otherwise keep every XLA:CPU executable
    of ~2000 tests, their machine code included; late in such runs XLA crashed (a segfault
    while compiling, once while serializing) in tests that pass on their own, only after
    everything before them had compiled its programs. A module recompiles what it needs."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(autouse=True)
def _compilation_cache_of_the_test_only():
    """A test that runs the baseline command in this process turns on JAX's persistent
    compilation cache (``thermojax.cli.baseline.enable_compilation_cache``), in its own cache
    folder; JAX keeps the first folder for the process. Undone after the test, so each later
    test compiles into nothing (or its own folder) instead of serializing every program it
    compiles into an earlier test's folder."""
    from jax._src import compilation_cache

    before = jax.config.jax_compilation_cache_dir
    yield
    if jax.config.jax_compilation_cache_dir != before:
        jax.config.update("jax_compilation_cache_dir", before)
        compilation_cache.reset_cache()


@pytest.fixture
def wandb_sandbox(tmp_path, monkeypatch):
    """No network, no API key, W&B's own files in tmp_path (``usefixtures`` in the W&B tests)."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))


@pytest.fixture(scope="session")
def phase_experiment(tmp_path_factory):
    """``(run folder, completed process)`` of the suite's one real phase experiment
    (tests/phase_experiment.py), shared by the phase and the W&B tracking tests."""
    from phase_experiment import run_phase_experiment

    return run_phase_experiment(tmp_path_factory.mktemp("phase-experiment"))
