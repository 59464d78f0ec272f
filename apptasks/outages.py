"""Riding out a short outage of the database or Redis: retries with backoff.

A worker retries a step that failed because a service it needs did not
answer, for a bounded time, rather than losing the run. That is safe only for
steps that cannot take effect twice: every step of a run is a compare-and-set
(`apptasks.records`), so a step retried after a lost acknowledgement finds its
own earlier write and writes nothing more. The API does not retry: a caller is
better served by a prompt `SERVICE_UNAVAILABLE` than by a request that hangs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from apptasks.errors import Unavailable

logger = logging.getLogger("apptasks.outages")

T = TypeVar("T")

# How long a worker keeps retrying one step while a service does not answer:
# long enough for a restart or a fail-over, short of a run's lease running out.
PATIENCE_SECONDS = 30.0
FIRST_DELAY = 0.1
LONGEST_DELAY = 2.0


@dataclass(frozen=True)
class Dependency:
    """A service App Tasks needs, and how to tell its outage from a refusal."""

    name: str
    is_outage: Callable[[BaseException], bool]

    def unavailable(
        self, error: BaseException, doing: str = "", consequence: str = ""
    ) -> Unavailable:
        """The error a caller gets when this service did not answer.

        `consequence` says what became of the caller's request meanwhile. The
        message names the error's type only: its text may carry addresses that
        are for the logs, not for every caller.
        """
        while_doing = f" while {doing}" if doing else ""
        so = f"; {consequence}" if consequence else ""
        return Unavailable(
            f"{self.name} did not answer{while_doing} ({type(error).__name__})"
            f"{so}; try again in a few seconds",
            service=self.name,
        )


async def retrying(
    operation: Callable[[], Awaitable[T]],
    dependency: Dependency,
    doing: str,
    patience: float = PATIENCE_SECONDS,
) -> T:
    """The operation's result, retried with backoff while `dependency` is out.

    Raises Unavailable once `patience` seconds have passed without an answer;
    any error that is not an outage (a refused query, a bug) is raised at once.
    """
    give_up_at = time.monotonic() + patience
    delay = FIRST_DELAY
    first_failure: float | None = None
    while True:
        try:
            result = await operation()
        except Exception as exc:
            if not dependency.is_outage(exc):
                raise
            now = time.monotonic()
            if now >= give_up_at:
                raise dependency.unavailable(exc, doing) from exc
            if first_failure is None:
                first_failure = now
                logger.warning(
                    "%s did not answer while %s (%s); retrying for up to %.0f s",
                    dependency.name,
                    doing,
                    describe(exc),
                    patience,
                )
            await asyncio.sleep(min(delay, give_up_at - now))
            delay = min(delay * 2, LONGEST_DELAY)
            continue
        if first_failure is not None:
            logger.info(
                "%s answered again while %s after %.1f s",
                dependency.name,
                doing,
                time.monotonic() - first_failure,
            )
        return result


def describe(error: BaseException) -> str:
    """An exception as `Type: message`, on one line, for logs and error messages."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def causes(error: BaseException) -> list[BaseException]:
    """The exception and those it was raised from or wraps, outermost first.

    Drivers and ORMs wrap each other's errors, as a cause, a context or the
    first argument; the one that says what happened may be any of them.
    """
    found: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending and len(found) < 10:
        current = pending.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        for inner in (current.__cause__, current.__context__, *current.args[:1]):
            if isinstance(inner, BaseException):
                pending.append(inner)
    return found
