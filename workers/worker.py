"""Run a worker: runtime, executor, scheduler and watch around arq's queue loop.

arq's queue loop does not outlive Redis: in arq 0.28 the first command that
fails in `Worker.main` (polling the queue, recording health, starting a job)
ends it, and `Worker.run` then closes the worker. A worker must outlive a
Redis restart, so here only that loop is started again. The runtime, the
database connection, the scheduler and the watch go on; runs in flight finish,
since their records are in the database and their own Redis steps are retried
(`apptasks.outages`); and once Redis answers, a new arq loop takes the next
jobs. Several quick restarts are cheaper than a worker whose browsers, and runs,
die with its Redis connection.

SIGTERM and SIGINT stop a worker the arq way whatever the state of its loop: it
takes no new job, and those in flight may finish.

Known shortcoming: arq's connections have no socket timeout, so a Redis that
hangs, rather than refusing connections, holds the queue loop until it answers
or the connection breaks; nothing restarts the loop meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, func

from apptasks import broker, db
from apptasks.outages import FIRST_DELAY, LONGEST_DELAY, describe
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
# How long one PING may take while waiting for Redis to come back.
REDIS_PING_SECONDS = 5.0


async def execute_run(
    ctx: dict[str, Any], message: dict[str, Any]
) -> dict[str, Any] | None:
    """arq job: execute one on-demand run order, accepted by the API."""
    executor: RunExecutor = ctx["executor"]
    return await executor.execute(RunOrder.from_message(message))


def run_worker(settings: Settings) -> None:
    """Run one worker until SIGTERM or SIGINT; `apptasks worker`."""
    asyncio.run(WorkerProcess(settings).run())


class WorkerProcess:
    """One worker process: what lives as long as it does, and arq's queue loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.plugins = build_plugin_manager(settings)
        self.runtime = build_runtime(settings, self.plugins)
        # Shared by every queue loop, which adds its own entries (`redis`); not
        # empty, since arq replaces an empty one (`ctx or {}`) with its own.
        self.ctx: dict[str, Any] = {"settings": settings}
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        redis = await create_pool(
            RedisSettings.from_dsn(self.settings.redis_url),
            default_queue_name=self.settings.queue_name,
        )
        # The first loop is built before start-up, so that its signal handlers
        # already answer a SIGTERM that arrives while browsers start.
        first_loop = self._queue_loop(redis)
        background: list[asyncio.Task[None]] = []
        try:
            await db.connect(self.settings)
            await self.runtime.start()
            executor = RunExecutor(
                self.settings, self.runtime, redis, self.plugins.hook
            )
            self.ctx["executor"] = executor
            background.append(
                asyncio.create_task(Scheduler(self.settings, redis).run_forever())
            )
            background.extend(RunWatch(self.settings, redis, executor).start())
            logger.info(
                "worker ready runtime=%s browsers=%d queue=%s",
                self.runtime.name,
                self.settings.browsers,
                self.settings.queue_name,
            )
            await self._take_jobs(first_loop, redis)
        finally:
            for task in background:
                task.cancel()
            await self.runtime.stop()
            await db.close()
            await redis.aclose()
            logger.info("worker stopped runtime=%s", self.runtime.name)

    async def _take_jobs(self, queue_loop: Worker, redis: ArqRedis) -> None:
        """Run arq's queue loop until a signal stops it, again after losing Redis."""
        while not self.stopping.is_set():
            try:
                await queue_loop.async_run()
                return
            except asyncio.CancelledError:
                # arq cancels its loop when a signal stops the worker.
                if self.stopping.is_set():
                    return
                raise
            except Exception as exc:
                if not broker.unreachable(exc):
                    raise
                logger.warning(
                    "queue loop stopped: Redis did not answer (%s); runs in "
                    "flight go on, and a new loop starts once Redis answers",
                    describe(exc),
                )
            # One loop at a time: its jobs end before the next loop takes any,
            # so that no more runs go at once than there are browsers.
            await asyncio.gather(*queue_loop.tasks.values(), return_exceptions=True)
            if await self._redis_answers_again(redis):
                logger.info("queue loop started again: Redis answers")
                queue_loop = self._queue_loop(redis)

    async def _redis_answers_again(self, redis: ArqRedis) -> bool:
        """Wait, backing off, until Redis answers; False if told to stop first."""
        delay = FIRST_DELAY
        while not self.stopping.is_set():
            try:
                async with asyncio.timeout(REDIS_PING_SECONDS):
                    await redis.ping()
            except Exception as exc:
                if not broker.unreachable(exc):
                    raise
            else:
                return True
            with suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stopping.wait()
            delay = min(2 * delay, LONGEST_DELAY)
        return False

    def _queue_loop(self, redis: ArqRedis) -> Worker:
        """A new arq worker on the shared pool; it installs the signal handlers."""
        timeout = self.settings.max_timeout + JOB_TIMEOUT_MARGIN_SECONDS
        queue_loop = Worker(
            functions=[
                func(execute_run, name=RUN_JOB, timeout=timeout, max_tries=3),
                func(fire_task, name=FIRE_JOB, timeout=timeout, max_tries=3),
            ],
            redis_pool=redis,
            ctx=self.ctx,
            queue_name=self.settings.queue_name,
            health_check_key=f"{self.settings.queue_name}:health-check",
            poll_delay=self.settings.queue_poll,
            max_jobs=self.settings.browsers,
            handle_signals=True,
            # SIGTERM and SIGINT: take no new runs, let those in flight end.
            job_completion_wait=int(timeout),
        )
        queue_loop.on_stop = lambda _signal: self.stopping.set()
        return queue_loop
