"""The contract between worker and runtime: what a run is given, what it answers.

A runtime receives a `RunRequest` (where the screen is, what to pass its handler,
and when it must be done by) and answers with a `RunOutcome`. Runtimes never
raise for a screen's own failure: a thrown error, a timeout or a screen without
a handler all come back as an outcome with `error` set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from apptasks.settings import Settings

JSON = Any

TIMEOUT_ERROR = "TimeoutError"
HANDLER_NOT_REGISTERED = "HandlerNotRegistered"
RUNTIME_ERROR = "RuntimeError"


@dataclass(frozen=True)
class RunRequest:
    """One screen run, as handed to a runtime.

    `deadline` is a `time.monotonic()` instant; the runtime must answer by then
    (plus a small margin for killing a stuck browser).
    """

    run_id: str
    url: str
    payload: JSON
    context: dict[str, JSON]
    deadline: float

    @property
    def seconds_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


@dataclass(frozen=True)
class RunError:
    """Why a run failed, in the shape kept in `app.task.failed` log entries."""

    error_type: str
    message: str
    trace: str = ""

    def as_log_data(self) -> dict[str, str]:
        return {
            "errorType": self.error_type,
            "errorMessage": self.message,
            "trace": self.trace,
        }


@dataclass(frozen=True)
class FailureBundle:
    """What a failed run's page looked like: kept so that its owner can see why.

    Either part may be missing: a browser killed for running past its limit
    can no longer be asked for a screenshot.
    """

    screenshot_png: bytes | None = None
    html: str | None = None


@dataclass(frozen=True)
class RunOutcome:
    """A runtime's answer: a JSON result or an error, and the screen's console.

    `browser_ms` is the time the run held its browser: from the lease to the
    answer, without any wait for a free browser.
    """

    result: JSON = None
    error: RunError | None = None
    console: list[str] = field(default_factory=list)
    browser: str = ""
    browser_version: str = ""
    browser_ms: int | None = None
    bundle: FailureBundle | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def timed_out(self) -> bool:
        return self.error is not None and self.error.error_type == TIMEOUT_ERROR


@runtime_checkable
class Runtime(Protocol):
    """A way of executing screens; started once per worker and reused for every run."""

    name: ClassVar[str]

    async def start(self) -> None:
        """Prepare whatever the runtime needs (start browsers); called once."""

    async def stop(self) -> None:
        """Release everything `start` and the runs acquired; called once."""

    async def execute(self, request: RunRequest) -> RunOutcome:
        """Run one screen and answer by `request.deadline`."""
        ...


class RuntimeFactory(Protocol):
    """What a plugin registers: something that builds a runtime from the settings."""

    @property
    def name(self) -> str: ...

    def __call__(self, settings: Settings, *, hooks: Any = None) -> Runtime: ...
