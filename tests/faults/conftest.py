"""One complete run shared by the slow fault tests of every module here: its folder, HOME and
warm cache (session-scoped: the tests copy the cache before they damage it, or only read it)."""

from __future__ import annotations

import pytest
from faultlib import FAST, command, command_env


@pytest.fixture(scope="session")
def warm(tmp_path_factory):
    """``(root, home, cache, run)`` after one complete baseline run (stage entries and JAX
    programs cached)."""
    root = tmp_path_factory.mktemp("faults")
    home, cache, run = root / "home", root / "cache", root / "reference"
    proc = command(
        "thermojax.baseline",
        [*FAST, f"hydra.run.dir={run}"],
        cwd=root,
        env=command_env(home, cache),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, home, cache, run
