"""The classic WebDriver commands the `remote` runtime sends over HTTP.

Only three: `GET /status` to see that something answers, `POST /session` to
start a browser, and `DELETE /session/{id}` to end one; everything a run does
goes over WebDriver BiDi. Each request opens a connection of its own with a
timeout of its own, so ending a session never waits behind a stuck command.
Any WebDriver endpoint will do: a Selenium Grid, a standalone chromedriver or
geckodriver.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


class EndpointError(Exception):
    """The endpoint could not be reached, or refused the command."""


@dataclass(frozen=True)
class RemoteSession:
    """A session the endpoint started, with the capabilities it granted."""

    id: str
    capabilities: dict[str, Any]

    @property
    def websocket_url(self) -> str | None:
        """The session's BiDi address; None when the endpoint gave no BiDi."""
        url = self.capabilities.get("webSocketUrl")
        return url if isinstance(url, str) and url else None

    @property
    def browser_name(self) -> str:
        return str(self.capabilities.get("browserName") or "")

    @property
    def browser_version(self) -> str:
        return str(self.capabilities.get("browserVersion") or "")


class WebDriverEndpoint:
    """A WebDriver server at `url` (its base, without `/session`)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def status(self, timeout: float) -> dict[str, Any]:
        """Blocking: the endpoint's `/status` value; raise if nothing answers."""
        value = self._request("GET", "/status", None, timeout)
        return value if isinstance(value, dict) else {}

    def new_session(
        self, capabilities: dict[str, Any], timeout: float
    ) -> RemoteSession:
        """Blocking: start a session; a Grid may queue it for up to `timeout`."""
        body = {"capabilities": {"alwaysMatch": capabilities, "firstMatch": [{}]}}
        value = self._request("POST", "/session", body, timeout)
        if not isinstance(value, dict) or not value.get("sessionId"):
            raise EndpointError(
                f"{self.url} answered a new session without a session id: "
                f"{json.dumps(value)[:200]}"
            )
        granted = value.get("capabilities")
        return RemoteSession(
            str(value["sessionId"]), granted if isinstance(granted, dict) else {}
        )

    def delete_session(self, session_id: str, timeout: float) -> None:
        """Blocking: end a session and its browser, waiting at most `timeout`."""
        self._request("DELETE", f"/session/{session_id}", None, timeout)

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None, timeout: float
    ) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as exc:
            raise EndpointError(_refusal(method, path, exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EndpointError(
                f"{method} {self.url}{path} failed: {type(reason).__name__}: {reason}"
            ) from None

        try:
            answer = json.loads(text)
        except ValueError:
            raise EndpointError(
                f"{method} {self.url}{path} answered something other than JSON"
            ) from None
        return answer.get("value") if isinstance(answer, dict) else None


def _refusal(method: str, path: str, exc: urllib.error.HTTPError) -> str:
    """A WebDriver error answer as one line: its error code and message."""
    try:
        answer = json.loads(exc.read())
    except (ValueError, OSError):
        answer = None
    value = answer.get("value") if isinstance(answer, dict) else None
    if not isinstance(value, dict):
        value = {}
    error = str(value.get("error") or f"HTTP {exc.code}")
    lines = str(value.get("message") or exc.reason or "").strip().splitlines()
    return f"{method} {path} was refused: {error}: {lines[0] if lines else ''}"
