"""After an outage a schedule catches up once; a paused one records its pause.

The worker is stopped with a fire already queued in Redis and restarted a
minute and a half later: the overdue job must not run, the older fires are
`missed`, the latest one (within the grace) runs once, and the fires after it
run on time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.support.graphql import Client, new_app, new_task
from tests.support.services import Service
from tests.workers.support import (
    MINUTE,
    eventually,
    instant,
    ledger,
    scheduled_runs,
    sleep_until,
    start_early_in_a_minute,
    stop_worker,
)

HELLO = "<script>Fliplet.Page.onRemoteExecution(() => 'hi')</script>"
GRACE = 50
UPDATE = """
mutation($id: ID!, $active: Boolean!) {
  updateTask(id: $id, input: {active: $active}) { nextRunAt }
}
"""


@pytest.fixture
def service(make_service: Any) -> Service:
    started: Service = make_service(
        runtime="stub", extra_env={"APPTASKS_MISFIRE_GRACE": str(GRACE)}
    ).start()
    return started


async def _set_active(client: Client, task: dict[str, Any], active: bool) -> Any:
    data = await client.data(UPDATE, id=task["id"], active=active)
    return data["updateTask"]["nextRunAt"]


@pytest.mark.slow
@pytest.mark.timeout(330)
async def test_after_an_outage_the_latest_fire_runs_once_and_older_ones_are_missed(
    service: Service,
) -> None:
    client = await new_app(service.url)
    await start_early_in_a_minute(45)
    every = await new_task(client, HELLO, name="every", frequency="* * * * *")
    first = instant(every["nextRunAt"])
    hourly = await new_task(
        client, HELLO, name="hourly", frequency=f"{first.minute} * * * *"
    )
    paused = await new_task(client, HELLO, name="paused", frequency="* * * * *")
    bounced = await new_task(client, HELLO, name="bounced", frequency="* * * * *")
    await _set_active(client, paused, False)
    await _set_active(client, bounced, False)
    await _set_active(client, bounced, True)
    second, third = first + MINUTE, first + 2 * MINUTE

    # The worker goes down with the first fire already queued in Redis.
    redis = Redis.from_url(service.redis_url)
    prefix = service._env["APPTASKS_REDIS_PREFIX"]
    queued = f"arq:job:{prefix}fire:{every['id']}:{int(first.timestamp())}"
    await sleep_until(first - timedelta(seconds=1.9))
    await eventually(lambda: redis.exists(queued), 1.5, "queueing the first fire")
    stop_worker(service, "worker0")
    assert datetime.now(UTC) < first, "the worker stopped too late for this test"

    await sleep_until(second + timedelta(seconds=20))
    assert await redis.exists(queued), "the overdue job waits for a worker"
    assert await _set_active(client, paused, True) == third.isoformat()
    service.start_worker("worker1")

    async def caught_up() -> bool:
        return len(await ledger(client, every["id"])) == 2

    await eventually(caught_up, 20, "the catch-up")
    assert await ledger(client, every["id"]) == [
        (first, "MISSED", "late"),
        (second, "RAN", None),
    ]
    assert await ledger(client, bounced["id"]) == [
        (first, "MISSED", "late"),
        (second, "RAN", None),
    ]
    assert await ledger(client, hourly["id"]) == [(first, "MISSED", "late")]
    assert await ledger(client, paused["id"]) == [
        (first, "PAUSED", "inactive"),
        (second, "PAUSED", "inactive"),
    ]
    hourly_next = (await client.data(_NEXT, id=hourly["id"]))["task"]["nextRunAt"]
    assert instant(hourly_next) == first + timedelta(hours=1)

    await sleep_until(third + timedelta(seconds=5))
    for task in (every, bounced):
        assert [
            (fire_at, status)
            for fire_at, status, _ in scheduled_runs(service, task["id"])
        ] == [(second, "completed"), (third, "completed")], task["name"]
        assert (await ledger(client, task["id"]))[-1] == (third, "RAN", None)
    assert (await ledger(client, paused["id"]))[-1] == (third, "RAN", None)
    log = service.log("worker1")
    assert f"fire caught up task=every fire_at={second.isoformat()}" in log
    assert "fires missed task=every count=1" in log
    assert "fires missed task=hourly count=1" in log
    assert f"fire ran task=every fire_at={first.isoformat()}" not in log
    await redis.aclose()


_NEXT = "query($id: ID!) { task(id: $id) { nextRunAt } }"
