"""What every WebDriver runtime shares: warm browsers from a pool, one run each.

A run leases a browser from the pool (`runtimes.pool`), has it run the screen
in a fresh context of its own and read back the shim's JSON answer, and gives
it back; between runs the pool has the browser clear that context away and
ready the next, then lends it again. How a browser is started, what a context
is and how a screen is run belong to the browser class of each runtime;
`PooledRuntime` holds the rest, for local and remote browsers alike: leasing,
enforcing the time limit, and turning every failure into an outcome.
`BrowserRuntime` adds what browsers on this machine need: a folder of their
own and the egress proxy.

The time limit is enforced from the event loop, not by WebDriver: a page stuck
in `while (true) {}` ignores WebDriver's timeouts and holds the browser with
it. Past the deadline (plus `KILL_GRACE`) the whole browser is killed, which
also frees the thread blocked on it, the run answers with a timeout, and the
pool launches a replacement in the background.

Every request of the browsers goes through the runtime's egress proxy
(`runtimes.egress_guard`), which `BrowserRuntime` starts before the first
browser and stops after the last: a screen reaches its own origin, the public
network and the servers in `APPTASKS_EGRESS_ALLOW`, never the worker's machine
or its networks, nor `file:` URLs. Each subclass hands the proxy's flags or
preferences to every browser it makes.

Known shortcoming: a result is measured against the size limit only after the
browser has sent all of it, so a huge result still costs memory once.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from selenium.common.exceptions import WebDriverException

from apptasks.errors import ConfigurationError
from apptasks.execution import RUNTIME_ERROR, TIMEOUT_ERROR, RunOutcome, RunRequest
from apptasks.settings import Settings
from runtimes.egress_guard import EgressGuard, GuardedBrowser
from runtimes.pool import (
    BrowserPool,
    NoFreeBrowser,
    PoolClosed,
    PooledBrowser,
    StillRunning,
    call_in_thread,
)
from runtimes.shim import failed_outcome, invoke_arguments

# Seconds past a run's deadline before a browser that has not answered is
# killed. WebDriver's own timeouts answer well within it; a busy page never does.
KILL_GRACE = 0.5


class BrowserFailure(Exception):
    """The browser or its driver failed outside the screen's own code."""


class LeasedBrowser(PooledBrowser, Protocol):
    """What a pooled runtime needs from a browser, besides what the pool needs.

    The blocking methods run in threads, bounded in time.
    """

    @property
    def version(self) -> str:
        """The browser's version, as it reports it."""
        ...

    def open(self) -> None:
        """Blocking: start the browser and ready the first run's context."""

    def run_screen(
        self, request: RunRequest, arguments: tuple[str, str], max_result_bytes: int
    ) -> RunOutcome:
        """Blocking: run one screen; raise `BrowserFailure` if the browser fails.

        Every failure of the screen itself is an outcome. A browser that can no
        longer be trusted with a run sets `broken`, and is replaced.
        """
        ...


class RunningBrowser(LeasedBrowser, GuardedBrowser, Protocol):
    """A browser on this machine: the egress guard reads its `folder` and
    `service` to find the ports it listens on."""

    @property
    def pid(self) -> int | None:
        """The process to name in log lines."""
        ...


L = TypeVar("L", bound=LeasedBrowser)
B = TypeVar("B", bound=RunningBrowser)


