"""What a worker watches besides its queue: lost runs, cancelled ones, old logs.

Every worker looks, once a second, for runs whose worker was lost: still
`running` past their lease. Each ends `failed` with `WorkerLost` and one log
entry, by a compare-and-set, so that when several workers find the same run,
one ends it. The handler is not run again: a run that had started may have
done its work already.

Every worker also listens for cancellations. The API ends a cancelled run in
the database itself; the worker running it is only asked to stop the browser
work, whose outcome would be dropped anyway.

One worker at a time prunes old logs (`apptasks.retention`), every
`APPTASKS_PRUNE_INTERVAL` seconds.

Each of these loops outlives an outage of the database or Redis: a round that
fails is logged (a warning when a service did not answer, an error with its
traceback otherwise) and the next round tries again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from redis.asyncio import Redis

from apptasks import broker, db, records, retention
from apptasks.broker import cancel_channel
from apptasks.execution import RunError, RunOutcome
from apptasks.outages import describe
from apptasks.settings import Settings
from workers.executor import RunExecutor, announce_end

logger = logging.getLogger("apptasks.workers.watch")

REAP_INTERVAL = 1.0
# Seconds a lost run's end announcement waits for Redis before it is dropped.
ANNOUNCE_PATIENCE = 5.0


class RunWatch:
    """The worker's watch over lost and cancelled runs."""

    def __init__(self, settings: Settings, redis: Redis, executor: RunExecutor) -> None:
        self.settings = settings
        self.redis = redis
        self.executor = executor

    def start(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._reap_forever()),
            asyncio.create_task(self._listen_for_cancels()),
            asyncio.create_task(self._prune_forever()),
        ]

    async def reap(self) -> int:
        """End every run whose lease ran out; return how many this worker ended."""
        ended = 0
        for run in await records.lost_runs(datetime.now(UTC)):
            error = RunError(
                records.WORKER_LOST,
                f"the worker running it ({run.worker}) stopped answering before "
                "the run ended; the run was not retried, because its screen may "
                "already have done its work",
            )
            entry = await records.end_without_running(
                run, (records.RUNNING,), records.FAILED, error
            )
            if entry is None:
                continue
            ended += 1
            logger.warning(
                "run lost run=%s task=%s worker=%s", run.id, run.task_name, run.worker
            )
            await announce_end(
                self.redis,
                self.settings,
                entry,
                RunOutcome(error=error),
                ANNOUNCE_PATIENCE,
            )
        return ended

    async def _reap_forever(self) -> None:
        while True:
            try:
                await self.reap()
            except Exception as exc:
                _log_failed_round("looking for lost runs", exc)
            await asyncio.sleep(REAP_INTERVAL)

    async def _prune_forever(self) -> None:
        # One worker prunes per interval: the others find the lock taken.
        lock = f"{self.settings.redis_prefix}prune-lock"
        interval = self.settings.prune_interval
        while True:
            try:
                if await self.redis.set(
                    lock, self.executor.worker_name, nx=True, ex=max(1, int(interval))
                ):
                    await retention.prune(self.settings)
            except Exception as exc:
                _log_failed_round("pruning old logs", exc)
            await asyncio.sleep(interval)

    async def _listen_for_cancels(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(cancel_channel(self.settings))
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self.executor.cancel(_text(message["data"]))
            except Exception as exc:
                logger.warning(
                    "listening for cancellations failed (%s); retrying in 1 s",
                    describe(exc),
                )
                await asyncio.sleep(1.0)


def _log_failed_round(doing: str, error: Exception) -> None:
    """A warning for an outage, which passes; an error with traceback for a bug."""
    if db.unreachable(error) or broker.unreachable(error):
        logger.warning(
            "%s failed: a service did not answer (%s)", doing, describe(error)
        )
    else:
        logger.exception("%s failed; trying again at the next round", doing)


def _text(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else data
