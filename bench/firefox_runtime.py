"""Measure the firefox runtime against a new Selenium session per run.

Serves the hello screen on 127.0.0.1 and runs it RUNS times, after a warm-up,
in three ways:

- the firefox runtime, back to back: a run is a lease from the warm pool, the
  fresh user context made for it, the navigation, the handler and the answer;
  each run starts as soon as the last one answered, so it also waits for the
  browser to remove the last run's context and bring its own forward, and
  shares the machine with the new context's content process starting up;
- the firefox runtime, paced: the same with a pause between runs, long enough
  for the next context to be ready, as a run that does not queue behind
  another sees it;
- a new Selenium session per run: geckodriver and Firefox started, the screen
  loaded and called, the session quit.

Both use the runtime's preferences, and refuse every host but 127.0.0.1. Prints
the median and p99 of each, in milliseconds, and the ratio of the medians.

    .venv/bin/python bench/firefox_runtime.py [runs]
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selenium import webdriver
from selenium.webdriver.firefox.service import Service
from timing import percentile

from apptasks.execution import RunRequest
from apptasks.settings import Settings
from runtimes.firefox import FirefoxRuntime
from runtimes.firefox_browser import DEFAULT_FIREFOX_BINARY, geckodriver_path
from runtimes.firefox_preferences import loopback_only_preferences, runtime_preferences
from runtimes.shim import INVOKE_SCRIPT, invoke_arguments, read_answer
from tests.support.browsers import serving_screens

RUNS = 30
WARM_UP = 5
# Seconds between paced runs: a context with its tab takes ~0.1 s to make, and
# its content process starts in the background.
PACE = 0.5
PAYLOAD = {"n": 1}


async def measure_runtime(url: str, runs: int, pause: float = 0.0) -> list[float]:
    runtime = FirefoxRuntime(
        Settings(browsers=1), extra_preferences=loopback_only_preferences()
    )
    await runtime.start()
    try:

        async def one_run() -> None:
            request = RunRequest(
                run_id=uuid.uuid4().hex,
                url=url,
                payload=PAYLOAD,
                context={},
                deadline=time.monotonic() + 10,
            )
            outcome = await runtime.execute(request)
            if not outcome.ok:
                raise RuntimeError(f"the firefox runtime failed: {outcome.error}")

        for _ in range(WARM_UP):
            await one_run()
        timings = []
        for _ in range(runs):
            await asyncio.sleep(pause)
            started = time.perf_counter()
            await one_run()
            timings.append((time.perf_counter() - started) * 1000)
        return timings
    finally:
        await runtime.stop()


def session_per_run(url: str, folder: Path) -> None:
    """One run the naive way: a whole new geckodriver and Firefox for it."""
    options = webdriver.FirefoxOptions()
    options.binary_location = DEFAULT_FIREFOX_BINARY
    options.add_argument("-headless")
    preferences = {**runtime_preferences(), **loopback_only_preferences()}
    for name, value in preferences.items():
        options.set_preference(name, value)
    service = Service(
        executable_path=geckodriver_path(Settings()),
        service_args=["--profile-root", str(folder)],
        log_output=subprocess.DEVNULL,
    )
    driver = webdriver.Firefox(options=options, service=service)
    try:
        driver.get(url)
        answer = driver.execute_async_script(
            INVOKE_SCRIPT, *invoke_arguments(PAYLOAD, {})
        )
        outcome = read_answer(answer, 1_000_000)
        if not outcome.ok:
            raise RuntimeError(f"the naive session failed: {outcome.error}")
    finally:
        driver.quit()


def measure_sessions(url: str, runs: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="apptasks-bench-") as folder:
        run = partial(session_per_run, url, Path(folder))
        run()
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            run()
            timings.append((time.perf_counter() - started) * 1000)
        return timings


def report(label: str, timings: list[float]) -> float:
    median = statistics.median(timings)
    sys.stdout.write(
        f"{label:<30} runs={len(timings)} p50={median:.1f} ms "
        f"p99={percentile(timings, 0.99):.1f} ms\n"
    )
    return median


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else RUNS
    with serving_screens() as base:
        url = f"{base}/hello.html"
        runtime_median = report(
            "runtime, back to back", asyncio.run(measure_runtime(url, runs))
        )
        report(
            f"runtime, paced ({PACE} s apart)",
            asyncio.run(measure_runtime(url, runs, pause=PACE)),
        )
        session_median = report("new session per run", measure_sessions(url, runs))
    sys.stdout.write(
        f"a new session per run is {session_median / runtime_median:.0f}x slower "
        "than a run back to back\n"
    )


if __name__ == "__main__":
    main()
