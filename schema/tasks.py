"""Tasks: create and read them, and run them on demand (queued or waiting)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from apptasks import tasks
from apptasks.errors import BadInput, TaskFailed, TaskTimeout
from apptasks.execution import TIMEOUT_ERROR
from apptasks.fires import Schedule
from apptasks.models import Task as TaskModel
from apptasks.runs import Environment, RunOrder, on_demand_order
from schema import schedules
from schema.context import Info
from schema.ids import optional_id, parse_id
from schema.schedules import (
    AfterArgument,
    CountArgument,
    FireRecord,
    LedgerAfterArgument,
    LedgerBeforeArgument,
    LimitArgument,
    ScheduledFire,
)

EnvironmentEnum = strawberry.enum(
    Environment,
    name="Environment",
    description="Which version of a screen a run uses.",
)

TaskIdArgument = Annotated[
    strawberry.ID | None,
    strawberry.argument(description="The task's id; give this or its name."),
]
TaskNameArgument = Annotated[
    str | None,
    strawberry.argument(description="The task's name; give this or its id."),
]
PayloadArgument = Annotated[
    JSON | None,
    strawberry.argument(description="Passed to the screen's handler as its argument."),
]
CallerArgument = Annotated[
    JSON | None,
    strawberry.argument(
        description="Who the run is for; handed to the screen, never stored in logs."
    ),
]
EnvironmentArgument = Annotated[
    Environment,
    strawberry.argument(
        description="DRAFT runs the draft, LIVE the published version."
    ),
]


@strawberry.type(description="A screen to run on a cron schedule or on demand.")
class Task:
    id: strawberry.ID = strawberry.field(description="The task's id.")
    name: str = strawberry.field(description="Unique within the app.")
    active: bool = strawberry.field(description="False pauses the schedule.")
    frequency: str | None = strawberry.field(
        description="5-field cron expression; null for an on-demand task."
    )
    timezone: str = strawberry.field(
        description="Offset such as +05:30 or an IANA name the frequency is read in."
    )
    timeout: float = strawberry.field(description="Seconds a run may last.")
    last_run_at: datetime | None = strawberry.field(description="When it last ran.")
    next_run_at: datetime | None = strawberry.field(
        description="Next scheduled fire (UTC); null when on-demand or inactive."
    )
    created_at: datetime = strawberry.field(description="When it was created.")
    updated_at: datetime = strawberry.field(description="When it last changed.")
    app_id: strawberry.ID = strawberry.field(description="The app it belongs to.")
    page_id: strawberry.ID = strawberry.field(description="The screen it runs.")

    @strawberry.field(
        description="The next fires after an instant (default now), in UTC and in "
        "the task's zone, flagging those a clock change moved or doubled; empty "
        "when on-demand or inactive."
    )
    def upcoming_runs(
        self, count: CountArgument = 10, after: AfterArgument = None
    ) -> list[ScheduledFire]:
        schedule = Schedule(self.frequency, self.timezone, self.active, None)
        return schedules.upcoming_runs(schedule, count, after)

    @strawberry.field(
        description="The fire ledger, latest fire first: what came of each fire "
        "the schedule named (ran, skipped, missed, paused)."
    )
    async def fires(
        self,
        info: Info,
        limit: LimitArgument = 20,
        after: LedgerAfterArgument = None,
        before: LedgerBeforeArgument = None,
    ) -> list[FireRecord]:
        return await schedules.ledger(info, int(self.id), limit, after, before)

    @classmethod
    def from_model(cls, task: TaskModel) -> Task:
        return cls(
            id=strawberry.ID(str(task.id)),
            name=task.name,
            active=task.active,
            frequency=task.frequency,
            timezone=task.timezone,
            timeout=task.timeout,
            last_run_at=task.last_run_at,
            next_run_at=task.next_run_at,
            created_at=task.created_at,
            updated_at=task.updated_at,
            app_id=strawberry.ID(str(task.app_id)),
            page_id=strawberry.ID(str(task.page_id)),
        )


@strawberry.input(description="A new task.")
class CreateTaskInput:
    name: str = strawberry.field(description="Letters, digits, '-' and '_'.")
    page_id: strawberry.ID = strawberry.field(description="The screen to run.")
    active: bool = strawberry.field(default=True, description="False: paused.")
    frequency: str | None = strawberry.field(
        default=None, description="5-field cron expression; omit for on-demand."
    )
    timezone: str = strawberry.field(
        default="+00", description="Offset (+00, +0530, -08:00) or IANA name."
    )
    timeout: float | None = strawberry.field(
        default=None, description="Seconds a run may last (default 10, at most 30)."
    )


@strawberry.input(description="Changes to a task; omitted fields stay as they are.")
class UpdateTaskInput:
    name: str | None = strawberry.field(
        default=strawberry.UNSET, description="A new name."
    )
    page_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET, description="Another screen of the app."
    )
    active: bool | None = strawberry.field(
        default=strawberry.UNSET, description="False pauses the schedule."
    )
    frequency: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="A new cron expression; null makes the task on-demand.",
    )
    timezone: str | None = strawberry.field(
        default=strawberry.UNSET, description="A new offset or IANA zone name."
    )
    timeout: float | None = strawberry.field(
        default=strawberry.UNSET, description="Seconds a run may last (1 to 30)."
    )

    def changes(self) -> tasks.TaskChanges:
        """The core's view of this input: UNSET becomes KEEP."""
        required = {"name": self.name, "active": self.active, "timezone": self.timezone}
        for field_name, value in required.items():
            if value is None:
                raise BadInput(f"{field_name}: may be left out but not null")
        if self.page_id is None or self.timeout is None:
            which = "pageId" if self.page_id is None else "timeout"
            raise BadInput(f"{which}: may be left out but not null")
        return tasks.TaskChanges(
            name=_keep_unset(self.name),
            page_id=(
                tasks.KEEP
                if self.page_id is strawberry.UNSET
                else parse_id(self.page_id, "page")
            ),
            active=_keep_unset(self.active),
            frequency=_keep_unset(self.frequency),
            timezone=_keep_unset(self.timezone),
            timeout=_keep_unset(self.timeout),
        )


