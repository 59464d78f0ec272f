"""Scheduled tasks fire by themselves, on their cron schedule, in real Chrome.

Each fire leaves one ledger row; an edit that moves, pauses or removes a task
stops the fire already queued for it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.graphql import Client, new_app, new_task
from tests.support.paths import screen
from tests.support.services import Service
from tests.workers.support import ledger

TASK = """
query($id: ID!) { task(id: $id) { lastRunAt nextRunAt } }
"""
LOGS = """
query($id: ID) { taskLogs(id: $id) { count logs { type data } } }
"""
FIRES = """
query($id: ID!) { task(id: $id) { fires { fireAt outcome reason runId } } }
"""


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.slow
async def test_every_minute_task_fires_by_itself_and_moves_its_run_times(
    chrome_service: Service,
) -> None:
    client = await new_app(chrome_service.url)
    task = await new_task(client, screen("hello.html"), frequency="* * * * *")
    first_fire = _instant(task["nextRunAt"])
    assert first_fire.second == 0 and first_fire.microsecond == 0
    assert (
        timedelta(0)
        < first_fire - datetime.now(first_fire.tzinfo)
        <= timedelta(seconds=60)
    )

    logs = await _wait_for_log(client, task["id"], within=70)

    entry = logs[0]
    assert entry["type"] == "app.task.completed"
    assert entry["data"]["mode"] == "scheduled"
    assert entry["data"]["result"] == {"a": 1, "b": 2}
    assert _instant(entry["data"]["scheduledFor"]) == first_fire
    assert entry["data"]["console"], "hello.html prints one console line"
    after = (await client.data(TASK, id=task["id"]))["task"]
    assert _instant(after["nextRunAt"]) == first_fire + timedelta(minutes=1)
    last_run = _instant(after["lastRunAt"])
    assert first_fire <= last_run < first_fire + timedelta(seconds=5)
    fires = (await client.data(FIRES, id=task["id"]))["task"]["fires"]
    assert fires[-1] == {
        "fireAt": task["nextRunAt"],
        "outcome": "RAN",
        "reason": None,
        "runId": entry["data"]["runId"],
    }
    fired = f"fire ran task=task fire_at={first_fire.isoformat()} lag_ms="
    assert fired in chrome_service.log("worker0")


async def test_an_on_demand_task_has_no_next_run(chrome_service: Service) -> None:
    client = await new_app(chrome_service.url)

    task = await new_task(client, screen("hello.html"))

    assert task["frequency"] is None
    assert task["nextRunAt"] is None


async def _wait_for_log(client: Client, task_id: str, within: float) -> list[dict]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        logs = (await client.data(LOGS, id=task_id))["taskLogs"]
        if logs["count"]:
            return list(logs["logs"])
        await asyncio.sleep(0.5)
    raise AssertionError(f"task {task_id} did not fire within {within} s")


@pytest.mark.slow
async def test_removing_pausing_or_moving_a_task_cancels_its_already_queued_fire(
    chrome_service: Service,
) -> None:
    client = await new_app(chrome_service.url)
    now = datetime.now(UTC)
    if now.second >= 55:
        # Too close to the fire to stop it in time: aim at the next minute.
        await _sleep_until(now.replace(second=0, microsecond=0) + timedelta(minutes=1))
    kept = await new_task(
        client, screen("hello.html"), name="kept", frequency="* * * * *"
    )
    removed = await new_task(
        client, screen("hello.html"), name="removed", frequency="* * * * *"
    )
    paused = await new_task(
        client, screen("hello.html"), name="paused", frequency="* * * * *"
    )
    moved = await new_task(
        client, screen("hello.html"), name="moved", frequency="* * * * *"
    )
    fire = _instant(kept["nextRunAt"])
    assert {_instant(task["nextRunAt"]) for task in (removed, paused, moved)} == {fire}

    # Workers queue fires up to two scans ahead: one second before the fire,
    # all three are already in the queue.
    await _sleep_until(fire - timedelta(seconds=1))
    await client.data('mutation { removeTask(name: "removed") { id } }')
    await client.data(
        'mutation { updateTask(name: "paused", input: {active: false}) { id } }'
    )
    yearly = await client.data(
        'mutation { updateTask(name: "moved", input: {frequency: "0 0 1 1 *"}) '
        "{ nextRunAt } }"
    )
    await _sleep_until(fire + timedelta(seconds=5))

    assert (await _wait_for_log(client, kept["id"], within=10))[0]["type"] == (
        "app.task.completed"
    )
    for task in (removed, paused, moved):
        logs = (await client.data(LOGS, id=task["id"]))["taskLogs"]
        assert logs["count"] == 0, f"{task['name']} fired after it was stopped"
    assert await ledger(client, kept["id"]) == [(fire, "RAN", None)]
    assert await ledger(client, paused["id"]) == [(fire, "PAUSED", "inactive")]
    assert await ledger(client, moved["id"]) == []
    next_year = _instant(yearly["updateTask"]["nextRunAt"])
    assert (next_year.month, next_year.day, next_year.hour) == (1, 1, 0)
    assert (await client.data(TASK, id=moved["id"]))["task"]["nextRunAt"] == (
        yearly["updateTask"]["nextRunAt"]
    )


async def _sleep_until(instant: datetime) -> None:
    await asyncio.sleep(
        max(0.0, (instant - datetime.now(instant.tzinfo)).total_seconds())
    )
