"""Errors that mean "the user asked for something impossible", as opposed to bugs.

The core checks its arguments and raises ``ValueError`` naming the offending value; the pipeline
does not re-check them to get a different type. Where user input enters a pipeline stage, one
:func:`value_errors_as_user_input` block turns such a ``ValueError`` into a
:class:`UserInputError` with the same message, which the CLI prints as one ``error:`` line.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import errno
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

__all__ = [
    "ENVIRONMENT_ERRNOS",
    "EXIT_INTERRUPTED",
    "EXIT_USER_ERROR",
    "OneLineArgumentParser",
    "UserInputError",
    "command_boundary",
    "os_error_message",
    "os_errors_as_user_input",
    "value_errors_as_user_input",
]

EXIT_USER_ERROR = 2
"""The exit status of a user-caused failure (a bad value, file or path, a full disk)."""
EXIT_INTERRUPTED = 130
"""The exit status after Ctrl-C (128 + SIGINT); a SIGTERM gives 143 (128 + SIGTERM)."""

ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENAMETOOLONG,
        errno.ELOOP,
    }
)
"""``OSError`` numbers that the machine or the user's paths cause, never thermojax's code (no
permission, read-only or full file system, the file-size limit ``ulimit -f``, a path through a
file): :func:`command_boundary` reports them as one line. A missing file is not among them: a
path the user gives is checked where it enters, so a ``FileNotFoundError`` later is a bug."""

_HINTS = {
    errno.EFBIG: "over a file-size limit: ulimit -f, or the file system's",
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some space or write elsewhere",
    errno.EROFS: "write elsewhere",
}


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


_TEMPORARY_NAME = re.compile(
    r"^\.(?P<name>.+?)\.(?:pending|[A-Za-z0-9_]{6,})(?:\.[A-Za-z0-9]+)*\.tmp$"
)


def _published_name(path: str) -> str:
    """The file a temporary ``.NAME.<random>.tmp`` of :mod:`thermojax.files` stands for."""
    head, tail = os.path.split(path)
    match = _TEMPORARY_NAME.match(tail)
    return os.path.join(head, match.group("name")) if match else path


def os_error_message(err: OSError, what: str = "") -> str | None:
    """One line for an ``OSError`` the environment caused (:data:`ENVIRONMENT_ERRNOS`), naming
    the file (the published name, not its temporary); ``None`` for any other ``OSError``.

    Example:
        >>> import errno
        >>> os_error_message(OSError(errno.ENOSPC, "No space left on device", "/o/.r.json.x1y2z3.tmp"))
        "cannot write '/o/r.json': No space left on device (free some space or write elsewhere)"
        >>> os_error_message(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None
        True
    """
    if err.errno not in ENVIRONMENT_ERRNOS:
        return None
    target = _published_name(os.fsdecode(err.filename)) if err.filename is not None else None
    verb = (
        "cannot read"
        if err.errno in (errno.EACCES, errno.EPERM) and what == "read"
        else "cannot write"
    )
    subject = f"{verb} {target!r}" if target else f"{verb} {what or 'a file'}"
    hint = _HINTS.get(err.errno)
    reason = err.strerror or type(err).__name__
    return f"{subject}: {reason}" + (f" ({hint})" if hint else "")


@contextlib.contextmanager
def os_errors_as_user_input(what: str = "") -> Iterator[None]:
    r"""Re-raise an environmental ``OSError`` from the block (:data:`ENVIRONMENT_ERRNOS`) as a
    :class:`UserInputError` with :func:`os_error_message`'s line; other ``OSError``\ s pass."""
    try:
        yield
    except UserInputError:
        raise
    except OSError as err:
        message = os_error_message(err, what)
        if message is None:
            raise
        raise UserInputError(message) from err


def _interrupt_once(signum: int, frame: object) -> None:
    """Raise ``KeyboardInterrupt`` for the first Ctrl-C or SIGTERM and ignore the next ones, so
    that the clean-up the first one starts (temporaries removed, the log written) finishes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    global _received_signal, _interrupted
    if not _interrupted:
        _received_signal = signum
    _interrupted = True
    raise KeyboardInterrupt


def _redeliver_swallowed_interrupt(unraisable: Any) -> None:
    """``sys.unraisablehook`` while a command runs: Python swallows an exception raised where it
    cannot propagate (a ``__del__``, a garbage-collector callback such as JAX's), so a Ctrl-C
    that lands there would be lost and the run would go on. Deliver it again: the handler is
    re-armed and the signal simulated, so it raises at the next line of ordinary code."""
    if _interrupted and isinstance(unraisable.exc_value, KeyboardInterrupt):
        signal.signal(signal.SIGINT, _interrupt_once)
        # From another thread, so that the handler runs in the main thread's ordinary code, not
        # here (where the raise would be swallowed again).
        _thread.start_new_thread(_thread.interrupt_main, (signal.SIGINT,))
        return
    _previous_unraisablehook(unraisable)


_received_signal = signal.SIGINT
_interrupted = False
_previous_unraisablehook = sys.unraisablehook


def command_boundary(command: Callable[[], T], *, name: str) -> T:
    """Run a command's ``main`` as a user sees it: its exit status and at most one error line.

    - a :class:`UserInputError` (and an environmental ``OSError``, :func:`os_error_message`):
      ``error: <message>`` on stderr, exit status 2;
    - Ctrl-C or SIGTERM: ``error: <name> interrupted ...``, exit status 130 (143 for SIGTERM),
      after the clean-up the interrupted code does on its way out (every atomic write removes its
      temporary). The process then ends without the interpreter's shutdown: JAX's compiler
      threads may still be running, and finalizing under them crashed (SIGSEGV) before;
    - anything else is a bug: its traceback, as Python prints it.

    Returns what ``command`` returns when it succeeds.

    Example:
        >>> command_boundary(lambda: 0, name="demo")
        0
        >>> command_boundary(lambda: _fail("bit_width=3: must be one of 2, 4, 8"), name="demo")
        Traceback (most recent call last):
        ...
        SystemExit: 2
    """
    global _interrupted, _previous_unraisablehook
    previous = {sig: signal.signal(sig, _interrupt_once) for sig in (signal.SIGINT, signal.SIGTERM)}
    _interrupted = False
    _previous_unraisablehook, sys.unraisablehook = (
        sys.unraisablehook,
        _redeliver_swallowed_interrupt,
    )
    try:
        return command()
    except KeyboardInterrupt:
        received = _received_signal
        how = "SIGTERM" if received == signal.SIGTERM else "Ctrl-C"
        print(f"error: {name} interrupted ({how}); nothing half-written is left", file=sys.stderr)
        _hard_exit(128 + int(received))
    except UserInputError as err:
        _fail(str(err))
    except OSError as err:
        message = os_error_message(err)
        if message is None:
            raise
        _fail(message)
    finally:  # a caller in the same process (a test) gets its handlers back
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = _previous_unraisablehook


def _fail(message: str) -> NoReturn:
    print(f"error: {(message.strip().splitlines() or ['failed'])[0]}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _hard_exit(status: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one ``error:`` line (exit 2), without the usage
    block: the same line as every other user mistake of the commands."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        _fail(message)
