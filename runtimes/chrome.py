"""The `chrome` runtime: screens run in warm headless Chromium, driven by Selenium.

What every browser runtime does (the pool, the time limit, killing a stuck
browser) is `runtimes.browser_runtime`'s. Here: each run loads its screen in a
browser context made for it alone; between runs the browser disposes of that
context and makes the next one, and it fails every stylesheet, image, font and
media request itself (`runtimes.chrome_browser`). A page stuck in
`while (true) {}` also hangs chromedriver, which only killing the browser
ends.

Every request of the browsers goes through the runtime's egress proxy
(`runtimes.egress_guard`, started and stopped by `BrowserRuntime`): each
Chromium gets the proxy's flags at the end of its command line.

A context costs Chromium a new renderer process, made between runs: a run that
finds its browser ready pays nothing for it. Runs queued back to back on one
browser wait for it, about 0.04 s with the headless shell
(`APPTASKS_CHROME_BINARY=/usr/bin/chromium-headless-shell`) and 0.2 s with the
full browser on a 2-core machine.

Chromium 156 still sends a few requests of its own while idle
(accounts.google.com/ListAccounts, update.googleapis.com) despite its flags;
the egress proxy refuses those hosts without resolving them, and the default
`APPTASKS_CHROME_ARGUMENTS` maps them to nothing as well.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from apptasks.hooks import hookimpl
from apptasks.settings import Settings
from runtimes.browser_runtime import BrowserRuntime
from runtimes.chrome_browser import LAUNCH_TIMEOUT, RESET_TIMEOUT, ChromeBrowser


class ChromeRuntime(BrowserRuntime[ChromeBrowser]):
    """Runs screens in `settings.browsers` warm headless Chromium browsers.

    The `APPTASKS_CHROME_ARGUMENTS` setting and then `extra_arguments` are
    added to every Chromium command line, after the runtime's own flags and
    before the egress proxy's, which none may change. `hooks` is the plugin
    manager's hook relay, for `apptasks_browser_options`.
    """

    name: ClassVar[str] = "chrome"
    launch_timeout: ClassVar[float] = LAUNCH_TIMEOUT
    reset_timeout: ClassVar[float] = RESET_TIMEOUT

    def __init__(
        self,
        settings: Settings,
        *,
        extra_arguments: Sequence[str] = (),
        hooks: Any = None,
    ) -> None:
        super().__init__(settings, hooks=hooks)
        self.extra_arguments = (
            *shlex.split(settings.chrome_arguments),
            *extra_arguments,
        )

    def new_browser(self, number: int, folder: Path) -> ChromeBrowser:
        return ChromeBrowser(
            number,
            folder,
            self.settings,
            self.extra_arguments,
            self.hooks,
            self.egress.chrome_arguments(),
        )

    def describe_browser(self) -> str:
        return (
            f"Chromium ({self.settings.chrome_binary}) through ChromeDriver "
            f"({self.settings.chromedriver})"
        )


@hookimpl
def apptasks_register_runtimes() -> list[type[ChromeRuntime]]:
    """Register the `chrome` runtime, exactly as a third-party plugin would."""
    return [ChromeRuntime]
