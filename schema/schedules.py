"""Schedules: preview a frequency's next fires, and read a task's fire ledger.

`previewSchedule` answers for a frequency and timezone not saved yet, and
refuses them exactly as createTask would; a task's own `upcomingRuns` and
`fires` fields are resolved here and attached to the Task type.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry

from apptasks import fires, tasks
from apptasks.cron import DstChange
from apptasks.cron import Fire as CronFire
from apptasks.fires import Schedule
from apptasks.models import Fire as FireModel
from schema.context import Info


@strawberry.enum(name="DstChange", description="How a clock change altered a fire.")
class DstChangeEnum(Enum):
    MOVED = strawberry.enum_value(
        DstChange.MOVED.value,
        description="Its time was skipped as clocks went forward; it runs just "
        "after the gap.",
    )
    DOUBLED = strawberry.enum_value(
        DstChange.DOUBLED.value,
        description="Its time happens twice as clocks go back; it runs in both.",
    )
    FIRST_PASS_ONLY = strawberry.enum_value(
        DstChange.FIRST_PASS_ONLY.value,
        description="Its time happens twice as clocks go back; it runs in the "
        "first only.",
    )


@strawberry.enum(description="What came of a fire the schedule named.")
class FireOutcome(Enum):
    RAN = strawberry.enum_value(fires.RAN, description="It started run `runId`.")
    SKIPPED = strawberry.enum_value(
        fires.SKIPPED,
        description="It started nothing: the previous scheduled run still went on.",
    )
    MISSED = strawberry.enum_value(
        fires.MISSED,
        description="Nothing ran it in time (no worker was running, or a later "
        "fire was already due).",
    )
    PAUSED = strawberry.enum_value(
        fires.PAUSED, description="The task was inactive when it came due."
    )


@strawberry.type(description="A fire a schedule will make, as a preview.")
class ScheduledFire:
    at: datetime = strawberry.field(description="The instant it fires, in UTC.")
    local: datetime = strawberry.field(
        description="The same instant as a wall time in the schedule's zone, with "
        "that zone's offset."
    )
    dst_change: DstChangeEnum | None = strawberry.field(
        description="Set when a clock change moved or doubled this fire."
    )
    dst_note: str | None = strawberry.field(
        description="What the clock change did to it, in words."
    )

    @classmethod
    def from_fire(cls, fire: CronFire) -> ScheduledFire:
        return cls(
            at=fire.at_utc,
            local=fire.local,
            dst_change=None
            if fire.dst_change is None
            else DstChangeEnum(fire.dst_change.value),
            dst_note=fire.dst_note,
        )


@strawberry.type(name="Fire", description="One expected fire and what came of it.")
class FireRecord:
    fire_at: datetime = strawberry.field(description="When it was due, in UTC.")
    outcome: FireOutcome = strawberry.field(description="What came of it.")
    reason: str | None = strawberry.field(
        description="Why it started nothing: overlap, late or inactive."
    )
    run_id: str | None = strawberry.field(
        description="The run it started (outcome RAN)."
    )
    recorded_at: datetime = strawberry.field(description="When it was written.")

    @classmethod
    def from_model(cls, fire: FireModel) -> FireRecord:
        return cls(
            fire_at=fire.fire_at,
            outcome=FireOutcome(fire.outcome),
            reason=fire.reason,
            run_id=fire.run_id,
            recorded_at=fire.recorded_at,
        )


CountArgument = Annotated[
    int, strawberry.argument(description="How many fires, 0 to 100 (10).")
]
AfterArgument = Annotated[
    datetime | None,
    strawberry.argument(
        description="Fires strictly after this instant, with its offset (now)."
    ),
]
LimitArgument = Annotated[
    int, strawberry.argument(description="At most this many, 1 to 200 (20).")
]
LedgerAfterArgument = Annotated[
    datetime | None,
    strawberry.argument(description="Only fires due strictly after this instant."),
]
LedgerBeforeArgument = Annotated[
    datetime | None,
    strawberry.argument(description="Only fires due strictly before this instant."),
]


def upcoming_runs(
    schedule: Schedule, count: int, after: datetime | None
) -> list[ScheduledFire]:
    """A task's upcomingRuns: its schedule's next fires; none when it will not fire."""
    previews = tasks.upcoming_runs(schedule, count, after)
    return [ScheduledFire.from_fire(fire) for fire in previews]


async def ledger(
    info: Info,
    task_id: int,
    limit: int,
    after: datetime | None,
    before: datetime | None,
) -> list[FireRecord]:
    """A task's `fires` field: its ledger as seen by the calling app."""
    app_id = await info.context.app_id()
    rows = await fires.list_fires(app_id, task_id, limit, after, before)
    return [FireRecord.from_model(row) for row in rows]


@strawberry.type
class ScheduleQuery:
    @strawberry.field(
        description="The next fires of a frequency and timezone not saved yet; an "
        "invalid one is refused as createTask refuses it."
    )
    async def preview_schedule(
        self,
        info: Info,
        frequency: Annotated[
            str, strawberry.argument(description="A 5-field cron expression.")
        ],
        timezone: Annotated[
            str,
            strawberry.argument(
                description="Offset (+00, +0530, -08:00) or IANA name."
            ),
        ] = "+00",
        count: CountArgument = 10,
        after: AfterArgument = None,
    ) -> list[ScheduledFire]:
        await info.context.app_id()
        previews = tasks.preview_schedule(frequency, timezone, count, after)
        return [ScheduledFire.from_fire(fire) for fire in previews]
