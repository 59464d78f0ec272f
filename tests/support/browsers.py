"""Runtimes under test: screens served on loopback, runs, and the processes left.

The browser runtimes' tests share these: a server for the sample screens and a
few inline ones, a server that counts what it is asked for, a way to ask a
runtime for one run, and ways to find every process a runtime started for a
folder, by its command line or its environment.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from apptasks.execution import RunOutcome, RunRequest, Runtime
from apptasks.screens import render_screen
from apptasks.settings import Settings
from runtimes.browser_runtime import BrowserRuntime
from runtimes.processes import processes_mentioning
from tests.support.paths import shared_dir

SCREENS_DIR = shared_dir() / "screens"

# The Chromium to test, as the service would pick it: APPTASKS_CHROME_BINARY
# (the full browser by default, or chromium-headless-shell).
CHROME_BINARY = Settings.from_env().chrome_binary
# Screens here live on 127.0.0.1; every host name fails to resolve, so nothing
# Chromium does on its own (update checks, sign-in probes) leaves the machine.
CHROME_LOOPBACK_ONLY = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",)

# Screens for behaviours the shared samples do not cover.
INLINE_SCREENS = {
    "cyclic": "var a = {}; a.self = a; return a;",
    "undefined": "return undefined;",
    "date": "return new Date(Date.UTC(2026, 11, 4, 16, 5, 0));",
    "throws-string": 'throw "quota exhausted for today";',
    "context": "return context;",
    "big": 'return "x".repeat(payload.size);',
    "user-agent": "return navigator.userAgent;",
    "alert": 'alert("are you there?"); return [confirm("sure?"), prompt("name?")];',
    "storage": """
        var seen = {
          local: localStorage.getItem("k"),
          session: sessionStorage.getItem("k"),
          cookie: document.cookie
        };
        localStorage.setItem("k", "1");
        sessionStorage.setItem("k", "1");
        document.cookie = "k=1; max-age=3600";
        return seen;
    """,
}
STUCK_LOADING_PAGE = "<!doctype html><html><body><script>while (true) {}</script>"
PLAIN_PAGE = "<!doctype html><html><body><p>No shim here.</p></body></html>"

CHROMIUM_NAMES = ("chromium", "chromium-headless-shell")

# Writes (payload.write) and then reads every kind of state a browser keeps
# for an origin. Service workers need a secure context: 127.0.0.1 is one.
ISOLATION_SCREEN = """
async function writeEverything() {
  document.cookie = "page=1; max-age=3600; path=/";
  await fetch("/set-cookie");
  localStorage.setItem("k", "1");
  sessionStorage.setItem("k", "1");
  await new Promise(function (resolve, reject) {
    var request = indexedDB.open("tasks", 1);
    request.onupgradeneeded = function () { request.result.createObjectStore("s"); };
    request.onerror = function () { reject(request.error); };
    request.onsuccess = function () {
      var transaction = request.result.transaction("s", "readwrite");
      transaction.objectStore("s").put(1, "k");
      transaction.oncomplete = function () { request.result.close(); resolve(); };
      transaction.onerror = function () { reject(transaction.error); };
    };
  });
  await navigator.serviceWorker.register("/sw.js");
  await navigator.serviceWorker.ready;
  await (await caches.open("tasks")).put("/kept", new Response("1"));
  await fetch("/cached.js");
}
Fliplet.Page.onRemoteExecution(async function (payload) {
  if (payload.write) { await writeEverything(); }
  await fetch("/cached.js");
  return {
    cookie: document.cookie,
    serverCookie: await (await fetch("/cookie")).text(),
    local: localStorage.getItem("k"),
    session: sessionStorage.getItem("k"),
    databases: (await indexedDB.databases()).map(function (d) { return d.name; }),
    workers: (await navigator.serviceWorker.getRegistrations()).length,
    caches: await caches.keys()
  };
});
"""
WRITTEN_STATE = {
    "cookie": "page=1",
    "serverCookie": "page=1; server=1",
    "local": "1",
    "session": "1",
    "databases": ["tasks"],
    "workers": 1,
    "caches": ["tasks"],
}
EMPTY_STATE = {
    "cookie": "",
    "serverCookie": "",
    "local": None,
    "session": None,
    "databases": [],
    "workers": 0,
    "caches": [],
}

# Every kind of asset a page can ask for, besides what assets.html covers, and
# the JavaScript ways of fetching that must keep working.
ALL_ASSETS_SCREEN = """<!doctype html><html><head>
<style>
  @import url(/imported.css);
  @font-face { font-family: F; src: url(/font.woff2); }
  body { font-family: F; background: url(/background.png); }
</style>
<script src="/helper.js"></script>
</head><body>
<p>Text in a web font.</p>
<video src="/clip.mp4" preload="auto"></video>
<audio src="/sound.mp3" preload="auto"></audio>
<script>
  Fliplet.Page.onRemoteExecution(async function () {
    new Image().src = "/late.png";
    var data = await (await fetch("/data.json")).json();
    var worker = new Worker("/worker.js");
    var answer = await new Promise(function (resolve) { worker.onmessage = resolve; });
    return { helperLoaded: !!window.helperLoaded, data: data, worker: answer.data };
  });
