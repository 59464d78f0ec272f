"""Build and run the arq worker: runtime, executor and scheduler wired together."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, func

from apptasks import db
from apptasks.runs import RunOrder
from apptasks.settings import Settings
from plugins.manager import build_plugin_manager, build_runtime
from workers.executor import RunExecutor
from workers.scheduler import FIRE_JOB, Scheduler, fire_task
from workers.watch import RunWatch

logger = logging.getLogger("apptasks.workers.worker")

RUN_JOB = "execute_run"
# arq's own limit on a job is a backstop only: runtimes enforce the run's limit.
JOB_TIMEOUT_MARGIN_SECONDS = 10


async def execute_run(
    ctx: dict[str, Any], message: dict[str, Any]
) -> dict[str, Any] | None:
    """arq job: execute one on-demand run order, accepted by the API."""
    executor: RunExecutor = ctx["executor"]
    return await executor.execute(RunOrder.from_message(message))


def build_worker(settings: Settings, *, handle_signals: bool = True) -> Worker:
    """An arq worker that runs screens through the runtime the settings name."""
    plugins = build_plugin_manager(settings)
    runtime = build_runtime(settings, plugins)

    async def startup(ctx: dict[str, Any]) -> None:
        await db.connect(settings)
        await runtime.start()
        ctx["runtime"] = runtime
        ctx["executor"] = RunExecutor(settings, runtime, ctx["redis"], plugins.hook)
        scheduler = Scheduler(settings, ctx["redis"])
        ctx["scheduler_task"] = asyncio.create_task(scheduler.run_forever())
        watch = RunWatch(settings, ctx["redis"], ctx["executor"])
        ctx["watch_tasks"] = watch.start()
        logger.info(
            "worker ready runtime=%s browsers=%d queue=%s",
            runtime.name,
            settings.browsers,
            settings.queue_name,
        )

    async def shutdown(ctx: dict[str, Any]) -> None:
        for task in [ctx.get("scheduler_task"), *ctx.get("watch_tasks", [])]:
            if task is not None:
                task.cancel()
        await runtime.stop()
        await db.close()
        logger.info("worker stopped runtime=%s", runtime.name)

    timeout = settings.max_timeout + JOB_TIMEOUT_MARGIN_SECONDS
    return Worker(
        functions=[
            func(execute_run, name=RUN_JOB, timeout=timeout, max_tries=3),
            func(fire_task, name=FIRE_JOB, timeout=timeout, max_tries=3),
        ],
        redis_settings=RedisSettings.from_dsn(settings.redis_url),
        queue_name=settings.queue_name,
        health_check_key=f"{settings.queue_name}:health-check",
        on_startup=startup,
        on_shutdown=shutdown,
        poll_delay=settings.queue_poll,
        max_jobs=settings.browsers,
        handle_signals=handle_signals,
        # SIGTERM and SIGINT: take no new runs, let those in flight end.
        job_completion_wait=int(settings.max_timeout + JOB_TIMEOUT_MARGIN_SECONDS),
    )
