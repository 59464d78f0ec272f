"""One headless Chromium for the `chrome` runtime, and the chromedriver driving it.

Each browser is a chromedriver started in a session of its own, the Chromium it
launches, and a private folder holding the profile, the temporary files and a
home folder, so crash reports and caches land there too and go with it. Every
method that talks to the browser blocks: the runtime calls them in threads and
bounds them in time, and `kill` (which never talks to the browser) is how a
call that overstays is ended.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.timeouts import Timeouts
from selenium.webdriver.remote.remote_connection import RemoteConnection
from urllib3.exceptions import HTTPError

from apptasks.execution import (
    RUNTIME_ERROR,
    TIMEOUT_ERROR,
    RunError,
    RunOutcome,
    RunRequest,
)
from apptasks.settings import Settings
from runtimes.processes import kill_tree, wait_until_gone
from runtimes.shim import (
    CONSOLE_SCRIPT,
    HAS_SHIM_SCRIPT,
    INVOKE_SCRIPT,
    console_lines,
    failed_outcome,
    read_answer,
)

logger = logging.getLogger("apptasks.runtimes.chrome_browser")

CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--disable-default-apps",
    "--blink-settings=imagesEnabled=false",
    # Chromium lowers the priority of renderers it deems in the background,
    # which in headless mode can be the only tab: on a busy machine its first
    # navigation then stalls until WebDriver gives up.
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    # NetworkTimeServiceQuerying: otherwise Chromium asks clients2.google.com for
    # the time at start-up. BackForwardCache: otherwise leaving a screen keeps
    # it alive in memory, and the navigation to about:blank between runs takes
    # about 100 ms instead of 30. Chromium reads only the last --disable-features
    # switch, so every feature goes in this one.
    "--disable-features=NetworkTimeServiceQuerying,BackForwardCache",
)
# Without a start page, the first tab is the new-tab page, which Debian's
# Chromium fills from start.duckduckgo.com.
STARTUP_PREFERENCES = {
    "session": {"restore_on_startup": 4, "startup_urls": ["about:blank"]},
}

LAUNCH_TIMEOUT = 30.0
# A healthy reset takes well under 0.2 s; longer means the page holds it.
RESET_TIMEOUT = 2.0
# Seconds a closing browser's killed processes get to exit.
CLOSE_WAIT = 2.0
# sessionStorage lives with the tab, so it must be cleared from the page itself.
CLEAR_STORAGE_SCRIPT = """
try { localStorage.clear(); sessionStorage.clear(); } catch (e) {}
return location.origin;
"""


class BrowserFailure(Exception):
    """The browser or chromedriver failed outside the screen's own code."""


