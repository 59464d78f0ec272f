"""What every browser runtime does alike, against each real headless browser.

Each test runs once per browser runtime (`chrome`, `firefox`), with screens
served on loopback; what only one browser does, or does its own way, is tested
in that runtime's own module.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy
import pytest
import pytest_asyncio

from apptasks.errors import ConfigurationError
from apptasks.execution import HANDLER_NOT_REGISTERED, TIMEOUT_ERROR, Runtime
from apptasks.hooks import PROJECT, hookimpl
from apptasks.settings import Settings
from plugins import hookspecs
from plugins.manager import runtime_factories
from runtimes import chrome, firefox
from runtimes.browser_runtime import BrowserRuntime
from runtimes.chrome import ChromeRuntime
from runtimes.firefox import FirefoxRuntime
from runtimes.firefox_preferences import loopback_only_preferences
from tests.support.browsers import (
    CHROME_BINARY,
    CHROME_LOOPBACK_ONLY,
    SCREENS_DIR,
    all_gone_within,
    browser_folders,
    chromium_processes,
    error_type,
    firefox_main_processes,
    run,
    runtime_processes,
    serving_screens,
)

pytestmark = pytest.mark.browser

USER_AGENT = "set-by-plugin"


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


@pytest_asyncio.fixture(scope="module")
async def runtime(browser: BrowserUnderTest) -> AsyncIterator[BrowserRuntime[Any]]:
    """One started runtime of the browser, with one browser, for a module."""
    runtime = browser.runtime(browsers=1)
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


async def test_screen_without_handler_fails_fast(
    runtime: BrowserRuntime[Any], screens: str
) -> None:
    started = time.monotonic()

    outcome = await run(runtime, f"{screens}/no-handler.html", seconds=10)

    assert error_type(outcome) == HANDLER_NOT_REGISTERED
    assert time.monotonic() - started < 2.0
    assert outcome.console == ["log: screen loaded without a handler"]


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


async def test_busy_loop_times_out_and_next_run_succeeds(
    runtime: BrowserRuntime[Any], screens: str
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
        assert await all_gone_within(folder, 0.5), folder

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

    assert runtime_processes(folder) == []
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
