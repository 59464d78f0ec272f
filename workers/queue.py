"""The API's side of the queue: submit run orders, and wait for their outcome.

A caller that waits subscribes to the run's channel before the order is queued,
so that an outcome published by a fast worker cannot be missed.

Every run is recorded in the database (`apptasks.records`) before its work is
queued; Redis only carries the work. A run whose work cannot be queued was not
accepted: its record is withdrawn and the caller hears so.

The API does not wait out an outage: each call to Redis has
`REDIS_ANSWER_SECONDS` to answer, and a database or Redis that does not answer
becomes a prompt `SERVICE_UNAVAILABLE` that names it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from apptasks import records
from apptasks.broker import REDIS, cancel_channel, masked_url, run_channel, unreachable
from apptasks.db import unreachable as unreachable_database
from apptasks.errors import RateLimited, RunPending, Unavailable
from apptasks.execution import RunError, RunOutcome
from apptasks.models import Run
from apptasks.outages import describe
from apptasks.runs import RunOrder
from apptasks.settings import Settings
from workers.executor import announce_end
from workers.worker import RUN_JOB

logger = logging.getLogger("apptasks.workers.queue")

T = TypeVar("T")

# How much earlier than now an on-demand run's job is scored (see enqueue_run).
PRIORITY_ADVANCE = timedelta(hours=1)
# Seconds the API gives Redis to answer one call; a Redis that stopped
# answering (rather than refusing) would otherwise hold a request for ever.
REDIS_ANSWER_SECONDS = 3.0


class RunQueue:
    """Submits on-demand runs to the workers through arq."""

    def __init__(self, settings: Settings, redis: ArqRedis) -> None:
        self.settings = settings
        self.redis = redis

    @classmethod
    async def connect(cls, settings: Settings) -> RunQueue:
        try:
            redis = await create_pool(
                RedisSettings.from_dsn(settings.redis_url),
                default_queue_name=settings.queue_name,
            )
        except Exception as exc:
            raise Unavailable(
                f"Redis at {masked_url(settings.redis_url)} did not answer: {exc}"
            ) from exc
        return cls(settings, redis)

    async def close(self) -> None:
        await self.redis.aclose()

    async def check_rate(self, app_id: int) -> None:
        """Count one on-demand run for the app; RateLimited past the setting.

        A fixed one-minute window per app, in Redis so that every API replica
        counts the same runs.
        """
        minute = int(time.time() // 60)
        key = f"{self.settings.redis_prefix}rate:{app_id}:{minute}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await ask_redis(pipe.execute(), "counting the app's runs")
        if count > self.settings.runs_per_minute:
            retry_after = 60 - int(time.time()) % 60
            raise RateLimited(
                f"this app asked for more than {self.settings.runs_per_minute} "
                f"on-demand runs this minute; try again in {retry_after} s",
                retryAfter=retry_after,
            )

    async def submit(self, order: RunOrder) -> None:
        """Record the run as queued, then queue its work ahead of scheduled fires.

        The record comes first: a run exists from the moment it is accepted,
        and a job whose record is missing would be dropped by the worker. When
        the work cannot be queued, the record is withdrawn and the caller gets
        Unavailable: the run was not accepted.
        """
        await records.accept(order, patience=0)
        doing = f"queueing run {order.run_id}"
        try:
            await ask_redis(enqueue_run(self.redis, self.settings, order), doing)
        except Unavailable as exc:
            lost = exc.__cause__ or exc
            if await self._withdraw(order, lost):
                raise REDIS.unavailable(
                    lost, doing, "the run was not accepted, and nothing was recorded"
                ) from lost
            # Else the job reached Redis after all, and a worker took it.

    async def _withdraw(self, order: RunOrder, lost: BaseException) -> bool:
        """Withdraw a run that Redis did not take; False if it started anyway.

        `lost` is Redis's error. Without the database too, the run stays
        queued, and the caller is given its id to cancel it.
        """
        try:
            return await records.withdraw(order.run_id)
        except Exception as exc:
            if not unreachable_database(exc):
                raise
            logger.warning(
                "run not withdrawn run=%s: %s; it stays queued without its job",
                order.run_id,
                describe(exc),
            )
            unavailable = REDIS.unavailable(
                lost,
                f"queueing run {order.run_id}",
                "the database did not answer either, so the run stays queued "
                "without its job: cancel it (cancelRun) and try again",
            )
            unavailable.extensions["runId"] = order.run_id
            raise unavailable from exc

    async def cancel(self, app_id: int, run_id: str) -> Run:
        """Cancel a queued or running run, and ask its worker to stop it.

        The cancel is recorded first; without Redis, the request to stop the
        browser work and the announcement are dropped with a warning: the
        run's outcome would be dropped anyway, and readers find its end in
        its record.
        """
        run, entry = await records.cancel(app_id, run_id)
        try:
            await ask_redis(
                self.redis.publish(cancel_channel(self.settings), run_id),
                f"asking workers to stop run {run_id}",
            )
        except Unavailable as exc:
            logger.warning("run stop not requested run=%s: %s", run_id, exc.message)
        error = RunError(records.CANCELLED_ERROR, entry.data["errorMessage"])
        await announce_end(self.redis, self.settings, entry, RunOutcome(error=error))
        return run

    async def submit_and_wait(self, order: RunOrder) -> dict[str, Any]:
        """Queue the order and return its outcome announcement.

        Waits up to the wait limit (`APPTASKS_WAIT_SLACK`) for the run to
        start, then up to its own limit for it to end. When the run has not
        even started by the wait limit, the caller gets RunPending with the
        run's id, and the run goes on.
        """
        started_by = time.monotonic() + self.settings.wait_slack
        wait_until = started_by
        channel = run_channel(self.settings, order.run_id)
        async with self.redis.pubsub() as pubsub:
            await ask_redis(pubsub.subscribe(channel), "waiting for a run's outcome")
            await self.submit(order)
            while (left := wait_until - time.monotonic()) > 0:
                message = await _next_announcement(pubsub, order, min(left, 1.0))
                if message is None or message["type"] != "message":
                    await asyncio.sleep(0)
                    continue
                announcement = dict(json.loads(message["data"]))
                if announcement["status"] not in records.ACTIVE:
                    return announcement
                if announcement["status"] == records.RUNNING:
                    wait_until = max(
                        wait_until,
                        time.monotonic() + order.timeout + records.LEASE_MARGIN,
                    )
        raise RunPending(
            f"run {order.run_id} has not finished yet; it goes on: follow it with "
            "run(id) or the runUpdates subscription",
            runId=order.run_id,
        )


async def _next_announcement(
    pubsub: Any, order: RunOrder, wait: float
) -> dict[str, Any] | None:
    try:
        message: dict[str, Any] | None = await pubsub.get_message(
            ignore_subscribe_messages=True, timeout=wait
        )
    except Exception as exc:
        if not unreachable(exc):
            raise
        raise Unavailable(
            f"lost the connection to Redis while waiting for run {order.run_id} "
            f"({type(exc).__name__}); the run goes on: follow it with run(id)",
            service=REDIS.name,
            runId=order.run_id,
        ) from exc
    return message


async def ask_redis(call: Awaitable[T], doing: str) -> T:
    """The call's answer, or Unavailable if Redis does not give one in time."""
    try:
        async with asyncio.timeout(REDIS_ANSWER_SECONDS):
            return await call
    except Exception as exc:
        if not unreachable(exc):
            raise
        raise REDIS.unavailable(exc, doing) from exc


async def enqueue_run(redis: ArqRedis, settings: Settings, order: RunOrder) -> None:
    """Queue an on-demand run's work, before every scheduled fire that is due.

    arq takes due jobs in order of score, their start time; an on-demand job
    is scored as if queued `PRIORITY_ADVANCE` earlier, so that it never waits
    behind a backlog of scheduled fires, and on-demand jobs keep their order.
    """
    advanced = datetime.now(UTC) - PRIORITY_ADVANCE
    await redis.enqueue_job(
        RUN_JOB,
        order.to_message(),
        _job_id=run_job_id(settings, order.run_id),
        _queue_name=settings.queue_name,
        _defer_until=advanced,
    )


def run_job_id(settings: Settings, run_id: str) -> str:
    return f"{settings.redis_prefix}run:{run_id}"
