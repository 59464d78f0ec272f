"""Execute one run order: render link, runtime, log entry, announcement.

Log lines follow one shape per run event so that a worker's output tells the
story of each run: `run started`, `run completed`, `run failed`, `run timed out`,
each with the run id, task, runtime and (at the end) the duration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from redis.asyncio import Redis

from apptasks import broker, db, records
from apptasks.broker import (
    app_log_channel,
    issue_render_link,
    revoke_render_link,
    run_channel,
)
from apptasks.errors import Unavailable
from apptasks.execution import RUNTIME_ERROR, RunError, RunOutcome, RunRequest, Runtime
from apptasks.logs import log_message
from apptasks.models import Task, TaskLog
from apptasks.outages import PATIENCE_SECONDS, describe
from apptasks.runs import Environment, RunOrder
from apptasks.settings import Settings
from plugins.manager import call_each_plugin

logger = logging.getLogger("apptasks.workers.executor")

PAGE_NOT_PUBLISHED = "PageNotPublished"
# The run could not go ahead because Redis stayed away; see `_run_screen`.
SERVICE_UNAVAILABLE = "ServiceUnavailable"


class RunExecutor:
    """Turns run orders into runtime calls and records what came of them."""

    def __init__(
        self, settings: Settings, runtime: Runtime, redis: Redis, hooks: Any = None
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.redis = redis
        self.hooks = hooks
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        # The runtime calls in flight, by run id, so that a cancelled run's
        # browser work can be stopped.
        self._in_flight: dict[str, asyncio.Task[RunOutcome]] = {}

    def cancel(self, run_id: str) -> bool:
        """Stop a run's browser work if this worker is running it."""
        call = self._in_flight.get(run_id)
        if call is None:
            return False
        call.cancel()
        logger.info("run cancel requested run=%s", run_id)
        return True

    async def execute(self, order: RunOrder) -> dict[str, Any] | None:
        """Run an accepted order to its end; return the announcement sent for it.

        None when the run was no longer queued (cancelled, or taken by another
        worker): there is nothing to do, and its end is someone else's. Its
        database writes ride out an outage of up to `PATIENCE_SECONDS`; its
        announcements are dropped, with a warning, when Redis stays away.

        Known shortcoming: a run whose start cannot be recorded within
        `PATIENCE_SECONDS` stays queued with its job spent, and one whose end
        cannot be recorded ends `WorkerLost` once its lease runs out.
        """
        if await records.start(order.run_id, self.worker_name, order.timeout) is None:
            logger.info(
                "run not started run=%s task=%s: no longer queued",
                order.run_id,
                order.task_name,
            )
            return None
        await self._announce_status(order, records.RUNNING)
        await db.retrying(
            lambda: Task.filter(id=order.task_id).update(last_run_at=datetime.now(UTC)),
            f"recording the last run of task {order.task_name}",
        )

        logger.info(
            "run started run=%s task=%s mode=%s runtime=%s",
            order.run_id,
            order.task_name,
            order.mode,
            self.runtime.name,
        )
        await self._notify("apptasks_run_started", order=order)
        started = time.monotonic()
        outcome = await self._run_screen(order)
        duration_ms = round((time.monotonic() - started) * 1000)
        self._log_outcome(order, outcome, duration_ms)

        entry = await records.finish(order, outcome, duration_ms)
        if entry is None:
            logger.info(
                "run outcome dropped run=%s task=%s: it had already ended",
                order.run_id,
                order.task_name,
            )
            return None

        announcement = await announce_end(
            self.redis, self.settings, entry, outcome, PATIENCE_SECONDS
        )
        await self._notify(
            "apptasks_run_finished",
            order=order,
            outcome=outcome,
            duration_ms=duration_ms,
        )
        return announcement

    async def _run_screen(self, order: RunOrder) -> RunOutcome:
        """The runtime's outcome, at a screen link issued for this run alone."""
        target = {
            "appId": order.app_id,
            "pageId": order.page_id,
            "environment": order.environment,
            "version": order.page_version,
            "runId": order.run_id,
        }
        try:
            link = await broker.retrying(
                lambda: issue_render_link(
                    self.redis, self.settings, target, order.timeout
                ),
                f"issuing the screen link of run {order.run_id}",
            )
        except Unavailable as exc:
            return RunOutcome(
                error=RunError(
                    SERVICE_UNAVAILABLE,
                    f"{exc.message}: the screen could not be given a link, so it "
                    "did not run",
                )
            )

        url = f"{self.settings.effective_public_url}/render/{link}"
        try:
            return await self._call_runtime_cancellable(order, url, time.monotonic())
        finally:
            await self._revoke(link, order)

    async def _revoke(self, link: str, order: RunOrder) -> None:
        try:
            await revoke_render_link(self.redis, self.settings, link)
        except Exception as exc:
            if not broker.unreachable(exc):
                raise
            # The link expires by itself soon after the run's limit.
            logger.warning(
                "screen link not revoked run=%s: Redis did not answer (%s)",
                order.run_id,
                describe(exc),
            )

    async def _announce_status(self, order: RunOrder, status: str) -> None:
        """Tell waiters the run's new status; without Redis, they do without.

        Not retried: the run goes on meanwhile, and a waiter that misses it
        still hears of the run's end, or reads it from the run's record.
        """
        message = {"runId": order.run_id, "taskId": order.task_id, "status": status}
        channel = run_channel(self.settings, order.run_id)
        try:
            await self.redis.publish(channel, json.dumps(message))
        except Exception as exc:
            if not broker.unreachable(exc):
                raise
            logger.warning(
                "run status not announced run=%s status=%s: Redis did not answer (%s)",
                order.run_id,
                status,
                describe(exc),
            )

    async def _notify(self, hook_name: str, **arguments: Any) -> None:
        """Call a notification hook's implementations; their failures stay theirs."""
        if self.hooks is None:
            return
        # Every plugin is told, in a thread, whatever another one raised.
        calls = await asyncio.to_thread(
            list, call_each_plugin(getattr(self.hooks, hook_name), **arguments)
        )
        for call in calls:
            if call.error is not None:
                logger.warning(
                    "plugin %s failed in hook %s run=%s",
                    call.plugin_name,
                    hook_name,
                    arguments["order"].run_id,
                    exc_info=call.error,
                )

    async def _call_runtime_cancellable(
        self, order: RunOrder, url: str, started: float
    ) -> RunOutcome:
        call = asyncio.create_task(self._call_runtime(order, url, started))
        self._in_flight[order.run_id] = call
        try:
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                call.cancel()
                raise
            # Only the runtime call was cancelled: its caller cancelled the run.
            return RunOutcome(
                error=RunError(records.CANCELLED_ERROR, "the run was cancelled")
            )
        finally:
            del self._in_flight[order.run_id]

    async def _call_runtime(
        self, order: RunOrder, url: str, started: float
    ) -> RunOutcome:
        if order.environment == Environment.LIVE.value and order.page_version is None:
            return RunOutcome(
                error=RunError(
                    PAGE_NOT_PUBLISHED,
                    f"page {order.page_id} has never been published, and "
                    f"{order.mode} runs use the live version: publish it",
                )
            )
        request = RunRequest(
            run_id=order.run_id,
            url=url,
            payload=order.payload,
            context=order.context(),
            deadline=started + order.timeout,
        )
        try:
            return await self.runtime.execute(request)
        except Exception as exc:
            # A runtime must answer with an outcome; an exception is our bug, but
            # the run still ends with a log entry rather than vanishing.
            logger.exception(
                "runtime raised run=%s task=%s runtime=%s",
                order.run_id,
                order.task_name,
                self.runtime.name,
            )
            return RunOutcome(
                error=RunError(RUNTIME_ERROR, f"the runtime failed: {exc}"),
                browser=self.runtime.name,
            )

    def _log_outcome(
        self, order: RunOrder, outcome: RunOutcome, duration_ms: int
    ) -> None:
        common = (order.run_id, order.task_name, self.runtime.name, duration_ms)
        if outcome.ok:
            logger.info(
                "run completed run=%s task=%s runtime=%s duration_ms=%d", *common
            )
        elif outcome.timed_out:
            logger.info(
                "run timed out run=%s task=%s runtime=%s duration_ms=%d", *common
            )
        else:
            assert outcome.error is not None
            logger.info(
                "run failed run=%s task=%s runtime=%s duration_ms=%d error=%s",
                *common,
                outcome.error.error_type,
            )


