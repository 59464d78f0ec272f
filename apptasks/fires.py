"""The fire ledger: one row per expected fire of a schedule, and what came of it.

Every fire a schedule names gets exactly one outcome:

- `ran`: a worker claimed the fire and made run `run_id` of it (the run's own
  record says how it went);
- `skipped`, reason `overlap`: the task's previous scheduled run was still
  queued or running, so this fire started nothing;
- `missed`, reason `late`: the fire came due while nothing ran it, and it was
  more than `APPTASKS_MISFIRE_GRACE` late, or a later fire was already due
  (only the latest fire of an outage is caught up);
- `paused`, reason `inactive`: the task was inactive when the fire came due.

Claiming a fire writes its row first, in the same transaction as the
compare-and-set that moves the task's `next_run_at` on: the unique key on
(task, fire time) lets one claimer through and turns every other into an
IntegrityError, so a fire runs at most once whatever the number of workers.

A task that is paused gets a `paused` row for the fire its pause cancelled; the
fires between that one and the moment it resumes are written when it resumes.
At most `MAX_RECORDED` rows are written for one outage or one pause; the log
line says how many were left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from apptasks import models, records
from apptasks.cron import next_fire_after, parse_timezone
from apptasks.errors import BadInput, check_page_limit
from apptasks.models import Page, Run, Task
from apptasks.runs import SCHEDULED, RunOrder, scheduled_order

logger = logging.getLogger("apptasks.fires")

RAN = "ran"
SKIPPED = "skipped"
MISSED = "missed"
PAUSED = "paused"
OUTCOMES = (RAN, SKIPPED, MISSED, PAUSED)

OVERLAP = "overlap"
LATE = "late"
INACTIVE = "inactive"

# Rows written for one outage or one pause, at most: an every-minute task
# stopped for a week would otherwise write ten thousand rows at once.
MAX_RECORDED = 1000
DEFAULT_LIMIT = 20
MAX_LIMIT = 200


@dataclass(frozen=True)
class Schedule:
    """What decides a task's fires: the part of a task an edit may change."""

    frequency: str | None
    timezone: str
    active: bool
    next_run_at: datetime | None

    @classmethod
    def of(cls, task: Task) -> Schedule:
        return cls(task.frequency, task.timezone, task.active, task.next_run_at)

    @property
    def fires(self) -> bool:
        return self.active and bool(self.frequency)

    def after(self, instant: datetime) -> datetime:
        """The first fire strictly after `instant`."""
        assert self.frequency is not None
        return next_fire_after(self.frequency, parse_timezone(self.timezone), instant)

    def between(
        self, first: datetime, last: datetime, limit: int = MAX_RECORDED
    ) -> tuple[list[datetime], bool]:
        """Fires from `first` (included, if it is one) to `last`, at most `limit`.

        The flag says whether fires were left out past the limit.
        """
        found: list[datetime] = []
        fire = self.after(first - timedelta(microseconds=1))
        while fire <= last:
            if len(found) == limit:
                return found, True
            found.append(fire)
            fire = self.after(fire)
        return found, False

    def latest(self, first: datetime, last: datetime) -> datetime | None:
        """The last fire from `first` (included) to `last`, if there is one."""
        latest = None
        fire = self.after(first - timedelta(microseconds=1))
        while fire <= last:
            latest, fire = fire, self.after(fire)
        return latest


class ClaimResult(StrEnum):
    """What came of trying to claim a fire."""

    RAN = "ran"
    SKIPPED = "skipped"
    STALE = "stale"
    """The task is gone or its pending fire is another one: nothing to do."""
    TAKEN = "taken"
    """The fire already has its ledger row: someone else claimed it."""


@dataclass(frozen=True)
class Claim:
    """A claim's result, the order to execute when it ran, the run that blocked it."""

    result: ClaimResult
    order: RunOrder | None = None
    blocking_run: str | None = None


class _Stale(Exception):
    """Rolls a claim back: the task no longer waits for this fire."""


