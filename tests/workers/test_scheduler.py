"""Scheduled tasks fire by themselves, on their cron schedule, in real Chrome."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.graphql import Client, new_app, new_task
from tests.support.paths import screen
from tests.support.services import Service

TASK = """
query($id: ID!) { task(id: $id) { lastRunAt nextRunAt } }
"""
LOGS = """
query($id: ID) { taskLogs(id: $id) { count logs { type data } } }
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
async def test_removing_or_pausing_a_task_cancels_its_already_queued_fire(
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
    fire = _instant(kept["nextRunAt"])
    assert _instant(removed["nextRunAt"]) == fire == _instant(paused["nextRunAt"])

    # Workers queue fires up to two scans ahead: one second before the fire,
    # all three are already in the queue.
    await _sleep_until(fire - timedelta(seconds=1))
    await client.data('mutation { removeTask(name: "removed") { id } }')
    await client.data(
        'mutation { updateTask(name: "paused", input: {active: false}) { id } }'
    )
    await _sleep_until(fire + timedelta(seconds=5))

    assert (await _wait_for_log(client, kept["id"], within=10))[0]["type"] == (
        "app.task.completed"
    )
    for task in (removed, paused):
        logs = (await client.data(LOGS, id=task["id"]))["taskLogs"]
        assert logs["count"] == 0, f"{task['name']} fired after it was stopped"


async def _sleep_until(instant: datetime) -> None:
    await asyncio.sleep(
        max(0.0, (instant - datetime.now(instant.tzinfo)).total_seconds())
    )
