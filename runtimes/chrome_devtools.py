"""Chromium's own DevTools connection, kept beside chromedriver's.

ChromeDriver refuses `Target.createBrowserContext`, and it handles one command
of a session at a time, WebDriver BiDi included: a BiDi call made while a
screen runs waits for the run to end, and a BiDi network intercept deadlocks
the navigation it intercepts. So each browser also gets a connection of the
runtime's own to Chromium's browser-wide DevTools endpoint, on 127.0.0.1, for
two things that must not wait for chromedriver:

- a fresh browser context for every run, made and disposed of between runs;
- the request filter that keeps a screen to JavaScript (`refuse_assets`).

A thread reads the connection (`runtimes.command_socket`). It answers the
filter's questions itself, at once, and hands replies to the callers waiting
for them; when Chromium dies the socket closes and every waiting call fails
with `DevToolsError` at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from runtimes.command_socket import CommandError, CommandSocket

# Request types a screen never needs. Fetch filters accept only some of the
# types Chromium reports; the rest arrive as "Other" and are told apart below.
ASSET_TYPES = ("Stylesheet", "Image", "Media", "Font")
# Worker and service-worker scripts are "Other", and so is the favicon request
# Chromium makes for every page; only the favicon asks for images.
ASSET_ACCEPT_PREFIXES = ("image/", "text/css", "font/", "audio/", "video/")


class DevToolsError(CommandError):
    """A DevTools command failed or timed out, or the connection is closed."""


class DevToolsConnection(CommandSocket):
    """A browser-wide DevTools session, safe to use from several threads."""

    protocol: ClassVar[str] = "DevTools"
    error_class: ClassVar[type[CommandError]] = DevToolsError

    @classmethod
    def open(cls, profile: Path, name: str) -> DevToolsConnection:
        """Connect to the Chromium that uses the profile folder `profile`."""
        return cls(devtools_url(profile), name)


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
