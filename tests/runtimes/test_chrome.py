"""The chrome runtime, against real headless Chromium and screens served on loopback.

What every browser runtime does alike is tested in `test_browsers`, for Chromium
too; here is what is Chromium's own, or tested on Chromium alone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from apptasks.execution import RUNTIME_ERROR, TIMEOUT_ERROR
from apptasks.screens import render_screen
from apptasks.settings import Settings
from runtimes.chrome import ChromeRuntime
from runtimes.chrome_launch import LaunchError, chromium_options, command_line
from runtimes.processes import processes_mentioning
from tests.support.browsers import (
    CHROME_BINARY,
    CHROME_LOOPBACK_ONLY,
    SCREENS_DIR,
    all_gone_within,
    browser_folders,
    chromium_processes,
    error_type,
    run,
    serving_screens,
)

pytestmark = pytest.mark.browser


MAX_RESULT_BYTES = 100_000

# Busy-loop runs in a row in the stress test; 100 take 2.3 to 2.5 minutes on a
# 2-core machine, with either Chromium binary.
STRESS_TIMEOUTS = 100

# Writes (payload.write) and then reads every kind of state a browser keeps
# for an origin. Service workers need a secure context: 127.0.0.1 is one.
ISOLATION_SCREEN = """
async function writeEverything() {
  document.cookie = "page=1; max-age=3600; path=/";
  await fetch("/set-cookie");
  localStorage.setItem("k", "1");
  sessionStorage.setItem("k", "1");
  await new Promise(function (resolve, reject) {
    var request = indexedDB.open("tasks", 1);
    request.onupgradeneeded = function () { request.result.createObjectStore("s"); };
    request.onerror = function () { reject(request.error); };
    request.onsuccess = function () {
      var transaction = request.result.transaction("s", "readwrite");
      transaction.objectStore("s").put(1, "k");
      transaction.oncomplete = function () { request.result.close(); resolve(); };
      transaction.onerror = function () { reject(transaction.error); };
    };
  });
  await navigator.serviceWorker.register("/sw.js");
  await navigator.serviceWorker.ready;
  await (await caches.open("tasks")).put("/kept", new Response("1"));
  await fetch("/cached.js");
}
Fliplet.Page.onRemoteExecution(async function (payload) {
  if (payload.write) { await writeEverything(); }
  await fetch("/cached.js");
  return {
    cookie: document.cookie,
    serverCookie: await (await fetch("/cookie")).text(),
    local: localStorage.getItem("k"),
    session: sessionStorage.getItem("k"),
    databases: (await indexedDB.databases()).map(function (d) { return d.name; }),
    workers: (await navigator.serviceWorker.getRegistrations()).length,
    caches: await caches.keys()
  };
});
"""
WRITTEN_STATE = {
    "cookie": "page=1",
    "serverCookie": "page=1; server=1",
    "local": "1",
    "session": "1",
    "databases": ["tasks"],
    "workers": 1,
    "caches": ["tasks"],
}
EMPTY_STATE = {
    "cookie": "",
    "serverCookie": "",
    "local": None,
    "session": None,
    "databases": [],
    "workers": 0,
    "caches": [],
}

# Every kind of asset a page can ask for, besides what assets.html covers, and
# the JavaScript ways of fetching that must keep working.
ALL_ASSETS_SCREEN = """<!doctype html><html><head>
<style>
  @import url(/imported.css);
  @font-face { font-family: F; src: url(/font.woff2); }
  body { font-family: F; background: url(/background.png); }
</style>
<script src="/helper.js"></script>
</head><body>
<p>Text in a web font.</p>
<video src="/clip.mp4" preload="auto"></video>
<audio src="/sound.mp3" preload="auto"></audio>
<script>
  Fliplet.Page.onRemoteExecution(async function () {
    new Image().src = "/late.png";
    var data = await (await fetch("/data.json")).json();
    var worker = new Worker("/worker.js");
    var answer = await new Promise(function (resolve) { worker.onmessage = resolve; });
    return { helperLoaded: !!window.helperLoaded, data: data, worker: answer.data };
  });
</script>
</body></html>"""


def chrome_settings(**changes: Any) -> Settings:
    return Settings(chrome_binary=CHROME_BINARY, **changes)


@pytest.fixture(scope="module")
def screens() -> Iterator[str]:
    """Base URL of a loopback server for the sample and inline screens."""
    with serving_screens() as url:
        yield url


@pytest_asyncio.fixture(scope="module")
async def runtime() -> AsyncIterator[ChromeRuntime]:
    settings = chrome_settings(browsers=1, max_result_bytes=MAX_RESULT_BYTES)
    runtime = ChromeRuntime(settings, extra_arguments=CHROME_LOOPBACK_ONLY)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


@dataclass
class CountingServer:
    """A loopback server that counts the requests it gets, by path.

    Besides `pages`, it sets a cookie (`/set-cookie`), says which cookies it
    was sent (`/cookie`), and serves a script browsers may cache (`/cached.js`).
    """

    pages: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    origin: str = ""

    def serve(self, path: str, body: str, content_type: str = "text/html") -> str:
        self.pages[path] = (content_type, body.encode("utf-8"))
        return self.origin + path

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        self.counts[path] = self.counts.get(path, 0) + 1
        headers = {"Cache-Control": "no-store"}
        if path == "/set-cookie":
            headers["Set-Cookie"] = "server=1; Max-Age=3600; Path=/; HttpOnly"
            content_type, body = "text/plain", b"set"
        elif path == "/cookie":
            content_type = "text/plain"
            body = (handler.headers.get("Cookie") or "").encode("utf-8")
        elif path == "/cached.js":
            headers["Cache-Control"] = "max-age=3600"
            content_type, body = "text/javascript", b"// kept in the HTTP cache"
        elif path in self.pages:
            content_type, body = self.pages[path]
        else:
            handler.send_error(404)
            return

        handler.send_response(200)
        for name, value in {**headers, "Content-Type": content_type}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


class CountingHandler(BaseHTTPRequestHandler):
    server_state: ClassVar[CountingServer]

    def do_GET(self) -> None:
        self.server_state.respond(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def counting_server() -> Iterator[CountingServer]:
    """A fresh `CountingServer` on 127.0.0.1, for one test."""
    state = CountingServer()
    handler = type("Handler", (CountingHandler,), {"server_state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.origin = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def children_named(name: str) -> set[int]:
    """Ids of this process's children whose command name is `name`."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        command, rest = stat[stat.index("(") + 1 :].rsplit(")", 1)
        if command == name and int(rest.split()[1]) == os.getpid():
            found.add(int(entry.name))
    return found


