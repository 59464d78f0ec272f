"""A loopback TCP forwarder that a test can cut, to stage a database outage.

`TcpProxy` listens on 127.0.0.1 and forwards every connection to a port on
127.0.0.1. `cut()` drops every forwarded connection and stops listening, so
that new connections are refused, as when a database server goes away;
`stall()` keeps every connection open but carries nothing, as when a server
hangs or the network drops packets; `restore()` ends either, dropping what was
stalled and listening again on the same port. `lose_reply_to(marker)` stages a
lost acknowledgement: the next request that contains `marker` reaches the
server, and the connection dies before the server's answer reaches the client.
It runs its own event loop in a thread, so that it keeps forwarding while a
test blocks.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

LOOPBACK = "127.0.0.1"
CHUNK = 65536

T = TypeVar("T")


@dataclass
class _Link:
    """One forwarded connection: the client's side and the server's."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    lose_next_reply: bool = False

    def abort(self) -> None:
        # abort, not close: the peers see a reset, as when a server dies.
        self.client.transport.abort()
        self.server.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port> until cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self._lose_reply_to: bytes | None = None
        self._stalled = False
        # Answers dropped by `lose_reply_to`, read by tests.
        self.replies_lost = 0

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        """Drop every connection and refuse new ones until `restore()`."""
        self._call(self._cut())

    def stall(self) -> None:
        """Carry nothing, on old connections or new ones, until `restore()`."""
        self._loop.call_soon_threadsafe(setattr, self, "_stalled", True)

    def restore(self) -> None:
        self._call(self._restore())

    def lose_reply_to(self, marker: bytes) -> None:
        """Drop the answer to the next request containing `marker`, and its link."""
        self._loop.call_soon_threadsafe(setattr, self, "_lose_reply_to", marker)

    def stop(self) -> None:
        self._call(self._shut_down())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._forward, LOOPBACK, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _restore(self) -> None:
        if self._stalled:
            self._stalled = False
            await self._cut()
        if self._server is None:
            await self._listen()

    async def _shut_down(self) -> None:
        """Cut, then let every connection's task end and its socket close."""
        await self._cut()
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # Aborted transports close their sockets on the loop's next turns.
        for _ in range(3):
            await asyncio.sleep(0)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in self._links:
            link.abort()
        self._links.clear()

    async def _forward(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(
                LOOPBACK, self.target_port
            )
        except OSError:
            client_writer.transport.abort()
            return
        except asyncio.CancelledError:
            client_writer.transport.abort()
            raise
        link = _Link(client_writer, server_writer)
        self._links.append(link)
        try:
            await asyncio.gather(
                self._requests(client_reader, link), self._replies(server_reader, link)
            )
        finally:
            if link in self._links:
                self._links.remove(link)

    async def _requests(self, reader: asyncio.StreamReader, link: _Link) -> None:
        try:
            while data := await reader.read(CHUNK):
                if self._stalled:
                    continue
                marker = self._lose_reply_to
                if marker is not None and marker in data:
                    self._lose_reply_to = None
                    link.lose_next_reply = True
                link.server.write(data)
                await link.server.drain()
        except OSError:
            pass
        finally:
            link.abort()

    async def _replies(self, reader: asyncio.StreamReader, link: _Link) -> None:
        try:
            while data := await reader.read(CHUNK):
                if self._stalled:
                    continue
                if link.lose_next_reply:
                    self.replies_lost += 1
                    break
                link.client.write(data)
                await link.client.drain()
        except OSError:
            pass
        finally:
            link.abort()
