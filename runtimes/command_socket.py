"""Numbered JSON commands over one WebSocket: the shape of CDP and WebDriver BiDi.

Chromium's DevTools protocol and WebDriver BiDi both send commands as JSON
objects with an `id`, a `method` and `params`, and answer each with a message
carrying the same `id` and either a `result` or an `error`; a message without
an `id` is an event. A `CommandSocket` sends commands from any thread, and has
a thread of its own read the socket: it hands each answer to the caller waiting
for it, and each event to its handler.

No call waits on a browser that is gone: when the socket closes, or when the
runtime aborts it because it is killing the browser, every waiting call fails
at once with the protocol's closed error, and so does every later one. The
time a call may take is wall-clock time, however busy the machine.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, ClassVar

import websocket

logger = logging.getLogger("apptasks.runtimes.command_socket")

# Seconds a command may take by default; the ones the runtimes send take
# milliseconds.
COMMAND_TIMEOUT = 5.0

EventHandler = Callable[[dict[str, Any]], None]


class CommandError(Exception):
    """A command failed or timed out, or the connection is closed.

    `error` is the protocol's error code when the browser answered with one
    (BiDi's `no such frame`), else empty.
    """

    def __init__(self, message: str, error: str = "") -> None:
        super().__init__(message)
        self.error = error


class CommandSocket:
    """One WebSocket connection to a browser, safe to use from several threads.

    `protocol` names the connection in error messages (`DevTools`, `BiDi`);
    `error_class` is what its failures raise, a `CommandError` of the protocol,
    and `timeout_class` and `closed_class` may narrow it. `timeout` bounds
    connecting, and each call unless the call says otherwise.
    """

    protocol: ClassVar[str] = "WebSocket"
    error_class: ClassVar[type[CommandError]] = CommandError
    # What a call raises when no answer comes in time, and when the connection
    # closes before it: the error class itself unless a protocol tells apart.
    timeout_class: ClassVar[type[CommandError] | None] = None
    closed_class: ClassVar[type[CommandError] | None] = None

    def __init__(self, url: str, name: str, timeout: float = COMMAND_TIMEOUT) -> None:
        self.name = name
        self.timeout = timeout
        # Browsers refuse connections that send an Origin header, unless told
        # to trust that origin.
        self._socket = websocket.create_connection(
            url, timeout=timeout, suppress_origin=True, enable_multithread=True
        )
        self._socket.settimeout(None)
        self._ids = itertools.count(1)
        self._waiting: dict[int, Future[dict[str, Any]]] = {}
        self._handlers: dict[str, EventHandler] = {}
        self._lock = threading.Lock()
        self._closed: str | None = None
        self._reader = threading.Thread(
            target=self._read, name=f"{name}-{self.protocol.lower()}", daemon=True
        )
        self._reader.start()

    def on(self, event: str, handler: EventHandler) -> None:
        """Call `handler` with the parameters of every `event`, on the reader.

        The handler must not wait on the connection: nothing else is read
        while it runs.
        """
        self._handlers[event] = handler

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send a command and wait for its result; raise `error_class`."""
        return self.result(method, self.request(method, params), timeout)

    def request(
        self, method: str, params: dict[str, Any] | None = None
    ) -> Future[dict[str, Any]]:
        """Send a command; its reply comes in the future (see `result`).

        Several requests in flight cost one round trip together.
        """
        reply: Future[dict[str, Any]] = Future()
        self._send(method, params, reply)
        return reply

    def result(
        self,
        method: str,
        reply: Future[dict[str, Any]],
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The result of a command sent with `request`; raises as `call` does."""
        if timeout is None:
            timeout = self.timeout
        try:
            message = reply.result(max(0.0, timeout))
        except TimeoutError:
            raise (self.timeout_class or self.error_class)(
                f"{method} had no answer from browser {self.name} within {timeout:.1f}s"
            ) from None

        error = message.get("error")
        if error is not None:
            code = error if isinstance(error, str) else ""
            raise self.error_class(f"{method} failed: {error_text(message)}", code)
        result = message.get("result")
        return result if isinstance(result, dict) else {}

    def send(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a command without waiting; its failure is only logged (DEBUG)."""
        self._send(method, params, None)

    def abort(self) -> None:
        """Fail every waiting and later call, and cut the socket; never waits.

        For a browser being killed: the reader thread ends as the socket goes.
        """
        self._fail_waiting("the runtime aborted it")
        self._socket.abort()  # type: ignore[no-untyped-call]  # unannotated upstream

    def close(self) -> None:
        """Close the socket; waiting calls fail and the reader thread ends."""
        self._fail_waiting("the runtime closed it")
        self._socket.close()

    def cancel_waiting(self, reason: str) -> None:
        """Fail every call waiting now; later calls may go on."""
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        self._fail(waiting.values(), f"a call was given up: {reason}")

    def _send(
        self,
        method: str,
        params: dict[str, Any] | None,
        reply: Future[dict[str, Any]] | None,
    ) -> None:
        with self._lock:
            if self._closed is not None:
                raise (self.closed_class or self.error_class)(
                    f"{method}: the {self.protocol} connection of browser {self.name} "
                    f"is closed ({self._closed})"
                )
            number = next(self._ids)
            if reply is not None:
                self._waiting[number] = reply
        message = {"id": number, "method": method, "params": params or {}}
        try:
            self._socket.send(json.dumps(message))
        except (websocket.WebSocketException, OSError) as exc:
            self._fail_waiting(f"sending failed: {exc}")
            raise (self.closed_class or self.error_class)(f"{method}: {exc}") from exc

    def _read(self) -> None:
        reason = "the browser closed it"
        try:
            while True:
                self._dispatch(json.loads(self._socket.recv()))
        except Exception as exc:
            # Whatever ended the reading (a closed socket, a broken frame),
            # every waiting call must learn of it, or it would wait in vain.
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else reason
        finally:
            self._fail_waiting(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._lock:
                reply = self._waiting.pop(message["id"], None)
            if reply is not None:
                reply.set_result(message)
            elif message.get("error") is not None:
                # Nobody waits for a command sent with `send`, and what it
                # was about may be gone already.
                logger.debug(
                    "browser %s: a %s command failed: %s",
                    self.name,
                    self.protocol,
                    error_text(message),
                )
            return

        handler = self._handlers.get(message.get("method", ""))
        if handler is None:
            return
        try:
            handler(message.get("params") or {})
        except Exception:
            # A bug of ours; the reader must go on, or every call would hang.
            logger.exception(
                "browser %s: %s event handler failed", self.name, self.protocol
            )

    def _fail_waiting(self, reason: str) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = reason
            waiting, self._waiting = self._waiting, {}
        self._fail(
            waiting.values(),
            f"the {self.protocol} connection of browser {self.name} closed: {reason}",
        )

    def _fail(self, replies: Iterable[Future[dict[str, Any]]], message: str) -> None:
        for reply in replies:
            if not reply.done():
                reply.set_exception((self.closed_class or self.error_class)(message))


def error_text(message: dict[str, Any]) -> str:
    """What an error answer says: CDP nests the message, BiDi puts it beside."""
    error = message.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    detail = message.get("message")
    return f"{error}: {detail}" if detail else str(error)
