"""Hook specifications: what a plugin may implement.

Every hook is listed in `plugins/README.md` and has a test named
`test_hook_<name>...`; a test fails when a hook lacks either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from apptasks.execution import RunOutcome, RuntimeFactory
from apptasks.hooks import hookspec
from apptasks.runs import RunOrder
from apptasks.settings import Settings

# Runtimes


@hookspec
def apptasks_register_runtimes() -> Sequence[RuntimeFactory]:
    """Name the runtimes this plugin provides.

    Return a sequence of runtime factories: callables (usually classes) with a
    class attribute `name` that take the `Settings` (and the keyword `hooks`,
    the plugin manager's hook relay, or None) and return an object following
    the `apptasks.execution.Runtime` protocol. Only the runtime chosen by the
    `APPTASKS_RUNTIME` setting is built and started. Two plugins registering
    the same name stop start-up with an error naming both.
    """
    raise NotImplementedError


@hookspec
def apptasks_browser_options(browser: str, options: Any, settings: Settings) -> None:
    """Adjust a browser's options before a runtime starts that browser.

    Called once for every browser a runtime launches (at start and for each
    replacement), before the browser starts. `browser` is the runtime's name
    (`chrome`, `firefox`, ...); `options` is the Selenium options object the
    runtime built (`selenium.webdriver.ChromeOptions`, `FirefoxOptions`), to be
    changed in place: add an argument, a preference, a proxy. Return nothing.
    An exception stops that browser from starting, and is logged naming the
    plugin.
    """


# Runs


@hookspec
def apptasks_run_started(order: RunOrder) -> None:
    """Be told that a run is starting, for example to notify someone.

    `order` says which task, screen version, mode and environment; its payload
    and caller are the user's data: do not log them. Called in a worker
    thread just before the runtime is asked to run the screen; return quickly.
    An exception is logged naming the plugin and does not affect the run.
    """


@hookspec
def apptasks_run_finished(
    order: RunOrder, outcome: RunOutcome, duration_ms: int
) -> None:
    """Be told how a run ended, after its log entry is written.

    `outcome` carries the result or the error (`outcome.error.error_type` is
    `TimeoutError` for a run past its limit) and the screen's console lines;
    `duration_ms` is the run's time in the runtime. Called in a worker thread;
    return quickly. An exception is logged naming the plugin and does not
    affect the run.
    """
