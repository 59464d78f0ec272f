"""WebDriver servers for the remote runtime's tests, and small loopback sites.

A chromedriver or geckodriver left running plays the part a Selenium Grid
plays in production. It runs in a session of its own, which the browsers it
starts join, so stopping it sweeps them all away.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.services import free_port, wait_until

START_TIMEOUT = 20.0


@dataclass
class WebDriverServer:
    """A WebDriver server listening on 127.0.0.1, in a session of its own.

    `is_browser` tells a browser's main process from its helpers, by command
    line.
    """

    process: subprocess.Popen[bytes]
    url: str
    is_browser: Callable[[list[bytes]], bool]

    @property
    def browsers(self) -> list[int]:
        """Ids of the browser main processes it has started and not yet closed."""
        return [
            pid
            for pid in processes_in_session(self.process.pid)
            if self.is_browser(command_line(pid))
        ]

    def stop(self) -> None:
        for pid in processes_in_session(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def start_webdriver_server(
    arguments: Sequence[str],
    folder: Path,
    is_browser: Callable[[list[bytes]], bool],
) -> WebDriverServer:
    """Start a WebDriver server; `{port}` in `arguments` becomes a free port.

    Its temporary files (the browsers' profiles) go to `folder`.
    """
    port = free_port()
    process = subprocess.Popen(
        [argument.format(port=port) for argument in arguments],
        env={**os.environ, "TMPDIR": str(folder)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = WebDriverServer(process, f"http://127.0.0.1:{port}", is_browser)
    try:
        wait_until(lambda: _ready(server.url), START_TIMEOUT, f"{arguments[0]} start")
    except BaseException:
        server.stop()
        raise
    return server


def processes_in_session(session: int) -> list[int]:
    """Ids of the live processes in the session `session`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def command_line(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve with `handler` on 127.0.0.1; yields the server's origin."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/status", timeout=1) as response:
            return bool(json.loads(response.read())["value"]["ready"])
    except OSError:
        return False
