"""Scheduled fires: find the tasks that are due and queue one job per fire.

Every worker runs a scanner. A scan looks only at tasks whose `next_run_at`
falls before a short horizon (an indexed range query), so its cost grows with
the fires due, not with the number of tasks. Each fire is queued under a
deterministic job id, so that several scanners queue it once; the fire job then
claims it in the database with a compare-and-set on `next_run_at`, so that it
runs once even if it was queued twice.

Known shortcoming: a fire missed by more than the grace period is skipped with
a warning in the worker's log only; there is no fire ledger to read it from,
and a scheduled fire may start while the same task's previous run goes on.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.connections import ArqRedis

from apptasks import records
from apptasks.models import Page, Task
from apptasks.runs import scheduled_order
from apptasks.settings import Settings
from apptasks.tasks import next_run
from workers.executor import RunExecutor

logger = logging.getLogger("apptasks.workers.scheduler")

FIRE_JOB = "fire_task"


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
            except Exception:
                logger.exception("scheduler scan failed; retrying at the next interval")
            await asyncio.sleep(self.settings.scheduler_interval)

    async def scan(self, now: datetime) -> int:
        """Queue every fire due before the horizon; return how many were due."""
        due = await Task.filter(
            active=True, next_run_at__lte=now + self.horizon
        ).values_list("id", "next_run_at")

        for task_id, fire_at in due:
            late = (now - fire_at).total_seconds()
            if late > self.settings.misfire_grace:
                await self._skip_missed(task_id, fire_at, now)
                continue
            await self.redis.enqueue_job(
                FIRE_JOB,
                task_id,
                fire_at.timestamp(),
                _job_id=fire_job_id(self.settings, task_id, fire_at),
                _defer_until=fire_at,
                _queue_name=self.settings.queue_name,
            )
        return len(due)

    async def _skip_missed(
        self, task_id: int, fire_at: datetime, now: datetime
    ) -> None:
        task = await Task.get_or_none(id=task_id)
        if task is None:
            return
        following = next_run(task, now)
        claimed = await Task.filter(id=task_id, next_run_at=fire_at).update(
            next_run_at=following
        )
        if claimed:
            logger.warning(
                "fire missed task=%s fire_at=%s late_s=%.0f next=%s",
                task.name,
                fire_at.isoformat(),
                (now - fire_at).total_seconds(),
                following.isoformat() if following else None,
            )


async def fire_task(ctx: dict[str, Any], task_id: int, fire_ts: float) -> str:
    """arq job: claim one fire of a task and run its screen's published version."""
    executor: RunExecutor = ctx["executor"]
    fire_at = datetime.fromtimestamp(fire_ts, UTC)

    task = await Task.get_or_none(id=task_id)
    if task is None or task.next_run_at != fire_at:
        return "stale"
    following = next_run(task, max(fire_at, datetime.now(UTC)))
    claimed = await Task.filter(id=task_id, next_run_at=fire_at).update(
        next_run_at=following
    )
    if not claimed:
        return "claimed elsewhere"

    page = await Page.get(id=task.page_id)
    order = scheduled_order(task, fire_at, page.live_version)
    if page.live_version is None:
        logger.warning("fire of unpublished page task=%s page=%s", task.name, page.id)
    await records.accept(order)
    announcement = await executor.execute(order)
    return "not started" if announcement is None else str(announcement["status"])
