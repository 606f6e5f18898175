"""Errors that mean "the user asked for something impossible", as opposed to bugs."""

from __future__ import annotations

__all__ = ["UserInputError"]


class UserInputError(ValueError):
    """A bad value or path supplied by the user.

    The message is one line that names the offending value; the CLI prints ``error: <message>``
    and exits with status 2 instead of showing a traceback.
    """
