"""A pool of warm browsers, lent out for one run at a time.

The pool knows nothing of a particular browser: it is given a coroutine that
launches one, and asks each browser to reset itself between runs, to die at
once, or to close down properly. A browser given back healthy is reset in the
background and lent again; a broken one is killed on the spot, so the run that
broke it can answer without waiting, and a replacement is launched in the
background. Blocking browser calls always run in threads, bounded in time, so a
hung browser never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar

logger = logging.getLogger("apptasks.runtimes.pool")

T = TypeVar("T")

# Seconds a healthy browser may take to quit before it is killed instead.
CLOSE_TIMEOUT = 5.0
# Delays between attempts to launch a replacement that keeps failing.
RELAUNCH_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)


class PooledBrowser(Protocol):
    """What the pool needs from a browser; the blocking methods run in threads."""

    broken: bool

    @property
    def name(self) -> str:
        """A short name for log lines, unique within the pool."""
        ...

    def reset(self) -> None:
        """Blocking: leave nothing of the last run behind; raise if that fails."""

    def kill(self) -> None:
        """Kill the browser's processes at once; must not wait on the browser."""

    def close(self) -> None:
        """Blocking: quit if still healthy, kill what is left, delete its files."""


B = TypeVar("B", bound=PooledBrowser)


class StillRunning(Exception):
    """A blocking browser call had not returned when its time was up."""


class NoFreeBrowser(Exception):
    """No browser became free before the lease's timeout."""


class PoolClosed(Exception):
    """The pool is not running: not started yet, or stopped."""


async def call_in_thread(call: Callable[[], T], seconds: float) -> T:
    """Run a blocking call in a thread and wait for it at most `seconds`.

    Raises `StillRunning` when the time is up. The thread itself cannot be
    stopped: the caller must kill the browser it is talking to, which makes the
    call fail and the thread end.
    """
    task = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        done, _ = await asyncio.wait({task}, timeout=max(0.0, seconds))
    finally:
        if not task.done():
            task.add_done_callback(_ignore_outcome)
    if not done:
        raise StillRunning()
    return task.result()


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    # Retrieving the exception of an abandoned call keeps asyncio from
    # reporting it as never retrieved; its run has already been answered.
    if not task.cancelled():
        task.exception()


class BrowserPool(Generic[B]):
    """`size` browsers from `launch`, each lent to one run at a time."""

    def __init__(
        self,
        size: int,
        launch: Callable[[], Awaitable[B]],
        reset_timeout: float,
    ) -> None:
        self.size = size
        self._launch = launch
        self._reset_timeout = reset_timeout
        self._free: asyncio.Queue[B] = asyncio.Queue()
        self._browsers: set[B] = set()
        self._chores: set[asyncio.Task[None]] = set()
        self._replacements: set[asyncio.Task[None]] = set()
        self._running = False

    async def start(self) -> None:
        """Launch every browser; if one fails, close the others and raise."""
        launches = [self._launch() for _ in range(self.size)]
        results = await asyncio.gather(*launches, return_exceptions=True)

        failures = [result for result in results if isinstance(result, BaseException)]
        for result in results:
            if not isinstance(result, BaseException):
                self._browsers.add(result)
                self._free.put_nowait(result)
        if failures:
            await self._close_all()
            raise failures[0]
        self._running = True

    @asynccontextmanager
    async def lease(self, wait_seconds: float) -> AsyncIterator[B]:
        """Lend a free browser for one run, waiting at most `wait_seconds`.

        Raises `NoFreeBrowser` when none becomes free in time and `PoolClosed`
        when the pool is not running. A run that ends with an exception, or
        that marks the browser `broken`, gets it retired and replaced.
        """
        browser = await self._take(wait_seconds)
        healthy = False
        try:
            yield browser
            healthy = True
        finally:
            self._give_back(browser, healthy=healthy and not browser.broken)

    async def stop(self) -> None:
        """Stop replacing browsers, let chores finish, close every browser."""
        self._running = False
        for task in self._replacements:
            task.cancel()
        await asyncio.gather(*self._replacements, return_exceptions=True)
        await asyncio.gather(*self._chores, return_exceptions=True)
        await self._close_all()

    async def _take(self, wait_seconds: float) -> B:
        if not self._running:
            raise PoolClosed()
        try:
            browser = await asyncio.wait_for(self._free.get(), max(0.0, wait_seconds))
        except TimeoutError:
            raise NoFreeBrowser() from None
        if not self._running:
            # The pool stopped while this run waited; the browser is closed
            # with the others.
            raise PoolClosed()
        return browser

    def _give_back(self, browser: B, *, healthy: bool) -> None:
        if healthy:
            self._spawn(self._chores, self._reset_and_free(browser))
        else:
            self._retire(browser)

    async def _reset_and_free(self, browser: B) -> None:
        try:
            await call_in_thread(browser.reset, self._reset_timeout)
        except Exception as exc:
            logger.warning(
                "browser %s could not be reset, replacing it: %s",
                browser.name,
                _describe(exc),
            )
            self._retire(browser)
            return

        if self._running:
            self._free.put_nowait(browser)

    def _retire(self, browser: B) -> None:
        # Killing first makes any thread still talking to the browser fail
        # fast; closing then only releases files and connections.
        browser.kill()
        self._browsers.discard(browser)
        self._spawn(self._chores, self._close(browser))
        if self._running:
            self._spawn(self._replacements, self._replace())

    async def _replace(self) -> None:
        # Keeps trying until the pool stops: a worker one browser short is
        # slower, but a transient failure (memory pressure) must not shrink it
        # for good.
        failures = 0
        while self._running:
            try:
                browser = await self._launch()
            except Exception as exc:
                delay = RELAUNCH_DELAYS[min(failures, len(RELAUNCH_DELAYS) - 1)]
                failures += 1
                logger.warning(
                    "replacement browser failed to launch, retrying in %.0fs: %s",
                    delay,
                    _describe(exc),
                )
                await asyncio.sleep(delay)
                continue

            if not self._running:
                await self._close(browser)
                return
            self._browsers.add(browser)
            self._free.put_nowait(browser)
            return

    async def _close(self, browser: B) -> None:
        try:
            await call_in_thread(browser.close, CLOSE_TIMEOUT)
            return
        except StillRunning:
            logger.warning("browser %s did not quit in time, killing it", browser.name)
        except Exception as exc:
            logger.warning(
                "browser %s did not close cleanly, killing it: %s",
                browser.name,
                _describe(exc),
            )

        # Once killed, closing only deletes files and drops connections.
        browser.kill()
        try:
            await call_in_thread(browser.close, CLOSE_TIMEOUT)
        except Exception as exc:
            logger.warning(
                "browser %s left files behind: %s", browser.name, _describe(exc)
            )

    async def _close_all(self) -> None:
        browsers = list(self._browsers)
        self._browsers.clear()
        while not self._free.empty():
            self._free.get_nowait()
        await asyncio.gather(*(self._close(browser) for browser in browsers))

    def _spawn(
        self, tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]
    ) -> None:
        task = asyncio.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
