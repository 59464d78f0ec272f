"""Retention: old log entries, failure bundles, runs and fires are pruned.

By age (`APPTASKS_LOG_MAX_AGE_DAYS`) and, for log entries and failure
bundles, by count per task (`APPTASKS_LOG_MAX_PER_TASK`, the newest kept).
Deletes go in small batches, each its own short statement, so that pruning a
large backlog never holds the database long enough to delay a run; runs still
queued or running are never pruned.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from tortoise.functions import Count

from apptasks.models import FailureBundle, Fire, Run, TaskLog
from apptasks.records import ACTIVE
from apptasks.settings import Settings

logger = logging.getLogger("apptasks.retention")

BATCH = 500


async def prune(settings: Settings, now: datetime | None = None) -> int:
    """Delete what is past its retention; return how many rows went."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.log_max_age_days)
    removed = 0
    removed += await _delete_in_batches(TaskLog, created_at__lt=cutoff)
    removed += await _delete_in_batches(FailureBundle, created_at__lt=cutoff)
    removed += await _delete_in_batches(Fire, fire_at__lt=cutoff)
    removed += await _delete_in_batches(
        Run, created_at__lt=cutoff, status__not_in=list(ACTIVE)
    )
    for model in (TaskLog, FailureBundle):
        removed += await _keep_newest_per_task(model, settings.log_max_per_task)
    if removed:
        logger.info("pruned rows=%d cutoff=%s", removed, cutoff.isoformat())
    return removed


async def _delete_in_batches(
    model: type[TaskLog | FailureBundle | Fire | Run], **where: object
) -> int:
    removed = 0
    while True:
        ids = await model.filter(**where).limit(BATCH).values_list("id", flat=True)
        if not ids:
            return removed
        removed += await model.filter(id__in=list(ids)).delete()


async def _keep_newest_per_task(model: type[TaskLog | FailureBundle], keep: int) -> int:
    crowded = (
        await model.filter(task_id__isnull=False)
        .annotate(entries=Count("id"))
        .group_by("task_id")
        .filter(entries__gt=keep)
        .values_list("task_id", flat=True)
    )
    removed = 0
    for task_id in crowded:
        newest = (
            await model.filter(task_id=task_id)
            .order_by("-id")
            .offset(keep)
            .limit(1)
            .values_list("id", flat=True)
        )
        if newest:
            removed += await _delete_in_batches(
                model, task_id=task_id, id__lte=newest[0]
            )
    return removed
