"""Tasks: which screen to run, and when (cron in a time zone) or on demand."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from apptasks import fires
from apptasks.cron import (
    MAX_UPCOMING,
    Fire,
    next_fire_after,
    parse_timezone,
    upcoming_fires,
    validate_frequency,
)
from apptasks.errors import BadInput, NameTaken, NotFound, TaskLimitReached
from apptasks.fires import Schedule, check_instant
from apptasks.models import App, Page, Task
from apptasks.settings import Settings

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_EDITABLE = ("name", "page_id", "active", "frequency", "timezone", "timeout")


class _Keep:
    """Marks a field an update leaves as it is (unlike None, which clears it)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


@dataclass(frozen=True)
class TaskChanges:
    """The fields an update changes; every other field is KEEP."""

    name: Any = KEEP
    page_id: Any = KEEP
    active: Any = KEEP
    frequency: Any = KEEP
    timezone: Any = KEEP
    timeout: Any = KEEP


@dataclass(frozen=True)
class TaskInput:
    """The fields a caller gives when creating a task."""

    name: str
    page_id: int
    active: bool = True
    frequency: str | None = None
    timezone: str = "+00"
    timeout: float | None = None


async def create_task(app_id: int, spec: TaskInput, settings: Settings) -> Task:
    """A new task, checked against every rule before anything is written."""
    name = check_name(spec.name)
    frequency = validate_frequency(spec.frequency) if spec.frequency else None
    parse_timezone(spec.timezone)
    timeout = check_timeout(spec.timeout, settings)
    await _check_page(app_id, spec.page_id)

    task = Task(
        app_id=app_id,
        page_id=spec.page_id,
        name=name,
        active=spec.active,
        frequency=frequency,
        timezone=spec.timezone.strip(),
        timeout=timeout,
    )
    task.next_run_at = next_run(task, datetime.now(UTC))

    async with in_transaction():
        # Locking the app row serialises concurrent creates for one app, so the
        # count below cannot be stale (PostgreSQL; on SQLite the transaction
        # holds the write lock from its start, see apptasks/sqlite_engine.py).
        await App.select_for_update().get(id=app_id)
        if await Task.filter(app_id=app_id).count() >= settings.max_tasks_per_app:
            raise TaskLimitReached(
                f"this app already has {settings.max_tasks_per_app} tasks, the most "
                "it may have: remove one first"
            )
        await _check_name_free(app_id, name)
        try:
            await task.save()
        except IntegrityError:
            raise _name_taken(name) from None
    return task


async def update_task(task: Task, changes: TaskChanges, settings: Settings) -> Task:
    """Apply the changes given (KEEP leaves a field); check all before writing.

    A change of frequency, timezone or active replaces the pending fire at
    once: the scheduler only fires a task whose `next_run_at` still equals the
    fire time it queued, so a fire queued for the old schedule finds it moved
    and does nothing. The fire ledger records what the change meant for the
    old schedule's fires (`apptasks.fires.record_schedule_change`).
    """
    old = Schedule.of(task)
    if changes.name is not KEEP:
        name = check_name(changes.name)
        if name != task.name:
            await _check_name_free(task.app_id, name)
        task.name = name
    if changes.page_id is not KEEP:
        await _check_page(task.app_id, changes.page_id)
        task.page_id = changes.page_id
    if changes.frequency is not KEEP:
        task.frequency = (
            validate_frequency(changes.frequency) if changes.frequency else None
        )
    if changes.timezone is not KEEP:
        parse_timezone(changes.timezone)
        task.timezone = changes.timezone.strip()
    if changes.active is not KEEP:
        task.active = changes.active
    if changes.timeout is not KEEP:
        task.timeout = check_timeout(changes.timeout, settings)

    now = datetime.now(UTC)
    rescheduled = _schedule_changed(old, task)
    # Only the fields an edit owns are written: lastRunAt and nextRunAt belong
    # to the workers, which may have moved them since this task was read.
    written = [*_EDITABLE, "updated_at"]
    if rescheduled:
        task.next_run_at = next_run(task, now)
        written.append("next_run_at")
    try:
        async with in_transaction():
            await task.save(update_fields=written)
            if rescheduled:
                await fires.record_schedule_change(task, old, now)
    except IntegrityError:
        raise _name_taken(task.name) from None
    return task


