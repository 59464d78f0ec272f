"""Subscriptions: an app's log entries and a run's status, live.

They are served over WebSocket with the graphql-transport-ws protocol only,
with the token in the `connection_init` payload (see `apptasks.app`). Each
resolver checks what it can before it returns its stream, so that a refused
subscription ends with one `error` message carrying the usual code.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from apptasks import live, records
from schema.context import Info
from schema.ids import optional_id
from schema.logs import LogFilter, TaskLog


@strawberry.type(description="A change of a run's status, as it happens.")
class RunUpdate:
    run_id: str = strawberry.field(description="The run.")
    task_id: strawberry.ID | None = strawberry.field(description="Its task.")
    status: str = strawberry.field(
        description="queued, running, or the final one: completed, failed, "
        "timed_out or cancelled."
    )
    log_id: strawberry.ID | None = strawberry.field(
        description="The run's log entry, once it has ended."
    )
    duration: int | None = strawberry.field(
        description="Milliseconds the run took, when its end is seen live."
    )
    result: JSON | None = strawberry.field(
        description="The handler's result, when a completed run's end is seen live."
    )
    error_type: str | None = strawberry.field(
        description="Why a failed, timed-out or cancelled run failed."
    )
    error_message: str | None = strawberry.field(
        description="The error's message, when a failed run's end is seen live."
    )

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> RunUpdate:
        task_id = message.get("taskId")
        log_id = message.get("logId")
        return cls(
            run_id=str(message["runId"]),
            task_id=None if task_id is None else strawberry.ID(str(task_id)),
            status=str(message["status"]),
            log_id=None if log_id is None else strawberry.ID(str(log_id)),
            duration=message.get("duration"),
            result=message.get("result"),
            error_type=message.get("errorType"),
            error_message=message.get("errorMessage"),
        )


def task_log_from_message(message: dict[str, Any]) -> TaskLog:
    """A log entry as announced (`apptasks.logs.log_message`), as GraphQL's type."""
    task_id = message.get("taskId")
    return TaskLog(
        id=strawberry.ID(str(message["id"])),
        created_at=datetime.fromisoformat(message["createdAt"]),
        type=message["type"],
        task_id=None if task_id is None else strawberry.ID(str(task_id)),
        data=message["data"],
    )


@strawberry.type
class LiveSubscription:
    @strawberry.subscription(
        description="The app's new log entries as they are written. With afterId, "
        "first the entries after it (the newest 500 at most, oldest first), then "
        "new ones, with none missed or repeated in between."
    )
    async def task_logs(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Only this task's entries."),
        ] = None,
        where: Annotated[
            LogFilter | None, strawberry.argument(description="Filter by type.")
        ] = None,
        after_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="The id of the last entry received: resume after it."
            ),
        ] = None,
    ) -> AsyncGenerator[TaskLog, None]:
        selection = live.LogSelection(
            app_id=await info.context.app_id(),
            task_id=optional_id(id, "task"),
            log_type=where.type if where else None,
        )
        after = live.parse_cursor(None if after_id is None else str(after_id))
        redis = info.context.queue.redis
        return _as_task_logs(
            live.follow_logs(redis, info.context.settings, selection, after)
        )

    @strawberry.subscription(
        description="One run's status: first the current one, then each change; "
        "ends after the final status."
    )
    async def run_updates(
        self,
        info: Info,
        run_id: Annotated[
            str, strawberry.argument(description="The run's id, from runTask.")
        ],
    ) -> AsyncGenerator[RunUpdate, None]:
        app_id = await info.context.app_id()
        # Looked up here so that another app's run is refused before streaming.
        await records.find_run(app_id, run_id)
        redis = info.context.queue.redis
        return _as_run_updates(
            live.follow_run(redis, info.context.settings, app_id, run_id)
        )


async def _as_task_logs(
    messages: AsyncGenerator[dict[str, Any], None],
) -> AsyncGenerator[TaskLog, None]:
    async with aclosing(messages):
        async for message in messages:
            yield task_log_from_message(message)


async def _as_run_updates(
    messages: AsyncGenerator[dict[str, Any], None],
) -> AsyncGenerator[RunUpdate, None]:
    async with aclosing(messages):
        async for message in messages:
            yield RunUpdate.from_message(message)
