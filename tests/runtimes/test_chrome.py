"""The chrome runtime, against real headless Chromium and screens served on loopback.

What every browser runtime does alike is tested in `test_browsers`, for Chromium
too; here is what is Chromium's own, or tested on Chromium alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apptasks.execution import TIMEOUT_ERROR
from apptasks.settings import Settings
from runtimes.chrome import ChromeRuntime
from runtimes.chrome_launch import LaunchError, chromium_options, command_line
from runtimes.processes import processes_mentioning
from tests.support.browsers import (
    CHROME_BINARY,
    CHROME_LOOPBACK_ONLY,
    error_type,
    run,
    serving_screens,
)

pytestmark = pytest.mark.browser

# Busy-loop runs in a row in the stress test; 100 take 2.3 to 2.5 minutes on a
# 2-core machine, with either Chromium binary.
STRESS_TIMEOUTS = 100


def chrome_settings(**changes: Any) -> Settings:
    return Settings(chrome_binary=CHROME_BINARY, **changes)


@pytest.fixture(scope="module")
def screens() -> Iterator[str]:
    """Base URL of a loopback server for the sample and inline screens."""
    with serving_screens() as url:
        yield url


def children_named(name: str) -> set[int]:
    """Ids of this process's children whose command name is `name`."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        command, rest = stat[stat.index("(") + 1 :].rsplit(")", 1)
        if command == name and int(rest.split()[1]) == os.getpid():
            found.add(int(entry.name))
    return found


# Launch options


def test_options_chromedriver_alone_would_apply_are_refused() -> None:
    options = chromium_options(Settings(), Path("/profile"))
    options.add_experimental_option("prefs", {"intl.accept_languages": "fr"})

    with pytest.raises(LaunchError, match="experimental options would be ignored"):
        command_line(options)


# Browser trouble


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_many_busy_loops_in_a_row_leave_no_process_or_folder(
    screens: str,
) -> None:
    drivers_before = children_named("chromedriver")
    runtime = ChromeRuntime(
        chrome_settings(browsers=1), extra_arguments=CHROME_LOOPBACK_ONLY
    )
    await runtime.start()
    assert runtime.folder is not None
    folder = runtime.folder

    try:
        outcomes = [
            await run(runtime, f"{screens}/busy-loop.html", seconds=1.0)
            for _ in range(STRESS_TIMEOUTS)
        ]
        after = await run(runtime, f"{screens}/hello.html", seconds=30)
    finally:
        await runtime.stop()

    assert {error_type(outcome) for outcome in outcomes} == {TIMEOUT_ERROR}
    assert after.result == {"a": 1, "b": 2}
    assert processes_mentioning(folder) == []
    assert children_named("chromedriver") <= drivers_before
    assert not folder.exists()