def _schedule_changed(old: Schedule, task: Task) -> bool:
    """Whether an edit touched what decides the fires (a rename does not)."""
    return (old.frequency, old.timezone, old.active) != (
        task.frequency,
        task.timezone,
        task.active,
    )


async def remove_task(task: Task) -> None:
    """Delete the task and its fire ledger; its queued fires find it gone.

    Its logs stay. The ledger goes, so that nothing holds fire times for a task
    id the database may give again.
    """
    async with in_transaction():
        await task.delete()
        await fires.forget(task.id)


async def find_task(app_id: int, task_id: int | None, name: str | None) -> Task:
    """The app's task by id or by name: exactly one of the two must be given."""
    if (task_id is None) == (name is None):
        raise BadInput("give exactly one of 'id' and 'name' to name a task")
    if task_id is not None:
        task = await Task.get_or_none(id=task_id, app_id=app_id)
        wanted = f"task {task_id}"
    else:
        task = await Task.get_or_none(name=name, app_id=app_id)
        wanted = f"task {name!r}"
    if task is None:
        raise NotFound(f"{wanted}: no such task in this app")
    return task


async def list_tasks(app_id: int) -> list[Task]:
    return await Task.filter(app_id=app_id).order_by("id")


def next_run(task: Task, after: datetime) -> datetime | None:
    """When the task fires next after `after`; None when on-demand or paused."""
    if not task.active or not task.frequency:
        return None
    return next_fire_after(task.frequency, parse_timezone(task.timezone), after)


def preview_schedule(
    frequency: str, timezone: str, count: int, after: datetime | None
) -> list[Fire]:
    """The next `count` fires strictly after `after` (default now).

    The frequency and timezone are checked as createTask checks them, so a
    refusal here is the one createTask would give.
    """
    normalised = validate_frequency(frequency)
    zone = parse_timezone(timezone)
    start = datetime.now(UTC) if after is None else check_instant(after, "after")
    return upcoming_fires(normalised, zone, start, count)


def upcoming_runs(schedule: Schedule, count: int, after: datetime | None) -> list[Fire]:
    """A task's next fires; none when it will not fire (on-demand or paused)."""
    if not schedule.fires or schedule.frequency is None:
        check_count(count)
        return []
    return preview_schedule(schedule.frequency, schedule.timezone, count, after)


def check_count(count: int) -> int:
    if not 0 <= count <= MAX_UPCOMING:
        raise BadInput(f"count {count}: ask for 0 to {MAX_UPCOMING} fires")
    return count


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise BadInput(
            f"name {name!r}: use 1 to 64 letters, digits, '-' or '_' (no spaces)"
        )
    return name


def check_timeout(timeout: float | None, settings: Settings) -> float:
    if timeout is None:
        return settings.default_timeout
    if not 1 <= timeout <= settings.max_timeout:
        raise BadInput(
            f"timeout {timeout:g}: must be between 1 and {settings.max_timeout:g} "
            "seconds"
        )
    return float(timeout)


async def _check_name_free(app_id: int, name: str) -> None:
    if await Task.exists(app_id=app_id, name=name):
        raise _name_taken(name)


def _name_taken(name: str) -> NameTaken:
    return NameTaken(
        f"name {name!r}: this app already has a task of that name; "
        "choose another or update that task"
    )


async def _check_page(app_id: int, page_id: int) -> None:
    if not await Page.exists(id=page_id, app_id=app_id):
        raise NotFound(f"pageId {page_id}: no such page in this app")
