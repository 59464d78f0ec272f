"""The chrome runtime, against real headless Chromium and screens served on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pluggy
import pytest
import pytest_asyncio

from apptasks.errors import ConfigurationError
from apptasks.execution import (
    HANDLER_NOT_REGISTERED,
    RUNTIME_ERROR,
    TIMEOUT_ERROR,
    RunOutcome,
    RunRequest,
    Runtime,
)
from apptasks.hooks import PROJECT
from apptasks.screens import render_screen
from apptasks.settings import Settings
from plugins import hookspecs
from plugins.manager import runtime_factories
from runtimes import chrome
from runtimes.chrome import ChromeRuntime
from runtimes.processes import processes_mentioning
from tests.support.paths import shared_dir

pytestmark = pytest.mark.browser

SCREENS_DIR = shared_dir() / "screens"

MAX_RESULT_BYTES = 100_000
# Screens here live on 127.0.0.1; every host name fails to resolve, so nothing
# Chromium does on its own (update checks, sign-in probes) leaves the machine.
LOOPBACK_ONLY = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",)

# Screens for behaviours the shared samples do not cover.
INLINE_SCREENS = {
    "cyclic": "var a = {}; a.self = a; return a;",
    "undefined": "return undefined;",
    "date": "return new Date(Date.UTC(2026, 11, 4, 16, 5, 0));",
    "throws-string": 'throw "quota exhausted for today";',
    "context": "return context;",
    "big": 'return "x".repeat(payload.size);',
    "alert": 'alert("are you there?"); return [confirm("sure?"), prompt("name?")];',
    "storage": """
        var seen = {
          local: localStorage.getItem("k"),
          session: sessionStorage.getItem("k"),
          cookie: document.cookie
        };
        localStorage.setItem("k", "1");
        sessionStorage.setItem("k", "1");
        document.cookie = "k=1; max-age=3600";
        return seen;
    """,
}
STUCK_LOADING_PAGE = "<!doctype html><html><body><script>while (true) {}</script>"
PLAIN_PAGE = "<!doctype html><html><body><p>No shim here.</p></body></html>"


def inline_screen(body: str) -> str:
    return (
        "<!doctype html><html><body><script>"
        "Fliplet.Page.onRemoteExecution(function (payload, context) {"
        f"{body}"
        "});</script></body></html>"
    )


def screen_pages() -> dict[str, bytes]:
    pages = {
        f"/{path.name}": render_screen(path.read_text(encoding="utf-8"))
        for path in SCREENS_DIR.glob("*.html")
    }
    for name, body in INLINE_SCREENS.items():
        pages[f"/{name}.html"] = render_screen(inline_screen(body))
    pages["/stuck-loading.html"] = render_screen(STUCK_LOADING_PAGE)
    pages["/plain.html"] = PLAIN_PAGE
    return {path: html.encode("utf-8") for path, html in pages.items()}


class ScreenHandler(BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        page = self.pages.get(self.path)
        if page is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines would only clutter the test output.
        pass


@pytest.fixture(scope="module")
def screens() -> Iterator[str]:
    """Base URL of a loopback server for the sample and inline screens."""
    handler = type("Handler", (ScreenHandler,), {"pages": screen_pages()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest_asyncio.fixture(scope="module")
async def runtime() -> AsyncIterator[ChromeRuntime]:
    settings = Settings(browsers=1, max_result_bytes=MAX_RESULT_BYTES)
    runtime = ChromeRuntime(settings, extra_arguments=LOOPBACK_ONLY)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def run(
    runtime: ChromeRuntime,
    url: str,
    payload: Any = None,
    *,
    seconds: float = 10.0,
    context: dict[str, Any] | None = None,
) -> RunOutcome:
    request = RunRequest(
        run_id=uuid.uuid4().hex,
        url=url,
        payload=payload,
        context=context or {},
        deadline=time.monotonic() + seconds,
    )
    return await runtime.execute(request)


def error_type(outcome: RunOutcome) -> str | None:
    return outcome.error.error_type if outcome.error else None


def chromium_processes(folder: Path) -> list[int]:
    """Ids of Chromium main processes (not helpers) started with `folder`."""
    found = []
    for pid in processes_mentioning(folder):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"chromium") and not any(
            arg.startswith(b"--type=") for arg in argv
        ):
            found.append(pid)
    return found


async def gone_within(folder: Path, seconds: float) -> bool:
    """Whether every process naming `folder` exits within `seconds`."""
    deadline = time.monotonic() + seconds
    while processes_mentioning(folder):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def browser_folders(runtime: ChromeRuntime) -> list[Path]:
    """Folders of the browsers launched so far, oldest first."""
    assert runtime.folder is not None
    folders = runtime.folder.glob("browser-*")
    return sorted(folders, key=lambda folder: int(folder.name.split("-")[1]))


# Registration


def test_plugin_registers_the_chrome_runtime() -> None:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(chrome, name="chrome")

    assert runtime_factories(manager) == {"chrome": ChromeRuntime}
    assert isinstance(ChromeRuntime(Settings()), Runtime)


# Results


async def test_hello_returns_its_result_and_console_line(
    runtime: ChromeRuntime, screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/hello.html", {"x": 1})

    assert outcome.ok, outcome.error
    assert outcome.result == {"a": 1, "b": 2}
    assert outcome.console == ['log: App task sent this payload {"x":1}']
    assert outcome.browser == "chrome"
    assert outcome.browser_version.split(".")[0].isdigit()


async def test_echo_returns_nested_and_non_ascii_payload_unchanged(
    runtime: ChromeRuntime, screens: str
) -> None:
    payload = {
        "text": "héllo ✓ 日本",
        "nested": {"list": [1, 2.5, None, True, {"deep": ["x", "🙂"]}]},
        # WebDriver would read this key as an element reference if the
        # payload were not sent as JSON text.
        "element-6066-11e4-a52f-4f735466cecf": "not an element",
    }

    outcome = await run(runtime, f"{screens}/echo.html", payload)

    assert outcome.ok, outcome.error
    assert outcome.result["received"] == payload
    assert outcome.result["userAgentHasHeadless"] is True


async def test_handler_receives_the_context(
    runtime: ChromeRuntime, screens: str
) -> None:
    context = {"mode": "on-demand", "taskId": 7}

    outcome = await run(runtime, f"{screens}/context.html", context=context)

    assert outcome.result == context


async def test_rss_import_parses_the_feed_with_the_dom(
    runtime: ChromeRuntime, screens: str
) -> None:
    feed = (SCREENS_DIR / "rss-feed.xml").read_text(encoding="utf-8")
    payload = {"feed": feed, "since": "2026-12-01T00:00:00Z"}

    outcome = await run(runtime, f"{screens}/rss-import.html", payload)

    assert outcome.ok, outcome.error
    assert outcome.result == {
        "count": 2,
        "newItems": ["New canteen menu", "Winter party & awards"],
    }


async def test_undefined_result_becomes_none(
    runtime: ChromeRuntime, screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/undefined.html")

    assert outcome.ok, outcome.error
    assert outcome.result is None


async def test_date_result_becomes_an_iso_string(
    runtime: ChromeRuntime, screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/date.html")

    assert outcome.result == "2026-12-04T16:05:00.000Z"


async def test_slow_handler_within_its_limit_completes(
    runtime: ChromeRuntime, screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/slow.html", {"ms": 500}, seconds=5)

    assert outcome.result == {"waited": 500}


# Screen failures


async def test_thrown_type_error_is_reported_with_its_trace(
    runtime: ChromeRuntime, screens: str
) -> None:
    payload = {"Email": "someone@example.com"}

    outcome = await run(runtime, f"{screens}/throws.html", payload)

    assert outcome.error is not None
    assert outcome.error.error_type == "TypeError"
    assert "sendEmail" in outcome.error.message
    assert outcome.error.trace


async def test_thrown_string_is_reported_as_an_error_with_that_message(
    runtime: ChromeRuntime, screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/throws-string.html")

    assert outcome.error is not None
    assert outcome.error.error_type == "Error"
    assert outcome.error.message == "quota exhausted for today"


async def test_cyclic_result_fails_saying_it_cannot_be_json(
    runtime: ChromeRuntime, screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/cyclic.html")

    assert outcome.error is not None
    assert outcome.error.error_type == "ResultNotSerializable"
    assert "JSON" in outcome.error.message


async def test_result_over_the_size_limit_fails_naming_the_limit(
    runtime: ChromeRuntime, screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/big.html", {"size": MAX_RESULT_BYTES})

    assert outcome.error is not None
    assert outcome.error.error_type == "ResultTooLarge"
    assert f"{MAX_RESULT_BYTES + 2} bytes" in outcome.error.message
    assert f"limit of {MAX_RESULT_BYTES} bytes" in outcome.error.message


async def test_screen_without_handler_fails_fast(
    runtime: ChromeRuntime, screens: str
) -> None:
    started = time.monotonic()

    outcome = await run(runtime, f"{screens}/no-handler.html", seconds=10)

    assert error_type(outcome) == HANDLER_NOT_REGISTERED
    assert time.monotonic() - started < 2.0
    assert outcome.console == ["log: screen loaded without a handler"]


async def test_dialogs_become_console_lines_answered_no(
    runtime: ChromeRuntime, screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/alert.html")

    assert outcome.ok
    assert outcome.result == [False, None]
    assert outcome.console == [
        "alert: are you there?",
        "confirm: sure?",
        "prompt: name?",
    ]
    assert (await run(runtime, f"{screens}/hello.html")).ok


async def test_page_without_the_shim_fails_saying_so(
    runtime: ChromeRuntime, screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/plain.html")

    assert error_type(outcome) == RUNTIME_ERROR
    assert outcome.error is not None and "shim" in outcome.error.message


async def test_unreachable_screen_url_fails_naming_the_url(
    runtime: ChromeRuntime, screens: str
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{closed_port}/hello.html"

    outcome = await run(runtime, url)

    assert error_type(outcome) == RUNTIME_ERROR
    assert outcome.error is not None and url in outcome.error.message
    assert (await run(runtime, f"{screens}/hello.html")).ok


# Isolation between runs


async def test_storage_and_cookies_do_not_carry_over_between_runs(
    runtime: ChromeRuntime, screens: str
) -> None:
    first = await run(runtime, f"{screens}/storage.html")
    second = await run(runtime, f"{screens}/storage.html")

    empty = {"local": None, "session": None, "cookie": ""}
    assert first.result == empty
    assert second.result == empty


# Time limit


async def test_pending_handler_times_out_at_the_deadline(
    runtime: ChromeRuntime, screens: str
) -> None:
    started = time.monotonic()

    outcome = await run(runtime, f"{screens}/slow.html", {"ms": 15000}, seconds=2)

    elapsed = time.monotonic() - started
    assert error_type(outcome) == TIMEOUT_ERROR
    assert 1.9 < elapsed < 2 + 1.5
    assert (await run(runtime, f"{screens}/hello.html")).ok


async def test_busy_loop_times_out_and_next_run_succeeds(
    runtime: ChromeRuntime, screens: str
) -> None:
    started = time.monotonic()

    outcome = await run(runtime, f"{screens}/busy-loop.html", seconds=2)

    elapsed = time.monotonic() - started
    assert error_type(outcome) == TIMEOUT_ERROR
    assert elapsed < 2 + 1.0
    # The stuck browser was killed before the run answered; only its
    # replacement, the newest folder, may have processes left.
    *older, _ = browser_folders(runtime)
    for folder in older:
        assert await gone_within(folder, 0.5), folder

    after = await run(runtime, f"{screens}/hello.html")
    assert after.result == {"a": 1, "b": 2}


async def test_page_that_never_finishes_loading_times_out(
    runtime: ChromeRuntime, screens: str
) -> None:
    started = time.monotonic()

    outcome = await run(runtime, f"{screens}/stuck-loading.html", seconds=2)

    assert error_type(outcome) == TIMEOUT_ERROR
    assert time.monotonic() - started < 2 + 1.0
    assert (await run(runtime, f"{screens}/hello.html")).ok


async def test_cancelled_run_kills_its_browser_and_next_run_succeeds(
    runtime: ChromeRuntime, screens: str
) -> None:
    newest = browser_folders(runtime)[-1]

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(run(runtime, f"{screens}/busy-loop.html"), 1.0)

    assert await gone_within(newest, 0.5)
    assert (await run(runtime, f"{screens}/hello.html")).ok


# Browser trouble and lifecycle


async def test_crashed_browser_fails_the_run_and_is_replaced(
    runtime: ChromeRuntime, screens: str
) -> None:
    newest = browser_folders(runtime)[-1]

    async def crash_browser_mid_run() -> None:
        await asyncio.sleep(1.0)
        for pid in chromium_processes(newest):
            os.kill(pid, signal.SIGKILL)

    crash = asyncio.create_task(crash_browser_mid_run())
    started = time.monotonic()
    outcome = await run(runtime, f"{screens}/slow.html", {"ms": 5000})
    await crash

    assert error_type(outcome) == RUNTIME_ERROR
    assert time.monotonic() - started < 4.0
    assert (await run(runtime, f"{screens}/hello.html")).ok


async def test_two_browsers_run_two_screens_at_once(screens: str) -> None:
    runtime = ChromeRuntime(Settings(browsers=2), extra_arguments=LOOPBACK_ONLY)
    await runtime.start()
    try:
        started = time.monotonic()
        slow = f"{screens}/slow.html"
        outcomes = await asyncio.gather(
            run(runtime, slow, {"ms": 1500}), run(runtime, slow, {"ms": 1500})
        )
        elapsed = time.monotonic() - started
    finally:
        await runtime.stop()

    assert [outcome.result for outcome in outcomes] == [{"waited": 1500}] * 2
    assert elapsed < 2 * 1.5


async def test_stop_leaves_no_browser_process_or_folder(screens: str) -> None:
    runtime = ChromeRuntime(Settings(browsers=2), extra_arguments=LOOPBACK_ONLY)
    await runtime.start()
    assert runtime.folder is not None
    folder = runtime.folder
    assert len(chromium_processes(folder)) == 2

    assert (await run(runtime, f"{screens}/hello.html")).ok
    await runtime.stop()

    assert processes_mentioning(folder) == []
    assert not folder.exists()


async def test_start_fails_clearly_when_chromium_is_missing() -> None:
    settings = Settings(chrome_binary="/nonexistent/chromium")
    runtime = ChromeRuntime(settings, extra_arguments=LOOPBACK_ONLY)

    with pytest.raises(ConfigurationError, match="/nonexistent/chromium"):
        await runtime.start()

    assert runtime.folder is not None
    assert not runtime.folder.exists()
