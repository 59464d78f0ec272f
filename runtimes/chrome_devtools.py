"""Chromium's own DevTools connection, kept beside chromedriver's.

ChromeDriver refuses `Target.createBrowserContext`, and it handles one command
of a session at a time, WebDriver BiDi included: a BiDi call made while a
screen runs waits for the run to end, and a BiDi network intercept deadlocks
the navigation it intercepts. So each browser also gets a connection of the
runtime's own to Chromium's browser-wide DevTools endpoint, on 127.0.0.1, for
two things that must not wait for chromedriver:

- a fresh browser context for every run, made and disposed of between runs;
- the request filter that keeps a screen to JavaScript (`refuse_assets`).

A thread reads the connection. It answers the filter's questions itself, at
once, and hands replies to the callers waiting for them; when Chromium dies
the socket closes and every waiting call fails with `DevToolsError` at once.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import websocket

logger = logging.getLogger("apptasks.runtimes.chrome_devtools")

# Seconds a DevTools command may take by default; they take milliseconds.
COMMAND_TIMEOUT = 5.0

# Request types a screen never needs. Fetch filters accept only some of the
# types Chromium reports; the rest arrive as "Other" and are told apart below.
ASSET_TYPES = ("Stylesheet", "Image", "Media", "Font")
# Worker and service-worker scripts are "Other", and so is the favicon request
# Chromium makes for every page; only the favicon asks for images.
ASSET_ACCEPT_PREFIXES = ("image/", "text/css", "font/", "audio/", "video/")

EventHandler = Callable[[dict[str, Any]], None]


class DevToolsError(Exception):
    """A DevTools command failed or timed out, or the connection is closed."""


class DevToolsConnection:
    """A browser-wide DevTools session, safe to use from several threads."""

    def __init__(self, url: str, name: str, timeout: float = COMMAND_TIMEOUT) -> None:
        self.name = name
        # Chromium refuses DevTools connections that send an Origin header.
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
            target=self._read, name=f"{name}-devtools", daemon=True
        )
        self._reader.start()

    @classmethod
    def open(cls, profile: Path, name: str) -> DevToolsConnection:
        """Connect to the Chromium that uses the profile folder `profile`."""
        return cls(devtools_url(profile), name)

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
        timeout: float = COMMAND_TIMEOUT,
    ) -> dict[str, Any]:
        """Send a command and wait for its result; raise `DevToolsError`."""
        reply: Future[dict[str, Any]] = Future()
        self._send(method, params, reply)
        try:
            message = reply.result(timeout)
        except TimeoutError:
            raise DevToolsError(
                f"{method} had no answer from browser {self.name} within {timeout:.1f}s"
            ) from None

        error = message.get("error")
        if error is not None:
            raise DevToolsError(f"{method} failed: {_error_text(error)}")
        result = message.get("result")
        return result if isinstance(result, dict) else {}

    def send(self, method: str, params: dict[str, Any] | None = None) -> None:
        """Send a command without waiting; its failure is only logged (DEBUG)."""
        self._send(method, params, None)

    def close(self) -> None:
        """Close the socket; waiting calls fail and the reader thread ends."""
        self._fail_waiting("the runtime closed it")
        self._socket.close()

    def _send(
        self,
        method: str,
        params: dict[str, Any] | None,
        reply: Future[dict[str, Any]] | None,
    ) -> None:
        with self._lock:
            if self._closed is not None:
                raise DevToolsError(
                    f"{method}: the DevTools connection of browser {self.name} "
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
            raise DevToolsError(f"{method}: {exc}") from exc

    def _read(self) -> None:
        reason = "the browser closed it"
        try:
            while True:
                self._dispatch(json.loads(self._socket.recv()))
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else reason
        finally:
            self._fail_waiting(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._lock:
                reply = self._waiting.pop(message["id"], None)
            if reply is not None:
                reply.set_result(message)
            elif "error" in message:
                # Only the filter sends without waiting, and a request it
                # answers may be gone already, with the context it was for.
                logger.debug(
                    "browser %s: a DevTools command failed: %s",
                    self.name,
                    _error_text(message["error"]),
                )
            return

        handler = self._handlers.get(message.get("method", ""))
        if handler is None:
            return
        try:
            handler(message.get("params") or {})
        except Exception:
            # A bug of ours; the reader must go on, or every call would hang.
            logger.exception("browser %s: DevTools event handler failed", self.name)

    def _fail_waiting(self, reason: str) -> None:
        with self._lock:
            if self._closed is None:
                self._closed = reason
            waiting, self._waiting = self._waiting, {}
        for reply in waiting.values():
            reply.set_exception(
                DevToolsError(
                    f"the DevTools connection of browser {self.name} closed: {reason}"
                )
            )


def devtools_url(profile: Path) -> str:
    """The browser-wide DevTools address of the Chromium using `profile`.

    Chromium writes its port and path to `DevToolsActivePort` in the profile
    folder at start-up, before chromedriver connects.
    """
    port, path = (profile / "DevToolsActivePort").read_text().split()[:2]
    return f"ws://127.0.0.1:{int(port)}{path}"


def refuse_assets(connection: DevToolsConnection) -> None:
    """Make the browser fail every stylesheet, image, font and media request.

    Covers every context, frame and worker of the browser, also requests made
    by CSS (`@import`, fonts, backgrounds) and by scripts (`new Image()`).
    Scripts, documents, `fetch` and XHR are never stopped, nor slowed.
    """
    connection.on("Fetch.requestPaused", lambda params: _decide(connection, params))
    patterns = [
        {"resourceType": kind, "requestStage": "Request"}
        for kind in (*ASSET_TYPES, "Other")
    ]
    connection.call("Fetch.enable", {"patterns": patterns})


def is_asset_request(params: dict[str, Any]) -> bool:
    """Whether a paused request (`Fetch.requestPaused`) is for an asset."""
    if params.get("resourceType") in ASSET_TYPES:
        return True
    headers = params.get("request", {}).get("headers", {})
    accept = next(
        (str(value) for name, value in headers.items() if name.lower() == "accept"),
        "",
    )
    return accept.lower().startswith(ASSET_ACCEPT_PREFIXES)


def _decide(connection: DevToolsConnection, params: dict[str, Any]) -> None:
    request = {"requestId": params["requestId"]}
    try:
        if is_asset_request(params):
            connection.send(
                "Fetch.failRequest", {**request, "errorReason": "BlockedByClient"}
            )
        else:
            connection.send("Fetch.continueRequest", request)
    except DevToolsError:
        # The browser is going away; its paused request goes with it.
        pass


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
