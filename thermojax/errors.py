"""Errors that mean "the user asked for something impossible", as opposed to bugs.

The core checks its arguments and raises ``ValueError`` naming the offending value; the pipeline
does not re-check them to get a different type. Where user input enters a pipeline stage, one
:func:`value_errors_as_user_input` block turns such a ``ValueError`` into a
:class:`UserInputError` with the same message, which the CLI prints as one ``error:`` line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["UserInputError", "value_errors_as_user_input"]


class UserInputError(ValueError):
    """A bad value or path supplied by the user.

    The message is one line that names the offending value; the CLI prints ``error: <message>``
    and exits with status 2 instead of showing a traceback.
    """


@contextlib.contextmanager
def value_errors_as_user_input(context: str = "") -> Iterator[None]:
    """Re-raise a ``ValueError`` from the block as a :class:`UserInputError`.

    Wrap only the calls whose ``ValueError`` can come from the user's values (an argument check),
    not whole stages, or a bug would lose its traceback. The message is kept (its first line,
    as the CLI prints one), prefixed with ``context: `` when given; the original error stays
    chained as the cause.

    Example:
        >>> with value_errors_as_user_input("weights"):
        ...     raise ValueError("bits must be one of (2, 4, 8), got bits=3")
        Traceback (most recent call last):
        ...
        thermojax.errors.UserInputError: weights: bits must be one of (2, 4, 8), got bits=3
    """
    try:
        yield
    except UserInputError:
        raise
    except ValueError as err:
        message = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserInputError(f"{context}: {message}" if context else message) from err
