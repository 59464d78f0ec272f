"""Fresh Firefox user contexts, made ahead of the runs that need them.

Making a user context and its tab takes Firefox about 0.1 s, as long as a whole
run of a small screen. A `ContextSupply` keeps one ready: its thread makes the
next context while the current run is still going, and removes the contexts
of finished runs, so neither step sits between two runs.

Contexts are made and removed with WebDriver BiDi commands, over a
`BidiConnection` of the runtime's own rather than Selenium's. Selenium's waits
out its whole timeout for an answer from a browser that was killed, and counts
that timeout in 5 ms sleeps, each of which also waits for the interpreter lock:
with one busy thread beside it, its 5 s last 13 s. Killing the browser aborts
this one instead, which fails the supply's call in progress at once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from runtimes.bidi import RunContext
from runtimes.browser_runtime import first_line

logger = logging.getLogger("apptasks.runtimes.firefox_contexts")


class ContextUnavailable(Exception):
    """No fresh context could be had: making one failed, timed out, or stopped."""


class ContextSupply:
    """One fresh context kept ready, and used ones removed, by a thread of its own.

    `make` and `remove` are blocking BiDi calls; a failure of either stops the
    supply, and every later `take` or `wait_ready` raises `ContextUnavailable`
    saying why, so the browser is retired rather than lent without a context.
    """

    def __init__(
        self,
        name: str,
        make: Callable[[], RunContext],
        remove: Callable[[RunContext], None],
    ) -> None:
        self.name = name
        self._make = make
        self._remove = remove
        self._ready: RunContext | None = None
        self._used: deque[RunContext] = deque()
        self._failure: str | None = None
        self._stopped = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._keep_supplied, name=f"{name}-contexts", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def take(self, timeout: float) -> RunContext:
        """The ready context, waiting at most `timeout` seconds for it."""
        with self._changed:
            context = self._wait_for_ready(timeout)
            self._ready = None
            self._changed.notify_all()
        return context

    def give_back(self, context: RunContext) -> None:
        """Have a used context removed, with everything its run left in it."""
        with self._changed:
            self._used.append(context)
            self._changed.notify_all()

    def wait_ready(self, timeout: float) -> RunContext:
        """The context `take` gives next, once ready; raise if none comes in time."""
        with self._changed:
            return self._wait_for_ready(timeout)

    def stop(self) -> None:
        """Make the thread end after the call it is in; never waits for it.

        A call in progress ends when the browser answers or its connection is
        aborted, which killing the browser does.
        """
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def _wait_for_ready(self, timeout: float) -> RunContext:
        # Called with the condition held.
        self._changed.wait_for(
            lambda: self._ready is not None or self._failure or self._stopped,
            timeout=timeout,
        )
        if self._ready is not None:
            return self._ready
        if self._failure is not None:
            raise ContextUnavailable(self._failure)
        if self._stopped:
            raise ContextUnavailable(f"the contexts of {self.name} were stopped")
        raise ContextUnavailable(
            f"no fresh context for {self.name} within {timeout:.1f}s"
        )

    def _keep_supplied(self) -> None:
        try:
            while self._next_step():
                pass
        except Exception as exc:
            with self._changed:
                self._failure = (
                    f"making or removing a context failed: {first_line(exc)}"
                )
                self._changed.notify_all()
                stopped = self._stopped
            # After stop() the browser is being killed, and failing is expected.
            if not stopped:
                logger.warning("%s: %s", self.name, self._failure)

    def _next_step(self) -> bool:
        with self._changed:
            self._changed.wait_for(
                lambda: self._stopped or self._used or self._ready is None
            )
            if self._stopped:
                return False
            used = self._used.popleft() if self._used else None

        # Removing first closes a finished screen before the next one is made.
        if used is not None:
            self._remove(used)
            return True
        context = self._make()
        with self._changed:
            self._ready = context
            self._changed.notify_all()
        return True
