"""Execute one run order: render link, runtime, log entry, announcement.

Log lines follow one shape per run event so that a worker's output tells the
story of each run: `run started`, `run completed`, `run failed`, `run timed out`,
each with the run id, task, runtime and (at the end) the duration.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from apptasks.broker import (
    app_log_channel,
    issue_render_link,
    revoke_render_link,
    run_channel,
)
from apptasks.execution import RUNTIME_ERROR, RunError, RunOutcome, RunRequest, Runtime
from apptasks.logs import log_message, record_run
from apptasks.models import Task
from apptasks.runs import Environment, RunOrder
from apptasks.settings import Settings
from plugins.manager import call_each_plugin

logger = logging.getLogger("apptasks.workers.executor")

PAGE_NOT_PUBLISHED = "PageNotPublished"


class RunExecutor:
    """Turns run orders into runtime calls and records what came of them."""

    def __init__(
        self, settings: Settings, runtime: Runtime, redis: Redis, hooks: Any = None
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.redis = redis
        self.hooks = hooks

    async def execute(self, order: RunOrder) -> dict[str, Any]:
        """Run the order to its end and return the announcement sent for it."""
        target = {
            "appId": order.app_id,
            "pageId": order.page_id,
            "environment": order.environment,
            "version": order.page_version,
            "runId": order.run_id,
        }
        link = await issue_render_link(self.redis, self.settings, target, order.timeout)
        url = f"{self.settings.effective_public_url}/render/{link}"
        await Task.filter(id=order.task_id).update(last_run_at=datetime.now(UTC))

        logger.info(
            "run started run=%s task=%s mode=%s runtime=%s",
            order.run_id,
            order.task_name,
            order.mode,
            self.runtime.name,
        )
        await self._notify("apptasks_run_started", order=order)
        started = time.monotonic()
        outcome = await self._call_runtime(order, url, started)
        duration_ms = round((time.monotonic() - started) * 1000)
        self._log_outcome(order, outcome, duration_ms)

        entry = await record_run(order, outcome, duration_ms)
        await revoke_render_link(self.redis, self.settings, link)

        announcement = _announcement(order, outcome, entry.id, duration_ms)
        await self.redis.publish(
            run_channel(self.settings, order.run_id), json.dumps(announcement)
        )
        await self.redis.publish(
            app_log_channel(self.settings, order.app_id), json.dumps(log_message(entry))
        )
        await self._notify(
            "apptasks_run_finished",
            order=order,
            outcome=outcome,
            duration_ms=duration_ms,
        )
        return announcement

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


def _announcement(
    order: RunOrder, outcome: RunOutcome, log_id: int, duration_ms: int
) -> dict[str, Any]:
    announcement: dict[str, Any] = {
        "runId": order.run_id,
        "taskId": order.task_id,
        "status": "completed" if outcome.ok else "failed",
        "logId": log_id,
        "duration": duration_ms,
    }
    if outcome.ok:
        announcement["result"] = outcome.result
    else:
        assert outcome.error is not None
        announcement.update(outcome.error.as_log_data())
    return announcement