</script>
</body></html>"""


def inline_screen(body: str) -> str:
    return (
        "<!doctype html><html><body><script>"
        "Fliplet.Page.onRemoteExecution(function (payload, context) {"
        f"{body}"
        "});</script></body></html>"
    )


def screen_pages() -> dict[str, bytes]:
    pages = {
        f"/{path.name}": render_screen(path.read_text(encoding="utf-8"))
        for path in SCREENS_DIR.glob("*.html")
    }
    for name, body in INLINE_SCREENS.items():
        pages[f"/{name}.html"] = render_screen(inline_screen(body))
    pages["/stuck-loading.html"] = render_screen(STUCK_LOADING_PAGE)
    pages["/plain.html"] = PLAIN_PAGE
    return {path: html.encode("utf-8") for path, html in pages.items()}


class ScreenHandler(BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        page = self.pages.get(self.path)
        if page is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines would only clutter the test output.
        pass


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on 127.0.0.1 for the block; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def serving_screens() -> Iterator[str]:
    """Serve the sample and inline screens; yields the base URL."""
    with serving(type("Handler", (ScreenHandler,), {"pages": screen_pages()})) as url:
        yield url


@dataclass
class CountingServer:
    """A loopback server that counts the requests it gets, by path.

    Besides `pages`, it sets a cookie (`/set-cookie`), says which cookies it
    was sent (`/cookie`), and serves a script browsers may cache (`/cached.js`).
    """

    pages: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    origin: str = ""

    def serve(self, path: str, body: str, content_type: str = "text/html") -> str:
        self.pages[path] = (content_type, body.encode("utf-8"))
        return self.origin + path

    def respond(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path
        self.counts[path] = self.counts.get(path, 0) + 1
        headers = {"Cache-Control": "no-store"}
        if path == "/set-cookie":
            headers["Set-Cookie"] = "server=1; Max-Age=3600; Path=/; HttpOnly"
            content_type, body = "text/plain", b"set"
        elif path == "/cookie":
            content_type = "text/plain"
            body = (handler.headers.get("Cookie") or "").encode("utf-8")
        elif path == "/cached.js":
            headers["Cache-Control"] = "max-age=3600"
            content_type, body = "text/javascript", b"// kept in the HTTP cache"
        elif path in self.pages:
            content_type, body = self.pages[path]
        else:
            handler.send_error(404)
            return

        handler.send_response(200)
        for name, value in {**headers, "Content-Type": content_type}.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


class CountingHandler(BaseHTTPRequestHandler):
    server_state: ClassVar[CountingServer]

    def do_GET(self) -> None:
        self.server_state.respond(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serving_counted() -> Iterator[CountingServer]:
    """Serve a fresh `CountingServer` on 127.0.0.1 for the block."""
    state = CountingServer()
    handler = type("Handler", (CountingHandler,), {"server_state": state})
    with serving(handler) as origin:
        state.origin = origin
        yield state


async def run(
    runtime: Runtime,
    url: str,
    payload: Any = None,
    *,
    seconds: float = 10.0,
    context: dict[str, Any] | None = None,
) -> RunOutcome:
    request = RunRequest(
        run_id=uuid.uuid4().hex,
        url=url,
        payload=payload,
        context=context or {},
        deadline=time.monotonic() + seconds,
    )
    return await runtime.execute(request)


def error_type(outcome: RunOutcome) -> str | None:
    return outcome.error.error_type if outcome.error else None


def runtime_processes(folder: Path) -> list[int]:
    """Every process started for `folder`: its path is in their environment
    (TMPDIR and HOME, inherited by every browser process) or command line."""
    needle = os.fsencode(folder)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            seen = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in seen:
            found.append(int(entry.name))
    return found


async def all_gone_within(
    folder: Path,
    seconds: float,
    processes: Callable[[Path], list[int]] = runtime_processes,
) -> bool:
    """Whether every process started for `folder` exits within `seconds`.

    `processes` finds them: by default by environment or command line.
    """
    deadline = time.monotonic() + seconds
    while processes(folder):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def browser_folders(runtime: BrowserRuntime[Any]) -> list[Path]:
    """Folders of the browsers launched so far and not yet closed, oldest first."""
    assert runtime.folder is not None
    folders = runtime.folder.glob("browser-*")
    return sorted(folders, key=lambda folder: int(folder.name.split("-")[1]))


def chromium_processes(folder: Path) -> list[int]:
    """Ids of Chromium main processes (not helpers) started with `folder`."""
    return [
        pid
        for pid, argv in _command_lines(processes_mentioning(folder))
        if Path(os.fsdecode(argv[0])).name in CHROMIUM_NAMES
        and not any(arg.startswith(b"--type=") for arg in argv)
    ]


def firefox_main_processes(folder: Path) -> list[int]:
    """Ids of Firefox main processes (not content processes) started for `folder`."""
    return [
        pid
        for pid, argv in _command_lines(runtime_processes(folder))
        if argv[0].endswith(b"firefox-esr") and b"-contentproc" not in argv
    ]


def _command_lines(pids: list[int]) -> Iterator[tuple[int, list[bytes]]]:
    # A process may exit between being found and being read.
    for pid in pids:
        try:
            yield pid, Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