# Launch options


def test_options_chromedriver_alone_would_apply_are_refused() -> None:
    options = chromium_options(Settings(), Path("/profile"))
    options.add_experimental_option("prefs", {"intl.accept_languages": "fr"})

    with pytest.raises(LaunchError, match="experimental options would be ignored"):
        command_line(options)


# Results


async def test_handler_receives_the_context(
    runtime: ChromeRuntime, screens: str
) -> None:
    context = {"mode": "on-demand", "taskId": 7}

    outcome = await run(runtime, f"{screens}/context.html", context=context)

    assert outcome.result == context


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


# Screen failures


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


@pytest.mark.parametrize(
    "second_path",
    ["/app-a/isolation.html", "/app-b/isolation.html"],
    ids=["same-screen", "another-apps-screen"],
)
async def test_nothing_a_run_stores_reaches_the_next_run_on_the_same_browser(
    runtime: ChromeRuntime, counting_server: CountingServer, second_path: str
) -> None:
    page = render_screen(f"<!doctype html><body><script>{ISOLATION_SCREEN}</script>")
    for path in ("/app-a/isolation.html", "/app-b/isolation.html"):
        counting_server.serve(path, page)
    counting_server.serve("/sw.js", "self.skipWaiting();", "text/javascript")
    browsers = browser_folders(runtime)

    first = await run(
        runtime, f"{counting_server.origin}/app-a/isolation.html", {"write": True}
    )
    second = await run(runtime, counting_server.origin + second_path, {"write": False})

    assert first.result == WRITTEN_STATE, first.error
    assert second.result == EMPTY_STATE, second.error
    # The first run got /cached.js from the server, then from its HTTP cache;
    # the second run had to ask the server again.
    assert counting_server.counts["/cached.js"] == 2
    assert browser_folders(runtime) == browsers


# Only JavaScript is fetched


async def test_screen_fetches_its_scripts_but_no_styles_images_or_fonts(
    runtime: ChromeRuntime, counting_server: CountingServer
) -> None:
    html = (SCREENS_DIR / "assets.html").read_text(encoding="utf-8")
    counting_server.serve(
        "/helper.js", "window.helperLoaded = true;", "text/javascript"
    )
    url = counting_server.serve(
        "/assets.html",
        render_screen(html.replace("ASSET_ORIGIN", counting_server.origin)),
    )

    outcome = await run(runtime, url)
    await asyncio.sleep(0.5)  # for requests made late, such as late.png

    assert outcome.result == {"helperLoaded": True}
    assert counting_server.counts == {"/assets.html": 1, "/helper.js": 1}


async def test_no_media_favicon_or_css_request_leaves_but_fetch_and_workers_do(
    runtime: ChromeRuntime, counting_server: CountingServer
) -> None:
    counting_server.serve(
        "/helper.js", "window.helperLoaded = true;", "text/javascript"
    )
    counting_server.serve("/data.json", '{"n": 1}', "application/json")
    counting_server.serve("/worker.js", "postMessage('ready');", "text/javascript")
    url = counting_server.serve("/all-assets.html", render_screen(ALL_ASSETS_SCREEN))

    outcome = await run(runtime, url)
    await asyncio.sleep(0.5)

    assert outcome.result == {"helperLoaded": True, "data": {"n": 1}, "worker": "ready"}
    assert counting_server.counts == {
        "/all-assets.html": 1,
        "/helper.js": 1,
        "/data.json": 1,
        "/worker.js": 1,
    }


# Time limit


async def test_cancelled_run_kills_its_browser_and_next_run_succeeds(
    runtime: ChromeRuntime, screens: str
) -> None:
    newest = browser_folders(runtime)[-1]

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(run(runtime, f"{screens}/busy-loop.html"), 1.0)

    assert await all_gone_within(newest, 0.5)
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
    runtime = ChromeRuntime(
        chrome_settings(browsers=2), extra_arguments=CHROME_LOOPBACK_ONLY
    )
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


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_many_busy_loops_in_a_row_leave_no_process_or_folder(
    screens: str,
) -> None:
    drivers_before = children_named("chromedriver")
    runtime = ChromeRuntime(
        chrome_settings(browsers=1), extra_arguments=CHROME_LOOPBACK_ONLY
    )
    await runtime.start()
    assert runtime.folder is not None
    folder = runtime.folder

    try:
        outcomes = [
            await run(runtime, f"{screens}/busy-loop.html", seconds=1.0)
            for _ in range(STRESS_TIMEOUTS)
        ]
        after = await run(runtime, f"{screens}/hello.html", seconds=30)
    finally:
        await runtime.stop()

    assert {error_type(outcome) for outcome in outcomes} == {TIMEOUT_ERROR}
    assert after.result == {"a": 1, "b": 2}
    assert processes_mentioning(folder) == []
    assert children_named("chromedriver") <= drivers_before
    assert not folder.exists()
