"""Commands over a WebSocket, against a real server on loopback that may say nothing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from runtimes.command_socket import CommandError, CommandSocket

Answer = Callable[[dict[str, Any]], dict[str, Any] | None]


@contextmanager
def browser_like_server(answer: Answer) -> Iterator[str]:
    """A WebSocket server answering each command with `answer(command)`, or not
    at all when that is None; yields its URL."""

    def handle(connection: ServerConnection) -> None:
        try:
            for message in connection:
                reply = answer(json.loads(message))
                if reply is not None:
                    connection.send(json.dumps(reply))
        except ConnectionClosed:
            pass

    with serve(handle, "127.0.0.1", 0) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        host, port = server.socket.getsockname()[:2]
        try:
            yield f"ws://{host}:{port}/session"
        finally:
            server.shutdown()
            thread.join()


def silent(command: dict[str, Any]) -> None:
    return None


def test_a_call_gets_its_result_and_a_refusal_its_reason() -> None:
    def answer(command: dict[str, Any]) -> dict[str, Any]:
        if command["method"] == "browser.createUserContext":
            return {"type": "success", "id": command["id"], "result": {"n": 1}}
        return {
            "type": "error",
            "id": command["id"],
            "error": "no such user context",
            "message": "user context 7 not found",
        }

    with browser_like_server(answer) as url:
        connection = CommandSocket(url, "test-1")
        try:
            result = connection.call("browser.createUserContext")
            with pytest.raises(CommandError) as refused:
                connection.call("browser.removeUserContext", {"userContext": "7"})
        finally:
            connection.close()

    assert result == {"n": 1}
    assert str(refused.value) == (
        "browser.removeUserContext failed: no such user context: "
        "user context 7 not found"
    )


def test_a_call_left_unanswered_gives_up_after_its_timeout_in_real_time() -> None:
    with browser_like_server(silent) as url:
        connection = CommandSocket(url, "test-1", timeout=0.3)
        started = time.monotonic()
        try:
            with pytest.raises(CommandError, match=r"no answer .* within 0\.3s"):
                connection.call("browser.createUserContext")
        finally:
            connection.close()

    assert 0.3 <= time.monotonic() - started < 1.0


def test_abort_fails_a_waiting_call_at_once_and_every_later_one() -> None:
    with browser_like_server(silent) as url:
        connection = CommandSocket(url, "test-1", timeout=30.0)
        with ThreadPoolExecutor(1) as pool:
            waiting: Future[dict[str, Any]] = pool.submit(
                connection.call, "browsingContext.create", {"type": "tab"}
            )
            time.sleep(0.3)
            assert not waiting.done()

            aborted = time.monotonic()
            connection.abort()
            with pytest.raises(CommandError, match="aborted"):
                waiting.result(timeout=5.0)
            took = time.monotonic() - aborted

        with pytest.raises(CommandError, match="is closed"):
            connection.call("browser.createUserContext")
        connection.close()

    assert took < 0.5
