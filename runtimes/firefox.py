"""The `firefox` runtime: screens run in warm headless Firefox, driven by Selenium.

A run leases a browser from the pool, switches to the fresh user context made
for it, loads the screen page there, calls the shim's entry point and reads
back its JSON answer. When the run is over, the pool removes the context and
has the browser make the next one before lending it again.

The time limit is enforced from the event loop, not by WebDriver: a page stuck
in `while (true) {}` holds its content process, and Firefox answers nothing
about that page any more. Past the deadline (plus `KILL_GRACE`) the whole
browser is killed, which also frees the thread blocked on it, the run answers
with a timeout, and the pool launches a replacement in the background.

Every request of the browsers goes through the runtime's egress proxy
(`runtimes.egress_guard`): a screen reaches its own origin, the public network
and the servers in `APPTASKS_EGRESS_ALLOW`, never the worker's machine or its
networks, nor `file:` URLs.

Known shortcoming: with site isolation off (see `firefox_preferences`), runs
share content processes; only their storage is kept apart, per user context.

Known shortcoming: a result is measured against the size limit only after the
browser has sent all of it, so a huge result still costs memory once.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any, ClassVar

from apptasks.errors import ConfigurationError
from apptasks.execution import RUNTIME_ERROR, TIMEOUT_ERROR, RunOutcome, RunRequest
from apptasks.hooks import hookimpl
from apptasks.settings import Settings
from runtimes.chrome_browser import BrowserFailure, first_line
from runtimes.egress_guard import EgressGuard
from runtimes.firefox_browser import (
    CLOSE_WAIT,
    DEFAULT_FIREFOX_BINARY,
    LAUNCH_TIMEOUT,
    RESET_TIMEOUT,
    FirefoxBrowser,
    geckodriver_path,
)
from runtimes.firefox_preferences import Preference
from runtimes.pool import (
    BrowserPool,
    NoFreeBrowser,
    PoolClosed,
    StillRunning,
    call_in_thread,
)
from runtimes.processes import wait_until_gone
from runtimes.shim import failed_outcome, invoke_arguments

logger = logging.getLogger("apptasks.runtimes.firefox")

# Seconds past a run's deadline before a browser that has not answered is
# killed. WebDriver's own timeouts answer well within it; a busy page never does.
KILL_GRACE = 0.5


class FirefoxRuntime:
    """Runs screens in `settings.browsers` warm headless Firefox browsers.

    The `APPTASKS_FIREFOX_PREFERENCES` setting (a JSON object) and then
    `extra_preferences` are set on every Firefox, over the runtime's own but
    under the egress proxy's, which neither they nor a plugin can change.
    """

    name: ClassVar[str] = "firefox"

    def __init__(
        self,
        settings: Settings,
        *,
        hooks: Any = None,
        extra_preferences: Mapping[str, Preference] | None = None,
    ) -> None:
        self.settings = settings
        self.hooks = hooks
        self.preferences = {
            **configured_preferences(settings),
            **(extra_preferences or {}),
        }
        self.egress = EgressGuard(settings)
        self.folder: Path | None = None
        self.browser_version = ""
        self._pool: BrowserPool[FirefoxBrowser] | None = None
        self._numbers = count(1)

    async def start(self) -> None:
        """Launch the browsers; fail with a `ConfigurationError` if one cannot."""
        if self.settings.browsers < 1:
            raise ConfigurationError(
                f"APPTASKS_BROWSERS={self.settings.browsers}: need at least 1"
            )
        driver = geckodriver_path(self.settings)
        await self.egress.start()
        self.folder = Path(tempfile.mkdtemp(prefix="apptasks-firefox-"))
        launch = self.egress.launching(partial(self._launch, self.folder))
        pool = BrowserPool(self.settings.browsers, launch, RESET_TIMEOUT)

        try:
            await pool.start()
        except Exception as exc:
            await call_in_thread(partial(_remove_folder, self.folder), LAUNCH_TIMEOUT)
            await self.egress.stop()
            binary = getattr(self.settings, "firefox_binary", DEFAULT_FIREFOX_BINARY)
            raise ConfigurationError(
                f"the firefox runtime could not start Firefox ({binary}) through "
                f"geckodriver ({driver}): {first_line(exc)}"
            ) from exc

        self._pool = pool
        logger.info(
            "firefox runtime started browsers=%d version=%s",
            pool.size,
            self.browser_version,
        )

    async def stop(self) -> None:
        """Close every browser and delete the runtime's folder."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.stop()
        if self.folder is not None:
            # A browser whose close outlasted the pool's patience, or one still
            # being launched, may be exiting yet: sweep the folder once more.
            survivors = await call_in_thread(
                partial(wait_until_gone, self.folder, CLOSE_WAIT), CLOSE_WAIT + 5
            )
            if survivors:
                logger.warning("firefox processes %s survived SIGKILL", survivors)
            await call_in_thread(partial(_remove_folder, self.folder), LAUNCH_TIMEOUT)
        await self.egress.stop()
        logger.info("firefox runtime stopped")

    async def execute(self, request: RunRequest) -> RunOutcome:
        """Run one screen in a leased browser; answer by the deadline plus ~1 s.

        Raises `ValueError` or `TypeError` only for a payload or context that
        is not JSON; every failure of the screen or the browser is an outcome.
        """
        arguments = invoke_arguments(request.payload, request.context)
        started = time.monotonic()

        pool = self._pool
        if pool is None:
            return failed_outcome(RUNTIME_ERROR, "the firefox runtime is not running")
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
            outcome = failed_outcome(RUNTIME_ERROR, "the firefox runtime stopped")
        return replace(outcome, browser=self.name, browser_version=self.browser_version)

    async def _run(
        self,
        browser: FirefoxBrowser,
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

    async def _launch(self, folder: Path) -> FirefoxBrowser:
        number = next(self._numbers)
        browser = FirefoxBrowser(
            number,
            folder / f"browser-{number}",
            self.settings,
            preferences=self.preferences,
            hooks=self.hooks,
            final_preferences=self.egress.firefox_preferences(),
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


def configured_preferences(settings: Settings) -> dict[str, Preference]:
    """The `APPTASKS_FIREFOX_PREFERENCES` setting: a JSON object, or empty."""
    text = str(getattr(settings, "firefox_preferences", "") or "")
    if not text.strip():
        return {}
    try:
        preferences = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(
            f"APPTASKS_FIREFOX_PREFERENCES is not JSON: {exc}"
        ) from None
    if not isinstance(preferences, dict) or not all(
        isinstance(value, str | int | bool) for value in preferences.values()
    ):
        raise ConfigurationError(
            "APPTASKS_FIREFOX_PREFERENCES must be a JSON object of preference "
            'names to strings, numbers or booleans, e.g. {"network.proxy.type": 0}'
        )
    return preferences


def _remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


@hookimpl
def apptasks_register_runtimes() -> list[type[FirefoxRuntime]]:
    """Register the `firefox` runtime, exactly as a third-party plugin would."""
    return [FirefoxRuntime]
