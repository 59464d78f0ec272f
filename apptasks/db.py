"""Database set-up: the Tortoise configuration, migrations, connect and close."""

from __future__ import annotations

import logging
from typing import Any

from tortoise import Tortoise
from tortoise.migrations.api import migrate as tortoise_migrate

from apptasks.settings import Settings

logger = logging.getLogger("apptasks.db")

# SQLite: writers from several processes (API and workers) wait for each other
# for up to this long instead of failing at once with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000


# In WAL mode, NORMAL syncs at checkpoints rather than at every commit: a crash
# of the process loses nothing, a power cut may lose the last commits.
SQLITE_PRAGMAS = {"busy_timeout": str(SQLITE_BUSY_TIMEOUT_MS), "synchronous": "NORMAL"}


def database_url(settings: Settings) -> str:
    url = settings.effective_database_url
    if not url.startswith("sqlite://"):
        return url
    for pragma, value in SQLITE_PRAGMAS.items():
        if f"{pragma}=" not in url:
            separator = "&" if "?" in url else "?"
            url = f"{url}{separator}{pragma}={value}"
    return url


def tortoise_config(settings: Settings) -> dict[str, Any]:
    return {
        "connections": {"default": database_url(settings)},
        "apps": {
            "models": {
                "models": ["apptasks.models"],
                "default_connection": "default",
                "migrations": "apptasks.migrations",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


async def migrate(settings: Settings) -> None:
    """Bring the database schema up to date through Tortoise's migrations."""
    if settings.effective_database_url.startswith("sqlite://"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    await tortoise_migrate(config=tortoise_config(settings))
    await Tortoise.close_connections()
    logger.info("database schema is up to date")


async def connect(settings: Settings) -> None:
    if settings.effective_database_url.startswith("sqlite://"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Tortoise 1.x keeps its state in a context variable; the global fallback
    # lets request and job tasks that did not inherit it see the connection.
    await Tortoise.init(config=tortoise_config(settings), _enable_global_fallback=True)


async def close() -> None:
    await Tortoise.close_connections()