class PooledRuntime(ABC, Generic[L]):
    """Runs screens in `settings.browsers` warm browsers, each lent to one run.

    What every WebDriver runtime shares: leasing, the time limit, and turning
    every failure into an outcome. A subclass names itself (`name`), says how
    long a browser may take to start (`launch_timeout`) and to get ready for
    the next run (`reset_timeout`), starts its pool with `_start_pool` and
    stops it with `_stop_pool`. Log lines go to `apptasks.runtimes.<name>`.

    Each outcome carries `browser_ms`, the time the run held its browser: from
    the lease to the answer, without the wait for a free browser.
    """

    name: ClassVar[str]
    launch_timeout: ClassVar[float]
    reset_timeout: ClassVar[float]
    # Seconds past a run's deadline before a browser that has not answered is
    # killed, and what the run then answers.
    kill_grace: ClassVar[float] = KILL_GRACE
    killed_message: ClassVar[str] = (
        "the screen was still loading or busy when the run reached its time "
        "limit (a loop that never ends?); its browser was killed"
    )

    def __init__(self, settings: Settings, *, hooks: Any = None) -> None:
        self.settings = settings
        self.hooks = hooks
        self.browser_version = ""
        self.logger = logging.getLogger(f"apptasks.runtimes.{self.name}")
        self._pool: BrowserPool[L] | None = None
        self._numbers = count(1)

    @abstractmethod
    async def start(self) -> None:
        """Start the browsers; fail with a `ConfigurationError` if one cannot."""

    @abstractmethod
    async def stop(self) -> None:
        """Close every browser and whatever the runtime started for them."""

    def check_settings(self) -> None:
        """Raise `ConfigurationError` for a setting no browser could start with."""
        if self.settings.browsers < 1:
            raise ConfigurationError(
                f"APPTASKS_BROWSERS={self.settings.browsers}: need at least 1"
            )

    def browser_label(self) -> str:
        """The browser named in each outcome; the runtime's name by default."""
        return self.name

    def launched_note(self, browser: L) -> str:
        """What the log line of a started browser says of where it runs."""
        return ""

    def screen_scope(self, url: str) -> AbstractContextManager[None]:
        """Held while a run loads and calls the screen at `url`."""
        return nullcontext()

    async def _start_pool(self, launch: Callable[[], Awaitable[L]]) -> BrowserPool[L]:
        """Start the pool of browsers `launch` makes; raise what stopped it."""
        pool = BrowserPool(self.settings.browsers, launch, self.reset_timeout)
        await pool.start()
        self._pool = pool
        return pool

    async def _stop_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.stop()

    async def execute(self, request: RunRequest) -> RunOutcome:
        """Run one screen in a leased browser; answer by the deadline plus ~1 s.

        Raises `ValueError` or `TypeError` only for a payload or context that
        is not JSON; every failure of the screen or the browser is an outcome.
        """
        arguments = invoke_arguments(request.payload, request.context)
        started = time.monotonic()

        pool = self._pool
        if pool is None:
            outcome = failed_outcome(
                RUNTIME_ERROR, f"the {self.name} runtime is not running"
            )
            return self._stamped(outcome)
        try:
            async with pool.lease(request.seconds_left) as browser:
                leased = time.monotonic()
                with self.screen_scope(request.url):
                    outcome = await self._run(browser, request, arguments, started)
                outcome = replace(outcome, browser_ms=elapsed_ms(leased))
        except NoFreeBrowser:
            outcome = failed_outcome(
                TIMEOUT_ERROR,
                f"no browser became free before the run's time limit "
                f"(all {pool.size} busy or restarting)",
            )
        except PoolClosed:
            outcome = failed_outcome(RUNTIME_ERROR, f"the {self.name} runtime stopped")
        return self._stamped(outcome)

    def _stamped(self, outcome: RunOutcome) -> RunOutcome:
        return replace(
            outcome, browser=self.browser_label(), browser_version=self.browser_version
        )

    async def _run(
        self,
        browser: L,
        request: RunRequest,
        arguments: tuple[str, str],
        started: float,
    ) -> RunOutcome:
        run_screen = partial(
            browser.run_screen, request, arguments, self.settings.max_result_bytes
        )
        try:
            outcome = await call_in_thread(
                run_screen, request.seconds_left + self.kill_grace
            )
        except StillRunning:
            browser.kill()
            self.logger.warning(
                "run %s: browser %s still busy at the deadline, killed after %.2fs",
                request.run_id,
                browser.name,
                time.monotonic() - started,
            )
            return failed_outcome(TIMEOUT_ERROR, self.killed_message)
        except BrowserFailure as exc:
            browser.broken = True
            self.logger.warning(
                "run %s: browser %s failed, replacing it: %s",
                request.run_id,
                browser.name,
                exc,
            )
            return failed_outcome(RUNTIME_ERROR, str(exc))

        if browser.broken:
            self.logger.info(
                "run %s: browser %s is replaced after the run: %s",
                request.run_id,
                browser.name,
                outcome.error.message
                if outcome.error
                else "it can no longer be trusted",
            )
        return outcome

    async def _open(self, browser: L) -> L:
        """Open a new browser within `launch_timeout`, and log it."""
        started = time.monotonic()
        try:
            await call_in_thread(browser.open, self.launch_timeout)
        except BaseException:
            # Also on cancellation: a half-started browser must not survive.
            browser.kill()
            self._discard(browser)
            raise

        self.browser_version = browser.version
        self.logger.info(
            "browser %s started in %.2fs %s",
            browser.name,
            time.monotonic() - started,
            self.launched_note(browser),
        )
        return browser

    def _discard(self, browser: L) -> None:
        """Clean up after a browser that failed to open and was killed."""


