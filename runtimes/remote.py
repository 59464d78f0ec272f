"""The `remote` runtime: screens run in browsers behind a WebDriver endpoint.

The endpoint, given by `APPTASKS_REMOTE_URL`, is a Selenium Grid in
production, or any WebDriver server: a chromedriver or geckodriver left
running. The runtime keeps `APPTASKS_BROWSERS` sessions open there, each a
warm browser of the kind `APPTASKS_REMOTE_BROWSER` names, and drives them over
WebDriver BiDi (`runtimes.remote_browser`).

A run leases a session from the pool, loads the screen page in the fresh user
context made for it, calls the shim's entry point and reads back its JSON
answer. When the run is over, the pool has the context removed and the
browser make the next one before lending it again.

The endpoint must offer WebDriver BiDi (the `webSocketUrl` capability): a
session without it is refused at start-up, with a message saying so, rather
than run without a user context per run or the JavaScript-only filter.

The time limit is the runtime's own: each BiDi call of a run waits at most
until the deadline. A page that is still busy then (`while (true) {}`) cannot
be killed from here, so its session is ended (`DELETE /session/{id}`, on a
connection of its own) and the pool starts a replacement in the background.

Known shortcoming: nothing here limits where a page may connect; the egress
policy (`runtimes.egress`) is not applied to remote browsers yet, and a Grid's
nodes reach whatever their network lets them.

Known shortcoming: a result is measured against the size limit only after the
browser has sent all of it, so a huge result still costs memory once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from functools import partial
from itertools import count
from typing import Any, ClassVar

from apptasks.errors import ConfigurationError
from apptasks.execution import RUNTIME_ERROR, TIMEOUT_ERROR, RunOutcome, RunRequest
from apptasks.hooks import hookimpl
from apptasks.settings import Settings
from runtimes.browser_runtime import BrowserFailure, elapsed_ms, first_line
from runtimes.pool import (
    BrowserPool,
    NoFreeBrowser,
    PoolClosed,
    StillRunning,
    call_in_thread,
)
from runtimes.remote_browser import (
    BUNDLE_TIMEOUT,
    LAUNCH_TIMEOUT,
    PROBE_TIMEOUT,
    RESET_TIMEOUT,
    RemoteBrowser,
)
from runtimes.remote_endpoint import EndpointError, WebDriverEndpoint
from runtimes.remote_options import (
    browser_kind,
    endpoint_url,
    extra_capabilities,
)
from runtimes.shim import failed_outcome, invoke_arguments

logger = logging.getLogger("apptasks.runtimes.remote")

# Seconds past a run's deadline before a session that has not answered is
# ended. The run's own calls give up at the deadline and then probe the page
# and ask for a bundle, well within it; this only catches our own hangs.
KILL_GRACE = PROBE_TIMEOUT + BUNDLE_TIMEOUT + 0.2
# Seconds the endpoint has to answer `/status` at start-up.
STATUS_TIMEOUT = 5.0


class RemoteRuntime:
    """Runs screens in `settings.browsers` sessions at a WebDriver endpoint.

    `hooks` is the plugin manager's hook relay, for `apptasks_browser_options`
    (called with `browser="remote"` and the Selenium options of the browser
    asked for). Each outcome carries `browser_ms`, the time the run held its
    session: from the lease to the answer, without the wait for a free one.
    """

    name: ClassVar[str] = "remote"

    def __init__(self, settings: Settings, *, hooks: Any = None) -> None:
        self.settings = settings
        self.hooks = hooks
        self.url = ""
        self.browser_name = ""
        self.browser_version = ""
        self._pool: BrowserPool[RemoteBrowser] | None = None
        self._numbers = count(1)

    async def start(self) -> None:
        """Open the sessions; fail with a `ConfigurationError` if one cannot be had."""
        if self.settings.browsers < 1:
            raise ConfigurationError(
                f"APPTASKS_BROWSERS={self.settings.browsers}: need at least 1"
            )
        self.url = endpoint_url(self.settings)
        browser_kind(self.settings)
        extra_capabilities(self.settings)
        endpoint = WebDriverEndpoint(self.url)
        await self._check_reachable(endpoint)

        launch = partial(self._launch, endpoint)
        pool = BrowserPool(self.settings.browsers, launch, RESET_TIMEOUT)
        try:
            await pool.start()
        except Exception as exc:
            raise ConfigurationError(
                f"the remote runtime could not start a "
                f"{browser_kind(self.settings)} session at APPTASKS_REMOTE_URL="
                f"{self.url}: {first_line(exc)}"
            ) from exc

        self._pool = pool
        logger.info(
            "remote runtime started browsers=%d browser=%s version=%s url=%s",
            pool.size,
            self.browser_name,
            self.browser_version,
            self.url,
        )

    async def stop(self) -> None:
        """End every session."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.stop()
        logger.info("remote runtime stopped")

    async def execute(self, request: RunRequest) -> RunOutcome:
        """Run one screen in a leased session; answer by the deadline plus ~1 s.

        Raises `ValueError` or `TypeError` only for a payload or context that
        is not JSON; every failure of the screen or the browser is an outcome.
        """
        arguments = invoke_arguments(request.payload, request.context)
        started = time.monotonic()

        pool = self._pool
        if pool is None:
            outcome = failed_outcome(RUNTIME_ERROR, "the remote runtime is not running")
            return self._stamped(outcome)
        try:
            async with pool.lease(request.seconds_left) as browser:
                leased = time.monotonic()
                outcome = await self._run(browser, request, arguments, started)
                outcome = replace(outcome, browser_ms=elapsed_ms(leased))
        except NoFreeBrowser:
            outcome = failed_outcome(
                TIMEOUT_ERROR,
                f"no browser became free before the run's time limit "
                f"(all {pool.size} busy or restarting)",
            )
        except PoolClosed:
            outcome = failed_outcome(RUNTIME_ERROR, "the remote runtime stopped")
        return self._stamped(outcome)

    def _stamped(self, outcome: RunOutcome) -> RunOutcome:
        # The browser's own name ("chrome", "chrome-headless-shell",
        # "firefox") as the endpoint reported it; before any session, the
        # name asked for.
        browser = self.browser_name or self.settings.remote_browser
        return replace(outcome, browser=browser, browser_version=self.browser_version)

    async def _run(
        self,
        browser: RemoteBrowser,
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
            logger.warning(
                "run %s: browser %s did not answer past the deadline, session "
                "ended after %.2fs",
                request.run_id,
                browser.name,
                time.monotonic() - started,
            )
            return failed_outcome(
                TIMEOUT_ERROR,
                "the browser did not answer when the run reached its time limit; "
                "its session was ended",
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
                "run %s: browser %s still busy at the deadline, ending its "
                "session after %.2fs",
                request.run_id,
                browser.name,
                time.monotonic() - started,
            )
        return outcome

    async def _check_reachable(self, endpoint: WebDriverEndpoint) -> None:
        try:
            await call_in_thread(
                partial(endpoint.status, STATUS_TIMEOUT), STATUS_TIMEOUT + 1
            )
        except (EndpointError, StillRunning) as exc:
            problem = str(exc) or f"no answer within {STATUS_TIMEOUT:.0f}s"
            raise ConfigurationError(
                f"APPTASKS_REMOTE_URL={self.url}: no WebDriver endpoint answers "
                f"there ({problem}); start the Selenium Grid (or chromedriver) or "
                "fix the URL"
            ) from None

    async def _launch(self, endpoint: WebDriverEndpoint) -> RemoteBrowser:
        number = next(self._numbers)
        browser = RemoteBrowser(number, endpoint, self.settings, self.hooks)
        started = time.monotonic()

        try:
            await call_in_thread(browser.open, LAUNCH_TIMEOUT)
        except BaseException:
            # Also on cancellation: a session started meanwhile must not stay
            # open at the endpoint.
            browser.kill()
            raise

        self.browser_name = browser.browser_name
        self.browser_version = browser.version
        logger.info(
            "browser %s started in %.2fs session=%s",
            browser.name,
            time.monotonic() - started,
            browser.session.id if browser.session else "",
        )
        return browser


@hookimpl
def apptasks_register_runtimes() -> list[type[RemoteRuntime]]:
    """Register the `remote` runtime, exactly as a third-party plugin would."""
    return [RemoteRuntime]
