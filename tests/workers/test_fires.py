"""The fire ledger against a real SQLite database: claims, overlaps, misfires, pauses.

These call `apptasks.fires` in-process with instants chosen by the test, so that
outages of days and fires years ahead take no waiting; the scheduler tests run
the same code in real workers, on the clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from apptasks import db, fires, records
from apptasks.apps import create_app
from apptasks.fires import ClaimResult, Schedule
from apptasks.models import Fire, Run, Task
from apptasks.pages import create_page, publish_page
from apptasks.settings import Settings

FIRE = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[None]:
    settings = Settings(data_dir=tmp_path)
    await db.migrate(settings)
    await db.connect(settings)
    yield
    await db.close()


async def _task(
    frequency: str = "* * * * *", next_run_at: datetime = FIRE, **fields: object
) -> Task:
    app, _ = await create_app("ledger")
    page = await create_page(app.id, "screen", "<p>hi</p>")
    await publish_page(app.id, page.id)
    return await Task.create(
        app_id=app.id,
        page_id=page.id,
        name="ledger",
        frequency=frequency,
        next_run_at=next_run_at,
        **fields,
    )


async def _ledger(task: Task) -> list[tuple[datetime, str, str | None]]:
    rows = await Fire.filter(task_id=task.id).order_by("fire_at")
    return [(row.fire_at, row.outcome, row.reason) for row in rows]


async def test_a_fire_claimed_by_many_at_once_runs_once(database: None) -> None:
    task = await _task()

    claims = await asyncio.gather(*(fires.claim(task, FIRE, FIRE) for _ in range(5)))

    results = sorted(claim.result for claim in claims)
    assert results == [ClaimResult.RAN] + [ClaimResult.TAKEN] * 4
    ran = next(claim for claim in claims if claim.result is ClaimResult.RAN)
    assert ran.order is not None
    assert await _ledger(task) == [(FIRE, fires.RAN, None)]
    assert (await Fire.get(task_id=task.id)).run_id == ran.order.run_id
    assert await Run.filter(task_id=task.id).values_list("id", "status") == [
        (ran.order.run_id, records.QUEUED)
    ]
    assert (await Task.get(id=task.id)).next_run_at == FIRE + MINUTE


async def test_a_fire_the_task_no_longer_waits_for_is_stale(database: None) -> None:
    task = await _task(next_run_at=FIRE + MINUTE)

    claim = await fires.claim(task, FIRE, FIRE)

    assert claim.result is ClaimResult.STALE
    assert await _ledger(task) == []
    assert await Run.filter(task_id=task.id).count() == 0


async def test_a_fire_is_skipped_while_the_previous_scheduled_run_goes_on(
    database: None,
) -> None:
    task = await _task()
    first = await fires.claim(task, FIRE, FIRE)
    assert first.order is not None
    await Run.filter(id=first.order.run_id).update(
        status=records.RUNNING, lease_until=FIRE + 2 * MINUTE
    )

    second = await fires.claim(await Task.get(id=task.id), FIRE + MINUTE, FIRE + MINUTE)

    assert second.result is ClaimResult.SKIPPED
    assert second.blocking_run == first.order.run_id
    assert await _ledger(task) == [
        (FIRE, fires.RAN, None),
        (FIRE + MINUTE, fires.SKIPPED, fires.OVERLAP),
    ]
    assert await Run.filter(task_id=task.id).count() == 1
    assert (await Task.get(id=task.id)).next_run_at == FIRE + 2 * MINUTE


async def test_a_run_past_its_lease_or_on_demand_does_not_hold_back_a_fire(
    database: None,
) -> None:
    task = await _task()
    first = await fires.claim(task, FIRE, FIRE)
    assert first.order is not None
    # Its worker died: the lease ran out a minute ago.
    await Run.filter(id=first.order.run_id).update(
        status=records.RUNNING, lease_until=FIRE
    )
    await Run.create(
        id="ondemand",
        app_id=task.app_id,
        task_id=task.id,
        task_name=task.name,
        mode="on-demand",
        status=records.RUNNING,
        environment="live",
        lease_until=FIRE + 10 * MINUTE,
    )

    later = FIRE + 2 * MINUTE
    await Task.filter(id=task.id).update(next_run_at=later)
    claim = await fires.claim(await Task.get(id=task.id), later, later)

    assert claim.result is ClaimResult.RAN


@pytest.mark.parametrize(
    ("late", "missed", "caught_up"),
    [
        # Down 5 min 20 s: 12:00..12:04 missed, 12:05 (20 s late) runs once.
        (timedelta(minutes=5, seconds=20), 5, FIRE + 5 * MINUTE),
        # Down 30 s: the one fire is within the grace and runs.
        (timedelta(seconds=30), 0, FIRE),
    ],
)
async def test_after_an_outage_only_the_latest_fire_within_the_grace_runs(
    database: None, late: timedelta, missed: int, caught_up: datetime
) -> None:
    task = await _task()

    settled = await fires.catch_up(task.id, FIRE + late, grace=60)

    assert settled is not None
    assert settled.missed == missed and not settled.left_out
    assert settled.caught_up == caught_up
    assert (await Task.get(id=task.id)).next_run_at == caught_up
    ledger = await _ledger(task)
    assert ledger == [
        (FIRE + n * MINUTE, fires.MISSED, fires.LATE) for n in range(missed)
    ]


async def test_after_an_outage_fires_past_the_grace_are_all_missed(
    database: None,
) -> None:
    task = await _task("0 * * * *")
    now = FIRE + timedelta(hours=3, minutes=30)

    settled = await fires.catch_up(task.id, now, grace=60)

    assert settled is not None and settled.caught_up is None
    assert settled.next_run_at == FIRE + timedelta(hours=4)
    assert [fire_at for fire_at, _, _ in await _ledger(task)] == [
        FIRE + timedelta(hours=hours) for hours in range(4)
    ]
    assert (await Task.get(id=task.id)).next_run_at == FIRE + timedelta(hours=4)


async def test_a_long_outage_writes_at_most_a_thousand_rows_and_says_so(
    database: None, caplog: pytest.LogCaptureFixture
) -> None:
    task = await _task()
    now = FIRE + timedelta(days=3, seconds=10)
    caplog.set_level(logging.WARNING, logger="apptasks.fires")

    settled = await fires.catch_up(task.id, now, grace=60)

    assert settled is not None
    assert settled.missed == fires.MAX_RECORDED == 1000
    assert settled.left_out
    assert settled.caught_up == FIRE + timedelta(days=3)
    assert await Fire.filter(task_id=task.id).count() == 1000
    assert "fires missed task=ledger count=1000" in caplog.text
    assert "left_out=yes" in caplog.text


async def test_a_second_catch_up_of_the_same_outage_does_nothing(
    database: None,
) -> None:
    task = await _task()
    now = FIRE + timedelta(minutes=3, seconds=10)

    first, second = await asyncio.gather(
        fires.catch_up(task.id, now, grace=60), fires.catch_up(task.id, now, grace=60)
    )

    assert [first is None, second is None].count(True) == 1
    assert await Fire.filter(task_id=task.id).count() == 3


async def test_a_pause_records_the_cancelled_fire_and_a_resume_the_rest(
    database: None,
) -> None:
    task = await _task()
    before = Schedule.of(task)
    task.active, task.next_run_at = False, None
    await task.save()
    await fires.record_schedule_change(task, before, FIRE - timedelta(seconds=20))

    paused = Schedule.of(task)
    task.active, task.next_run_at = True, FIRE + 3 * MINUTE
    await task.save()
    await fires.record_schedule_change(
        task, paused, FIRE + timedelta(minutes=2, seconds=5)
    )

    assert await _ledger(task) == [
        (FIRE + n * MINUTE, fires.PAUSED, fires.INACTIVE) for n in range(3)
    ]


async def test_a_resume_before_the_cancelled_fire_lets_it_run(database: None) -> None:
    task = await _task()
    before = Schedule.of(task)
    task.active, task.next_run_at = False, None
    await task.save()
    await fires.record_schedule_change(task, before, FIRE - timedelta(seconds=20))
    assert await _ledger(task) == [(FIRE, fires.PAUSED, fires.INACTIVE)]

    paused = Schedule.of(task)
    task.active, task.next_run_at = True, FIRE
    await task.save()
    await fires.record_schedule_change(task, paused, FIRE - timedelta(seconds=10))

    assert await _ledger(task) == []
    claim = await fires.claim(await Task.get(id=task.id), FIRE, FIRE)
    assert claim.result is ClaimResult.RAN


async def test_the_ledger_reads_newest_first_within_bounds_and_per_app(
    database: None,
) -> None:
    task = await _task()
    await fires.catch_up(task.id, FIRE + timedelta(minutes=9, seconds=5), grace=1)

    rows = await fires.list_fires(
        task.app_id, task.id, limit=3, before=FIRE + 8 * MINUTE
    )
    assert [row.fire_at for row in rows] == [FIRE + n * MINUTE for n in (7, 6, 5)]
    rows = await fires.list_fires(task.app_id, task.id, after=FIRE + 7 * MINUTE)
    assert [row.fire_at for row in rows] == [FIRE + n * MINUTE for n in (9, 8)]
    assert await fires.list_fires(task.app_id + 1, task.id) == []
