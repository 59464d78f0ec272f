"""The `chrome` runtime: screens run in warm headless Chromium, driven by Selenium.

A run leases a browser from the pool, loads the screen page in a browser
context made for it alone, calls the shim's entry point and reads back its JSON
answer. Between runs the pool has the browser dispose of that context and make
the next one, then lends it again; the browser itself fails every stylesheet,
image, font and media request (`runtimes.chrome_browser`).

The time limit is enforced from the event loop, not by WebDriver: a page stuck
in `while (true) {}` ignores WebDriver's timeouts and hangs chromedriver with
it. Past the deadline (plus `KILL_GRACE`) the whole browser is killed, which
also frees the thread blocked on it, the run answers with a timeout, and the
pool launches a replacement in the background.

Every request of the browsers goes through the runtime's egress proxy
(`runtimes.egress_guard`): a screen reaches its own origin, the public network
and the servers in `APPTASKS_EGRESS_ALLOW`, never the worker's machine or its
networks, nor `file:` URLs.

A context costs Chromium a new renderer process, made between runs: a run that
finds its browser ready pays nothing for it. Runs queued back to back on one
browser wait for it, about 0.04 s with the headless shell
(`APPTASKS_CHROME_BINARY=/usr/bin/chromium-headless-shell`) and 0.2 s with the
full browser on a 2-core machine.

Chromium 156 still sends a few requests of its own while idle
(accounts.google.com/ListAccounts, update.googleapis.com) despite its flags;
the egress proxy refuses those hosts without resolving them, and the default
`APPTASKS_CHROME_ARGUMENTS` maps them to nothing as well.

Known shortcoming: a result is measured against the size limit only after the
browser has sent all of it, so a huge result still costs memory once.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any, ClassVar

from apptasks.errors import ConfigurationError
from apptasks.execution import RUNTIME_ERROR, TIMEOUT_ERROR, RunOutcome, RunRequest
from apptasks.hooks import hookimpl
from apptasks.settings import Settings
from runtimes.chrome_browser import (
    LAUNCH_TIMEOUT,
    RESET_TIMEOUT,
    BrowserFailure,
    ChromeBrowser,
    first_line,
)
from runtimes.egress_guard import EgressGuard
from runtimes.pool import (
    BrowserPool,
    NoFreeBrowser,
    PoolClosed,
    StillRunning,
    call_in_thread,
)
from runtimes.shim import failed_outcome, invoke_arguments

logger = logging.getLogger("apptasks.runtimes.chrome")

# Seconds past a run's deadline before a browser that has not answered is
# killed. WebDriver's own timeouts answer well within it; a busy page never does.
KILL_GRACE = 0.5


class ChromeRuntime:
    """Runs screens in `settings.browsers` warm headless Chromium browsers.

    The `APPTASKS_CHROME_ARGUMENTS` setting and then `extra_arguments` are
    added to every Chromium command line, after the runtime's own flags and
    before the egress proxy's, which none may change. `hooks` is the plugin
    manager's hook relay, for `apptasks_browser_options`.
    """

    name: ClassVar[str] = "chrome"

    def __init__(
        self,
        settings: Settings,
        *,
        extra_arguments: Sequence[str] = (),
        hooks: Any = None,
    ) -> None:
        self.settings = settings
        self.hooks = hooks
        self.extra_arguments = (
            *shlex.split(settings.chrome_arguments),
            *extra_arguments,
        )
        self.egress = EgressGuard(settings)
        self.folder: Path | None = None
        self.browser_version = ""
        self._pool: BrowserPool[ChromeBrowser] | None = None
        self._numbers = count(1)

    async def start(self) -> None:
        """Launch the browsers; fail with a `ConfigurationError` if one cannot."""
        if self.settings.browsers < 1:
            raise ConfigurationError(
                f"APPTASKS_BROWSERS={self.settings.browsers}: need at least 1"
            )
        await self.egress.start()
        self.folder = Path(tempfile.mkdtemp(prefix="apptasks-chrome-"))
        launch = self.egress.launching(partial(self._launch, self.folder))
        pool = BrowserPool(self.settings.browsers, launch, RESET_TIMEOUT)

        try:
            await pool.start()
        except Exception as exc:
            await call_in_thread(partial(_remove_folder, self.folder), LAUNCH_TIMEOUT)
            await self.egress.stop()
            raise ConfigurationError(
                f"the chrome runtime could not start Chromium "
                f"({self.settings.chrome_binary}) through ChromeDriver "
                f"({self.settings.chromedriver}): {first_line(exc)}"
            ) from exc

        self._pool = pool
        logger.info(
            "chrome runtime started browsers=%d version=%s",
            pool.size,
            self.browser_version,
        )

    async def stop(self) -> None:
        """Close every browser and delete the runtime's folder."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.stop()
        if self.folder is not None:
            await call_in_thread(partial(_remove_folder, self.folder), LAUNCH_TIMEOUT)
        await self.egress.stop()
        logger.info("chrome runtime stopped")

    async def execute(self, request: RunRequest) -> RunOutcome:
        """Run one screen in a leased browser; answer by the deadline plus ~1 s.

        Raises `ValueError` or `TypeError` only for a payload or context that
        is not JSON; every failure of the screen or the browser is an outcome.
        """
        arguments = invoke_arguments(request.payload, request.context)
        started = time.monotonic()

        pool = self._pool
        if pool is None:
            return failed_outcome(RUNTIME_ERROR, "the chrome runtime is not running")
        try:
            async with pool.lease(request.seconds_left) as browser:
                with self.egress.screen(request.url):
                    outcome = await self._run(browser, request, arguments, started)
        except NoFreeBrowser:
            outcome = failed_outcome(
                TIMEOUT_ERROR,
                f"no browser became free before the run's time limit "
                f"(all {pool.size} busy or restarting)",
            )
        except PoolClosed:
            outcome = failed_outcome(RUNTIME_ERROR, "the chrome runtime stopped")
        return replace(outcome, browser=self.name, browser_version=self.browser_version)

    async def _run(
        self,
        browser: ChromeBrowser,
        request: RunRequest,
        arguments: Sequence[str],
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
            logger.info(
                "run %s: browser %s still busy at the deadline, killed after %.2fs",
                request.run_id,
                browser.name,
                time.monotonic() - started,
            )
            return failed_outcome(
                TIMEOUT_ERROR,
                "the screen was still busy when the run reached its time limit "
                "(a loop that never ends?); its browser was killed",
            )
        except BrowserFailure as exc:
            browser.broken = True
            logger.warning(
                "run %s: browser %s failed, replacing it: %s",
                request.run_id,
                browser.name,
                exc,
            )
            return failed_outcome(RUNTIME_ERROR, str(exc))

        if browser.broken:
            logger.info(
                "run %s: browser %s timed out loading the screen, replacing it",
                request.run_id,
                browser.name,
            )
        return outcome

    async def _launch(self, folder: Path) -> ChromeBrowser:
        number = next(self._numbers)
        browser = ChromeBrowser(
            number,
            folder / f"browser-{number}",
            self.settings,
            self.extra_arguments,
            self.hooks,
            self.egress.chrome_arguments(),
        )
        started = time.monotonic()

        try:
            await call_in_thread(browser.open, LAUNCH_TIMEOUT)
        except BaseException:
            # Also on cancellation: a half-started browser must not survive.
            # The folder is small this early, so removing it here is quick.
            browser.kill()
            _remove_folder(browser.folder)
            raise

        self.browser_version = browser.version
        logger.info(
            "browser %s started in %.2fs pid=%s",
            browser.name,
            time.monotonic() - started,
            browser.pid,
        )
        return browser


def _remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


@hookimpl
def apptasks_register_runtimes() -> list[type[ChromeRuntime]]:
    """Register the `chrome` runtime, exactly as a third-party plugin would."""
    return [ChromeRuntime]
