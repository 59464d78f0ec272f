"""What the scheduler tests share: the clock, the ledger, the database, workers."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from tests.support.graphql import Client
from tests.support.services import Service

MINUTE = timedelta(minutes=1)
LEDGER = """
query($id: ID!) {
  task(id: $id) { nextRunAt fires(limit: 200) { fireAt outcome reason runId } }
}
"""
T = TypeVar("T")


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


async def start_early_in_a_minute(latest_second: int = 40) -> None:
    """Wait for the next minute if this one is too far gone to set tasks up in."""
    now = datetime.now(UTC)
    if now.second > latest_second:
        await sleep_until(now.replace(second=1, microsecond=0) + MINUTE)


async def eventually(
    check: Callable[[], Awaitable[T | None]], within: float, what: str
) -> T:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what} did not happen within {within:g} s")


async def ledger(client: Client, task_id: str) -> list[tuple[datetime, str, Any]]:
    """A task's fires through GraphQL, oldest first: (fire time, outcome, reason)."""
    fires = (await client.data(LEDGER, id=task_id))["task"]["fires"]
    return sorted(
        (instant(fire["fireAt"]), fire["outcome"], fire["reason"]) for fire in fires
    )


def query(service: Service, sql: str, *parameters: object) -> list[tuple[Any, ...]]:
    """Rows from the service's SQLite database, read-only."""
    path = service.folder / "data" / "apptasks.sqlite3"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        return db.execute(sql, parameters).fetchall()


def scheduled_runs(service: Service, task_id: str) -> list[tuple[datetime, str, Any]]:
    """(fire time, status, started_at) of a task's scheduled runs, by fire time."""
    rows = query(
        service,
        "SELECT fire_at, status, started_at FROM runs "
        "WHERE task_id = ? AND mode = 'scheduled' ORDER BY fire_at",
        int(task_id),
    )
    return [
        (instant(fire_at), status, instant(started) if started else None)
        for fire_at, status, started in rows
    ]


def stop_worker(service: Service, name: str) -> None:
    """Stop one worker process, as an operator would (SIGTERM), and wait for it."""
    process = service.processes.pop(name)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def fire_lines(service: Service, *workers: str) -> list[str]:
    return [
        line
        for worker in workers
        for line in service.log(worker).splitlines()
        if " fire ran " in line
    ]
