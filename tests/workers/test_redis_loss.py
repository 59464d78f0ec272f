"""Redis may lose its data: schedules are armed again from the database, and
queued runs whose jobs were lost are queued again.

Each test has a Redis of its own, since it flushes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from apptasks import db, records
from apptasks.models import Fire, Page, Task
from apptasks.runs import scheduled_order
from apptasks.settings import Settings
from tests.support.graphql import new_app, new_task
from tests.support.services import RedisServer, Service
from tests.workers.support import (
    MINUTE,
    eventually,
    instant,
    ledger,
    query,
    scheduled_runs,
    sleep_until,
    start_early_in_a_minute,
    stop_worker,
)

HELLO = "<script>Fliplet.Page.onRemoteExecution(() => 'hi')</script>"
RUN = 'mutation { runTask(name: "ondemand") { runId } }'


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    redis = RedisServer(tmp_path)
    folder = tmp_path / "service"
    folder.mkdir()
    started = Service(folder, redis.url, runtime="stub").start()
    yield started
    started.stop()
    redis.stop()


@pytest.mark.slow
async def test_after_redis_is_flushed_the_next_fire_still_runs_on_time(
    service: Service,
) -> None:
    client = await new_app(service.url)
    await start_early_in_a_minute(50)
    task = await new_task(client, HELLO, name="every", frequency="* * * * *")
    fire = instant(task["nextRunAt"])
    redis = Redis.from_url(service.redis_url)
    prefix = service._env["APPTASKS_REDIS_PREFIX"]
    queued = f"arq:job:{prefix}fire:{task['id']}:{int(fire.timestamp())}"

    await sleep_until(fire - timedelta(seconds=1.6))
    await eventually(lambda: redis.exists(queued), 1.0, "queueing the fire")
    await redis.flushall()
    assert not await redis.exists(queued)

    await sleep_until(fire + timedelta(seconds=3))
    runs = scheduled_runs(service, task["id"])
    assert [(fire_at, status) for fire_at, status, _ in runs] == [(fire, "completed")]
    started = runs[0][2]
    assert started is not None and started - fire < timedelta(seconds=1), started
    assert await ledger(client, task["id"]) == [(fire, "RAN", None)]
    await redis.aclose()


@pytest.mark.slow
async def test_queued_runs_whose_jobs_were_lost_are_queued_again_and_run_once(
    service: Service,
) -> None:
    client = await new_app(service.url)
    await new_task(client, HELLO, name="ondemand")
    yearly = await new_task(client, HELLO, name="yearly", frequency="0 0 1 1 *")
    stop_worker(service, "worker0")

    on_demand = (await client.data(RUN))["runTask"]["runId"]
    fire = datetime.now(UTC).replace(second=0, microsecond=0) - 10 * MINUTE
    scheduled = await _claimed_but_never_started(service, int(yearly["id"]), fire)
    redis = Redis.from_url(service.redis_url)
    await redis.flushall()
    await redis.aclose()
    service.start_worker("worker1")

    async def both_completed() -> bool:
        rows = query(
            service,
            "SELECT status FROM runs WHERE id IN (?, ?)",
            on_demand,
            scheduled,
        )
        return [status for (status,) in rows] == ["completed"] * 2

    await eventually(both_completed, 30, "the lost runs running")
    log = service.log("worker1")
    for run_id in (on_demand, scheduled):
        assert f"run requeued run={run_id}" in log
        assert log.count(f"run completed run={run_id}") == 1
        entries = query(
            service,
            "SELECT COUNT(*) FROM task_logs WHERE json_extract(data, '$.runId') = ?",
            run_id,
        )
        assert entries == [(1,)]
    assert f"fire resumed task=yearly fire_at={fire.isoformat()}" in log
    assert await ledger(client, yearly["id"]) == [(fire, "RAN", None)]
    await asyncio.sleep(2)
    assert log.count("run requeued") == service.log("worker1").count("run requeued")


async def _claimed_but_never_started(
    service: Service, task_id: int, fire: datetime
) -> str:
    """What a worker that died between claiming a fire and starting its run
    leaves: the fire's ledger row and its run, queued."""
    await db.connect(Settings(data_dir=service.folder / "data"))
    try:
        task = await Task.get(id=task_id)
        page = await Page.get(id=task.page_id)
        order = scheduled_order(task, fire, page.live_version)
        await records.accept(order)
        await Fire.create(
            app_id=task.app_id,
            task_id=task.id,
            fire_at=fire,
            outcome="ran",
            run_id=order.run_id,
        )
    finally:
        await db.close()
    return order.run_id
