"""Task logs: one entry per run, newest first."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.scalars import JSON

from apptasks import logs
from apptasks.models import FailureBundle as FailureBundleModel
from apptasks.models import TaskLog as TaskLogModel
from schema.context import Info
from schema.ids import optional_id


@strawberry.type(description="One run's log entry.")
class TaskLog:
    id: strawberry.ID = strawberry.field(description="The entry's id.")
    created_at: datetime = strawberry.field(description="When the run ended.")
    type: str = strawberry.field(description="app.task.completed or app.task.failed.")
    task_id: strawberry.ID | None = strawberry.field(description="The task that ran.")
    data: JSON = strawberry.field(
        description="mode, duration, pageId, taskId, ...; errorType, errorMessage "
        "and trace on failure; the result for scheduled runs."
    )

    @classmethod
    def from_model(cls, log: TaskLogModel) -> TaskLog:
        return cls(
            id=strawberry.ID(str(log.id)),
            created_at=log.created_at,
            type=log.type,
            task_id=None if log.task_id is None else strawberry.ID(str(log.task_id)),
            data=log.data,
        )


@strawberry.type(description="What a failed run's page showed when it failed.")
class FailureBundle:
    run_id: str = strawberry.field(description="The failed run.")
    task_id: strawberry.ID | None = strawberry.field(description="Its task.")
    screenshot: str | None = strawberry.field(
        description="A PNG screenshot, base64-encoded; null when the browser had "
        "to be killed."
    )
    html: str | None = strawberry.field(
        description="The page's HTML at the moment of failure (at most 256 KiB)."
    )
    console: list[str] = strawberry.field(description="The screen's console lines.")
    created_at: datetime = strawberry.field(description="When it was kept.")

    @classmethod
    def from_model(cls, bundle: FailureBundleModel) -> FailureBundle:
        png = bundle.screenshot_png
        return cls(
            run_id=bundle.run_id,
            task_id=None
            if bundle.task_id is None
            else strawberry.ID(str(bundle.task_id)),
            screenshot=None if png is None else base64.b64encode(png).decode("ascii"),
            html=bundle.html,
            console=list(bundle.console),
            created_at=bundle.created_at,
        )


@strawberry.type(description="A page of log entries and how many match in all.")
class TaskLogs:
    count: int = strawberry.field(description="Entries that match, in all.")
    logs: list[TaskLog] = strawberry.field(description="This page, newest first.")


@strawberry.input(description="Which log entries to return.")
class LogFilter:
    type: str | None = strawberry.field(
        default=None, description="Only entries of this type."
    )


@strawberry.type
class LogQuery:
    @strawberry.field(description="The failure bundle of one of the app's failed runs.")
    async def failure_bundle(
        self,
        info: Info,
        run_id: Annotated[
            str, strawberry.argument(description="The run's id, from its log entry.")
        ],
    ) -> FailureBundle:
        app_id = await info.context.app_id()
        return FailureBundle.from_model(await logs.find_bundle(app_id, run_id))

    @strawberry.field(description="The app's log entries, newest first.")
    async def task_logs(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Only this task's entries."),
        ] = None,
        limit: Annotated[
            int | None, strawberry.argument(description="At most this many (50).")
        ] = None,
        offset: Annotated[
            int, strawberry.argument(description="Skip this many first.")
        ] = 0,
        where: Annotated[
            LogFilter | None, strawberry.argument(description="Filter by type.")
        ] = None,
    ) -> TaskLogs:
        app_id = await info.context.app_id()
        count, entries = await logs.list_logs(
            app_id,
            task_id=optional_id(id, "task"),
            limit=limit,
            offset=offset,
            log_type=where.type if where else None,
        )
        return TaskLogs(count=count, logs=[TaskLog.from_model(log) for log in entries])
