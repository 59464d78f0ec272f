"""Names of the Redis keys and channels App Tasks shares between API and workers.

Every name starts with the `APPTASKS_REDIS_PREFIX`, so that several
installations (or test sessions) can share one Redis.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from redis.asyncio import Redis

from apptasks.settings import Settings

RENDER_LINK_GRACE_SECONDS = 30


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