def runnable(
    schedule: Schedule, fire_at: datetime, now: datetime, grace: float
) -> bool:
    """Whether a fire that is due may still run: on time, or caught up.

    A fire runs if it is at most `grace` seconds late and no later fire of the
    schedule is due yet; otherwise it is the scanner's to record as missed.
    """
    if fire_at > now:
        return True
    late = (now - fire_at).total_seconds()
    return late <= grace and schedule.after(fire_at) > now


async def claim(task: Task, fire_at: datetime, now: datetime) -> Claim:
    """Claim a task's fire: its ledger row, the next fire, and its run or skip.

    The ledger row is written first, so that the unique key decides between
    claimers before anything else happens (on SQLite, a transaction that writes
    first also waits its turn instead of failing on a stale snapshot).
    """
    page = await Page.get(id=task.page_id)
    order = scheduled_order(task, fire_at, page.live_version)
    following = Schedule.of(task).after(max(fire_at, now))
    try:
        async with in_transaction():
            await models.Fire.create(
                app_id=task.app_id,
                task_id=task.id,
                fire_at=fire_at,
                outcome=RAN,
                run_id=order.run_id,
            )
            moved = await Task.filter(id=task.id, next_run_at=fire_at).update(
                next_run_at=following
            )
            if not moved:
                raise _Stale
            blocking = await running_scheduled_run(task.id, now)
            if blocking is not None:
                await models.Fire.filter(task_id=task.id, fire_at=fire_at).update(
                    outcome=SKIPPED, reason=OVERLAP, run_id=None
                )
                return Claim(ClaimResult.SKIPPED, blocking_run=blocking)
            await records.accept(order)
    except IntegrityError:
        return Claim(ClaimResult.TAKEN)
    except _Stale:
        return Claim(ClaimResult.STALE)
    return Claim(ClaimResult.RAN, order=order)


async def running_scheduled_run(task_id: int, now: datetime) -> str | None:
    """The id of the task's scheduled run still queued or running, if any.

    A run past its lease counts as ended: its worker died, and it must not keep
    the schedule from firing until someone declares it lost.
    """
    active = Q(status=records.QUEUED) | Q(status=records.RUNNING, lease_until__gte=now)
    found = (
        await Run.filter(active, task_id=task_id, mode=SCHEDULED)
        .limit(1)
        .values_list("id", flat=True)
    )
    return str(found[0]) if found else None


async def queued_run_of(task_id: int, fire_at: datetime) -> RunOrder | None:
    """The order of a fire's run if it was claimed but its run never started."""
    fire = await models.Fire.get_or_none(task_id=task_id, fire_at=fire_at)
    if fire is None or fire.run_id is None:
        return None
    run = await Run.get_or_none(id=fire.run_id, status=records.QUEUED)
    if run is None or run.order is None:
        return None
    return RunOrder.from_message(run.order)


@dataclass(frozen=True)
class CatchUp:
    """What a catch-up after an outage did."""

    missed: int
    left_out: bool
    caught_up: datetime | None
    next_run_at: datetime | None


async def catch_up(task_id: int, now: datetime, grace: float) -> CatchUp | None:
    """Settle a task whose pending fire can no longer run as it is.

    Every fire from the pending one to now is `missed`, except the latest, when
    it is at most `grace` seconds late: that one becomes the pending fire again,
    to run once. None when another scanner got there first.
    """
    task = await Task.get_or_none(id=task_id)
    if task is None or task.next_run_at is None or not Schedule.of(task).fires:
        return None
    schedule = Schedule.of(task)
    pending = task.next_run_at

    caught_up = schedule.latest(max(pending, now - timedelta(seconds=grace)), now)
    missed_until = (caught_up - timedelta(microseconds=1)) if caught_up else now
    missed, left_out = schedule.between(pending, missed_until)
    following = caught_up or schedule.after(now)

    async with in_transaction():
        moved = await Task.filter(id=task_id, next_run_at=pending).update(
            next_run_at=following
        )
        if not moved:
            return None
        await _record(task, missed, MISSED, LATE)
    if missed:
        logger.warning(
            "fires missed task=%s count=%d first=%s last=%s left_out=%s",
            task.name,
            len(missed),
            missed[0].isoformat(),
            missed[-1].isoformat(),
            "yes" if left_out else "no",
        )
    return CatchUp(len(missed), left_out, caught_up, following)


