"""SQLite transactions against writers in other processes (API and workers).

A transaction that reads and then writes must wait for another process's write
rather than fail with "database is locked", and a transaction that cannot get
the write lock within the busy timeout must fail as an outage and leave the
process's connection usable.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest
from tortoise.transactions import in_transaction

from apptasks import db
from apptasks.models import App
from apptasks.settings import Settings


def sqlite_path(settings: Settings) -> Path:
    return settings.data_dir / "apptasks.sqlite3"


async def open_database(settings: Settings) -> None:
    await db.migrate(settings)
    await db.connect(settings)
    await App.create(name="first")


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Settings]:
    settings = Settings(data_dir=tmp_path / "data")
    await open_database(settings)
    try:
        yield settings
    finally:
        await db.close()


def write_from_another_connection(path: Path, done: threading.Event) -> None:
    """What a worker does: a short write of its own, waiting for the lock."""
    with closing(sqlite3.connect(path, timeout=10, isolation_level=None)) as other:
        other.execute("UPDATE apps SET name = 'renamed by another process'")
    done.set()


async def test_a_read_then_write_waits_for_a_write_committed_in_between(
    database: Settings,
) -> None:
    other_done = threading.Event()
    other = threading.Thread(
        target=write_from_another_connection,
        args=(sqlite_path(database), other_done),
    )

    async with in_transaction():
        app = await App.get(name="first")
        other.start()
        # With a deferred BEGIN the other write commits here, and the write
        # below finds its snapshot stale and is refused without waiting.
        finished_meanwhile = await asyncio.to_thread(other_done.wait, 0.5)
        await App.create(name=f"second, after {app.name}")
    await asyncio.to_thread(other.join, 10)

    assert not finished_meanwhile, "the other writer got in during the transaction"
    assert other_done.is_set()
    names = sorted(await App.all().values_list("name", flat=True))
    assert names == ["renamed by another process"] * 2


async def test_a_transaction_refused_the_lock_is_an_outage_and_frees_the_connection(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "data"
    path = folder / "apptasks.sqlite3"
    settings = Settings(
        data_dir=folder, database_url=f"sqlite://{path}?busy_timeout=200"
    )
    await open_database(settings)
    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(Exception) as refused:
                async with in_transaction():
                    await App.create(name="never")
            holder.execute("ROLLBACK")

        assert db.unreachable(refused.value), repr(refused.value)
        async with asyncio.timeout(5):
            async with in_transaction():
                await App.create(name="after the lock")
        names = sorted(await App.all().values_list("name", flat=True))
        assert names == ["after the lock", "first"]
    finally:
        await db.close()
