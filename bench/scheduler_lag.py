"""Measure scheduled-fire lag: when a fire's browser run starts, minus its fire time.

Starts a real API and one worker with the Chrome runtime (the default
`chromium-headless-shell`), creates TASKS tasks firing every minute and lets
them fire for MINUTES minutes. For every fire it reads two instants:

- the run's start, `Run.started_at`: the worker sets it as it takes the run
  (`records.start`), just before it opens the screen in the browser; the
  `run started` log line follows within a few milliseconds. This is the main
  figure;
- the handler's call in the browser: the screen returns `Date.now()`, which a
  scheduled run keeps as its result in its log entry.

Each lag is that instant minus the fire time. Cron has minute resolution, so
the fires come from real minutes; all TASKS tasks fire at the same second, and
the worker keeps TASKS browsers so that no run waits for another's browser.

Configurations, measured in one run, one after the other:

1. `app-tasks`: the defaults (queue poll 0.02 s, fires queued ahead as jobs
   deferred to their time);
2. `app-tasks+10k`: the same with IDLE_TASKS more active tasks across
   IDLE_APPS apps in the database, each firing once a year;
3. `arq-default-poll`: the baseline, arq's default queue poll of 0.5 s
   (arq's own cron would add its default 0.123 s past the second on top).

It also times the scheduler's scan in-process against both databases: one
indexed range query on `next_run_at`, whatever the number of tasks.

    .venv/bin/python bench/scheduler_lag.py [--tasks 10] [--minutes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import percentile

from apptasks import db
from apptasks.cron import next_fire_after, parse_timezone
from apptasks.models import App, Page, Task
from apptasks.settings import Settings
from tests.support.graphql import Client, new_app
from tests.support.services import RedisServer, Service

SCREEN = "<script>Fliplet.Page.onRemoteExecution(() => ({at: Date.now()}))</script>"
ZONES = ("+00", "+05:30", "-08:00", "Europe/London", "America/New_York", "Asia/Tokyo")
SCANS = 200


@dataclass(frozen=True)
class Lags:
    """Milliseconds from each fire to its run's start and to its handler's call."""

    started: list[float]
    handler: list[float]


async def add_idle_tasks(settings: Settings, tasks: int, apps: int) -> None:
    """Active tasks that fire once a year, at random times, across many apps."""
    await db.migrate(settings)
    await db.connect(settings)
    try:
        now = datetime.now(UTC)
        chance = random.Random(7)
        await App.bulk_create([App(name=f"idle{n}") for n in range(apps)])
        app_ids = await App.all().order_by("id").values_list("id", flat=True)
        await Page.bulk_create(
            [
                Page(app_id=app_id, name="idle", draft_html="<p>idle</p>")
                for app_id in app_ids
            ]
        )
        page_ids = await Page.all().order_by("id").values_list("id", flat=True)
        rows = []
        for number in range(tasks):
            frequency = (
                f"{chance.randrange(60)} {chance.randrange(24)} "
                f"{chance.randrange(1, 29)} {chance.randrange(1, 13)} *"
            )
            zone = ZONES[number % len(ZONES)]
            rows.append(
                Task(
                    app_id=app_ids[number % apps],
                    page_id=page_ids[number % apps],
                    name=f"idle{number}",
                    frequency=frequency,
                    timezone=zone,
                    next_run_at=next_fire_after(frequency, parse_timezone(zone), now),
                )
            )
        await Task.bulk_create(rows, batch_size=500)
    finally:
        await db.close()


async def create_measured_tasks(service: Service, tasks: int) -> None:
    client: Client = await new_app(service.url, name="lag")
    page = await client.data(
        'mutation($html: String!) { createPage(input: {name: "lag", html: $html}) '
        "{ id } }",
        html=SCREEN,
    )
    page_id = page["createPage"]["id"]
    await client.data("mutation($id: ID!) { publishPage(id: $id) { id } }", id=page_id)
    for number in range(tasks):
        await client.data(
            "mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }",
            input={"name": f"lag{number}", "pageId": page_id, "frequency": "* * * * *"},
        )
    # Warm every browser once, all at the same time, before the first fire.
    await asyncio.gather(
        *(
            client.data(f'mutation {{ runTaskWithResult(name: "lag{number}") }}')
            for number in range(tasks)
        )
    )


def read_lags(service: Service, first: datetime, last: datetime) -> Lags:
    path = service.folder / "data" / "apptasks.sqlite3"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as database:
        runs = database.execute(
            "SELECT runs.fire_at, runs.started_at, task_logs.data FROM runs "
            "JOIN task_logs ON task_logs.id = runs.log_id "
            "WHERE runs.mode = 'scheduled' AND runs.status = 'completed'"
        ).fetchall()
    started, handler = [], []
    for fire_text, started_text, data in runs:
        fire_at = datetime.fromisoformat(fire_text)
        if not first <= fire_at <= last:
            continue
        started_at = datetime.fromisoformat(started_text)
        started.append((started_at - fire_at).total_seconds() * 1000)
        handler.append(json.loads(data)["result"]["at"] - fire_at.timestamp() * 1000)
    return Lags(started, handler)


def measure(
    label: str,
    folder: Path,
    redis: str,
    options: argparse.Namespace,
    queue_poll: str,
    idle: bool,
) -> Lags:
    service = Service(
        folder / label,
        redis,
        extra_env={
            "APPTASKS_QUEUE_POLL": queue_poll,
            "APPTASKS_BROWSERS": str(options.tasks),
            "APPTASKS_MAX_TASKS_PER_APP": str(options.tasks),
        },
    )
    service.folder.mkdir()
    if idle:
        settings = Settings(data_dir=service.folder / "data")
        asyncio.run(add_idle_tasks(settings, options.idle_tasks, options.idle_apps))
    service.start()
    load_before = os.getloadavg()[0]
    try:
        asyncio.run(create_measured_tasks(service, options.tasks))
        now = datetime.now(UTC)
        first = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        last = first + timedelta(minutes=options.minutes - 1)
        time.sleep((last - now).total_seconds() + 15)
    finally:
        service.stop()
    lags = read_lags(service, first, last)
    report(label, queue_poll, lags, options, load_before, os.getloadavg()[0])
    return lags


def report(
    label: str,
    queue_poll: str,
    lags: Lags,
    options: argparse.Namespace,
    load_before: float,
    load_after: float,
) -> None:
    expected = options.tasks * options.minutes
    sys.stdout.write(
        f"{label:18} poll={queue_poll:>5}s  run start median "
        f"{statistics.median(lags.started):6.1f} ms  p99 "
        f"{percentile(lags.started, 0.99):6.1f} ms  |  handler median "
        f"{statistics.median(lags.handler):6.1f} ms  p99 "
        f"{percentile(lags.handler, 0.99):6.1f} ms  (n={len(lags.started)}/{expected}, "
        f"load {load_before:.1f}->{load_after:.1f})\n"
    )
    sys.stdout.flush()


async def time_scans(folder: Path, redis: str) -> dict[str, float]:
    """Median milliseconds of one scan against each database the run made."""
    from arq import create_pool
    from arq.connections import RedisSettings

    from workers.scheduler import Scheduler

    medians = {}
    for label in ("app-tasks", "app-tasks+10k"):
        settings = Settings(data_dir=folder / label / "data", redis_url=redis)
        await db.connect(settings)
        pool = await create_pool(RedisSettings.from_dsn(redis))
        scheduler = Scheduler(settings, pool)
        timings = []
        try:
            for _ in range(SCANS):
                started = time.perf_counter()
                await scheduler.scan(datetime.now(UTC))
                timings.append((time.perf_counter() - started) * 1000)
            medians[f"{label} ({await Task.all().count()} tasks)"] = statistics.median(
                timings
            )
        finally:
            await pool.aclose()
            await db.close()
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--minutes", type=int, default=3)
    parser.add_argument("--idle-tasks", type=int, default=10_000)
    parser.add_argument("--idle-apps", type=int, default=2_000)
    options = parser.parse_args()
    # The in-process scans settle the stopped services' overdue fires; their
    # warnings are expected here.
    logging.getLogger("apptasks").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="bench-") as name:
        folder = Path(name)
        redis = RedisServer(folder)
        try:
            ours = measure("app-tasks", folder, redis.url, options, "0.02", False)
            measure("app-tasks+10k", folder, redis.url, options, "0.02", True)
            baseline = measure(
                "arq-default-poll", folder, redis.url, options, "0.5", False
            )
            for label, median in asyncio.run(time_scans(folder, redis.url)).items():
                sys.stdout.write(f"scan of {label}: median {median:.2f} ms\n")
        finally:
            redis.stop()
    ratio = statistics.median(baseline.started) / statistics.median(ours.started)
    sys.stdout.write(f"baseline median / ours median (run start) = {ratio:.1f}x\n")


if __name__ == "__main__":
    main()
