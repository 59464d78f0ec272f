"""The stub runtime: runs no browser and answers from a table.

It exists to test everything around a runtime (queue, logs, scheduling) fast and
without a browser. The table, a JSON file named by `APPTASKS_STUB_TABLE`, maps a
task name to an outcome: `{"result": ...}`, `{"error": {"errorType": ...,
"errorMessage": ...}}`, optionally with `"delay": seconds`. A task not in the
table gets back `{"payload": ..., "context": ...}`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from apptasks.execution import (
    TIMEOUT_ERROR,
    RunError,
    RunOutcome,
    RunRequest,
    RuntimeFactory,
)
from apptasks.hooks import hookimpl
from apptasks.settings import Settings


class StubRuntime:
    """Answers each run from the table, honouring delays and the deadline."""

    name: ClassVar[str] = "stub"

    def __init__(self, settings: Settings, *, hooks: Any = None) -> None:
        self.table_path = settings.stub_table
        self.table: dict[str, Any] = {}

    async def start(self) -> None:
        if self.table_path:
            text = await asyncio.to_thread(
                Path(self.table_path).read_text, encoding="utf-8"
            )
            self.table = json.loads(text)

    async def stop(self) -> None:
        self.table = {}

    async def execute(self, request: RunRequest) -> RunOutcome:
        entry = self.table.get(str(request.context.get("taskName")))
        if entry is None:
            return RunOutcome(
                result={"payload": request.payload, "context": request.context},
                browser=self.name,
            )

        delay = float(entry.get("delay", 0))
        if delay > request.seconds_left:
            await asyncio.sleep(request.seconds_left)
            return RunOutcome(
                error=RunError(TIMEOUT_ERROR, "the stub's delay passed the deadline"),
                browser=self.name,
            )
        await asyncio.sleep(delay)

        if "error" in entry:
            error = entry["error"]
            return RunOutcome(
                error=RunError(
                    str(error.get("errorType", "Error")),
                    str(error.get("errorMessage", "")),
                    str(error.get("trace", "")),
                ),
                browser=self.name,
            )
        return RunOutcome(result=entry.get("result"), browser=self.name)


@hookimpl
def apptasks_register_runtimes() -> Sequence[RuntimeFactory]:
    return [StubRuntime]