async def record_schedule_change(task: Task, old: Schedule, now: datetime) -> None:
    """Write what an edit of frequency, timezone or active meant for old fires.

    Overdue fires of the old schedule (nothing ran them) are `missed`; a pause
    records the fire it cancels as `paused`; a resume writes `paused` for the
    fires that came due while paused, or drops the cancelled fire's row when it
    has not come due, since it will now run.
    """
    new = Schedule.of(task)
    if old.fires and old.next_run_at is not None and old.next_run_at <= now:
        overdue, _ = old.between(old.next_run_at, now)
        await _record(task, overdue, MISSED, LATE)
    if old.fires and not new.active:
        await _record(task, [old.after(now)], PAUSED, INACTIVE)
    if not old.active and new.fires:
        await _record_paused_until(task, new, now)


async def _record_paused_until(task: Task, schedule: Schedule, now: datetime) -> None:
    """On resume: the fires since the one the pause cancelled were paused too."""
    latest = await models.Fire.filter(task_id=task.id).order_by("-fire_at").first()
    if latest is None or latest.outcome != PAUSED:
        return
    if latest.fire_at > now:
        await latest.delete()
        return
    after_pause = latest.fire_at + timedelta(microseconds=1)
    paused, left_out = schedule.between(after_pause, now)
    await _record(task, paused, PAUSED, INACTIVE)
    logger.info(
        "fires paused task=%s count=%d since=%s left_out=%s",
        task.name,
        len(paused) + 1,
        latest.fire_at.isoformat(),
        "yes" if left_out else "no",
    )


async def _record(
    task: Task, fire_times: list[datetime], outcome: str, reason: str
) -> None:
    """Ledger rows for fires that ran nothing; a fire that has one keeps it."""
    rows = [
        models.Fire(
            app_id=task.app_id,
            task_id=task.id,
            fire_at=fire_at,
            outcome=outcome,
            reason=reason,
        )
        for fire_at in fire_times
    ]
    if rows:
        await models.Fire.bulk_create(rows, ignore_conflicts=True)


async def forget(task_id: int) -> None:
    """Drop a removed task's ledger, so that nothing holds its fire times."""
    await models.Fire.filter(task_id=task_id).delete()


async def list_fires(
    app_id: int,
    task_id: int,
    limit: int | None = None,
    after: datetime | None = None,
    before: datetime | None = None,
) -> list[models.Fire]:
    """A task's ledger, latest fire first, optionally within (after, before)."""
    limit = check_page_limit(limit, DEFAULT_LIMIT, MAX_LIMIT)
    query = models.Fire.filter(app_id=app_id, task_id=task_id)
    if after is not None:
        query = query.filter(fire_at__gt=check_instant(after, "after"))
    if before is not None:
        query = query.filter(fire_at__lt=check_instant(before, "before"))
    return await query.order_by("-fire_at").limit(limit)


# Instants far outside this range cannot be shown in every zone.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def check_instant(instant: datetime, name: str) -> datetime:
    """An argument instant in UTC, or BadInput when it has no zone or is absurd."""
    if instant.tzinfo is None:
        raise BadInput(
            f"{name} {instant.isoformat()!r}: give a UTC offset, such as "
            f"'{instant.isoformat()}Z' or '{instant.isoformat()}+02:00'"
        )
    if not EARLIEST <= instant <= LATEST:
        raise BadInput(
            f"{name} {instant.isoformat()!r}: must be between 1970 and the year 9000"
        )
    return instant.astimezone(UTC)
