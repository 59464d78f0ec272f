"""Names of the Redis keys and channels App Tasks shares between API and workers.

Every name starts with the `APPTASKS_REDIS_PREFIX`, so that several
installations (or test sessions) can share one Redis. Also what an outage of
Redis looks like from here (`unreachable`), and the retries a worker's own
Redis calls ride it out with (`retrying`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from apptasks import outages
from apptasks.settings import Settings

RENDER_LINK_GRACE_SECONDS = 30

T = TypeVar("T")


def run_channel(settings: Settings, run_id: str) -> str:
    """Where a worker announces the outcome of one run."""
    return f"{settings.redis_prefix}run:{run_id}"


def cancel_channel(settings: Settings) -> str:
    """Where the API asks every worker to stop a run it has cancelled."""
    return f"{settings.redis_prefix}cancel"


def app_log_channel(settings: Settings, app_id: int) -> str:
    """Where workers announce every new log entry of one app."""
    return f"{settings.redis_prefix}logs:{app_id}"


def _render_key(settings: Settings, secret: str) -> str:
    return f"{settings.redis_prefix}render:{secret}"


async def issue_render_link(
    redis: Redis, settings: Settings, target: dict[str, Any], ttl_seconds: float
) -> str:
    """A secret path segment under which the API serves one run's screen.

    The link lives only as long as the run may, so a screen's URL cannot be
    guessed and stops working soon after its run.
    """
    secret = secrets.token_urlsafe(24)
    ttl = int(ttl_seconds) + RENDER_LINK_GRACE_SECONDS
    await redis.set(_render_key(settings, secret), json.dumps(target), ex=ttl)
    return secret


async def resolve_render_link(
    redis: Redis, settings: Settings, secret: str
) -> dict[str, Any] | None:
    raw = await redis.get(_render_key(settings, secret))
    return None if raw is None else dict(json.loads(raw))


async def revoke_render_link(redis: Redis, settings: Settings, secret: str) -> None:
    await redis.delete(_render_key(settings, secret))


def unreachable(error: BaseException) -> bool:
    """Whether an error says Redis did not answer, rather than refused a command.

    redis-py reports a lost connection as a WatchError when it happens inside
    a watched transaction; a loading or restarting server is a ConnectionError.
    """
    return any(
        isinstance(
            cause, RedisConnectionError | RedisTimeoutError | WatchError | OSError
        )
        for cause in outages.causes(error)
    )


REDIS = outages.Dependency("Redis", unreachable)


async def retrying(
    operation: Callable[[], Awaitable[T]],
    doing: str,
    patience: float = outages.PATIENCE_SECONDS,
) -> T:
    """The operation's result, retried while Redis does not answer."""
    return await outages.retrying(operation, REDIS, doing, patience)


def masked_url(url: str) -> str:
    """A Redis URL fit for messages and logs: without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=f"{user}{host}{port}"))
