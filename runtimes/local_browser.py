"""What the browsers of the local runtimes share: a folder of their own, and closing.

A browser of the `chrome` or `firefox` runtime is a driver and the browser it
drives, started on this machine in sessions of their own, and a private folder
holding the profile, the temporary files and a home folder, so that whatever
the browser writes goes with it. `LocalBrowser` holds what they do alike:
naming, the folder and the environment the processes start with, telling a
page that could not be reached from a browser that failed, and closing: kill
every process, wait for them to exit, drop the connections, delete the
folder. Log lines go to the `apptasks.runtimes.<kind>_browser` logger.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from selenium.common.exceptions import WebDriverException

from apptasks.execution import RUNTIME_ERROR, RunOutcome
from apptasks.settings import Settings
from runtimes.browser_runtime import BrowserFailure, first_line
from runtimes.processes import wait_until_gone
from runtimes.shim import failed_outcome


class LocalBrowser(ABC):
    """One driver, its browser, and the folder they own, on this machine.

    A subclass names its kind (`chrome`), says how long its killed processes
    may take to exit (`close_wait`) and how its driver says that a page could
    not be reached (`network_error`), kills without asking (`kill`), may ask
    the browser to quit first (`_quit`), and lets go of its connections once
    the processes are gone (`_drop_connections`).
    """

    kind: ClassVar[str]
    close_wait: ClassVar[float]
    network_error: ClassVar[str]

    def __init__(
        self, number: int, folder: Path, settings: Settings, hooks: Any = None
    ) -> None:
        self.number = number
        self.folder = folder
        self.settings = settings
        self.hooks = hooks
        self.broken = False
        self.version = ""
        self.logger = logging.getLogger(f"apptasks.runtimes.{self.kind}_browser")
        self._closed = False
        self._closing = threading.Lock()

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.number}"

    @abstractmethod
    def kill(self) -> None:
        """Kill the driver, the browser and its helpers, without asking them."""

    def close(self) -> None:
        """Blocking: quit if worth it, kill what is left, delete the folder."""
        with self._closing:
            if self._closed:
                return
            self._quit()
            self.kill()
            survivors = wait_until_gone(self.folder, self.close_wait)
            if survivors:
                self.logger.warning(
                    "browser %s: processes %s survived SIGKILL", self.name, survivors
                )
            self._drop_connections()
            shutil.rmtree(self.folder, ignore_errors=True)
            self._closed = True

    @abstractmethod
    def _quit(self) -> None:
        """Blocking: let the browser quit on its own, if worth it, before the kill."""

    @abstractmethod
    def _drop_connections(self) -> None:
        """Close the connections to the driver and the browser, both dead now."""

    def _make_folders(self) -> None:
        for part in ("profile", "tmp", "home"):
            (self.folder / part).mkdir(parents=True, exist_ok=True)

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        environment["TMPDIR"] = str(self.folder / "tmp")
        environment["HOME"] = str(self.folder / "home")
        return environment

    def _load_failure(self, url: str, exc: WebDriverException) -> RunOutcome:
        message = first_line(exc)
        if self.network_error not in message:
            raise BrowserFailure(f"the browser failed loading the screen: {message}")
        return failed_outcome(
            RUNTIME_ERROR, f"the screen page {url} could not be loaded: {message}"
        )
