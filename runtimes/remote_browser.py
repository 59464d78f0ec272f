"""One browser behind a WebDriver endpoint: a session of the `remote` runtime.

The endpoint (a Selenium Grid, or a chromedriver or geckodriver left running)
starts the browser; the runtime only has its session, over HTTP for starting
and ending it and over WebDriver BiDi (`runtimes.bidi`) for everything
else. Classic WebDriver commands are not used for runs: ChromeDriver handles
one classic command of a session at a time, BiDi included, so a request held by
the JavaScript-only intercept could never be let through while a classic
command waited for the screen.

Every run gets a user context of its own (cookies, storage, IndexedDB, service
workers and caches are kept per context) with one tab, and the tab gets a
network intercept of its own: `remote_options.is_javascript_request` decides
on each of its requests, on the BiDi reader thread. A thread of the browser's
`ContextSupply` makes the next run's context while the current run goes on,
and removes finished ones with their intercepts.

A browser that is stuck (a screen in `while (true) {}`) cannot be killed from
here: its session is ended instead, with `DELETE /session/{id}` on a connection
of its own, and the endpoint closes the browser.

Known shortcoming: ChromeDriver 156 reports about half of the requests a
dedicated worker makes (its fetch() and XHR) to no intercept, so they stay
held and the run ends at its time limit; a worker's own script, and every
request of the page itself, are unaffected. (With one intercept for the whole
browser instead, those requests are reported but can be neither continued nor
failed.)

Known shortcoming: the intercept covers the run's tab and its frames, not
windows the screen opens itself; their requests are not filtered (they are
still in the run's user context, so nothing crosses to another run).

Known shortcoming: every request of a screen, scripts too, waits for a round
trip from the browser to the worker before it is sent; through a Grid far from
the worker that adds its latency to every script the screen loads.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
from dataclasses import replace
from typing import Any

from apptasks.execution import (
    RUNTIME_ERROR,
    TIMEOUT_ERROR,
    FailureBundle,
    RunError,
    RunOutcome,
    RunRequest,
)
from apptasks.settings import Settings
from runtimes.bidi import (
    BidiClosed,
    BidiConnection,
    BidiError,
    BidiTimeout,
    RunContext,
    remote_value,
)
from runtimes.browser_runtime import BrowserFailure, first_line
from runtimes.firefox_contexts import ContextSupply, ContextUnavailable
from runtimes.remote_endpoint import RemoteSession, WebDriverEndpoint
from runtimes.remote_options import is_javascript_request, session_capabilities
from runtimes.shim import (
    CONSOLE_SCRIPT,
    HAS_SHIM_SCRIPT,
    INVOKE_SCRIPT,
    console_lines,
    failed_outcome,
    read_answer,
)

logger = logging.getLogger("apptasks.runtimes.remote_browser")

# Seconds for a browser to start and make its first context; a Grid may queue
# a new session until a node is free, for at most SESSION_TIMEOUT.
LAUNCH_TIMEOUT = 60.0
SESSION_TIMEOUT = LAUNCH_TIMEOUT - 10.0
# Making a user context with its tab and intercept takes ~0.05 s, and is
# normally done before the run ends; longer means the browser is stuck.
RESET_TIMEOUT = 5.0
CONTEXT_WAIT = RESET_TIMEOUT - 0.5
# Seconds the endpoint gets to end a session, and before that, a stuck run's
# user context.
DELETE_TIMEOUT = 10.0
STUCK_REMOVE_TIMEOUT = 1.0
# Seconds a page that missed its deadline gets to show that it still answers;
# one that does not is busy in a loop, and its session is ended.
PROBE_TIMEOUT = 0.25
# Seconds a failed run's page gets to hand over its screenshot and HTML.
BUNDLE_TIMEOUT = 0.4

# The shim's entry point is a classic asynchronous script, called back with
# its answer; BiDi awaits a promise instead.
INVOKE_FUNCTION = (
    "function () {\n"
    "  const args = Array.prototype.slice.call(arguments);\n"
    "  return new Promise(function (resolve) {\n"
    f"    (function () {{ {INVOKE_SCRIPT} }}).apply(null, args.concat([resolve]));\n"
    "  });\n"
    "}"
)
HAS_SHIM_FUNCTION = f"function () {{ {HAS_SHIM_SCRIPT} }}"
CONSOLE_FUNCTION = f"function () {{ {CONSOLE_SCRIPT} }}"
HTML_FUNCTION = (
    "function () { return document.documentElement ? "
    "document.documentElement.outerHTML : ''; }"
)
# Enough for the shim's answer: an object holding a string and a list of strings.
ANSWER_DEPTH = {"maxObjectDepth": 2, "maxDomDepth": 0}


class RemoteBrowser:
    """One session at the endpoint, its BiDi connection, and its contexts."""

    def __init__(
        self,
        number: int,
        endpoint: WebDriverEndpoint,
        settings: Settings,
        hooks: Any = None,
    ) -> None:
        self.number = number
        self.endpoint = endpoint
        self.settings = settings
        self.hooks = hooks
        self.broken = False
        self.session: RemoteSession | None = None
        self.bidi: BidiConnection | None = None
        self.contexts = ContextSupply(
            self.name, make=self._new_context, remove=self._remove_context
        )
        self._intercepts: dict[str, str] = {}
        self._used_context: RunContext | None = None
        self._session_lock = threading.Lock()
        self._session_ended = False

    @property
    def name(self) -> str:
        return f"remote-{self.number}"

    @property
    def browser_name(self) -> str:
        return "" if self.session is None else self.session.browser_name

    @property
    def version(self) -> str:
        return "" if self.session is None else self.session.browser_version

    def open(self) -> None:
        """Blocking: start a session with BiDi, and make the first run's context."""
        capabilities = session_capabilities(self.settings, self.hooks)
        # Held while the endpoint starts the session: a kill meanwhile ends
        # the session as soon as there is one.
        with self._session_lock:
            self.session = self.endpoint.new_session(capabilities, SESSION_TIMEOUT)
        url = self.session.websocket_url
        if url is None:
            self._end_session()
            raise BrowserFailure(
                f"the endpoint started a {self.browser_name or 'browser'} session "
                "without WebDriver BiDi (no webSocketUrl among its capabilities); "
                "the remote runtime needs BiDi for a user context per run: use a "
                "Selenium Grid 4 with a current Chrome or Firefox"
            )

        self.bidi = BidiConnection(url, self.name)
        self.bidi.on("network.beforeRequestSent", self._decide)
        self.bidi.call("session.subscribe", {"events": ["network.beforeRequestSent"]})
        self.contexts.start()
        self._bring_forward(self.contexts.wait_ready(LAUNCH_TIMEOUT))

        if self.broken:
            # Killed while the session was starting (launch timed out or was
            # cancelled): the session that started after the kill must end too.
            self.kill()
            raise BrowserFailure(f"browser {self.name} was killed while starting")

    def run_screen(
        self, request: RunRequest, arguments: tuple[str, str], max_result_bytes: int
    ) -> RunOutcome:
        """Blocking: load the screen in a fresh context, call its handler, answer.

        Answers by the deadline plus `PROBE_TIMEOUT` and `BUNDLE_TIMEOUT`.
        Raises `BrowserFailure` when the browser itself fails; every failure of
        the screen comes back as an outcome.
        """
        bidi = self._bidi()
        try:
            context = self.contexts.take(request.seconds_left)
        except ContextUnavailable as exc:
            raise BrowserFailure(str(exc)) from exc
        self._used_context = context

        try:
            bidi.call(
                "browsingContext.navigate",
                {"context": context.tab, "url": request.url, "wait": "complete"},
                timeout=request.seconds_left,
            )
        except BidiTimeout:
            return self._timed_out(
                context.tab,
                "the screen page was still loading when the run reached its time limit",
            )
        except BidiClosed as exc:
            raise BrowserFailure(f"the session stopped answering: {exc}") from exc
        except BidiError as exc:
            return self._load_failure(request.url, exc)

        try:
            answer = self._call(
                context.tab, INVOKE_FUNCTION, request.seconds_left, *arguments
            )
        except BidiTimeout:
            return self._timed_out(
                context.tab,
                "the handler had not settled when the run reached its time limit",
            )
        except BidiError as exc:
            raise BrowserFailure(
                f"the browser failed while the handler ran: {first_line(exc)}"
            ) from exc
        if answer is None:
            return self._no_answer(context.tab, request.url)
        outcome = read_answer(answer, max_result_bytes)
        return outcome if outcome.ok else self._with_bundle(context.tab, outcome)

    def reset(self) -> None:
        """Blocking: bring the next run's context forward; have the last one removed.

        The next context is normally made while the last run went on. Raises
        `ContextUnavailable` when none comes in time.
        """
        used, self._used_context = self._used_context, None
        try:
            self._bring_forward(self.contexts.wait_ready(CONTEXT_WAIT))
        finally:
            # Only now: Firefox fails to bring a tab forward while the tab in
            # front is being closed.
            if used is not None:
                self.contexts.give_back(used)

    def kill(self) -> None:
        """End the session in the background; never waits.

        The endpoint closes the browser, stuck or not; calls in progress on
        the BiDi connection fail at once.
        """
        self.broken = True
        self.contexts.stop()
        if self.bidi is not None:
            self.bidi.cancel_waiting(f"browser {self.name} was killed")
        threading.Thread(
            target=self._end_session, name=f"{self.name}-end", daemon=True
        ).start()

    def close(self) -> None:
        """Blocking: end the session, unless a kill is already ending it."""
        self.contexts.stop()
        self._end_session()

    def _end_session(self) -> None:
        # Several threads may get here (kill, close, a failed open): the first
        # ends the session, the others return at once. The lock is also held
        # while open() waits for a new session, so a kill meanwhile ends it
        # once it exists.
        with self._session_lock:
            session = self.session
            if session is None or self._session_ended:
                return
            self._session_ended = True

        self._remove_stuck_context()
        if self.bidi is not None:
            self.bidi.close()
        try:
            self.endpoint.delete_session(session.id, DELETE_TIMEOUT)
        except Exception as exc:
            logger.warning(
                "browser %s: session %s could not be ended: %s",
                self.name,
                session.id,
                first_line(exc),
            )

    def _remove_stuck_context(self) -> None:
        # Firefox takes seconds to end a session whose page is stuck in a
        # loop, and holds its endpoint meanwhile; without the page, a moment.
        context = self._used_context
        if context is None or self.bidi is None:
            return
        # On failure, ending the session next ends the context with it.
        with contextlib.suppress(BidiError):
            self.bidi.call(
                "browser.removeUserContext",
                {"userContext": context.user_context},
                timeout=STUCK_REMOVE_TIMEOUT,
            )

    def _bring_forward(self, context: RunContext) -> None:
        # Contexts are made in background tabs, so as not to push a running
        # screen into the background; Firefox loads a page faster in the tab
        # in front.
        self._bidi().call("browsingContext.activate", {"context": context.tab})

    def _new_context(self) -> RunContext:
        bidi = self._bidi()
        context = bidi.new_context()
        # An intercept per tab rather than one for the whole browser: with
        # ChromeDriver 156, a request a dedicated worker makes under a global
        # intercept can be neither continued nor failed, and always hangs.
        intercept = bidi.call(
            "network.addIntercept",
            {"phases": ["beforeRequestSent"], "contexts": [context.tab]},
        )["intercept"]
        self._intercepts[context.tab] = str(intercept)
        return context

    def _remove_context(self, context: RunContext) -> None:
        bidi = self._bidi()
        # Also closes the context's tab, and whatever the screen opened.
        bidi.remove_context(context)
        intercept = self._intercepts.pop(context.tab, None)
        if intercept is None:
            return
        try:
            bidi.call("network.removeIntercept", {"intercept": intercept})
        except BidiError as exc:
            # Some browsers drop a tab's intercepts with the tab.
            if exc.error != "no such intercept":
                raise

    def _decide(self, params: dict[str, Any]) -> None:
        # On the BiDi reader thread: send, never wait.
        if not params.get("isBlocked"):
            return
        request = params.get("request") or {}
        held = {"request": request.get("request")}
        try:
            if is_javascript_request(request):
                self._bidi().send("network.continueRequest", held)
            else:
                self._bidi().send("network.failRequest", held)
        except BidiError:
            # The session is going away; its held request goes with it.
            pass

    def _call(self, tab: str, function: str, timeout: float, *arguments: str) -> Any:
        """Call `function` with string arguments in the tab's page; its value."""
        reply = self._bidi().call(
            "script.callFunction",
            {
                "functionDeclaration": function,
                "awaitPromise": True,
                "target": {"context": tab},
                "arguments": [{"type": "string", "value": text} for text in arguments],
                "resultOwnership": "none",
                "serializationOptions": ANSWER_DEPTH,
            },
            timeout=timeout,
        )
        if reply.get("type") == "exception":
            details = reply.get("exceptionDetails") or {}
            raise BidiError(f"the page threw: {details.get('text', 'an exception')}")
        return remote_value(reply.get("result"))

    def _timed_out(self, tab: str, message: str) -> RunOutcome:
        """The outcome of a run past its deadline; a page that is stuck breaks us."""
        try:
            console = console_lines(self._call(tab, CONSOLE_FUNCTION, PROBE_TIMEOUT))
        except BidiError:
            self.broken = True
            return failed_outcome(
                TIMEOUT_ERROR,
                f"{message}, and the screen was still busy (a loop that never "
                "ends?); its browser session was ended",
            )
        outcome = RunOutcome(error=RunError(TIMEOUT_ERROR, message), console=console)
        return self._with_bundle(tab, outcome)

    def _with_bundle(self, tab: str, outcome: RunOutcome) -> RunOutcome:
        """The failed outcome with a screenshot and the page's HTML, if it answers."""
        bidi = self._bidi()
        deadline = time.monotonic() + BUNDLE_TIMEOUT
        try:
            # Both asked at once: together they cost one round trip.
            shot = bidi.request("browsingContext.captureScreenshot", {"context": tab})
            html = bidi.request(
                "script.callFunction",
                {
                    "functionDeclaration": HTML_FUNCTION,
                    "awaitPromise": False,
                    "target": {"context": tab},
                    "resultOwnership": "none",
                },
            )
            png = bidi.result("screenshot", shot, deadline - time.monotonic())["data"]
            page = bidi.result("html", html, deadline - time.monotonic())
        except (BidiError, KeyError):
            return outcome
        return _bundled(outcome, str(png), remote_value(page.get("result")))

    def _load_failure(self, url: str, exc: BidiError) -> RunOutcome:
        message = first_line(exc)
        # Chromium's and Firefox's words for a page that could not be fetched.
        if "net::ERR_" not in message and "NS_ERROR_" not in message:
            raise BrowserFailure(f"the browser failed loading the screen: {message}")
        return failed_outcome(
            RUNTIME_ERROR, f"the screen page {url} could not be loaded: {message}"
        )

    def _no_answer(self, tab: str, url: str) -> RunOutcome:
        # The invoke script answers null without a shim.
        try:
            has_shim = self._call(tab, HAS_SHIM_FUNCTION, PROBE_TIMEOUT)
        except BidiError as exc:
            raise BrowserFailure(
                f"the browser failed after the handler ran: {first_line(exc)}"
            ) from exc
        if not has_shim:
            return failed_outcome(
                RUNTIME_ERROR,
                f"the page at {url} is not an App Tasks screen page "
                "(the shim is missing)",
            )
        return failed_outcome(
            RUNTIME_ERROR, "the screen's shim gave no answer (was it replaced?)"
        )

    def _bidi(self) -> BidiConnection:
        if self.bidi is None:
            raise BrowserFailure(f"browser {self.name} is not open")
        return self.bidi


def _bundled(outcome: RunOutcome, png_base64: str, html: Any) -> RunOutcome:
    try:
        screenshot = base64.b64decode(png_base64, validate=True)
    except ValueError:
        screenshot = None
    bundle = FailureBundle(screenshot, html if isinstance(html, str) else None)
    return replace(outcome, bundle=bundle)
