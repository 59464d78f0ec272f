"""WebDriver BiDi connections: the firefox runtime's and the remote runtime's.

Selenium's BiDi client answers events on the thread that reads the socket and
waits there for its own commands, so an event handler that sends a command
would wait for itself; and it waits out a whole timeout for a browser that was
killed. A `BidiConnection` is a `CommandSocket`: a thread of its own reads the
socket and does nothing else but hand replies to the callers waiting for them
and call the event handlers (which may send, never wait), any number of
threads may call commands at once, and every call is bounded in time.

Both runtimes give each run a user context of its own with one tab in it,
made and removed here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

from runtimes.command_socket import CommandError, CommandSocket

# Seconds a BiDi command may take by default; browser commands take milliseconds,
# more through a Grid under load.
COMMAND_TIMEOUT = 10.0


class BidiError(CommandError):
    """A BiDi command failed: `error` is the BiDi error code, if it had one."""


class BidiTimeout(BidiError):
    """A BiDi command had no answer in time; the browser may still be on it."""


class BidiClosed(BidiError):
    """The connection is closed: the session ended, or the runtime closed it."""


@dataclass(frozen=True)
class RunContext:
    """A user context made for one run, and the tab the run loads its screen in."""

    user_context: str
    tab: str


class BidiConnection(CommandSocket):
    """A WebDriver BiDi session's socket, safe to use from several threads."""

    protocol: ClassVar[str] = "BiDi"
    error_class: ClassVar[type[CommandError]] = BidiError
    timeout_class: ClassVar[type[CommandError] | None] = BidiTimeout
    closed_class: ClassVar[type[CommandError] | None] = BidiClosed

    def __init__(self, url: str, name: str, timeout: float = COMMAND_TIMEOUT) -> None:
        super().__init__(url, name, timeout)

    def close(self) -> None:
        """Close at once, without a closing handshake; waiting calls fail now.

        Never waits on the other end, so it is safe on a hung browser.
        """
        self.abort()
        self._socket.shutdown()  # type: ignore[no-untyped-call]  # unannotated upstream

    def new_context(self) -> RunContext:
        """Blocking: a new user context, and a tab in it left in the background.

        In the background, so as not to push a running screen there.
        """
        user_context = self.call("browser.createUserContext")["userContext"]
        tab = self.call(
            "browsingContext.create",
            {"type": "tab", "userContext": user_context, "background": True},
        )["context"]
        return RunContext(user_context=str(user_context), tab=str(tab))

    def remove_context(self, context: RunContext) -> None:
        """Blocking: remove a user context, closing its tabs and whatever the
        screen opened."""
        self.call("browser.removeUserContext", {"userContext": context.user_context})


def remote_value(value: Any) -> Any:
    """A BiDi `RemoteValue` as plain JSON-like Python values.

    Strings, numbers, booleans, arrays and plain objects come back as such;
    `undefined`, `null` and what JSON has no word for (nodes, functions) as
    None. Object keys that are not strings are written as their JSON text.
    """
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    content = value.get("value")
    if kind in ("string", "boolean"):
        return content
    if kind == "number":
        # NaN, -0 and the infinities arrive as strings; JSON has none of them.
        return content if isinstance(content, int | float) else None
    if kind == "bigint":
        return int(str(content))
    if kind in ("array", "set"):
        return [remote_value(item) for item in content or []]
    if kind in ("object", "map"):
        return {
            key if isinstance(key, str) else json.dumps(remote_value(key)): (
                remote_value(item)
            )
            for key, item in content or []
        }
    return None
