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

from functools import partial
from typing import Any, ClassVar

from apptasks.errors import ConfigurationError
from apptasks.hooks import hookimpl
from apptasks.settings import Settings
from runtimes.browser_runtime import PooledRuntime, first_line
from runtimes.pool import StillRunning, call_in_thread
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

# Seconds past a run's deadline before a session that has not answered is
# ended. The run's own calls give up at the deadline and then probe the page
# and ask for a bundle, well within it; this only catches our own hangs.
KILL_GRACE = PROBE_TIMEOUT + BUNDLE_TIMEOUT + 0.2
# Seconds the endpoint has to answer `/status` at start-up.
STATUS_TIMEOUT = 5.0


class RemoteRuntime(PooledRuntime[RemoteBrowser]):
    """Runs screens in `settings.browsers` sessions at a WebDriver endpoint.

    `hooks` is the plugin manager's hook relay, for `apptasks_browser_options`
    (called with `browser="remote"` and the Selenium options of the browser
    asked for).
    """

    name: ClassVar[str] = "remote"
    launch_timeout: ClassVar[float] = LAUNCH_TIMEOUT
    reset_timeout: ClassVar[float] = RESET_TIMEOUT
    kill_grace: ClassVar[float] = KILL_GRACE
    killed_message: ClassVar[str] = (
        "the browser did not answer when the run reached its time limit; "
        "its session was ended"
    )

    def __init__(self, settings: Settings, *, hooks: Any = None) -> None:
        super().__init__(settings, hooks=hooks)
        self.url = ""
        self.browser_name = ""

    async def start(self) -> None:
        """Open the sessions; fail with a `ConfigurationError` if one cannot be had."""
        self.check_settings()
        self.url = endpoint_url(self.settings)
        browser_kind(self.settings)
        extra_capabilities(self.settings)
        endpoint = WebDriverEndpoint(self.url)
        await self._check_reachable(endpoint)

        try:
            pool = await self._start_pool(partial(self._launch, endpoint))
        except Exception as exc:
            raise ConfigurationError(
                f"the remote runtime could not start a "
                f"{browser_kind(self.settings)} session at APPTASKS_REMOTE_URL="
                f"{self.url}: {first_line(exc)}"
            ) from exc

        self.logger.info(
            "remote runtime started browsers=%d browser=%s version=%s url=%s",
            pool.size,
            self.browser_name,
            self.browser_version,
            self.url,
        )

    async def stop(self) -> None:
        """End every session."""
        await self._stop_pool()
        self.logger.info("remote runtime stopped")

    def browser_label(self) -> str:
        # The browser's own name ("chrome", "chrome-headless-shell",
        # "firefox") as the endpoint reported it; before any session, the
        # name asked for.
        return self.browser_name or self.settings.remote_browser

    def launched_note(self, browser: RemoteBrowser) -> str:
        return f"session={browser.session.id if browser.session else ''}"

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
        browser = await self._open(
            RemoteBrowser(number, endpoint, self.settings, self.hooks)
        )
        self.browser_name = browser.browser_name
        return browser


@hookimpl
def apptasks_register_runtimes() -> list[type[RemoteRuntime]]:
    """Register the `remote` runtime, exactly as a third-party plugin would."""
    return [RemoteRuntime]
