"""Talking to the screen shim through WebDriver, and reading what it answers.

Nothing here is specific to one browser: any WebDriver runtime loads the screen
page, runs `INVOKE_SCRIPT` as an asynchronous script with the payload and the
context as JSON text, and hands the answer to `read_answer`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from selenium.common.exceptions import WebDriverException
from selenium.webdriver.remote.webdriver import WebDriver
from urllib3.exceptions import HTTPError

from apptasks.execution import (
    RUNTIME_ERROR,
    TIMEOUT_ERROR,
    FailureBundle,
    RunError,
    RunOutcome,
)

MAX_ERROR_TYPE_CHARS = 200
MAX_MESSAGE_CHARS = 4000
MAX_TRACE_CHARS = 16000

HANDLER_TIMEOUT_MESSAGE = (
    "the handler had not settled when the run reached its time limit"
)

# Payload and context travel as JSON text: WebDriver would otherwise treat some
# object keys as element references, and JSON.parse keeps them exact.
INVOKE_SCRIPT = """
const done = arguments[arguments.length - 1];
const shim = window.__apptasks;
if (!shim || typeof shim.invoke !== "function") { done(null); return; }
shim.invoke(JSON.parse(arguments[0]), JSON.parse(arguments[1])).then(
  (outcome) => done({ outcome: outcome, console: shim.console.slice() })
);
"""
# INVOKE_SCRIPT with the time limit kept by the page: the third argument is the
# milliseconds the handler has, and past them the answer is `{timedOut: true}`
# with the console lines, without a WebDriver timeout to set first. A page busy
# in a loop never runs the timer: the runtime kills its browser instead.
INVOKE_WITHIN_SCRIPT = """
const done = arguments[arguments.length - 1];
const shim = window.__apptasks;
if (!shim || typeof shim.invokeWithin !== "function") { done(null); return; }
const limitMs = arguments[2];
shim.invokeWithin(JSON.parse(arguments[0]), JSON.parse(arguments[1]), limitMs).then(
  (outcome) => done(outcome === null
    ? { timedOut: true, console: shim.console.slice() }
    : { outcome: outcome, console: shim.console.slice() })
);
"""
HAS_SHIM_SCRIPT = "return Boolean(window.__apptasks);"
# Null on a screen page; on any other page, the start of what it reads: a
# server's error page, or the egress proxy's answer when the screen origin
# could not be reached.
PAGE_WITHOUT_SHIM_SCRIPT = """
if (window.__apptasks) { return null; }
return document.body ? document.body.innerText.slice(0, 300) : "";
"""
CONSOLE_SCRIPT = "return window.__apptasks ? window.__apptasks.console.slice() : [];"


def invoke_arguments(payload: Any, context: dict[str, Any]) -> tuple[str, str]:
    """The payload and the context as the JSON text `INVOKE_SCRIPT` expects.

    Raises `ValueError` or `TypeError` for values JSON cannot carry (NaN, sets).
    """
    return json.dumps(payload, allow_nan=False), json.dumps(context, allow_nan=False)


def read_answer(answer: Any, max_result_bytes: int) -> RunOutcome:
    """Turn what an invoke script (either of the two) answered into an outcome."""
    console = console_lines(answer.get("console") if isinstance(answer, dict) else [])
    if isinstance(answer, dict) and answer.get("timedOut") is True:
        return RunOutcome(
            error=RunError(TIMEOUT_ERROR, HANDLER_TIMEOUT_MESSAGE), console=console
        )
    text = answer.get("outcome") if isinstance(answer, dict) else None
    try:
        outcome = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        outcome = None
    if not isinstance(outcome, dict):
        return failed_outcome(
            RUNTIME_ERROR, "the screen's shim answered something other than JSON"
        )

    if outcome.get("ok") is not True:
        return RunOutcome(error=screen_error(outcome), console=console)

    result = outcome.get("result")
    size = len(json.dumps(result, ensure_ascii=False, separators=(",", ":")).encode())
    if size > max_result_bytes:
        message = (
            f"the handler's result is {size} bytes of JSON, more than the limit of "
            f"{max_result_bytes} bytes: return less, or store the data elsewhere "
            "and return a reference to it"
        )
        return RunOutcome(error=RunError("ResultTooLarge", message), console=console)
    return RunOutcome(result=result, console=console)


def no_answer_outcome(driver: WebDriver, url: str) -> RunOutcome:
    """Blocking: why `INVOKE_SCRIPT` answered null, asking the page at `url`.

    The script answers null when the page has no shim (the failure then quotes
    what the page reads); WebDriver also gives null when a dialog interrupts
    the script.
    """
    page_text = driver.execute_script(PAGE_WITHOUT_SHIM_SCRIPT)
    if page_text is not None:
        return failed_outcome(RUNTIME_ERROR, missing_shim_message(url, page_text))
    return failed_outcome(
        RUNTIME_ERROR,
        "the screen opened a dialog (alert, confirm or prompt) while its "
        "handler ran; nobody can answer dialogs in a task: use console.log",
    )


def with_bundle(driver: WebDriver, outcome: RunOutcome) -> RunOutcome:
    """Blocking: the failed outcome with a screenshot and the page's HTML.

    The outcome as it is when the page does not answer.
    """
    try:
        screenshot = driver.get_screenshot_as_png()
        html = driver.page_source
    except (WebDriverException, HTTPError, OSError):
        return outcome
    return replace(outcome, bundle=FailureBundle(screenshot, html))


def page_console(driver: WebDriver) -> list[str]:
    """Blocking: the console lines of the page so far; none if it cannot tell."""
    try:
        lines = driver.execute_script(CONSOLE_SCRIPT)
    except (WebDriverException, HTTPError, OSError):
        return []
    return console_lines(lines)


def screen_error(outcome: dict[str, Any]) -> RunError:
    """The screen's failure as the shim described it, cut to a sane size."""
    error_type = outcome.get("errorType")
    message = outcome.get("errorMessage")
    trace = outcome.get("trace")
    return RunError(
        error_type=_truncate(str(error_type or "Error"), MAX_ERROR_TYPE_CHARS),
        message=_truncate(str(message or ""), MAX_MESSAGE_CHARS),
        trace=_truncate(str(trace or ""), MAX_TRACE_CHARS),
    )


def console_lines(lines: Any) -> list[str]:
    """The shim's console lines; the screen can overwrite them, so check."""
    if not isinstance(lines, list):
        return []
    return [line if isinstance(line, str) else str(line) for line in lines]


def missing_shim_message(url: str, page_text: Any) -> str:
    """Why a run failed on a page without the shim, quoting what the page reads."""
    message = f"the page at {url} is not an App Tasks screen page (the shim is missing)"
    text = " ".join(str(page_text or "").split())
    return f"{message}; it reads {text!r}" if text else message


def failed_outcome(error_type: str, message: str) -> RunOutcome:
    return RunOutcome(error=RunError(error_type, message))


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
