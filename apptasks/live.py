"""Live logs and run updates: what workers announce on Redis, as it happens.

Workers publish every new log entry on its app's channel and every change of a
run's status on the run's channel (`apptasks.broker`). Any API replica can
therefore feed any subscriber: it listens to the channel itself, and reads the
database for what came before.

Ordering is what makes a feed whole. A follower subscribes to its channel and
waits for Redis to confirm before it reads the database, so that whatever is
committed after that read is announced to it; what the read already gave is
then dropped from the live side, so that nothing comes twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from apptasks import records
from apptasks.broker import app_log_channel, run_channel
from apptasks.errors import BadInput, Unavailable
from apptasks.logs import check_log_type, log_message
from apptasks.models import TaskLog
from apptasks.settings import Settings

# At most this many missed entries are replayed on resuming: the newest ones,
# oldest first. Older ones are for taskLogs, which pages through any number; a
# subscriber that missed more is not told that it did.
REPLAY_LIMIT = 500
# A run whose channel stays quiet this long is looked up in the database: it
# may have ended without an announcement (its worker died, or it was cancelled).
RUN_RECHECK_SECONDS = 5.0
SUBSCRIBE_TIMEOUT = 5.0

_CURSOR = re.compile(r"0|[1-9][0-9]{0,18}")
_MAX_CURSOR = 2**63 - 1


@dataclass(frozen=True)
class LogSelection:
    """Which of an app's log entries a subscriber wants."""

    app_id: int
    task_id: int | None = None
    log_type: str | None = None

    def __post_init__(self) -> None:
        if self.log_type is not None:
            check_log_type(self.log_type)

    def matches(self, message: dict[str, Any]) -> bool:
        """Whether an announced entry (`log_message` shape) is selected."""
        return (
            message.get("appId") == self.app_id
            and (self.task_id is None or message.get("taskId") == self.task_id)
            and (self.log_type is None or message.get("type") == self.log_type)
        )


def parse_cursor(value: str | None) -> int | None:
    """The log entry id in `afterId`: digits, 0 for "from the start"."""
    if value is None:
        return None
    if not _CURSOR.fullmatch(value) or int(value) > _MAX_CURSOR:
        raise BadInput(
            f"afterId {value!r}: must be the id of a log entry (digits), as "
            "received last; 0 replays from the start"
        )
    return int(value)


async def follow_logs(
    redis: Redis, settings: Settings, selection: LogSelection, after_id: int | None
) -> AsyncGenerator[dict[str, Any], None]:
    """The selected entries after `after_id` from the database, then live ones.

    Without `after_id` only live entries come. Entries are in the
    `log_message` shape.
    """
    channel = app_log_channel(settings, selection.app_id)
    async with _listening(redis, channel) as pubsub:
        replayed: set[int] = set()
        if after_id is not None:
            for entry in await missed_entries(selection, after_id):
                replayed.add(entry.id)
                yield log_message(entry)

        while True:
            message = await _next_message(pubsub, wait=None)
            if message is None or not selection.matches(message):
                continue
            entry_id = message.get("id")
            # Not "at most the last replayed id": an entry committed out of id
            # order after the replay has a lower id and was not seen yet.
            if after_id is not None and (
                not isinstance(entry_id, int)
                or entry_id <= after_id
                or entry_id in replayed
            ):
                continue
            yield message


async def follow_run(
    redis: Redis, settings: Settings, app_id: int, run_id: str
) -> AsyncGenerator[dict[str, Any], None]:
    """The run's status now, then each later one, ending after a final status.

    Messages are in the `records.run_message` shape, or the worker's
    announcement (with `duration`, and `result` or `errorType` and
    `errorMessage`) for the changes seen live.
    """
    async with _listening(redis, run_channel(settings, run_id)) as pubsub:
        current = records.run_message(await records.find_run(app_id, run_id))
        yield current
        stage = _stage(current["status"])

        while stage < _FINAL:
            message = await _next_message(pubsub, wait=RUN_RECHECK_SECONDS)
            if message is None:
                message = records.run_message(await records.find_run(app_id, run_id))
            # The record read first may already show what is then announced.
            if _stage(message.get("status")) <= stage:
                continue
            stage = _stage(message["status"])
            yield message


_QUEUED, _RUNNING, _FINAL = 0, 1, 2


def _stage(status: object) -> int:
    if status == records.QUEUED:
        return _QUEUED
    if status == records.RUNNING:
        return _RUNNING
    return _FINAL


async def missed_entries(selection: LogSelection, after_id: int) -> list[TaskLog]:
    """The selected entries after `after_id`: the newest REPLAY_LIMIT, oldest first."""
    query = TaskLog.filter(app_id=selection.app_id, id__gt=after_id)
    if selection.task_id is not None:
        query = query.filter(task_id=selection.task_id)
    if selection.log_type is not None:
        query = query.filter(type=selection.log_type)
    newest = await query.order_by("-id").limit(REPLAY_LIMIT)
    return newest[::-1]


@asynccontextmanager
async def _listening(redis: Redis, channel: str) -> AsyncIterator[PubSub]:
    """A pub/sub connection subscribed to `channel`, confirmed by Redis.

    Each follower holds a Redis connection of its own, for as long as it
    follows; many thousands of subscribers per API process would want one
    shared connection that fans messages out instead.
    """
    async with redis.pubsub() as pubsub:
        try:
            await pubsub.subscribe(channel)
            confirmation = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT)
        except (RedisError, OSError) as exc:
            raise _redis_lost(exc) from exc
        if confirmation is None or confirmation["type"] != "subscribe":
            raise Unavailable(
                f"Redis did not confirm the subscription within {SUBSCRIBE_TIMEOUT:g}"
                " s; subscribe again"
            )
        yield pubsub


async def _next_message(pubsub: PubSub, wait: float | None) -> dict[str, Any] | None:
    """The next announcement, or None when `wait` seconds passed without one.

    With `wait` None it waits as long as it takes.
    """
    try:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
    except (RedisError, OSError) as exc:
        raise _redis_lost(exc) from exc
    if message is None or message["type"] != "message":
        return None
    announced: dict[str, Any] = json.loads(message["data"])
    return announced


def _redis_lost(exc: Exception) -> Unavailable:
    return Unavailable(
        f"lost the connection to Redis ({exc}); subscribe again, with afterId "
        "set to the last entry received"
    )
