"""The user errors of every layer, and the one place that turns them into a one-line message.

A :class:`UserError` is something the user can fix (bad data, bad config, bad request); command-line
entry points print it as ``<prog>: error: <one line>`` and exit with :data:`USAGE_EXIT_CODE`, never
with a stack trace. Everything else is a bug and keeps its traceback. Torch-free: serving imports it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

USAGE_EXIT_CODE = 2


class UserError(ValueError):
    """A problem the user can fix; reported as one line (no stack trace)."""


class DataError(UserError):
    """A problem with input data: the message names the file, column and an example value."""


class ConfigError(UserError):
    """A configuration or command-line option that cannot be honoured; the message names the key."""


class RequestError(UserError):
    """A request the recommender cannot answer as asked; ``loc`` names the offending field."""

    def __init__(self, loc: str | tuple, message: str) -> None:
        self.loc = tuple(loc.split(".")) if isinstance(loc, str) else tuple(loc)
        self.message = message
        super().__init__(f"{'.'.join(map(str, self.loc))}: {message}")

    def within(self, *prefix: Any) -> RequestError:
        """The same error located under ``prefix`` (e.g. a batch position)."""
        return type(self)((*prefix, *self.loc), self.message)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type name when it has none)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def user_error_types() -> tuple[type[BaseException], ...]:
    """:class:`UserError` plus Hydra's instantiation error (a bad ``_target_`` or an unknown key)."""
    try:
        from hydra.errors import InstantiationException
    except ImportError:  # serving machines may not have Hydra
        return (UserError,)
    return (UserError, InstantiationException)


@contextmanager
def exit_on_user_error(prog: str = "error") -> Iterator[None]:
    """Run the body; a user error becomes ``<prog>: error: <one line>`` on stderr and exit code 2."""
    try:
        yield
    except user_error_types() as exc:
        label = "error" if prog == "error" else f"{prog}: error"
        print(f"{label}: {one_line(root_user_error(exc))}", file=sys.stderr, flush=True)
        sys.exit(USAGE_EXIT_CODE)


def root_user_error(exc: BaseException) -> BaseException:
    """The :class:`UserError` that Hydra's instantiation wrapped, if any (its message is the user's)."""
    inner = exc
    while not isinstance(inner, UserError) and inner.__cause__ is not None:
        inner = inner.__cause__
    return inner if isinstance(inner, UserError) else exc
