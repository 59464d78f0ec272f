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
from dataclasses import dataclass, field
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
from apptasks.hooks import PROJECT, hookimpl
from apptasks.screens import render_screen
from apptasks.settings import Settings
from plugins import hookspecs
from plugins.manager import runtime_factories
from runtimes import chrome
from runtimes.chrome import ChromeRuntime
from runtimes.chrome_launch import LaunchError, chromium_options, command_line
from runtimes.processes import processes_mentioning
from tests.support.paths import shared_dir

pytestmark = pytest.mark.browser

SCREENS_DIR = shared_dir() / "screens"

MAX_RESULT_BYTES = 100_000
# Screens here live on 127.0.0.1; every host name fails to resolve, so nothing
# Chromium does on its own (update checks, sign-in probes) leaves the machine.
LOOPBACK_ONLY = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",)
# The Chromium to test, as the service would pick it: APPTASKS_CHROME_BINARY
# (the full browser by default, or chromium-headless-shell).
CHROME_BINARY = Settings.from_env().chrome_binary

# Screens for behaviours the shared samples do not cover.
INLINE_SCREENS = {
    "cyclic": "var a = {}; a.self = a; return a;",
    "undefined": "return undefined;",
    "date": "return new Date(Date.UTC(2026, 11, 4, 16, 5, 0));",
    "throws-string": 'throw "quota exhausted for today";',
    "context": "return context;",
    "big": 'return "x".repeat(payload.size);',
    "user-agent": "return navigator.userAgent;",
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
    settings = chrome_settings(browsers=1, max_result_bytes=MAX_RESULT_BYTES)
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


def error_type(outcome: RunOutcome) -> str | None:
    return outcome.error.error_type if outcome.error else None


CHROMIUM_NAMES = ("chromium", "chromium-headless-shell")


def chromium_processes(folder: Path) -> list[int]:
    """Ids of Chromium main processes (not helpers) started with `folder`."""
    found = []
    for pid in processes_mentioning(folder):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(os.fsdecode(argv[0])).name in CHROMIUM_NAMES and not any(
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


class UserAgentPlugin:
    """A plugin that gives Chromium a user agent of its own."""

    @hookimpl
    def apptasks_browser_options(self, browser: str, options: Any) -> None:
        if browser == "chrome":
            options.add_argument("--user-agent=App Tasks test agent")


class BrokenOptionsPlugin:
    @hookimpl
    def apptasks_browser_options(self) -> None:
        raise ValueError("no options today")


def plugin_hooks(plugin: object) -> Any:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(plugin, name=type(plugin).__name__)
    return manager.hook


async def test_browser_options_hook_changes_the_browsers_options(screens: str) -> None:
    hooks = plugin_hooks(UserAgentPlugin())
    runtime = ChromeRuntime(
        chrome_settings(), extra_arguments=LOOPBACK_ONLY, hooks=hooks
    )
    await runtime.start()
    try:
        outcome = await run(runtime, f"{screens}/user-agent.html")
    finally:
        await runtime.stop()

    assert outcome.result == "App Tasks test agent"


async def test_failing_browser_options_hook_stops_start_naming_the_plugin() -> None:
    hooks = plugin_hooks(BrokenOptionsPlugin())
    runtime = ChromeRuntime(
        chrome_settings(), extra_arguments=LOOPBACK_ONLY, hooks=hooks
    )

    with pytest.raises(ConfigurationError, match=r"BrokenOptionsPlugin.*no options"):
        await runtime.start()


def test_options_chromedriver_alone_would_apply_are_refused() -> None:
    options = chromium_options(Settings(), Path("/profile"))
    options.add_experimental_option("prefs", {"intl.accept_languages": "fr"})

    with pytest.raises(LaunchError, match="experimental options would be ignored"):
        command_line(options)


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
    runtime = ChromeRuntime(chrome_settings(browsers=2), extra_arguments=LOOPBACK_ONLY)
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
    runtime = ChromeRuntime(chrome_settings(browsers=2), extra_arguments=LOOPBACK_ONLY)
    await runtime.start()
    assert runtime.folder is not None
    folder = runtime.folder
    assert len(chromium_processes(folder)) == 2

    assert (await run(runtime, f"{screens}/hello.html")).ok
    await runtime.stop()

    assert processes_mentioning(folder) == []
    assert not folder.exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_many_busy_loops_in_a_row_leave_no_process_or_folder(
    screens: str,
) -> None:
    drivers_before = children_named("chromedriver")
    runtime = ChromeRuntime(chrome_settings(browsers=1), extra_arguments=LOOPBACK_ONLY)
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


async def test_start_fails_clearly_when_chromium_is_missing() -> None:
    settings = Settings(chrome_binary="/nonexistent/chromium")
    runtime = ChromeRuntime(settings, extra_arguments=LOOPBACK_ONLY)

    with pytest.raises(ConfigurationError, match="/nonexistent/chromium"):
        await runtime.start()

    assert runtime.folder is not None
    assert not runtime.folder.exists()
