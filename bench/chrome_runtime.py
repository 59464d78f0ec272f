"""Measure the chrome runtime against a new Selenium session for every run.

Serves `hello.html` from a local server on 127.0.0.1 and times runs of it three
ways, each after a warm-up:

- back to back: the runtime with one warm browser, each run started as soon as
  the last one answered, timed from `execute` to its outcome. A run then also
  waits for the browser to dispose of the last run's context and make its own;
- paced: the same with a pause between runs, long enough for the next context
  to be ready, as a run that does not queue behind another sees it;
- naive: for every run a new chromedriver, which starts a new full Chromium
  (`/usr/bin/chromium`) with a new profile; load the screen, call its handler,
  quit.

The runtime uses the Chromium that `APPTASKS_CHROME_BINARY` names, the headless
shell by default; `/usr/bin/chromium` (the full browser) costs far more per run.
Prints the median and p99 of each and the ratio of the medians (naive over
back to back). Chromium may resolve no host name but 127.0.0.1.

    [APPTASKS_CHROME_BINARY=...] .venv/bin/python bench/chrome_runtime.py [runs]
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from timing import percentile

from apptasks.execution import RunRequest
from apptasks.settings import Settings
from runtimes.chrome import ChromeRuntime
from runtimes.chrome_launch import CHROME_FLAGS
from runtimes.shim import INVOKE_SCRIPT, invoke_arguments, read_answer
from tests.support.browsers import serving_screens

LOOPBACK_ONLY = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",)
PAYLOAD = {"x": 1}
WARM_UP = 5
NAIVE_WARM_UP = 1
# Seconds between paced runs; making a context takes 0.1 to 0.3 s.
PACE = 0.5
# Without a start page, Debian's Chromium opens its new-tab page.
STARTUP_PREFERENCES = {
    "session": {"restore_on_startup": 4, "startup_urls": ["about:blank"]},
}


@contextmanager
def hello_server() -> Iterator[str]:
    """URL of hello.html, served from 127.0.0.1 for as long as the block runs."""
    with serving_screens() as base:
        yield f"{base}/hello.html"


async def runtime_timings(url: str, runs: int, pause: float) -> list[float]:
    settings = replace(Settings.from_env(), browsers=1)
    runtime = ChromeRuntime(settings, extra_arguments=LOOPBACK_ONLY)
    await runtime.start()
    try:
        for _ in range(WARM_UP):
            await run_once(runtime, url)
        timings = []
        for _ in range(runs):
            await asyncio.sleep(pause)
            started = time.perf_counter()
            await run_once(runtime, url)
            timings.append((time.perf_counter() - started) * 1000)
        return timings
    finally:
        await runtime.stop()


async def run_once(runtime: ChromeRuntime, url: str) -> None:
    request = RunRequest(
        run_id=uuid.uuid4().hex,
        url=url,
        payload=PAYLOAD,
        context={},
        deadline=time.monotonic() + 10,
    )
    outcome = await runtime.execute(request)
    if outcome.result != {"a": 1, "b": 2}:
        raise RuntimeError(f"the runtime's run failed: {outcome.error}")


def naive_timings(url: str, runs: int) -> list[float]:
    for _ in range(NAIVE_WARM_UP):
        naive_run(url)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        naive_run(url)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


FULL_CHROMIUM = "/usr/bin/chromium"


def naive_run(url: str) -> None:
    """One run the naive way: a browser of its own, started and quit."""
    settings = Settings()
    profile = Path(tempfile.mkdtemp(prefix="bench-naive-"))
    options = webdriver.ChromeOptions()
    # The full Chromium, which chromedriver can start by itself (Debian's
    # headless shell is a wrapper script that it cannot).
    options.binary_location = FULL_CHROMIUM
    for flag in (*CHROME_FLAGS, *LOOPBACK_ONLY, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", STARTUP_PREFERENCES)
    service = Service(settings.chromedriver, log_output=subprocess.DEVNULL)

    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.get(url)
        answer = driver.execute_async_script(
            INVOKE_SCRIPT, *invoke_arguments(PAYLOAD, {})
        )
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    outcome = read_answer(answer, 1_000_000)
    if outcome.result != {"a": 1, "b": 2}:
        raise RuntimeError(f"the naive run failed: {json.dumps(answer)}")


def report(label: str, timings: list[float]) -> float:
    median = statistics.median(timings)
    sys.stdout.write(
        f"{label:34} median {median:7.1f} ms  "
        f"p99 {percentile(timings, 0.99):7.1f} ms  (n={len(timings)})\n"
    )
    return median


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with hello_server() as url:
        back_to_back = asyncio.run(runtime_timings(url, runs, pause=0.0))
        paced = asyncio.run(runtime_timings(url, runs, pause=PACE))
        naive = naive_timings(url, runs)

    binary = Settings.from_env().chrome_binary
    sys.stdout.write(f"runtime's Chromium: {binary}\n")
    ours = report("runtime, back to back", back_to_back)
    report(f"runtime, paced ({PACE} s apart)", paced)
    baseline = report("naive (new session per run)", naive)
    sys.stdout.write(f"naive median / back-to-back median = {baseline / ours:.1f}x\n")


if __name__ == "__main__":
    main()
