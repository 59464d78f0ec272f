"""What every WebDriver runtime shares: warm browsers from a pool, one run each.

A run leases a browser from the pool (`runtimes.pool`), has it run the screen
in a fresh context of its own and read back the shim's JSON answer, and gives
it back; between runs the pool has the browser clear that context away and
ready the next, then lends it again. How a browser is started, what a context
is and how a screen is run belong to the browser class of each runtime;
`BrowserRuntime` holds the rest: starting and stopping the pool, leasing,
enforcing the time limit, and turning every failure into an outcome.

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
    StillRunning,
    call_in_thread,
)
from runtimes.shim import failed_outcome, invoke_arguments

# Seconds past a run's deadline before a browser that has not answered is
# killed. WebDriver's own timeouts answer well within it; a busy page never does.
KILL_GRACE = 0.5


class BrowserFailure(Exception):
    """The browser or its driver failed outside the screen's own code."""


class RunningBrowser(GuardedBrowser, Protocol):
    """What a runtime needs from a browser, besides what the pool needs.

    The egress guard reads its `folder` and `service` to find the ports it
    listens on. The blocking methods run in threads, bounded in time.
    """

    version: str

    @property
    def pid(self) -> int | None:
        """The process to name in log lines, if the browser runs on this machine."""
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


B = TypeVar("B", bound=RunningBrowser)


class BrowserRuntime(ABC, Generic[B]):
    """Runs screens in `settings.browsers` warm browsers, each lent to one run.

    A subclass names itself (`name`), builds one browser (`new_browser`), says
    what it tried to start when none would (`describe_browser`), and may check
    its settings before anything starts (`check_settings`) or clean up after
    the last browser has closed (`after_browsers_closed`). `new_browser`
    gives each browser the flags or preferences of `egress`, the runtime's
    egress guard, which the base starts, stops and keeps up to date. Log lines
    go to the `apptasks.runtimes.<name>` logger.

    Each outcome carries `browser_ms`, the time the run held its browser: from
    the lease to the answer, without the wait for a free browser.
    """

    name: ClassVar[str]
    # Seconds one browser may take to start, and to get ready for the next run.
    launch_timeout: ClassVar[float]
    reset_timeout: ClassVar[float]

    def __init__(self, settings: Settings, *, hooks: Any = None) -> None:
        self.settings = settings
        self.hooks = hooks
        self.egress = EgressGuard(settings)
        self.folder: Path | None = None
        self.browser_version = ""
        self.logger = logging.getLogger(f"apptasks.runtimes.{self.name}")
        self._pool: BrowserPool[B] | None = None
        self._numbers = count(1)

    @abstractmethod
    def new_browser(self, number: int, folder: Path) -> B:
        """The browser numbered `number`, owning `folder`, not yet opened."""

    @abstractmethod
    def describe_browser(self) -> str:
        """What the runtime starts, named for the error when it cannot.

        For example `Chromium (/usr/bin/chromium) through ChromeDriver
        (/usr/bin/chromedriver)`: the binary and the driver, as configured.
        """

    def check_settings(self) -> None:
        """Raise `ConfigurationError` for a setting no browser could start with."""
        if self.settings.browsers < 1:
            raise ConfigurationError(
                f"APPTASKS_BROWSERS={self.settings.browsers}: need at least 1"
            )

    async def after_browsers_closed(self, folder: Path) -> None:
        """Called by `stop` once the pool has closed every browser, before
        `folder` (the runtime's) is deleted."""

    async def start(self) -> None:
        """Launch the browsers; fail with a `ConfigurationError` if one cannot."""
        self.check_settings()
        await self.egress.start()
        self.folder = Path(tempfile.mkdtemp(prefix=f"apptasks-{self.name}-"))
        launch = self.egress.launching(partial(self._launch, self.folder))
        pool = BrowserPool(self.settings.browsers, launch, self.reset_timeout)

        try:
            await pool.start()
        except Exception as exc:
            await call_in_thread(
                partial(_remove_folder, self.folder), self.launch_timeout
            )
            await self.egress.stop()
            raise ConfigurationError(
                f"the {self.name} runtime could not start {self.describe_browser()}: "
                f"{first_line(exc)}"
            ) from exc

        self._pool = pool
        self.logger.info(
            "%s runtime started browsers=%d version=%s",
            self.name,
            pool.size,
            self.browser_version,
        )

    async def stop(self) -> None:
        """Close every browser, delete the runtime's folder, stop the proxy."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.stop()
        if self.folder is not None:
            await self.after_browsers_closed(self.folder)
            await call_in_thread(
                partial(_remove_folder, self.folder), self.launch_timeout
            )
        await self.egress.stop()
        self.logger.info("%s runtime stopped", self.name)

    async def execute(self, request: RunRequest) -> RunOutcome:
        """Run one screen in a leased browser; answer by the deadline plus ~1 s.

        Raises `ValueError` or `TypeError` only for a payload or context that
        is not JSON; every failure of the screen or the browser is an outcome.
        """
        arguments = invoke_arguments(request.payload, request.context)
        started = time.monotonic()

        pool = self._pool
        if pool is None:
            return failed_outcome(
                RUNTIME_ERROR, f"the {self.name} runtime is not running"
            )
        try:
            async with pool.lease(request.seconds_left) as browser:
                leased = time.monotonic()
                with self.egress.screen(request.url):
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
        return replace(outcome, browser=self.name, browser_version=self.browser_version)

    async def _run(
        self,
        browser: B,
        request: RunRequest,
        arguments: tuple[str, str],
        started: float,
    ) -> RunOutcome:
        run_screen = partial(
            browser.run_screen, request, arguments, self.settings.max_result_bytes
        )
        try:
            outcome = await call_in_thread(
                run_screen, request.seconds_left + KILL_GRACE
            )
        except StillRunning:
            browser.kill()
            self.logger.info(
                "run %s: browser %s still busy at the deadline, killed after %.2fs",
                request.run_id,
                browser.name,
                time.monotonic() - started,
            )
            return failed_outcome(
                TIMEOUT_ERROR,
                "the screen was still loading or busy when the run reached its "
                "time limit (a loop that never ends?); its browser was killed",
            )
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
                "run %s: browser %s timed out loading the screen, replacing it",
                request.run_id,
                browser.name,
            )
        return outcome

    async def _launch(self, folder: Path) -> B:
        number = next(self._numbers)
        browser = self.new_browser(number, folder / f"browser-{number}")
        started = time.monotonic()

        try:
            await call_in_thread(browser.open, self.launch_timeout)
        except BaseException:
            # Also on cancellation: a half-started browser must not survive.
            # The folder is small this early, so removing it here is quick.
            browser.kill()
            _remove_folder(browser.folder)
            raise

        self.browser_version = browser.version
        self.logger.info(
            "browser %s started in %.2fs pid=%s",
            browser.name,
            time.monotonic() - started,
            browser.pid,
        )
        return browser


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
