"""What every browser runtime does alike, against each real headless browser.

Each test runs once per browser runtime (`chrome`, `firefox`), with screens
served on loopback; what only one browser does, or does its own way, is tested
in that runtime's own module.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy
import pytest
import pytest_asyncio

from apptasks.errors import ConfigurationError
from apptasks.execution import (
    HANDLER_NOT_REGISTERED,
    RUNTIME_ERROR,
    TIMEOUT_ERROR,
    Runtime,
)
from apptasks.hooks import PROJECT, hookimpl
from apptasks.screens import render_screen, shim_source
from apptasks.settings import Settings
from plugins import hookspecs
from plugins.manager import runtime_factories
from runtimes import chrome, firefox
from runtimes.browser_runtime import BrowserRuntime
from runtimes.chrome import ChromeRuntime
from runtimes.firefox import FirefoxRuntime
from runtimes.firefox_preferences import loopback_only_preferences
from runtimes.processes import processes_mentioning
from tests.support.browsers import (
    ALL_ASSETS_SCREEN,
    CHROME_BINARY,
    CHROME_LOOPBACK_ONLY,
    EMPTY_STATE,
    ISOLATION_SCREEN,
    SCREENS_DIR,
    WRITTEN_STATE,
    CountingServer,
    all_gone_within,
    browser_folders,
    chromium_processes,
    error_type,
    firefox_main_processes,
    run,
    runtime_processes,
    serving_counted,
    serving_screens,
)

pytestmark = pytest.mark.browser

USER_AGENT = "set-by-plugin"
MAX_RESULT_BYTES = 100_000

# Run 1 leaves something in every kind of storage; every run reports what it
# finds, before and after writing.
STORAGE_SCREEN = """<!doctype html><html><body><script>
async function found() {
  return {
    cookie: document.cookie,
    local: localStorage.getItem("k"),
    session: sessionStorage.getItem("k"),
    indexedDB: (await indexedDB.databases()).map((db) => db.name),
    serviceWorkers: (await navigator.serviceWorker.getRegistrations()).length,
    caches: await caches.keys(),
  };
}
function putInIndexedDB() {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open("left-behind", 1);
    open.onupgradeneeded = () => open.result.createObjectStore("things");
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const write = open.result.transaction("things", "readwrite");
      write.objectStore("things").put("value", "key");
      write.oncomplete = () => { open.result.close(); resolve(); };
      write.onerror = () => reject(write.error);
    };
  });
}
Fliplet.Page.onRemoteExecution(async function (payload) {
  const before = await found();
  if (payload.write) {
    document.cookie = "k=1; max-age=3600";
    localStorage.setItem("k", "1");
    sessionStorage.setItem("k", "1");
    await putInIndexedDB();
    await navigator.serviceWorker.register("/sw.js");
    await navigator.serviceWorker.ready;
    await (await caches.open("left-behind")).put("/cached", new Response("x"));
  }
  return { before: before, after: await found() };
});
</script></body></html>"""
NOTHING_STORED = {
    "cookie": "",
    "local": None,
    "session": None,
    "indexedDB": [],
    "serviceWorkers": 0,
    "caches": [],
}

HELPER_SCRIPT = "window.helperLoaded = true;"
# Media elements are not in the shared assets screen; they must be refused too.
MEDIA_TAGS = (
    '<video src="ASSET_ORIGIN/clip.mp4" autoplay></video>'
    '<audio src="ASSET_ORIGIN/sound.mp3" autoplay></audio>'
)


@dataclass(frozen=True)
class BrowserUnderTest:
    """One browser runtime, and what its tests need to know about it."""

    name: str
    module: Any
    runtime_class: type[BrowserRuntime[Any]]
    # Keywords for the runtime that keep its browser to loopback: screens here
    # live on 127.0.0.1, and nothing the browser does on its own leaves.
    loopback_only: dict[str, Any]
    # Settings every runtime of this browser is made with.
    base_settings: dict[str, Any]
    # The setting naming the browser binary, for a start that must fail.
    binary_setting: str
    # Finds the processes a runtime started for a folder, and those of them
    # that are the browser's main process.
    processes: Callable[[Path], list[int]]
    main_processes: Callable[[Path], list[int]]
    # Seconds past the deadline a run whose handler never settles may take.
    handler_timeout_slack: float

    def runtime(self, hooks: Any = None, **settings: Any) -> BrowserRuntime[Any]:
        return self.runtime_class(
            Settings(**{**self.base_settings, **settings}),
            hooks=hooks,
            **self.loopback_only,
        )


BROWSERS = {
    "chrome": BrowserUnderTest(
        name="chrome",
        module=chrome,
        runtime_class=ChromeRuntime,
        loopback_only={"extra_arguments": CHROME_LOOPBACK_ONLY},
        base_settings={"chrome_binary": CHROME_BINARY},
        binary_setting="chrome_binary",
        processes=processes_mentioning,
        main_processes=chromium_processes,
        handler_timeout_slack=1.5,
    ),
    "firefox": BrowserUnderTest(
        name="firefox",
        module=firefox,
        runtime_class=FirefoxRuntime,
        # Every other host goes to a proxy on a closed loopback port.
        loopback_only={"extra_preferences": loopback_only_preferences()},
        base_settings={},
        binary_setting="firefox_binary",
        processes=runtime_processes,
        main_processes=firefox_main_processes,
        handler_timeout_slack=1.0,
    ),
}


@pytest.fixture(scope="module", params=sorted(BROWSERS))
def browser(request: pytest.FixtureRequest) -> BrowserUnderTest:
    return BROWSERS[request.param]


@pytest.fixture(scope="module")
def screens() -> Iterator[str]:
    """Base URL of a loopback server for the sample and inline screens."""
    with serving_screens() as url:
        yield url


@pytest.fixture
def counting_server() -> Iterator[CountingServer]:
    """A fresh `CountingServer` on 127.0.0.1, for one test."""
    with serving_counted() as server:
        yield server


@pytest_asyncio.fixture(scope="module")
async def runtime(browser: BrowserUnderTest) -> AsyncIterator[BrowserRuntime[Any]]:
    """One started runtime of the browser, with one browser, for a module."""
    runtime = browser.runtime(browsers=1, max_result_bytes=MAX_RESULT_BYTES)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


# Registration


def test_plugin_registers_the_runtime(browser: BrowserUnderTest) -> None:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(browser.module, name=browser.name)

    assert runtime_factories(manager) == {browser.name: browser.runtime_class}
    assert isinstance(browser.runtime_class(Settings()), Runtime)


# Results


async def test_hello_returns_its_result_and_console_line(
    runtime: BrowserRuntime[Any], browser: BrowserUnderTest, screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/hello.html", {"x": 1})

    assert outcome.ok, outcome.error
    assert outcome.result == {"a": 1, "b": 2}
    assert outcome.console == ['log: App task sent this payload {"x":1}']
    assert outcome.browser == browser.name
    assert outcome.browser_version.split(".")[0].isdigit()


async def test_echo_returns_nested_and_non_ascii_payload_unchanged(
    runtime: BrowserRuntime[Any], screens: str
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


async def test_rss_import_parses_the_feed_with_the_dom(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    feed = (SCREENS_DIR / "rss-feed.xml").read_text(encoding="utf-8")
    payload = {"feed": feed, "since": "2026-12-01T00:00:00Z"}

    outcome = await run(runtime, f"{screens}/rss-import.html", payload)

    assert outcome.ok, outcome.error
    assert outcome.result == {
        "count": 2,
        "newItems": ["New canteen menu", "Winter party & awards"],
    }


async def test_slow_handler_within_its_limit_completes(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/slow.html", {"ms": 500}, seconds=5)

    assert outcome.result == {"waited": 500}


async def test_handler_receives_the_context(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    context = {"mode": "on-demand", "taskId": 7}

    outcome = await run(runtime, f"{screens}/context.html", context=context)

    assert outcome.result == context


async def test_undefined_result_becomes_none(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/undefined.html")

    assert outcome.ok, outcome.error
    assert outcome.result is None


async def test_date_result_becomes_an_iso_string(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/date.html")

    assert outcome.result == "2026-12-04T16:05:00.000Z"


# Screen failures


async def test_thrown_type_error_is_reported_with_its_trace(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    payload = {"Email": "someone@example.com"}

    outcome = await run(runtime, f"{screens}/throws.html", payload)

    assert outcome.error is not None
    assert outcome.error.error_type == "TypeError"
    assert "sendEmail" in outcome.error.message
    assert outcome.error.trace


async def test_a_failed_run_keeps_a_screenshot_and_the_page_html(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/throws.html", {"Email": "a@b.example"})

    assert outcome.bundle is not None
    assert outcome.bundle.screenshot_png is not None
    assert outcome.bundle.screenshot_png.startswith(b"\x89PNG")
    assert outcome.bundle.html is not None
    assert "mailer.sendEmail" in outcome.bundle.html


async def test_screen_without_handler_fails_fast(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    started = time.monotonic()

    outcome = await run(runtime, f"{screens}/no-handler.html", seconds=10)

    assert error_type(outcome) == HANDLER_NOT_REGISTERED
    assert time.monotonic() - started < 2.0
    assert outcome.console == ["log: screen loaded without a handler"]


async def test_thrown_string_is_reported_as_an_error_with_that_message(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/throws-string.html")

    assert outcome.error is not None
    assert outcome.error.error_type == "Error"
    assert outcome.error.message == "quota exhausted for today"


async def test_cyclic_result_fails_saying_it_cannot_be_json(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/cyclic.html")

    assert outcome.error is not None
    assert outcome.error.error_type == "ResultNotSerializable"
    assert "JSON" in outcome.error.message


async def test_result_over_the_size_limit_fails_naming_the_limit(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/big.html", {"size": MAX_RESULT_BYTES})

    assert outcome.error is not None
    assert outcome.error.error_type == "ResultTooLarge"
    assert f"{MAX_RESULT_BYTES + 2} bytes" in outcome.error.message
    assert f"limit of {MAX_RESULT_BYTES} bytes" in outcome.error.message


async def test_dialogs_become_console_lines_answered_no(
    runtime: BrowserRuntime[Any], screens: str
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
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    outcome = await run(runtime, f"{screens}/plain.html")

    assert error_type(outcome) == RUNTIME_ERROR
    assert outcome.error is not None and "shim" in outcome.error.message


async def test_unreachable_screen_url_fails_naming_the_url(
    runtime: BrowserRuntime[Any], screens: str
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
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    first = await run(runtime, f"{screens}/storage.html")
    second = await run(runtime, f"{screens}/storage.html")

    empty = {"local": None, "session": None, "cookie": ""}
    assert first.result == empty
    assert second.result == empty


async def test_nothing_stored_by_one_run_is_seen_by_the_next(
    runtime: BrowserRuntime[Any], counting_server: CountingServer
) -> None:
    url = counting_server.serve("/storage.html", render_screen(STORAGE_SCREEN))
    counting_server.serve(
        "/sw.js", "self.addEventListener('fetch', () => {});", "text/javascript"
    )
    browsers = browser_folders(runtime)

    first = await run(runtime, url, {"write": True})
    second = await run(runtime, url, {"write": False})

    assert first.ok, first.error
    assert first.result["before"] == NOTHING_STORED
    assert first.result["after"] == {
        "cookie": "k=1",
        "local": "1",
        "session": "1",
        "indexedDB": ["left-behind"],
        "serviceWorkers": 1,
        "caches": ["left-behind"],
    }
    assert second.ok, second.error
    assert second.result["before"] == NOTHING_STORED
    # Same browser: isolation came from the contexts, not from a new browser.
    assert browser_folders(runtime) == browsers


@pytest.mark.parametrize(
    "second_path",
    ["/app-a/isolation.html", "/app-b/isolation.html"],
    ids=["same-screen", "another-apps-screen"],
)
async def test_nothing_a_run_stores_reaches_the_next_run_on_the_same_browser(
    runtime: BrowserRuntime[Any], counting_server: CountingServer, second_path: str
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


@pytest.mark.parametrize(
    ("media", "rendered"),
    [(False, True), (True, True), (True, False)],
    ids=["assets", "assets-and-media", "assets-and-media-every-tag-kept"],
)
async def test_screen_fetches_its_scripts_but_no_styles_images_fonts_or_media(
    runtime: BrowserRuntime[Any],
    counting_server: CountingServer,
    media: bool,
    rendered: bool,
) -> None:
    html = (SCREENS_DIR / "assets.html").read_text(encoding="utf-8")
    if media:
        html = html.replace("</body>", MEDIA_TAGS + "</body>")
    html = html.replace("ASSET_ORIGIN", counting_server.origin)
    # As the API renders it (link and img tags dropped), or with every tag
    # kept, so that the browser alone must refuse them.
    if rendered:
        html = render_screen(html)
    else:
        html = html.replace("<head>", f"<head><script>{shim_source()}</script>")
    counting_server.serve("/helper.js", HELPER_SCRIPT, "text/javascript")
    url = counting_server.serve("/assets.html", html)

    outcome = await run(runtime, url)
    await asyncio.sleep(0.5)  # for requests made late, such as late.png

    assert outcome.ok, outcome.error
    assert outcome.result == {"helperLoaded": True}
    assert counting_server.counts == {"/assets.html": 1, "/helper.js": 1}


async def test_no_media_favicon_or_css_request_leaves_but_fetch_and_workers_do(
    runtime: BrowserRuntime[Any], counting_server: CountingServer
) -> None:
    counting_server.serve("/helper.js", HELPER_SCRIPT, "text/javascript")
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
    runtime: BrowserRuntime[Any], browser: BrowserUnderTest, screens: str
) -> None:
    started = time.monotonic()

    outcome = await run(runtime, f"{screens}/slow.html", {"ms": 15000}, seconds=2)

    elapsed = time.monotonic() - started
    assert error_type(outcome) == TIMEOUT_ERROR
    assert 1.9 < elapsed < 2 + browser.handler_timeout_slack
    assert (await run(runtime, f"{screens}/hello.html")).ok


async def test_a_pending_handler_times_out_with_a_bundle_and_keeps_the_browser(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    """A handler that waits is not a stuck browser: nothing is killed."""
    folders = browser_folders(runtime)

    outcome = await run(runtime, f"{screens}/slow.html", {"ms": 15000}, seconds=1.5)

    assert error_type(outcome) == TIMEOUT_ERROR
    assert outcome.error is not None
    assert "had not settled" in outcome.error.message
    assert outcome.bundle is not None
    assert outcome.bundle.html is not None
    assert "payload.ms" in outcome.bundle.html
    assert (await run(runtime, f"{screens}/hello.html")).ok
    assert browser_folders(runtime) == folders


async def test_busy_loop_times_out_and_next_run_succeeds(
    runtime: BrowserRuntime[Any], browser: BrowserUnderTest, screens: str
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
        assert await all_gone_within(folder, 0.5, browser.processes), folder

    after = await run(runtime, f"{screens}/hello.html")
    assert after.result == {"a": 1, "b": 2}


async def test_page_that_never_finishes_loading_times_out(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    started = time.monotonic()

    outcome = await run(runtime, f"{screens}/stuck-loading.html", seconds=2)

    assert error_type(outcome) == TIMEOUT_ERROR
    assert time.monotonic() - started < 2 + 1.0
    assert (await run(runtime, f"{screens}/hello.html")).ok


async def test_cancelled_run_kills_its_browser_and_next_run_succeeds(
    runtime: BrowserRuntime[Any], browser: BrowserUnderTest, screens: str
) -> None:
    newest = browser_folders(runtime)[-1]

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(run(runtime, f"{screens}/busy-loop.html"), 1.0)

    assert await all_gone_within(newest, 0.5, browser.processes)
    assert (await run(runtime, f"{screens}/hello.html")).ok


# Browser trouble


async def test_crashed_browser_fails_the_run_and_is_replaced(
    runtime: BrowserRuntime[Any], browser: BrowserUnderTest, screens: str
) -> None:
    newest = browser_folders(runtime)[-1]

    async def crash_browser_mid_run() -> None:
        await asyncio.sleep(1.0)
        for pid in browser.main_processes(newest):
            os.kill(pid, signal.SIGKILL)

    crash = asyncio.create_task(crash_browser_mid_run())
    started = time.monotonic()
    outcome = await run(runtime, f"{screens}/slow.html", {"ms": 5000})
    await crash

    assert error_type(outcome) == RUNTIME_ERROR
    assert time.monotonic() - started < 4.0
    assert (await run(runtime, f"{screens}/hello.html")).ok


async def test_two_browsers_run_two_screens_at_once(
    browser: BrowserUnderTest, screens: str
) -> None:
    runtime = browser.runtime(browsers=2)
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


# Plugins


class UserAgentPlugin:
    """Gives every browser a user agent naming the runtime that started it."""

    @hookimpl
    def apptasks_browser_options(self, browser: str, options: Any) -> None:
        agent = f"{USER_AGENT} {browser}"
        if browser == "chrome":
            options.add_argument(f"--user-agent={agent}")
        elif browser == "firefox":
            options.set_preference("general.useragent.override", agent)


class BrokenOptionsPlugin:
    @hookimpl
    def apptasks_browser_options(self) -> None:
        raise ValueError("no options today")


def plugin_hooks(plugin: object, name: str) -> Any:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(plugin, name=name)
    return manager.hook


async def test_hook_apptasks_browser_options_changes_the_browsers_a_runtime_starts(
    browser: BrowserUnderTest, screens: str
) -> None:
    runtime = browser.runtime(plugin_hooks(UserAgentPlugin(), "user-agent"), browsers=1)
    await runtime.start()
    try:
        outcome = await run(runtime, f"{screens}/user-agent.html")
    finally:
        await runtime.stop()

    assert outcome.result == f"{USER_AGENT} {browser.name}"


async def test_a_failing_browser_options_hook_stops_start_naming_the_plugin(
    browser: BrowserUnderTest,
) -> None:
    hooks = plugin_hooks(BrokenOptionsPlugin(), "broken-options")
    runtime = browser.runtime(hooks, browsers=1)

    with pytest.raises(ConfigurationError, match=r"'broken-options'.*no options"):
        await runtime.start()


# Lifecycle


async def test_stop_leaves_no_browser_process_or_folder(
    browser: BrowserUnderTest, screens: str
) -> None:
    runtime = browser.runtime(browsers=2)
    await runtime.start()
    assert runtime.folder is not None
    folder = runtime.folder
    assert len(browser.main_processes(folder)) == 2

    assert (await run(runtime, f"{screens}/hello.html")).ok
    await runtime.stop()

    assert browser.processes(folder) == []
    assert not folder.exists()


async def test_start_fails_clearly_when_the_browser_is_missing(
    browser: BrowserUnderTest,
) -> None:
    missing = f"/nonexistent/{browser.name}"
    runtime = browser.runtime(**{browser.binary_setting: missing})

    with pytest.raises(ConfigurationError, match=missing):
        await runtime.start()

    assert runtime.folder is not None
    assert not runtime.folder.exists()
