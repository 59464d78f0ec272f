"""Tortoise's SQLite engine, with transactions that take the write lock first.

Tortoise opens every SQLite transaction with a plain `BEGIN`, which takes no
lock until the first write. In WAL mode a transaction that has read and then
writes, after another process committed in between, is refused at once with
"database is locked": SQLite cannot wait for a snapshot that is already stale,
so its busy timeout does not help. API and workers are separate processes on
one file, so that happens (creating a task while a worker records a run).

`BEGIN IMMEDIATE` takes the write lock before the first read, waiting for it up
to the busy timeout; a transaction then never meets a stale snapshot. Reads
outside transactions are untouched and never wait.

The module's name must contain "sqlite": Tortoise's migrations pick their
schema editor by the client class's module.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from tortoise.backends.base.client import NestedTransactionContext, TransactionContext
from tortoise.backends.sqlite.client import (
    SqliteClient,
    SqliteTransactionContext,
    SqliteTransactionWrapper,
)
from tortoise.connection import get_connections
from tortoise.exceptions import TransactionManagementError

ENGINE = __name__


class ImmediateTransaction(SqliteTransactionWrapper):
    """A transaction that holds SQLite's write lock from its start."""

    def _in_transaction(self) -> TransactionContext:
        return NestedTransactionContext(ImmediateTransaction(self))

    async def begin(self) -> None:
        try:
            await self._connection.commit()
            await self._connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise TransactionManagementError(error) from error


class ImmediateTransactionContext(SqliteTransactionContext):
    """Tortoise's context, which also lets go of the connection if BEGIN fails.

    Tortoise's own keeps its connection lock when `begin` raises, and every
    later statement of the process would wait for it for ever; with a write
    lock to wait for, `BEGIN IMMEDIATE` can raise (busy timeout passed).
    """

    async def __aenter__(self) -> Any:
        await self._trxlock.acquire()
        try:
            await self.ensure_connection()
            self.token = get_connections().set(self.connection_name, self.connection)
            try:
                await self.connection.begin()
            except BaseException:
                get_connections().reset(self.token)
                raise
        except BaseException:
            self._trxlock.release()
            raise
        return self.connection


class ImmediateSqliteClient(SqliteClient):
    def _in_transaction(self) -> TransactionContext:
        return ImmediateTransactionContext(ImmediateTransaction(self), self._lock)


client_class = ImmediateSqliteClient
