"""Task logs: one entry per run, `app.task.completed` or `app.task.failed`."""

from __future__ import annotations

from typing import Any

from tortoise.transactions import in_transaction

from apptasks.errors import BadInput, NotFound, check_known, check_page_limit
from apptasks.execution import RunOutcome
from apptasks.models import FailureBundle, TaskLog
from apptasks.runs import SCHEDULED, RunOrder

COMPLETED = "app.task.completed"
FAILED = "app.task.failed"
LOG_TYPES = (COMPLETED, FAILED)
MAX_BUNDLE_HTML = 256 * 1024
DEFAULT_LIMIT = 50
MAX_LIMIT = 500


async def record_run(order: RunOrder, outcome: RunOutcome, duration_ms: int) -> TaskLog:
    """Write the run's log entry; scheduled runs keep the result, on-demand ones not."""
    data: dict[str, Any] = {
        "mode": order.mode,
        "duration": duration_ms,
        "pageId": order.page_id,
        "pageVersion": order.page_version,
        "environment": order.environment,
        "taskId": order.task_id,
        "taskName": order.task_name,
        "runId": order.run_id,
        "browser": outcome.browser,
        "browserVersion": outcome.browser_version,
        "browserTime": outcome.browser_ms,
        "console": outcome.console,
    }
    if order.mode == SCHEDULED:
        data["scheduledFor"] = order.fire_at
        if outcome.ok:
            data["result"] = outcome.result
    # A bundle only when the page showed something: a run cancelled before its
    # browser answered, or whose browser was killed silent, has nothing to keep.
    keeps_bundle = outcome.error is not None and (
        outcome.bundle is not None or bool(outcome.console)
    )
    if outcome.error is not None:
        data.update(outcome.error.as_log_data())
        data["bundle"] = keeps_bundle

    async with in_transaction():
        if keeps_bundle:
            await _keep_bundle(order, outcome)
        return await TaskLog.create(
            app_id=order.app_id,
            task_id=order.task_id,
            type=COMPLETED if outcome.ok else FAILED,
            data=data,
        )


async def _keep_bundle(order: RunOrder, outcome: RunOutcome) -> None:
    bundle = outcome.bundle
    html = bundle.html if bundle is not None else None
    if html is not None and len(html) > MAX_BUNDLE_HTML:
        html = html[:MAX_BUNDLE_HTML] + "\n<!-- cut at 256 KiB by App Tasks -->"
    await FailureBundle.create(
        app_id=order.app_id,
        task_id=order.task_id,
        run_id=order.run_id,
        screenshot_png=bundle.screenshot_png if bundle is not None else None,
        html=html,
        console=outcome.console,
    )


async def find_bundle(app_id: int, run_id: str) -> FailureBundle:
    bundle = await FailureBundle.get_or_none(app_id=app_id, run_id=run_id)
    if bundle is None:
        raise NotFound(f"run {run_id!r}: no failure bundle for such a run in this app")
    return bundle


async def list_logs(
    app_id: int,
    task_id: int | None = None,
    limit: int | None = None,
    offset: int = 0,
    log_type: str | None = None,
) -> tuple[int, list[TaskLog]]:
    """(count of matching entries, one page of them newest first)."""
    limit = check_page_limit(limit, DEFAULT_LIMIT, MAX_LIMIT)
    if offset < 0:
        raise BadInput(f"offset {offset}: must not be negative")
    if log_type is not None:
        check_log_type(log_type)

    query = TaskLog.filter(app_id=app_id)
    if task_id is not None:
        query = query.filter(task_id=task_id)
    if log_type is not None:
        query = query.filter(type=log_type)

    count = await query.count()
    logs = await query.order_by("-id").offset(offset).limit(limit)
    return count, logs


def check_log_type(log_type: str) -> None:
    """BadInput naming the log types when `log_type` is not one of them."""
    check_known("where.type", log_type, "log type", LOG_TYPES)


def log_message(log: TaskLog) -> dict[str, Any]:
    """A log entry as announced on the app's channel (the seed's log shape)."""
    return {
        "id": log.id,
        "appId": log.app_id,
        "taskId": log.task_id,
        "type": log.type,
        "createdAt": log.created_at.isoformat(),
        "data": log.data,
    }
