"""The suite draws the same examples every run and asserts nothing about the wall clock."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import settings

TESTS = Path(__file__).resolve().parent


def test_hypothesis_is_derandomized_without_an_example_database():
    assert settings.default.derandomize is True
    assert settings.default.database is None


def test_no_test_asserts_on_elapsed_time():
    """Speed belongs in benchmarks/: an assertion on a clock fails on a busy machine."""
    clock = re.compile(r"\bassert\b.*\b(monotonic|perf_counter|time\.time)\(|\bassert\b.*elapsed")
    offenders = [
        f"{path.relative_to(TESTS)}:{number}"
        for path in TESTS.rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if clock.search(line)
    ]
    assert offenders == []
