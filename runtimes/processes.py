"""Finding and killing the processes a WebDriver browser leaves behind.

A driver started with `start_new_session=True` leads a process group that its
browser joins, so one signal reaches both. Helpers that start sessions of their
own (Chromium's crash handlers) are found instead by the private folder named
on their command line. Linux only: the search reads `/proc`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

# Seconds to wait for a SIGKILLed driver to be reaped; it takes milliseconds.
REAP_TIMEOUT = 1.0
POLL_INTERVAL = 0.02


def kill_tree(driver: subprocess.Popen[bytes] | None, folder: Path) -> bool:
    """SIGKILL the driver's process group and every process naming `folder`.

    Returns False when the driver could not be reaped in time. Never waits on
    the browser itself, so it is safe to call on a hung one.
    """
    # Until the driver is reaped its pid cannot be reused, so the group is
    # still the one it started.
    if driver is not None and driver.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(driver.pid, signal.SIGKILL)
    for pid in processes_mentioning(folder):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)

    if driver is None:
        return True
    try:
        driver.wait(timeout=REAP_TIMEOUT)
    except subprocess.TimeoutExpired:
        return False
    return True


def wait_until_gone(folder: Path, timeout: float) -> list[int]:
    """Wait for every process naming `folder` to exit; return the survivors.

    A SIGKILLed process keeps its command line until it has really exited, and
    one forked just as the group was signalled may have missed the signal, so
    stragglers are signalled again while waiting.
    """
    deadline = time.monotonic() + timeout
    while True:
        survivors = processes_mentioning(folder)
        if not survivors or time.monotonic() >= deadline:
            return survivors
        for pid in survivors:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(POLL_INTERVAL)


def processes_mentioning(folder: Path) -> list[int]:
    """Ids of the processes whose command line contains `folder`."""
    needle = os.fsencode(folder)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command_line = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in command_line:
            found.append(int(entry.name))
    return found
