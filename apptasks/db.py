"""Database set-up: the Tortoise configuration, migrations, connect and close.

Also what an outage of the database looks like from here (`unreachable`), and
the retries a worker's writes ride it out with (`retrying`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.exceptions import DBConnectionError
from tortoise.migrations.api import migrate as tortoise_migrate

from apptasks import outages, sqlite_engine
from apptasks.settings import Settings

logger = logging.getLogger("apptasks.db")

T = TypeVar("T")

# SQLite: writers from several processes (API and workers) wait for each other
# for up to this long instead of failing at once with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 10_000


# In WAL mode, NORMAL syncs at checkpoints rather than at every commit: a crash
# of the process loses nothing, a power cut may lose the last commits.
SQLITE_PRAGMAS = {"busy_timeout": str(SQLITE_BUSY_TIMEOUT_MS), "synchronous": "NORMAL"}

# PostgreSQL: seconds to open a connection, and to wait for any one statement.
# Without them a server that stops answering (rather than refusing) would hold
# an API request for asyncpg's default of a minute, or for ever. A URL's own
# `timeout` and `command_timeout` parameters win.
POSTGRES_CONNECT_TIMEOUT = 5.0
POSTGRES_COMMAND_TIMEOUT = 10.0
POSTGRES_ENGINE = "tortoise.backends.asyncpg"
SQLITE_ENGINE = "tortoise.backends.sqlite"

# Errors of a connection lost or refused, and asyncpg's for a server that is
# going away or not taking connections yet; a refused query (a constraint, bad
# SQL) is none of these.
_OUTAGES = (
    OSError,
    DBConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


def database_url(settings: Settings) -> str:
    url = settings.effective_database_url
    if not url.startswith("sqlite://"):
        return url
    for pragma, value in SQLITE_PRAGMAS.items():
        if f"{pragma}=" not in url:
            separator = "&" if "?" in url else "?"
            url = f"{url}{separator}{pragma}={value}"
    return url


def connection_config(settings: Settings) -> str | dict[str, Any]:
    """The Tortoise connection: the URL, with timeouts added for PostgreSQL,
    and SQLite on the engine whose transactions take the write lock first."""
    url = database_url(settings)
    config = expand_db_url(url)
    if config["engine"] == SQLITE_ENGINE:
        config["engine"] = sqlite_engine.ENGINE
        return config
    if config["engine"] != POSTGRES_ENGINE:
        return url
    credentials = config["credentials"]
    credentials.setdefault("timeout", POSTGRES_CONNECT_TIMEOUT)
    # Tortoise passes unknown URL parameters on as text; asyncpg wants a number.
    credentials["command_timeout"] = float(
        credentials.get("command_timeout", POSTGRES_COMMAND_TIMEOUT)
    )
    return config


def tortoise_config(settings: Settings) -> dict[str, Any]:
    return {
        "connections": {"default": connection_config(settings)},
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


def unreachable(error: BaseException) -> bool:
    """Whether an error says the database did not answer, not that it refused.

    A lost or refused connection, a timeout, a server shutting down or
    starting, and a SQLite file locked by another writer for longer than its
    busy timeout: all pass by themselves, so the step may be tried again.
    """
    for cause in outages.causes(error):
        if isinstance(cause, _OUTAGES):
            return True
        if isinstance(cause, asyncpg.InterfaceError) and "closed" in str(cause):
            return True
        if isinstance(cause, sqlite3.OperationalError) and (
            "locked" in str(cause) or "busy" in str(cause)
        ):
            return True
    return False


DATABASE = outages.Dependency("the database", unreachable)


async def retrying(
    operation: Callable[[], Awaitable[T]],
    doing: str,
    patience: float = outages.PATIENCE_SECONDS,
) -> T:
    """The operation's result, retried while the database does not answer.

    Only for operations that cannot take effect twice: compare-and-sets, or
    writes that check for their own earlier success.
    """
    return await outages.retrying(operation, DATABASE, doing, patience)