@strawberry.type(description="A task that was removed; its logs stay readable.")
class RemovedTask:
    id: strawberry.ID = strawberry.field(description="The removed task's id.")
    name: str = strawberry.field(description="Its name, now free again.")


@strawberry.type(description="An on-demand run that was queued.")
class RunReceipt:
    run_id: str = strawberry.field(description="The run's id, also in its log entry.")
    task_id: strawberry.ID = strawberry.field(description="The task that will run.")
    queued_at: datetime = strawberry.field(description="When it was queued.")


@strawberry.type
class TaskQuery:
    @strawberry.field(description="The app's tasks, oldest first.")
    async def tasks(self, info: Info) -> list[Task]:
        app_id = await info.context.app_id()
        return [Task.from_model(task) for task in await tasks.list_tasks(app_id)]

    @strawberry.field(description="One task, by id or by name.")
    async def task(
        self, info: Info, id: TaskIdArgument = None, name: TaskNameArgument = None
    ) -> Task:
        app_id = await info.context.app_id()
        task = await tasks.find_task(app_id, optional_id(id, "task"), name)
        return Task.from_model(task)


@strawberry.type
class TaskMutation:
    @strawberry.mutation(description="Create a task; with a frequency it is scheduled.")
    async def create_task(
        self,
        info: Info,
        input: Annotated[
            CreateTaskInput, strawberry.argument(description="The new task.")
        ],
    ) -> Task:
        app_id = await info.context.app_id()
        spec = tasks.TaskInput(
            name=input.name,
            page_id=parse_id(input.page_id, "page"),
            active=input.active,
            frequency=input.frequency,
            timezone=input.timezone,
            timeout=input.timeout,
        )
        task = await tasks.create_task(app_id, spec, info.context.settings)
        return Task.from_model(task)

    @strawberry.mutation(description="Change a task; the next fire is recomputed.")
    async def update_task(
        self,
        info: Info,
        input: Annotated[
            UpdateTaskInput, strawberry.argument(description="What to change.")
        ],
        id: TaskIdArgument = None,
        name: TaskNameArgument = None,
    ) -> Task:
        app_id = await info.context.app_id()
        task = await tasks.find_task(app_id, optional_id(id, "task"), name)
        updated = await tasks.update_task(task, input.changes(), info.context.settings)
        return Task.from_model(updated)

    @strawberry.mutation(description="Remove a task; its pending fires are cancelled.")
    async def remove_task(
        self, info: Info, id: TaskIdArgument = None, name: TaskNameArgument = None
    ) -> RemovedTask:
        app_id = await info.context.app_id()
        task = await tasks.find_task(app_id, optional_id(id, "task"), name)
        await tasks.remove_task(task)
        return RemovedTask(id=strawberry.ID(str(task.id)), name=task.name)

    @strawberry.mutation(description="Queue an on-demand run; answers once queued.")
    async def run_task(
        self,
        info: Info,
        name: TaskNameArgument = None,
        id: TaskIdArgument = None,
        payload: PayloadArgument = None,
        caller: CallerArgument = None,
        environment: EnvironmentArgument = Environment.LIVE,
    ) -> RunReceipt:
        order = await _order(info, id, name, payload, caller, environment)
        await info.context.queue.submit(order)
        return RunReceipt(
            run_id=order.run_id,
            task_id=strawberry.ID(str(order.task_id)),
            queued_at=datetime.now(UTC),
        )

    @strawberry.mutation(description="Run now and answer with the handler's result.")
    async def run_task_with_result(
        self,
        info: Info,
        name: TaskNameArgument = None,
        id: TaskIdArgument = None,
        payload: PayloadArgument = None,
        caller: CallerArgument = None,
        environment: EnvironmentArgument = Environment.LIVE,
    ) -> JSON | None:
        order = await _order(info, id, name, payload, caller, environment)
        outcome = await info.context.queue.submit_and_wait(order)
        if outcome["status"] == "completed":
            return outcome.get("result")
        raise _failure(order.task_name, outcome)


async def _order(
    info: Info,
    task_id: strawberry.ID | None,
    name: str | None,
    payload: Any,
    caller: Any,
    environment: Environment,
) -> RunOrder:
    principal = await info.context.principal()
    app_id = principal.require_app()
    task = await tasks.find_task(app_id, optional_id(task_id, "task"), name)
    order = await on_demand_order(
        task,
        payload,
        environment,
        info.context.settings,
        token_name=principal.token_name,
        caller=caller,
    )
    await info.context.queue.check_rate(app_id)
    return order


def _keep_unset(value: Any) -> Any:
    return tasks.KEEP if value is strawberry.UNSET else value


def _failure(task_name: str, outcome: dict[str, Any]) -> TaskFailed:
    error_type = outcome.get("errorType", "Error")
    message = outcome.get("errorMessage", "")
    details = {
        "errorType": error_type,
        "errorMessage": message,
        "runId": outcome.get("runId"),
    }
    if error_type == TIMEOUT_ERROR:
        return TaskTimeout(f"task {task_name!r} timed out: {message}", **details)
    return TaskFailed(f"task {task_name!r} failed: {error_type}: {message}", **details)
