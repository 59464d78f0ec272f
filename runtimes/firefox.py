"""The `firefox` runtime: screens run in warm headless Firefox, driven by Selenium.

What every browser runtime does (the pool, the time limit, killing a stuck
browser) is `runtimes.browser_runtime`'s. Here: each run switches to a fresh
user context made for it, and loads its screen there; when the run is over,
the context is removed and the browser has the next one ready
(`runtimes.firefox_browser`). A page stuck in `while (true) {}` holds its
content process, and Firefox answers nothing about that page any more, until
the browser is killed.

Every request of the browsers goes through the runtime's egress proxy
(`runtimes.egress_guard`, started and stopped by `BrowserRuntime`): each
Firefox gets the proxy's preferences, set over every other.

Known shortcoming: with site isolation off (see `firefox_preferences`), runs
share content processes; only their storage is kept apart, per user context.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from apptasks.errors import ConfigurationError
from apptasks.hooks import hookimpl
from apptasks.settings import Settings
from runtimes.browser_runtime import BrowserRuntime
from runtimes.firefox_browser import (
    CLOSE_WAIT,
    DEFAULT_FIREFOX_BINARY,
    LAUNCH_TIMEOUT,
    RESET_TIMEOUT,
    FirefoxBrowser,
    geckodriver_path,
)
from runtimes.firefox_preferences import Preference
from runtimes.pool import call_in_thread
from runtimes.processes import wait_until_gone


class FirefoxRuntime(BrowserRuntime[FirefoxBrowser]):
    """Runs screens in `settings.browsers` warm headless Firefox browsers.

    The `APPTASKS_FIREFOX_PREFERENCES` setting (a JSON object) and then
    `extra_preferences` are set on every Firefox, over the runtime's own but
    under the egress proxy's, which neither they nor a plugin can change.
    """

    name: ClassVar[str] = "firefox"
    launch_timeout: ClassVar[float] = LAUNCH_TIMEOUT
    reset_timeout: ClassVar[float] = RESET_TIMEOUT

    def __init__(
        self,
        settings: Settings,
        *,
        hooks: Any = None,
        extra_preferences: Mapping[str, Preference] | None = None,
    ) -> None:
        super().__init__(settings, hooks=hooks)
        self.preferences = {
            **configured_preferences(settings),
            **(extra_preferences or {}),
        }
        self.geckodriver = ""

    def check_settings(self) -> None:
        super().check_settings()
        self.geckodriver = geckodriver_path(self.settings)

    def new_browser(self, number: int, folder: Path) -> FirefoxBrowser:
        return FirefoxBrowser(
            number,
            folder,
            self.settings,
            preferences=self.preferences,
            hooks=self.hooks,
            final_preferences=self.egress.firefox_preferences(),
        )

    def describe_browser(self) -> str:
        binary = getattr(self.settings, "firefox_binary", DEFAULT_FIREFOX_BINARY)
        return f"Firefox ({binary}) through geckodriver ({self.geckodriver})"

    async def after_browsers_closed(self, folder: Path) -> None:
        # A browser whose close outlasted the pool's patience, or one still
        # being launched, may be exiting yet: sweep the folder once more.
        survivors = await call_in_thread(
            partial(wait_until_gone, folder, CLOSE_WAIT), CLOSE_WAIT + 5
        )
        if survivors:
            self.logger.warning("firefox processes %s survived SIGKILL", survivors)


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


@hookimpl
def apptasks_register_runtimes() -> list[type[FirefoxRuntime]]:
    """Register the `firefox` runtime, exactly as a third-party plugin would."""
    return [FirefoxRuntime]
