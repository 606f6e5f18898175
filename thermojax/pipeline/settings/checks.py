"""The settings' shared checks: each makes or raises a one-line
:class:`~thermojax.errors.UserInputError` naming the key and its value."""

from __future__ import annotations

import math
from typing import Any

from thermojax.errors import UserInputError

__all__ = ["MAX_INT32", "MAX_SEED", "check_choice", "check_count", "check_number", "fail", "shown"]

MAX_INT32 = 2**31 - 1
"""The most samples, steps or iterations: JAX counts and indexes them in int32 (x64 off). A
smaller count that still does not fit in memory is refused, by name, before the run's work
(:mod:`thermojax.pipeline.measure.memory`)."""

MAX_SEED = 2**32 - 1
"""The largest seed a run uses (``seed``, and ``seed + phases.seeds - 1``): ``jax.random.PRNGKey``
keeps a seed's low 32 bits (x64 off), so seed ``2**32`` would give seed 0's numbers, and one from
``2**63`` does not convert at all."""


_SHOWN_CHARACTERS = 120
"""A value's ``repr`` in an error line is cut to about this many characters (a 10 000-character
path stays one readable line)."""


def shown(value: Any) -> str:
    """``repr(value)``, cut short with its length when it is long.

    Example:
        >>> shown("x" * 1000)[-24:]
        "xx'... (1000 characters)"
    """
    text = repr(value)
    if len(text) <= _SHOWN_CHARACTERS:
        return text
    cut = text[: _SHOWN_CHARACTERS - 40]
    if isinstance(value, str):
        return f"{cut}'... ({len(value)} characters)"
    return f"{cut}... ({len(text)} characters)"


def fail(key: str, value: Any, reason: str) -> UserInputError:
    return UserInputError(f"{key}={shown(value)}: {reason}")


def check_number(
    key: str, value: float, *, positive: bool = False, at_most: float | None = None
) -> None:
    """A finite number ``>= 0`` (``> 0`` with ``positive``), and ``<= at_most`` when given."""
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise fail(key, value, "must be a finite number " + ("> 0" if positive else ">= 0"))
    if at_most is not None and value > at_most:
        raise fail(key, value, f"must be <= {at_most:g}")


def check_count(key: str, value: int, *, at_least: int = 1, at_most: int, why: str) -> None:
    """An integer in ``[at_least, at_most]``; ``why`` says where the upper limit comes from."""
    if value < at_least:
        raise fail(key, value, f"must be >= {at_least}")
    if value > at_most:
        raise fail(key, value, f"must be <= {at_most} ({why})")


def check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise fail(key, value, f"must be one of {', '.join(choices)}")
