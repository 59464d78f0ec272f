"""Real headless Chromium for the JavaScript client's tests, and a page origin.

`PageServer` serves the pages that load `/sdk/apptasks.js` from an origin of
their own on 127.0.0.1, so that every call the client makes is cross-origin,
as it is for a web app that uses App Tasks.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as ChromeDriverService

from tests.support.services import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # The browser resolves no host name at all: it talks to loopback only.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)

PLAIN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>App Tasks client</title>
<script src="{api}/sdk/apptasks.js"></script>
</head><body></body></html>
"""
# A page whose own code got to Fliplet.App.Tasks first.
PAGE_WITH_ITS_OWN_TASKS = """<!doctype html>
<html><head><meta charset="utf-8"><title>App Tasks client</title>
<script>window.Fliplet = {{ App: {{ Tasks: {{ ownedByThePage: true }} }} }};</script>
<script src="{api}/sdk/apptasks.js"></script>
</head><body></body></html>
"""


class PageServer:
    """Serves the test pages from an origin of its own on 127.0.0.1."""

    def __init__(self, api: str) -> None:
        pages = {
            "/plain.html": PLAIN_PAGE.format(api=api),
            "/own-tasks.html": PAGE_WITH_ITS_OWN_TASKS.format(api=api),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                page = pages.get(self.path)
                if page is None:
                    self._answer(404, "text/plain", "no such page")
                else:
                    self._answer(200, "text/html; charset=utf-8", page)

            # An endpoint that is not GraphQL: answers like a misconfigured proxy.
            def do_POST(self) -> None:
                self._answer(404, "text/plain", "nothing here")

            def _answer(self, status: int, media_type: str, text: str) -> None:
                body = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the tests' output is about the client, not this server

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@contextmanager
def chromium(script_timeout: float) -> Iterator[webdriver.Chrome]:
    """A headless Chromium that reaches loopback only; quit afterwards."""
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    # Chromium leaves its singleton socket's folder in TMPDIR: in one of ours.
    with tempfile.TemporaryDirectory(prefix="apptasks-sdk-") as folder:
        service = ChromeDriverService(
            executable_path=CHROMEDRIVER, env={**os.environ, "TMPDIR": folder}
        )
        chrome = webdriver.Chrome(service=service, options=options)
        try:
            chrome.set_script_timeout(script_timeout)
            yield chrome
        finally:
            chrome.quit()
