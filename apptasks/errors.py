"""The exceptions App Tasks raises on purpose, each with its GraphQL error code.

Callers catch `AppTasksError`; the GraphQL layer turns its `code` into
`extensions.code` and its message into the error's message, unchanged. Any
other exception is a bug of ours and is masked before it reaches a client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class AppTasksError(Exception):
    """Base of every error a person can act on."""

    code = "INTERNAL_SERVER_ERROR"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = extensions


class ConfigurationError(AppTasksError):
    """A setting or a plugin is wrong; raised at start-up."""

    code = "CONFIGURATION_ERROR"


class BadInput(AppTasksError):
    """An argument is malformed or breaks a rule."""

    code = "BAD_USER_INPUT"


class NotFound(AppTasksError):
    """The thing does not exist, or belongs to another app (never told apart)."""

    code = "NOT_FOUND"


class NameTaken(AppTasksError):
    """A name that must be unique within the app is already used."""

    code = "NAME_TAKEN"


class TaskLimitReached(AppTasksError):
    """The app already has the most tasks it may have."""

    code = "TASK_LIMIT_REACHED"


class PayloadTooLarge(BadInput):
    """A payload (or another input) is bigger than its limit."""

    code = "PAYLOAD_TOO_LARGE"


class RateLimited(AppTasksError):
    """The app asked for more on-demand runs than its rate allows."""

    code = "RATE_LIMITED"


class Unauthenticated(AppTasksError):
    """No token, or a token that is not known."""

    code = "UNAUTHENTICATED"


class Forbidden(AppTasksError):
    """The token is known but may not do this."""

    code = "FORBIDDEN"


class TaskFailed(AppTasksError):
    """The screen's handler failed; carries errorType and errorMessage."""

    code = "TASK_FAILED"


class TaskTimeout(TaskFailed):
    """The run went past its time limit and was killed."""

    code = "TASK_TIMEOUT"


class Unavailable(AppTasksError):
    """A service App Tasks depends on (Redis, the database) did not answer."""

    code = "SERVICE_UNAVAILABLE"


class RunPending(AppTasksError):
    """The caller stopped waiting before the run had a result; the run goes on."""

    code = "RUN_PENDING"


def check_text(field: str, value: str, *, allow_nul: bool = False) -> str:
    """The value, or BadInput if it is not storable text (lone surrogates, NUL)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(
            f"{field}: contains a lone UTF-16 surrogate, which is not valid text"
        ) from None
    if not allow_nul and "\x00" in value:
        raise BadInput(f"{field}: contains a NUL character")
    return value


def check_page_limit(limit: int | None, default: int, maximum: int) -> int:
    """A list call's `limit`: the default when absent, BadInput outside 1..maximum."""
    limit = default if limit is None else limit
    if not 1 <= limit <= maximum:
        raise BadInput(f"limit {limit}: must be between 1 and {maximum}")
    return limit


def check_known(field: str, value: str, kind: str, known: Sequence[str]) -> None:
    """BadInput naming the known values when `value` is not one of them."""
    if value not in known:
        raise BadInput(
            f"{field} {value!r}: not a {kind}; use one of "
            + ", ".join(repr(item) for item in known)
        )
