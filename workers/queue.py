"""The API's side of the queue: submit run orders, and wait for their outcome.

A caller that waits subscribes to the run's channel before the order is queued,
so that an outcome published by a fast worker cannot be missed.

Known shortcoming: runs are not database records yet, so a caller who gets
RUN_PENDING can follow the run only through the task's logs, and a run whose
worker dies is lost without a log entry.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from apptasks.broker import run_channel
from apptasks.errors import RateLimited, RunPending, Unavailable
from apptasks.runs import RunOrder
from apptasks.settings import Settings
from workers.worker import RUN_JOB


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
                f"Redis at {settings.redis_url} did not answer: {exc}"
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
            count, _ = await pipe.execute()
        if count > self.settings.runs_per_minute:
            retry_after = 60 - int(time.time()) % 60
            raise RateLimited(
                f"this app asked for more than {self.settings.runs_per_minute} "
                f"on-demand runs this minute; try again in {retry_after} s",
                retryAfter=retry_after,
            )

    async def submit(self, order: RunOrder) -> None:
        await self.redis.enqueue_job(
            RUN_JOB,
            order.to_message(),
            _job_id=f"{self.settings.redis_prefix}run:{order.run_id}",
            _queue_name=self.settings.queue_name,
        )

    async def submit_and_wait(self, order: RunOrder) -> dict[str, Any]:
        """Queue the order and return its outcome announcement.

        Waits at most the run's limit plus the queue slack; past that the run
        goes on and the caller gets RunPending with the run's id.
        """
        wait_until = time.monotonic() + order.timeout + self.settings.wait_slack
        channel = run_channel(self.settings, order.run_id)
        async with self.redis.pubsub() as pubsub:
            await pubsub.subscribe(channel)
            await self.submit(order)
            while (left := wait_until - time.monotonic()) > 0:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=min(left, 1.0)
                )
                if message is not None and message["type"] == "message":
                    return dict(json.loads(message["data"]))
                await asyncio.sleep(0)
        raise RunPending(
            f"run {order.run_id} has not finished yet; it goes on: follow it in the "
            "task's logs",
            runId=order.run_id,
        )
