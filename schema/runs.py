"""Runs: every run as a record, from queued to its end, and cancelling one."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from apptasks import records
from apptasks.models import Run as RunModel
from schema.context import Info
from schema.ids import optional_id


@strawberry.enum(description="Where a run is in its life.")
class RunStatus(Enum):
    QUEUED = records.QUEUED
    RUNNING = records.RUNNING
    COMPLETED = records.COMPLETED
    FAILED = records.FAILED
    TIMED_OUT = records.TIMED_OUT
    CANCELLED = records.CANCELLED


@strawberry.type(description="One run of a task, on demand or scheduled.")
class Run:
    id: str = strawberry.field(description="The run's id, also in its log entry.")
    task_id: strawberry.ID = strawberry.field(description="The task it runs.")
    task_name: str = strawberry.field(description="The task's name at the time.")
    mode: str = strawberry.field(description="on-demand or scheduled.")
    status: RunStatus = strawberry.field(description="Where the run is.")
    environment: str = strawberry.field(description="live or draft.")
    page_version: int | None = strawberry.field(
        description="The screen's published version it runs; null for the draft."
    )
    fire_at: datetime | None = strawberry.field(
        description="For a scheduled run, the fire time it is for."
    )
    created_at: datetime = strawberry.field(description="When it was accepted.")
    started_at: datetime | None = strawberry.field(description="When a worker took it.")
    finished_at: datetime | None = strawberry.field(description="When it ended.")
    error_type: str | None = strawberry.field(
        description="Why it failed: the screen's error type, TimeoutError, "
        "WorkerLost or Cancelled."
    )
    log_id: strawberry.ID | None = strawberry.field(
        description="Its log entry, once it has ended."
    )

    @classmethod
    def from_model(cls, run: RunModel) -> Run:
        return cls(
            id=run.id,
            task_id=strawberry.ID(str(run.task_id)),
            task_name=run.task_name,
            mode=run.mode,
            status=RunStatus(run.status),
            environment=run.environment,
            page_version=run.page_version,
            fire_at=run.fire_at,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            error_type=run.error_type,
            log_id=None if run.log_id is None else strawberry.ID(str(run.log_id)),
        )


RunIdArgument = Annotated[
    str, strawberry.argument(description="The run's id, as runTask answered.")
]


@strawberry.type
class RunQuery:
    @strawberry.field(description="One of the app's runs.")
    async def run(self, info: Info, id: RunIdArgument) -> Run:
        app_id = await info.context.app_id()
        return Run.from_model(await records.find_run(app_id, id))

    @strawberry.field(description="The app's runs, newest first.")
    async def runs(
        self,
        info: Info,
        task_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="Only this task's runs."),
        ] = None,
        status: Annotated[
            RunStatus | None, strawberry.argument(description="Only runs in it.")
        ] = None,
        limit: Annotated[
            int | None, strawberry.argument(description="At most this many (20).")
        ] = None,
    ) -> list[Run]:
        app_id = await info.context.app_id()
        found = await records.list_runs(
            app_id,
            task_id=optional_id(task_id, "task"),
            status=None if status is None else status.value,
            limit=limit,
        )
        return [Run.from_model(run) for run in found]


@strawberry.type
class RunMutation:
    @strawberry.mutation(
        description="Stop a queued or running run; it ends as cancelled, with its "
        "log entry."
    )
    async def cancel_run(self, info: Info, id: RunIdArgument) -> Run:
        app_id = await info.context.app_id()
        return Run.from_model(await info.context.queue.cancel(app_id, id))