async def announce_end(
    redis: Redis,
    settings: Settings,
    entry: TaskLog,
    outcome: RunOutcome,
    patience: float = 0.0,
) -> dict[str, Any]:
    """Tell the run's waiters and the app's log subscribers that the run ended.

    Each message is retried for up to `patience` seconds while Redis does not
    answer, then dropped with a warning: the run's record and its log entry
    are already written, and readers find them there (`runUpdates` re-reads a
    run whose channel stays quiet; `taskLogs` and `afterId` replay entries).
    """
    announcement = _announcement(entry, outcome)
    messages = {
        run_channel(settings, announcement["runId"]): announcement,
        app_log_channel(settings, entry.app_id): log_message(entry),
    }
    for channel, message in messages.items():
        try:
            await broker.retrying(
                partial(redis.publish, channel, json.dumps(message)),
                f"announcing the end of run {announcement['runId']}",
                patience,
            )
        except Unavailable as exc:
            logger.warning(
                "run end not announced run=%s channel=%s: %s",
                announcement["runId"],
                channel,
                exc.message,
            )
    return announcement


def _announcement(entry: TaskLog, outcome: RunOutcome) -> dict[str, Any]:
    announcement: dict[str, Any] = {
        "runId": entry.data["runId"],
        "taskId": entry.task_id,
        "status": records.final_status(outcome),
        "logId": entry.id,
        "duration": entry.data["duration"],
    }
    if outcome.ok:
        announcement["result"] = outcome.result
    else:
        assert outcome.error is not None
        announcement.update(outcome.error.as_log_data())
        if outcome.error.error_type == records.CANCELLED_ERROR:
            announcement["status"] = records.CANCELLED
    return announcement
