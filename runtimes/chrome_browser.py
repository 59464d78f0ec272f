"""One headless Chromium for the `chrome` runtime, and the chromedriver driving it.

Each browser is a Chromium and the chromedriver attached to it (started as
`runtimes.chrome_launch` says), each in a session of its own, and a private
folder holding the profile, the temporary files and a home folder, so crash
reports and caches land there too and go with it.

Every run gets a browser context of its own, Chromium's incognito-like profile:
cookies, storage, IndexedDB, service workers, Cache Storage and the HTTP cache
all live in it, and it is disposed of with everything in it once the run is
over. The next run's context and its tab are made between runs, so a run only
loads its screen. A new tab starts a renderer process, which chromedriver
waits for when it first switches to the tab. The headless shell makes a tab
with about 0.05 s of processor time, so it makes each context one run ahead,
while the run before goes on; the full browser needs about 0.5 s, which would
slow that run down as much, so it makes the context right after the run.
Contexts are made over the browser's own DevTools connection
(`runtimes.chrome_devtools`), which also fails every stylesheet, image, font
and media request; runs load and call the screen with classic WebDriver
commands, which fail at once when the browser is killed.

Every method that talks to the browser blocks: the runtime calls them in threads
and bounds them in time, and `kill` (which never talks to the browser) is how a
call that overstays is ended.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.timeouts import Timeouts
from selenium.webdriver.remote.remote_connection import RemoteConnection
from urllib3.exceptions import HTTPError

from apptasks.execution import (
    TIMEOUT_ERROR,
    RunError,
    RunOutcome,
    RunRequest,
)
from apptasks.settings import Settings
from runtimes.browser_runtime import BrowserFailure, first_line
from runtimes.chrome_devtools import DevToolsConnection, refuse_assets
from runtimes.chrome_launch import (
    attach_options,
    chromium_options,
    command_line,
    wait_for_devtools_port,
)
from runtimes.local_browser import LocalBrowser
from runtimes.processes import kill_tree
from runtimes.shim import (
    HANDLER_TIMEOUT_MESSAGE,
    INVOKE_SCRIPT,
    failed_outcome,
    no_answer_outcome,
    page_console,
    read_answer,
    with_bundle,
)

logger = logging.getLogger("apptasks.runtimes.chrome_browser")

# The browser name chromedriver reports for the headless shell.
HEADLESS_SHELL = "chrome-headless-shell"

LAUNCH_TIMEOUT = 30.0
# Disposing of a context and switching to the next takes 0.02 s (headless
# shell) to 0.3 s (full browser), more on a machine busy with other browsers;
# past this the browser is deemed stuck and replaced.
RESET_TIMEOUT = 5.0
# Seconds a closing browser's killed processes get to exit.
CLOSE_WAIT = 2.0


@dataclass(frozen=True)
class RunContext:
    """A browser context made for one run, and the tab the run loads its screen in.

    The tab's id is also its WebDriver window handle.
    """

    browser_context: str
    tab: str


class ChromeBrowser(LocalBrowser):
    """One chromedriver, its Chromium, and the folder they own.

    `final_arguments` end Chromium's command line, after the settings' and the
    plugins' arguments: the runtime gives the egress proxy's flags there.
    """

    kind: ClassVar[str] = "chrome"
    close_wait: ClassVar[float] = CLOSE_WAIT
    network_error: ClassVar[str] = "net::ERR_"

    def __init__(
        self,
        number: int,
        folder: Path,
        settings: Settings,
        extra_arguments: Sequence[str] = (),
        hooks: Any = None,
        final_arguments: Sequence[str] = (),
    ) -> None:
        super().__init__(number, folder, settings, hooks)
        self.extra_arguments = tuple(extra_arguments)
        self.final_arguments = tuple(final_arguments)
        self.process: subprocess.Popen[bytes] | None = None
        self.service: Service | None = None
        self.driver: webdriver.Chrome | None = None
        self.devtools: DevToolsConnection | None = None
        self.context: RunContext | None = None
        self._next_context: RunContext | None = None
        self._makes_ahead = False

    @property
    def pid(self) -> int | None:
        """Process id of Chromium, whose process group holds its helpers."""
        return None if self.process is None else int(self.process.pid)

    def open(self) -> None:
        """Blocking: start Chromium and chromedriver, make the first run's context."""
        self._make_folders()
        profile = self.folder / "profile"
        options = chromium_options(
            self.settings, profile, self.extra_arguments, self.hooks
        )
        command = command_line(options, self.final_arguments)

        # Sessions of their own let kill() reach each with its helpers in one
        # signal.
        self.process = subprocess.Popen(
            command,
            env=self._environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        port = wait_for_devtools_port(self.process, profile, LAUNCH_TIMEOUT)

        # The driver path is always given, so Selenium Manager never runs (it
        # would look for drivers on the network).
        self.service = Service(
            executable_path=self.settings.chromedriver,
            env=self._environment(),
            log_output=subprocess.DEVNULL,
            popen_kw={"start_new_session": True},
        )
        self.driver = webdriver.Chrome(
            options=attach_options(port), service=self.service
        )
        self.version = str(self.driver.capabilities.get("browserVersion", ""))
        self._makes_ahead = (
            self.driver.capabilities.get("browserName") == HEADLESS_SHELL
        )
        self.devtools = DevToolsConnection.open(profile, self.name)
        refuse_assets(self.devtools)

        # The first navigation of a new browser is its slowest; pay for it here,
        # in the first tab, which stays idle in the default context, rather than
        # in the first run.
        self.driver.timeouts = Timeouts(page_load=LAUNCH_TIMEOUT, script=LAUNCH_TIMEOUT)
        self.driver.get("about:blank")
        self._switch_contexts()

        if self.broken:
            # Killed while chromedriver was still starting (launch timed out or
            # was cancelled): what started after the kill must die too.
            self.kill()
            raise BrowserFailure(f"browser {self.name} was killed while starting")

    def run_screen(
        self, request: RunRequest, arguments: Sequence[str], max_result_bytes: int
    ) -> RunOutcome:
        """Blocking: load the screen in the fresh context, call its handler, answer.

        Raises `BrowserFailure` when the browser itself fails; every failure of
        the screen comes back as an outcome.
        """
        driver = self._driver()
        if self.context is None:
            # Only after a failed reset, which retires the browser.
            raise BrowserFailure(f"browser {self.name} has no fresh context")
        try:
            driver.timeouts = Timeouts(
                page_load=request.seconds_left, script=request.seconds_left
            )
            driver.get(request.url)
        except TimeoutException:
            # Chromedriver answers a load timeout even when a script holds the
            # page, and then hangs on the next command: a new browser is
            # cheaper than finding out.
            self.broken = True
            return failed_outcome(
                TIMEOUT_ERROR,
                "the screen page was still loading when the run reached its time limit",
            )
        except WebDriverException as exc:
            return self._load_failure(request.url, exc)
        except (HTTPError, OSError) as exc:
            raise BrowserFailure(f"chromedriver stopped answering: {exc}") from exc

        try:
            driver.set_script_timeout(request.seconds_left)
            answer = driver.execute_async_script(INVOKE_SCRIPT, *arguments)
            if answer is None:
                return no_answer_outcome(driver, request.url)
        except TimeoutException:
            return with_bundle(
                driver,
                RunOutcome(
                    error=RunError(TIMEOUT_ERROR, HANDLER_TIMEOUT_MESSAGE),
                    console=page_console(driver),
                ),
            )
        except (WebDriverException, HTTPError, OSError) as exc:
            raise BrowserFailure(
                f"the browser failed while the handler ran: {first_line(exc)}"
            ) from exc
        outcome = read_answer(answer, max_result_bytes)
        return outcome if outcome.ok else with_bundle(driver, outcome)

    def reset(self) -> None:
        """Blocking: dispose of the last run's context, switch to the next run's.

        Disposing of a context closes every tab the run opened and drops its
        cookies, storage, service workers and caches. Raises `DevToolsError` or
        a WebDriver error when either step fails.
        """
        used, self.context = self.context, None
        if used is not None:
            self._devtools().call(
                "Target.disposeBrowserContext",
                {"browserContextId": used.browser_context},
            )
        self._switch_contexts()

    def kill(self) -> None:
        """Kill Chromium, its helpers and chromedriver, without asking them."""
        self.broken = True
        if not kill_tree(self.process, self.folder):
            logger.warning("Chromium of browser %s outlived SIGKILL", self.name)
        if not kill_tree(getattr(self.service, "process", None), self.folder):
            logger.warning("chromedriver of browser %s outlived SIGKILL", self.name)

    def _switch_contexts(self) -> None:
        """Make the next run's context current, and the one after if ahead."""
        context, self._next_context = self._next_context, None
        if context is None:
            context = self._new_context()
        # Chromedriver attaches to a tab when it first switches to it, and
        # waits for the tab's renderer to start; between runs, that is.
        self._driver().switch_to.window(context.tab)
        self.context = context

        if self._makes_ahead:
            self._next_context = self._new_context()

    def _new_context(self) -> RunContext:
        """A new browser context and its tab; the tab's renderer starts later."""
        devtools = self._devtools()
        browser_context = devtools.call(
            "Target.createBrowserContext", {"disposeOnDetach": True}
        )["browserContextId"]
        tab = devtools.call(
            "Target.createTarget",
            {"url": "about:blank", "browserContextId": browser_context},
        )["targetId"]
        return RunContext(browser_context=str(browser_context), tab=str(tab))

    def _quit(self) -> None:
        # Only a healthy browser answers; a broken one is killed straight away.
        if self.driver is None or self.broken:
            return
        try:
            self.driver.quit()
        except Exception as exc:
            logger.debug("browser %s: quit failed: %s", self.name, first_line(exc))

    def _drop_connections(self) -> None:
        # Chromedriver is dead by now; asking it to quit would only retry.
        executor = None if self.driver is None else self.driver.command_executor
        if isinstance(executor, RemoteConnection):
            executor.close()  # type: ignore[no-untyped-call]  # unannotated upstream
        if self.devtools is not None:
            self.devtools.close()

    def _driver(self) -> webdriver.Chrome:
        if self.driver is None:
            raise BrowserFailure(f"browser {self.name} is not open")
        return self.driver

    def _devtools(self) -> DevToolsConnection:
        if self.devtools is None:
            raise BrowserFailure(f"browser {self.name} is not open")
        return self.devtools
