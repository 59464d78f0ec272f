"""Scheduled fires: queue one job per fire that is due, and settle the late ones.

Every worker runs a scanner. A scan looks only at tasks whose `next_run_at`
falls before a short horizon (an indexed range query), so its cost grows with
the fires due, not with the number of tasks. Each fire is queued under a
deterministic job id, deferred to its exact time, so that several scanners
queue it once; the job then claims the fire in the fire ledger
(`apptasks.fires`), whose unique (task, fire time) key lets it run at most once
however often it was queued, and records it `skipped` while the task's previous
scheduled run goes on.

A pending fire that can no longer run as planned (no worker was running) is
settled by the scan: the latest fire that came due is caught up once if it is
at most `APPTASKS_MISFIRE_GRACE` late, and every other is recorded `missed`.

Redis holds nothing a scan cannot rebuild. Every scan queues again each fire
due before the horizon (a no-op while its job exists), so after Redis loses
its data every active schedule is armed again within one interval; and a run
recorded as queued whose job is gone is queued again by `requeue_orphans`.

Known shortcoming: at most 1,000 `missed` or `paused` rows are written for one
outage or one pause of a task; older fires past that are not in the ledger,
and the worker's log line says that some were left out.

Known shortcoming: a scheduled run still `running` past its lease no longer
keeps the next fire from starting, but nothing here ends it: it stays
`running` until something declares its worker lost.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.connections import ArqRedis
from arq.constants import job_key_prefix

from apptasks import fires, records
from apptasks.execution import RunError
from apptasks.fires import ClaimResult, Schedule
from apptasks.models import Run, Task
from apptasks.runs import SCHEDULED, RunOrder
from apptasks.settings import Settings
from workers.executor import RunExecutor

logger = logging.getLogger("apptasks.workers.scheduler")

FIRE_JOB = "fire_task"
# A queued run younger than this may simply not have reached Redis yet (the
# API records a run before it queues it).
ORPHAN_AGE = timedelta(seconds=5)
ORPHANS_PER_SCAN = 100


def fire_job_id(settings: Settings, task_id: int, fire_at: datetime) -> str:
    return f"{settings.redis_prefix}fire:{task_id}:{int(fire_at.timestamp())}"


class Scheduler:
    """Queues due fires ahead of time, as deferred jobs, on every scan."""

    def __init__(self, settings: Settings, redis: ArqRedis) -> None:
        self.settings = settings
        self.redis = redis
        # Fires are queued this far ahead, deferred to their exact time, so that
        # a worker starts them at the fire time and not at the next scan.
        self.horizon = timedelta(seconds=2 * settings.scheduler_interval)

    async def run_forever(self) -> None:
        while True:
            try:
                await self.scan(datetime.now(UTC))
                await self.requeue_orphans(datetime.now(UTC))
            except Exception:
                logger.exception("scheduler scan failed; retrying at the next interval")
            await asyncio.sleep(self.settings.scheduler_interval)

    async def scan(self, now: datetime) -> int:
        """Queue every fire due before the horizon; return how many were due."""
        due = await Task.filter(
            active=True,
            frequency__isnull=False,
            next_run_at__lte=now + self.horizon,
        ).values_list("id", "name", "next_run_at", "frequency", "timezone")

        for task_id, name, fire_at, frequency, timezone in due:
            schedule = Schedule(frequency, timezone, True, fire_at)
            if fires.runnable(schedule, fire_at, now, self.settings.misfire_grace):
                await self.queue_fire(task_id, fire_at)
            else:
                await self._catch_up(task_id, name, now)
        return len(due)

    async def queue_fire(self, task_id: int, fire_at: datetime) -> None:
        await self.redis.enqueue_job(
            FIRE_JOB,
            task_id,
            fire_at.timestamp(),
            _job_id=fire_job_id(self.settings, task_id, fire_at),
            _defer_until=fire_at,
            _queue_name=self.settings.queue_name,
        )

    async def _catch_up(self, task_id: int, name: str, now: datetime) -> None:
        settled = await fires.catch_up(task_id, now, self.settings.misfire_grace)
        if settled is None or settled.caught_up is None:
            return
        logger.info(
            "fire caught up task=%s fire_at=%s late_ms=%d",
            name,
            settled.caught_up.isoformat(),
            _milliseconds(now - settled.caught_up),
        )
        await self.queue_fire(task_id, settled.caught_up)

    async def requeue_orphans(self, now: datetime) -> int:
        """Queue again each queued run whose job Redis lost; return how many.

        A run whose job cannot be queued again (arq still keeps the result of
        a job that ended without starting it) will never start: it ends failed,
        with its one log entry, instead of staying queued for ever.
        """
        orphans = []
        for run in (
            await Run.filter(status=records.QUEUED, created_at__lt=now - ORPHAN_AGE)
            .order_by("created_at")
            .limit(ORPHANS_PER_SCAN)
        ):
            if not await self._job_exists(run):
                orphans.append(run)

        for run in orphans:
            await self._requeue(run)
        return len(orphans)

    async def _requeue(self, run: Run) -> None:
        # Imported here: workers.queue imports workers.worker, which imports
        # this module.
        from workers.queue import enqueue_run

        if run.mode == SCHEDULED and run.fire_at is not None:
            await self.queue_fire(run.task_id, run.fire_at)
        elif run.order is not None:
            await enqueue_run(
                self.redis, self.settings, RunOrder.from_message(run.order)
            )
        if await self._job_exists(run):
            logger.warning(
                "run requeued run=%s task=%s mode=%s: its job was gone",
                run.id,
                run.task_name,
                run.mode,
            )
            return
        error = RunError(
            records.WORKER_LOST,
            "the run's job was lost before it started and could not be queued again",
        )
        await records.end_without_running(run, [records.QUEUED], records.FAILED, error)
        logger.warning("run lost run=%s task=%s: job gone", run.id, run.task_name)

    async def _job_exists(self, run: Run) -> bool:
        return bool(await self.redis.exists(job_key_prefix + self._job_id(run)))

    def _job_id(self, run: Run) -> str:
        # Imported here for the same reason as in _requeue.
        from workers.queue import run_job_id

        if run.mode == SCHEDULED and run.fire_at is not None:
            return fire_job_id(self.settings, run.task_id, run.fire_at)
        return str(run_job_id(self.settings, run.id))


async def fire_task(ctx: dict[str, Any], task_id: int, fire_ts: float) -> str:
    """arq job: claim one fire of a task and run its screen's published version."""
    executor: RunExecutor = ctx["executor"]
    settings = executor.settings
    fire_at = datetime.fromtimestamp(fire_ts, UTC)
    now = datetime.now(UTC)

    task = await Task.get_or_none(id=task_id)
    if task is None:
        return "task gone"
    if task.next_run_at != fire_at:
        return await _resume(executor, task, fire_at)
    if not fires.runnable(Schedule.of(task), fire_at, now, settings.misfire_grace):
        logger.info(
            "fire left to the scanner task=%s fire_at=%s late_ms=%d",
            task.name,
            fire_at.isoformat(),
            _milliseconds(now - fire_at),
        )
        return "late"

    claim = await fires.claim(task, fire_at, now)
    if claim.result is ClaimResult.TAKEN:
        return await _resume(executor, task, fire_at)
    if claim.result is ClaimResult.SKIPPED:
        logger.info(
            "fire skipped task=%s fire_at=%s reason=%s running=%s",
            task.name,
            fire_at.isoformat(),
            fires.OVERLAP,
            claim.blocking_run,
        )
        return "skipped"
    if claim.order is None:
        return "stale"
    return await _run(executor, task, fire_at, claim.order)


async def _run(
    executor: RunExecutor, task: Task, fire_at: datetime, order: RunOrder
) -> str:
    logger.info(
        "fire ran task=%s fire_at=%s lag_ms=%d run=%s",
        task.name,
        fire_at.isoformat(),
        _milliseconds(datetime.now(UTC) - fire_at),
        order.run_id,
    )
    if order.page_version is None:
        logger.warning(
            "fire of unpublished page task=%s page=%s", task.name, task.page_id
        )
    announcement = await executor.execute(order)
    return "not started" if announcement is None else str(announcement["status"])


async def _resume(executor: RunExecutor, task: Task, fire_at: datetime) -> str:
    """Execute a fire's run that was claimed but never started (its job was lost)."""
    order = await fires.queued_run_of(task.id, fire_at)
    if order is None:
        return "stale"
    logger.info(
        "fire resumed task=%s fire_at=%s run=%s",
        task.name,
        fire_at.isoformat(),
        order.run_id,
    )
    announcement = await executor.execute(order)
    return "not started" if announcement is None else str(announcement["status"])


def _milliseconds(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)
