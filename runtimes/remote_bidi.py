"""A WebDriver BiDi connection of the `remote` runtime's own, one per session.

Selenium's BiDi client answers events on the thread that reads the socket and
waits there for its own commands, so an event handler that sends a command
would wait for itself. Here a thread reads the socket and does nothing else but
hand replies to the callers waiting for them and call the event handlers; a
handler may send (never wait). Any number of threads may call commands at once:
a run waits for its screen while another thread makes the next user context.

Every call is bounded in time, and `close` fails every waiting call at once,
so a thread talking to a browser that is going away is never stuck.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import websocket

logger = logging.getLogger("apptasks.runtimes.remote_bidi")

# Seconds a BiDi command may take by default; browser commands take milliseconds,
# more through a Grid under load.
COMMAND_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0

EventHandler = Callable[[dict[str, Any]], None]


class BidiError(Exception):
    """A BiDi command failed: `error` is the BiDi error code, if it had one."""

    def __init__(self, message: str, error: str = "") -> None:
        super().__init__(message)
        self.error = error


class BidiTimeout(BidiError):
    """A BiDi command had no answer in time; the browser may still be on it."""


class BidiClosed(BidiError):
    """The connection is closed: the session ended, or the runtime closed it."""


class BidiConnection:
    """A WebDriver BiDi session's socket, safe to use from several threads."""

    def __init__(self, url: str, name: str) -> None:
        self.name = name
        # Browsers refuse BiDi connections that send an Origin header.
        self._socket = websocket.create_connection(
            url, timeout=CONNECT_TIMEOUT, suppress_origin=True, enable_multithread=True
        )
        self._socket.settimeout(None)
        self._ids = itertools.count(1)
        self._waiting: dict[int, Future[dict[str, Any]]] = {}
        self._handlers: dict[str, EventHandler] = {}
        self._lock = threading.Lock()
        self._closed: str | None = None
        self._reader = threading.Thread(
            target=self._read, name=f"{name}-bidi", daemon=True
        )
        self._reader.start()

    def on(self, event: str, handler: EventHandler) -> None:
        """Call `handler` with the parameters of every `event`, on the reader.

        The handler may `send` but must not wait on the connection: nothing
        else is read while it runs.
        """
        self._handlers[event] = handler

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> dict[str, Any]:
        """Send a command and wait for its result.

        Raises `BidiTimeout` when none comes within `timeout` seconds,
        `BidiClosed` when the connection closes first, and `BidiError` when the
        browser answers with an error.
        """
        return self.result(method, self.request(method, params), timeout)

    def request(
        self, method: str, params: dict[str, Any] | None = None
    ) -> Future[dict[str, Any]]:
        """Send a command; its reply comes in the future (see `result`)."""
        reply: Future[dict[str, Any]] = Future()
        self._send(method, params, reply)
        return reply

    def result(
        self, method: str, reply: Future[dict[str, Any]], timeout: float
    ) -> dict[str, Any]:
        """The result of a command sent with `request`; raises as `call` does."""
        try:
            message = reply.result(max(0.0, timeout))
        except TimeoutError:
            raise BidiTimeout(
                f"{method} had no answer from {self.name} within {timeout:.1f}s"
            ) from None

        if message.get("type") == "error":
            error = str(message.get("error") or "unknown error")
            text = str(message.get("message") or "").strip().splitlines()
            detail = text[0] if text else error
            raise BidiError(f"{method} failed: {error}: {detail}", error)
        result = message.get("result")
        return result if isinstance(result, dict) else {}

    def send(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a command without waiting; a failure is only logged (DEBUG)."""
        self._send(method, params, None)

    def close(self) -> None:
        """Close at once, without a closing handshake; waiting calls fail now.

        Never waits on the other end, so it is safe on a hung browser.
        """
        self._fail_waiting("the runtime closed it")
        # abort() wakes the reader from recv; shutdown() releases the socket.
        self._socket.abort()  # type: ignore[no-untyped-call]  # unannotated upstream
        self._socket.shutdown()  # type: ignore[no-untyped-call]  # unannotated upstream

    def cancel_waiting(self, reason: str) -> None:
        """Fail every call waiting now, with `BidiClosed`; later calls may go on."""
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for reply in waiting.values():
            if not reply.done():
                reply.set_exception(
                    BidiClosed(f"a call to {self.name} was given up: {reason}")
                )

    def _send(
        self,
        method: str,
        params: dict[str, Any] | None,
        reply: Future[dict[str, Any]] | None,
    ) -> None:
        with self._lock:
            if self._closed is not None:
                raise BidiClosed(
                    f"{method}: the BiDi connection to {self.name} is closed "
                    f"({self._closed})"
                )
            number = next(self._ids)
            if reply is not None:
                self._waiting[number] = reply
        message = {"id": number, "method": method, "params": params or {}}
        try:
            self._socket.send(json.dumps(message))
        except (websocket.WebSocketException, OSError) as exc:
            self._fail_waiting(f"sending failed: {exc}")
            raise BidiClosed(f"{method}: {exc}") from exc

    def _read(self) -> None:
        reason = "the session ended"
        try:
            while True:
                self._dispatch(json.loads(self._socket.recv()))
        except Exception as exc:
            # Whatever ended the reading (a closed socket, a broken frame),
            # every waiting call must learn of it, or it would hang.
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else reason
        finally:
            self._fail_waiting(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") == "event":
            self._handle_event(message)
            return

        number = message.get("id")
        with self._lock:
            reply = self._waiting.pop(number, None) if isinstance(number, int) else None
        if reply is not None:
            reply.set_result(message)
        elif message.get("type") == "error":
            # Only `send` leaves replies unclaimed, and the request it answered
            # may be gone already, with the context it was made in.
            logger.debug(
                "%s: a BiDi command failed: %s %s",
                self.name,
                message.get("error"),
                message.get("message"),
            )

    def _handle_event(self, message: dict[str, Any]) -> None:
        handler = self._handlers.get(str(message.get("method", "")))
        if handler is None:
            return
        try:
            handler(message.get("params") or {})
        except Exception:
            # A bug of ours; the reader must go on, or every call would hang.
            logger.exception("%s: BiDi event handler failed", self.name)

    def _fail_waiting(self, reason: str) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = reason
            waiting, self._waiting = self._waiting, {}
        for reply in waiting.values():
            if not reply.done():
                reply.set_exception(
                    BidiClosed(f"the BiDi connection to {self.name} closed: {reason}")
                )


def remote_value(value: Any) -> Any:
    """A BiDi `RemoteValue` as plain JSON-like Python values.

    Strings, numbers, booleans, arrays and plain objects come back as such;
    `undefined`, `null` and what JSON has no word for (nodes, functions) as
    None. Object keys that are not strings are written as their JSON text.
    """
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    content = value.get("value")
    if kind in ("string", "boolean"):
        return content
    if kind == "number":
        # NaN, -0 and the infinities arrive as strings; JSON has none of them.
        return content if isinstance(content, int | float) else None
    if kind == "bigint":
        return int(str(content))
    if kind in ("array", "set"):
        return [remote_value(item) for item in content or []]
    if kind in ("object", "map"):
        return {
            key if isinstance(key, str) else json.dumps(remote_value(key)): (
                remote_value(item)
            )
            for key, item in content or []
        }
    return None
