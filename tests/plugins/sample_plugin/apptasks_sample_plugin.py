"""A third-party plugin as its author would write it, importing from apptasks only.

It registers the `sample-echo` runtime, which answers every run with its
payload, sets the user agent of the browsers other runtimes start, and records
run notifications as JSON lines in the file named by
APPTASKS_SAMPLE_EVENTS, so that a test can read what the hooks were told.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from apptasks.execution import RunOutcome, RunRequest
from apptasks.hooks import hookimpl
from apptasks.runs import RunOrder
from apptasks.settings import Settings


class SampleEchoRuntime:
    name: ClassVar[str] = "sample-echo"

    def __init__(self, settings: Settings, *, hooks: Any = None) -> None:
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def execute(self, request: RunRequest) -> RunOutcome:
        return RunOutcome(
            result={"echoed": request.payload, "by": self.name},
            console=["sample: ran " + str(request.context.get("taskName"))],
            browser=self.name,
        )


def _record(event: dict[str, Any]) -> None:
    path = os.environ.get("APPTASKS_SAMPLE_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as events:
            events.write(json.dumps(event) + "\n")


@hookimpl
def apptasks_register_runtimes() -> list[type[SampleEchoRuntime]]:
    return [SampleEchoRuntime]


@hookimpl
def apptasks_browser_options(browser: str, options: Any, settings: Settings) -> None:
    if browser == "chrome":
        options.add_argument("--user-agent=AppTasksSamplePlugin/1.0")
    elif browser == "firefox":
        options.set_preference("general.useragent.override", "AppTasksSamplePlugin/1.0")


@hookimpl
def apptasks_run_started(order: RunOrder) -> None:
    _record({"event": "started", "task": order.task_name, "run": order.run_id})


@hookimpl
def apptasks_run_finished(order: RunOrder, outcome: RunOutcome) -> None:
    _record(
        {
            "event": "finished",
            "task": order.task_name,
            "run": order.run_id,
            "ok": outcome.ok,
        }
    )