class ChromeBrowser:
    """One chromedriver, its Chromium, and the folder they own."""

    def __init__(
        self,
        number: int,
        folder: Path,
        settings: Settings,
        extra_arguments: Sequence[str] = (),
    ) -> None:
        self.number = number
        self.folder = folder
        self.settings = settings
        self.extra_arguments = tuple(extra_arguments)
        self.broken = False
        self.version = ""
        self.service: Service | None = None
        self.driver: webdriver.Chrome | None = None
        self._closed = False
        self._closing = threading.Lock()

    @property
    def name(self) -> str:
        return f"chrome-{self.number}"

    @property
    def pid(self) -> int | None:
        """Process id of chromedriver, whose process group holds Chromium."""
        process = getattr(self.service, "process", None)
        return None if process is None else int(process.pid)

    def open(self) -> None:
        """Blocking: make the folder, start chromedriver and Chromium."""
        for part in ("profile", "tmp", "home"):
            (self.folder / part).mkdir(parents=True, exist_ok=True)

        # The driver path is always given, so Selenium Manager never runs (it
        # would look for drivers on the network). A session of its own lets
        # kill() reach chromedriver and every Chromium process in one signal.
        self.service = Service(
            executable_path=self.settings.chromedriver,
            env=self._environment(),
            log_output=subprocess.DEVNULL,
            popen_kw={"start_new_session": True},
        )
        self.driver = webdriver.Chrome(options=self._options(), service=self.service)
        self.version = str(self.driver.capabilities.get("browserVersion", ""))

        # The first navigation of a new browser is its slowest; pay for it here
        # rather than in the first run.
        self.driver.timeouts = Timeouts(page_load=LAUNCH_TIMEOUT, script=LAUNCH_TIMEOUT)
        self.driver.get("about:blank")

        if self.broken:
            # Killed while chromedriver was still starting (launch timed out or
            # was cancelled): what started after the kill must die too.
            self.kill()
            raise BrowserFailure(f"browser {self.name} was killed while starting")

    def run_screen(
        self, request: RunRequest, arguments: Sequence[str], max_result_bytes: int
    ) -> RunOutcome:
        """Blocking: load the screen, call its handler, read its answer.

        Raises `BrowserFailure` when the browser itself fails; every failure of
        the screen comes back as an outcome.
        """
        driver = self._driver()
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
                return self._no_answer(request.url)
        except TimeoutException:
            message = "the handler had not settled when the run reached its time limit"
            return RunOutcome(
                error=RunError(TIMEOUT_ERROR, message), console=self._console_lines()
            )
        except (WebDriverException, HTTPError, OSError) as exc:
            raise BrowserFailure(
                f"the browser failed while the handler ran: {first_line(exc)}"
            ) from exc
        return read_answer(answer, max_result_bytes)

    def reset(self) -> None:
        """Blocking: wipe what the last run left (windows, storage, cookies)."""
        driver = self._driver()
        driver.timeouts = Timeouts(page_load=RESET_TIMEOUT, script=RESET_TIMEOUT)

        handles = driver.window_handles
        for handle in handles[1:]:
            driver.switch_to.window(handle)
            driver.close()
        driver.switch_to.window(handles[0])

        origin = driver.execute_script(CLEAR_STORAGE_SCRIPT)
        if isinstance(origin, str) and origin.startswith(("http://", "https://")):
            driver.execute_cdp_cmd(
                "Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "all"}
            )
        driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        driver.get("about:blank")

    def kill(self) -> None:
        """Kill chromedriver, Chromium and its helpers, without asking them."""
        self.broken = True
        if not kill_tree(getattr(self.service, "process", None), self.folder):
            logger.warning("chromedriver of browser %s outlived SIGKILL", self.name)

    def close(self) -> None:
        """Blocking: quit if healthy, kill what is left, delete the folder."""
        with self._closing:
            if self._closed:
                return
            if self.driver is not None and not self.broken:
                self._quit()
            self.kill()
            survivors = wait_until_gone(self.folder, CLOSE_WAIT)
            if survivors:
                logger.warning(
                    "browser %s: processes %s survived SIGKILL", self.name, survivors
                )
            self._drop_connections()
            shutil.rmtree(self.folder, ignore_errors=True)
            self._closed = True

    def _quit(self) -> None:
        try:
            if self.driver is not None:
                self.driver.quit()
        except Exception as exc:
            logger.debug("browser %s: quit failed: %s", self.name, first_line(exc))

    def _drop_connections(self) -> None:
        # Chromedriver is dead by now; asking it to quit would only retry.
        executor = None if self.driver is None else self.driver.command_executor
        if isinstance(executor, RemoteConnection):
            executor.close()  # type: ignore[no-untyped-call]  # unannotated upstream

    def _driver(self) -> webdriver.Chrome:
        if self.driver is None:
            raise BrowserFailure(f"browser {self.name} is not open")
        return self.driver

    def _options(self) -> webdriver.ChromeOptions:
        options = webdriver.ChromeOptions()
        options.binary_location = self.settings.chrome_binary
        for flag in (*CHROME_FLAGS, *self.extra_arguments):
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.folder / 'profile'}")
        options.add_experimental_option("prefs", STARTUP_PREFERENCES)
        # Nobody can answer alert() in a task; dismissing keeps the browser usable.
        options.unhandled_prompt_behavior = "dismiss"
        return options

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment["TMPDIR"] = str(self.folder / "tmp")
        environment["HOME"] = str(self.folder / "home")
        return environment

    def _load_failure(self, url: str, exc: WebDriverException) -> RunOutcome:
        message = first_line(exc)
        if "net::ERR_" not in message:
            raise BrowserFailure(f"the browser failed loading the screen: {message}")
        return failed_outcome(
            RUNTIME_ERROR, f"the screen page {url} could not be loaded: {message}"
        )

    def _no_answer(self, url: str) -> RunOutcome:
        # The invoke script answers null without a shim; WebDriver also gives
        # null when a dialog interrupts the script.
        if not self._driver().execute_script(HAS_SHIM_SCRIPT):
            return failed_outcome(
                RUNTIME_ERROR,
                f"the page at {url} is not an App Tasks screen page "
                "(the shim is missing)",
            )
        return failed_outcome(
            RUNTIME_ERROR,
            "the screen opened a dialog (alert, confirm or prompt) while its "
            "handler ran; nobody can answer dialogs in a task: use console.log",
        )

    def _console_lines(self) -> list[str]:
        try:
            lines = self._driver().execute_script(CONSOLE_SCRIPT)
        except (WebDriverException, HTTPError, OSError):
            return []
        return console_lines(lines)


def first_line(exc: BaseException) -> str:
    """An exception's first line: WebDriver messages go on with stack traces."""
    message = exc.msg if isinstance(exc, WebDriverException) else str(exc)
    lines = (message or "").strip().splitlines()
    return lines[0] if lines else type(exc).__name__
