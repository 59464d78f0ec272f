"""The remote runtime asking for Firefox, from a real geckodriver left running.

Geckodriver holds one session at a time, so a replacement session waits until
the stuck one has ended; a Grid would start it on another slot at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from apptasks.execution import TIMEOUT_ERROR
from apptasks.screens import render_screen, shim_source
from apptasks.settings import Settings
from runtimes.firefox_browser import DEFAULT_FIREFOX_BINARY, geckodriver_path
from runtimes.firefox_preferences import loopback_only_preferences
from runtimes.remote import RemoteRuntime
from tests.runtimes.test_remote import run
from tests.support.browsers import (
    ALL_ASSETS_SCREEN,
    EMPTY_STATE,
    ISOLATION_SCREEN,
    SCREENS_DIR,
    WRITTEN_STATE,
    CountingHandler,
    CountingServer,
    ScreenHandler,
    error_type,
    screen_pages,
)
from tests.support.webdriver import WebDriverServer, serving, start_webdriver_server

pytestmark = pytest.mark.browser

# Firefox resolves no names, and sends everything but loopback to a closed port.
PREFERENCES = json.dumps(loopback_only_preferences())
CAPABILITIES = json.dumps({"moz:firefoxOptions": {"binary": DEFAULT_FIREFOX_BINARY}})
# Seconds for a run that waits for geckodriver to end a stuck session and
# start the next one.
AFTER_REPLACEMENT = 30.0


def is_firefox(argv: list[bytes]) -> bool:
    """Whether a command line is a Firefox main process (not a content process)."""
    return (
        bool(argv) and argv[0].endswith(b"firefox-esr") and b"-contentproc" not in argv
    )


@pytest.fixture(scope="module")
def geckodriver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriverServer]:
    server = start_webdriver_server(
        [geckodriver_path(Settings()), "--host=127.0.0.1", "--port={port}"],
        tmp_path_factory.mktemp("geckodriver"),
        is_firefox,
    )
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="module")
async def runtime(geckodriver: WebDriverServer) -> AsyncIterator[RemoteRuntime]:
    settings = Settings(
        runtime="remote",
        remote_url=geckodriver.url,
        remote_browser="firefox",
        remote_capabilities=CAPABILITIES,
        firefox_preferences=PREFERENCES,
    )
    runtime = RemoteRuntime(settings)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@pytest.fixture(scope="module")
def screens() -> Iterator[str]:
    with serving(type("Handler", (ScreenHandler,), {"pages": screen_pages()})) as url:
        yield url


@pytest.fixture
def site() -> Iterator[CountingServer]:
    state = CountingServer()
    with serving(type("Handler", (CountingHandler,), {"server_state": state})) as url:
        state.origin = url
        yield state


async def test_hello_returns_its_result_in_firefox(
    runtime: RemoteRuntime, screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/hello.html", {"x": 1})

    assert outcome.ok, outcome.error
    assert outcome.result == {"a": 1, "b": 2}
    assert outcome.console == ['log: App task sent this payload {"x":1}']
    assert outcome.browser == "firefox"
    assert outcome.browser_version.split(".")[0].isdigit()


async def test_a_thrown_error_is_reported_with_its_type(
    runtime: RemoteRuntime, screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/throws.html", {"Email": "a@b.c"})

    assert error_type(outcome) == "TypeError"
    assert outcome.error is not None and "sendEmail" in outcome.error.message


@pytest.mark.parametrize("screen", ["assets", "all-assets"])
async def test_only_javascript_is_fetched(
    runtime: RemoteRuntime, site: CountingServer, screen: str
) -> None:
    site.serve("/helper.js", "window.helperLoaded = true;", "text/javascript")
    site.serve("/data.json", '{"n": 1}', "application/json")
    site.serve("/worker.js", "postMessage('ready');", "text/javascript")
    assets = (SCREENS_DIR / "assets.html").read_text(encoding="utf-8")
    pages = {
        # Every tag kept (the API would drop link and img): Firefox must refuse.
        "assets": assets.replace("ASSET_ORIGIN", site.origin).replace(
            "<head>", f"<head><script>{shim_source()}</script>"
        ),
        "all-assets": render_screen(ALL_ASSETS_SCREEN),
    }
    url = site.serve(f"/{screen}.html", pages[screen])

    outcome = await run(runtime, url)
    await asyncio.sleep(0.5)  # for requests made late, such as late.png

    assert outcome.ok, outcome.error
    assert outcome.result["helperLoaded"] is True
    fetched = set(site.counts)
    assert fetched - {"/data.json", "/worker.js"} == {f"/{screen}.html", "/helper.js"}


async def test_nothing_a_run_stores_reaches_the_next_run(
    runtime: RemoteRuntime, geckodriver: WebDriverServer, site: CountingServer
) -> None:
    page = render_screen(f"<!doctype html><body><script>{ISOLATION_SCREEN}</script>")
    url = site.serve("/isolation.html", page)
    site.serve("/sw.js", "self.skipWaiting();", "text/javascript")
    browsers = geckodriver.browsers

    first = await run(runtime, url, {"write": True})
    second = await run(runtime, url, {"write": False})

    assert first.result == WRITTEN_STATE, first.error
    assert second.result == EMPTY_STATE, second.error
    assert geckodriver.browsers == browsers


async def test_busy_loop_times_out_within_a_second_and_the_next_run_succeeds(
    runtime: RemoteRuntime, screens: str
) -> None:
    started = time.monotonic()

    outcome = await run(runtime, f"{screens}/busy-loop.html", seconds=2)

    elapsed = time.monotonic() - started
    assert error_type(outcome) == TIMEOUT_ERROR
    assert 2 <= elapsed < 2 + 1.0
    after = await run(runtime, f"{screens}/hello.html", seconds=AFTER_REPLACEMENT)
    assert after.result == {"a": 1, "b": 2}
