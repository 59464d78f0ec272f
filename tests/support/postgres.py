"""A throwaway PostgreSQL database on the local server, for one test."""

from __future__ import annotations

import asyncio
import os
import uuid

import asyncpg

ADMIN_DSN = os.environ.get(
    "APPTASKS_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres"
)


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create_database() -> str:
    """A new empty database; returns its Tortoise URL."""
    name = f"apptasks_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    base = ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