class BrowserRuntime(PooledRuntime[B]):
    """A pooled runtime whose browsers run on this machine, behind its egress proxy.

    A subclass builds one browser (`new_browser`), says what it tried to start
    when none would (`describe_browser`), and may check its settings before
    anything starts (`check_settings`) or clean up after the last browser has
    closed (`after_browsers_closed`). `new_browser` gives each browser the
    flags or preferences of `egress`, the runtime's egress guard, which the
    base starts, stops and keeps up to date.
    """

    def __init__(self, settings: Settings, *, hooks: Any = None) -> None:
        super().__init__(settings, hooks=hooks)
        self.egress = EgressGuard(settings)
        self.folder: Path | None = None

    @abstractmethod
    def new_browser(self, number: int, folder: Path) -> B:
        """The browser numbered `number`, owning `folder`, not yet opened."""

    @abstractmethod
    def describe_browser(self) -> str:
        """What the runtime starts, named for the error when it cannot.

        For example `Chromium (/usr/bin/chromium) through ChromeDriver
        (/usr/bin/chromedriver)`: the binary and the driver, as configured.
        """

    async def after_browsers_closed(self, folder: Path) -> None:
        """Called by `stop` once the pool has closed every browser, before
        `folder` (the runtime's) is deleted."""

    def launched_note(self, browser: B) -> str:
        return f"pid={browser.pid}"

    def screen_scope(self, url: str) -> AbstractContextManager[None]:
        return self.egress.screen(url)

    async def start(self) -> None:
        """Launch the browsers; fail with a `ConfigurationError` if one cannot."""
        self.check_settings()
        await self.egress.start()
        self.folder = Path(tempfile.mkdtemp(prefix=f"apptasks-{self.name}-"))
        launch = self.egress.launching(partial(self._launch, self.folder))

        try:
            pool = await self._start_pool(launch)
        except Exception as exc:
            await call_in_thread(
                partial(_remove_folder, self.folder), self.launch_timeout
            )
            await self.egress.stop()
            raise ConfigurationError(
                f"the {self.name} runtime could not start {self.describe_browser()}: "
                f"{first_line(exc)}"
            ) from exc

        self.logger.info(
            "%s runtime started browsers=%d version=%s",
            self.name,
            pool.size,
            self.browser_version,
        )

    async def stop(self) -> None:
        """Close every browser, delete the runtime's folder, stop the proxy."""
        await self._stop_pool()
        if self.folder is not None:
            await self.after_browsers_closed(self.folder)
            await call_in_thread(
                partial(_remove_folder, self.folder), self.launch_timeout
            )
        await self.egress.stop()
        self.logger.info("%s runtime stopped", self.name)

    async def _launch(self, folder: Path) -> B:
        number = next(self._numbers)
        return await self._open(self.new_browser(number, folder / f"browser-{number}"))

    def _discard(self, browser: B) -> None:
        # The folder is small this early, so removing it here is quick.
        _remove_folder(browser.folder)


def elapsed_ms(since: float) -> int:
    """Whole milliseconds from the `time.monotonic()` reading `since` until now."""
    return int((time.monotonic() - since) * 1000)


def first_line(exc: BaseException) -> str:
    """An exception's first line: WebDriver messages go on with stack traces."""
    message = exc.msg if isinstance(exc, WebDriverException) else str(exc)
    lines = (message or "").strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
