"""Screens reach neither the worker's machine nor `file:`, in both browser runtimes.

Only loopback ever receives a packet here. Canaries, TCP servers on 127.0.0.1
and ::1 that count the connections they accept and a UDP socket that counts
datagrams, stand in for the services of the worker's machine; a screen tries
to reach them every way a page can, by every spelling of loopback, and they
must see nothing. The runtimes' proxies resolve names from an empty table
instead of DNS, and a guard fails any test in which a proxy tries to connect
beyond loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pluggy
import pytest
import pytest_asyncio
from selenium.webdriver.common.proxy import Proxy, ProxyType

from apptasks.errors import ConfigurationError
from apptasks.execution import RUNTIME_ERROR, RunOutcome, RunRequest
from apptasks.hooks import PROJECT, hookimpl
from apptasks.screens import render_screen
from apptasks.settings import Settings
from plugins import hookspecs
from runtimes.chrome import ChromeRuntime
from runtimes.chrome_launch import LaunchError, chromium_options, command_line
from runtimes.egress_guard import EgressGuard, opens_own_machine
from runtimes.firefox import FirefoxRuntime
from runtimes.firefox_preferences import loopback_only_preferences
from tests.runtimes.test_chrome import CHROME_BINARY
from tests.runtimes.test_egress import (
    IPV6_LOOPBACK,
    LoopbackServer,
    TableResolver,
    UdpCanary,
)

PROXY_LOGGER = "apptasks.runtimes.egress"
BROWSERS = ["chrome", "firefox"]

# Every spelling of 127.0.0.1 a page can put in a URL, and ::1.
LOOPBACK_FORMS = (
    "127.0.0.1",
    "127.1",
    "localhost",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "[::ffff:127.0.0.1]",
)
PROBE_KINDS = (
    "fetch",
    "xhr",
    "script",
    "img",
    "iframe",
    "websocket",
    "eventsource",
    "beacon",
)
CANARY_TEXT = "canary reached"
OWN_SCRIPT = b"window.ownScriptLoaded = true;"

# Tries every target every way a page can, each settled within a few seconds,
# and answers what each attempt saw. file: is read by fetch, XHR and a frame.
PROBE_SCRIPT = """
const settle = (promise) => Promise.race([promise, new Promise(
  (resolve) => setTimeout(() => resolve("timeout"), 4000))]);
const describe = (error) => "error " + (error && error.name);
const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const viaFetch = (url) => fetch(url, {cache: "no-store"}).then(
  async (response) => "response " + response.status + " " + await response.text(),
  describe);
const viaXhr = (url) => new Promise((resolve) => {
  const request = new XMLHttpRequest();
  request.onload = () => resolve(
    "response " + request.status + " " + request.responseText);
  request.onerror = () => resolve("error");
  try { request.open("GET", url); request.send(); }
  catch (error) { resolve(describe(error)); }
});
const viaTag = (tag, url) => new Promise((resolve) => {
  const element = document.createElement(tag);
  element.onload = () => resolve("loaded");
  element.onerror = () => resolve("error");
  element.src = url;
  document.body.appendChild(element);
});
const viaFrame = (url) => new Promise((resolve) => {
  const frame = document.createElement("iframe");
  const read = () => {
    try {
      const page = frame.contentDocument;
      resolve(page && page.body ? "read " + page.body.textContent : "unreadable");
    } catch (error) { resolve(describe(error)); }
  };
  frame.onload = read;
  setTimeout(read, 2500);
  frame.src = url;
  document.body.appendChild(frame);
});
const viaSocket = (url) => new Promise((resolve) => {
  let socket;
  try { socket = new WebSocket(url); }
  catch (error) { resolve(describe(error)); return; }
  socket.onopen = () => { resolve("open"); socket.close(); };
  socket.onerror = () => resolve("error");
});
const viaEventSource = (url) => new Promise((resolve) => {
  const source = new EventSource(url);
  source.onopen = () => { resolve("open"); source.close(); };
  source.onerror = () => { resolve("error"); source.close(); };
});
const viaBeacon = async (url) => {
  const queued = navigator.sendBeacon(url, "probe");
  await pause(1000);
  return "queued " + queued;
};
const KINDS = {
  fetch: (url) => viaFetch(url),
  xhr: (url) => viaXhr(url),
  script: (url) => viaTag("script", url),
  img: (url) => viaTag("img", url),
  iframe: (url) => viaFrame(url),
  websocket: (url) => viaSocket(url.replace("http:", "ws:")),
  eventsource: (url) => viaEventSource(url),
  beacon: (url) => viaBeacon(url),
};
// STUN over UDP, TURN over TCP, and a remote peer whose only candidate is the
// UDP canary, which the browser would check over UDP.
const viaWebRtc = async (udpPort, tcpPort) => {
  if (typeof RTCPeerConnection === "undefined") { return "unavailable"; }
  const connection = new RTCPeerConnection({iceServers: [
    {urls: "stun:127.0.0.1:" + udpPort},
    {urls: "turn:127.0.0.1:" + tcpPort + "?transport=tcp",
     username: "probe", credential: "probe"},
  ]});
  const remote = new RTCPeerConnection();
  connection.createDataChannel("probe");
  await connection.setLocalDescription(await connection.createOffer());
  await remote.setRemoteDescription(connection.localDescription);
  await remote.setLocalDescription(await remote.createAnswer());
  await connection.setRemoteDescription(remote.localDescription);
  await connection.addIceCandidate({
    candidate: "candidate:1 1 udp 2122260223 127.0.0.1 " + udpPort + " typ host",
    sdpMid: connection.localDescription.sdp.match(/a=mid:(\\S+)/)[1],
  }).catch(() => null);
  await pause(2500);
  const state = connection.iceConnectionState;
  connection.close();
  remote.close();
  return "ice " + state;
};
const viaWebTransport = async (udpPort) => {
  if (typeof WebTransport === "undefined") { return "unavailable"; }
  try {
    const transport = new WebTransport("https://127.0.0.1:" + udpPort + "/");
    return await transport.ready.then(() => "ready", describe);
  } catch (error) { return describe(error); }
};

async function probe(payload) {
  const attempts = {};
  const tasks = [];
  const attempt = (name, work) => tasks.push(
    settle(work()).then((outcome) => { attempts[name] = String(outcome); }));
  for (const [host, port] of payload.targets) {
    const url = "http://" + host + ":" + port + "/probe";
    for (const kind of payload.kinds) {
      attempt(host + ":" + port + " " + kind, () => KINDS[kind](url));
    }
  }
  for (const [name, url] of payload.named) {
    attempt(name + " fetch", () => viaFetch(url));
    attempt(name + " websocket", () => viaSocket(url.replace("http:", "ws:")));
  }
  attempt("webrtc", () => viaWebRtc(payload.udpPort, payload.tcpPort));
  attempt("webtransport", () => viaWebTransport(payload.udpPort));
  attempt("file fetch", () => viaFetch("file:///etc/passwd"));
  attempt("file xhr", () => viaXhr("file:///etc/passwd"));
  attempt("file iframe", () => viaFrame("file:///etc/passwd"));
  await Promise.all(tasks);

  const data = await (await fetch("/data.json")).json();
  return {attempts, own: {script: window.ownScriptLoaded === true, data}};
}
Fliplet.Page.onRemoteExecution(probe);
"""
PROBE_PAGE = (
    '<!doctype html><html><head><script src="/own.js"></script></head>'
    f"<body><script>{PROBE_SCRIPT}</script></body></html>"
)


async def answer_as_canary(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer an HTTP request with `CANARY_TEXT`, readable from any origin.

    A page that got through can tell; the server counts the connection either way.
    """
    body = CANARY_TEXT.encode()
    try:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    except TimeoutError:
        return
    writer.write(
        b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\n"
        b"Content-Type: text/javascript\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()


def canary(host: str) -> LoopbackServer:
    """A TCP server on loopback that counts the connections it accepts."""
    return LoopbackServer(answer_as_canary, host)


class Canaries:
    """The canaries of one module: refused ones, an allow-listed one, UDP."""

    def __init__(self) -> None:
        self.refused = canary("127.0.0.1")
        self.refused_v6 = canary("::1") if IPV6_LOOPBACK else None
        self.allowed = canary("127.0.0.1")
        self.udp = UdpCanary()
        self.udp_port = 0
        self._udp_transport: asyncio.DatagramTransport | None = None

    async def start(self) -> Canaries:
        for server in self.tcp:
            await server.start()
        loop = asyncio.get_running_loop()
        self._udp_transport, _ = await loop.create_datagram_endpoint(
            lambda: self.udp, local_addr=("127.0.0.1", 0)
        )
        self.udp_port = int(self._udp_transport.get_extra_info("sockname")[1])
        return self

    async def stop(self) -> None:
        for server in self.tcp:
            await server.stop()
        if self._udp_transport is not None:
            self._udp_transport.close()

    @property
    def tcp(self) -> list[LoopbackServer]:
        canaries = [self.refused, self.allowed]
        return canaries if self.refused_v6 is None else [*canaries, self.refused_v6]

    def counts(self) -> dict[str, int]:
        return {
            "refused": self.refused.connections,
            "refused_v6": 0 if self.refused_v6 is None else self.refused_v6.connections,
            "allowed": self.allowed.connections,
            "udp": self.udp.datagrams,
        }

    def reset(self) -> None:
        for server in self.tcp:
            server.connections = 0
        self.udp.datagrams = 0


class ScreenOrigin(BaseHTTPRequestHandler):
    """The origin that serves the probe screen, its script and its data."""

    routes: ClassVar[dict[str, tuple[str, bytes]]] = {
        "/probe.html": ("text/html", render_screen(PROBE_PAGE).encode()),
        "/own.js": ("text/javascript", OWN_SCRIPT),
        "/data.json": ("application/json", b'{"own": true}'),
    }

    def do_GET(self) -> None:
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        content_type, body = route
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines would only clutter the test output


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if a proxy tries to connect anywhere but loopback."""
    real_open_connection = asyncio.open_connection
    elsewhere: list[tuple[str, int]] = []

    async def guarded(host: str, port: int, **options: Any) -> Any:
        if not ipaddress.ip_address(host).is_loopback:
            elsewhere.append((host, port))
            raise ConnectionRefusedError(f"test guard: {host} is not loopback")
        return await real_open_connection(host, port, **options)

    monkeypatch.setattr(asyncio, "open_connection", guarded)
    yield
    assert elsewhere == [], "a proxy tried to leave loopback"


@pytest_asyncio.fixture(scope="module")
async def canaries() -> AsyncIterator[Canaries]:
    started = await Canaries().start()
    yield started
    await started.stop()


@pytest.fixture(scope="module")
def screen_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScreenOrigin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/probe.html"
    server.shutdown()
    server.server_close()
    thread.join()


class UndoEgressPlugin:
    """A plugin that tries to take the browser off the proxy."""

    @hookimpl
    def apptasks_browser_options(self, browser: str, options: Any) -> None:
        if browser == "firefox":
            options.set_preference("network.proxy.type", 0)
            options.set_preference("network.proxy.allow_hijacking_localhost", False)
            options.set_preference("media.peerconnection.ice.proxy_only", False)


def plugin_hooks(*plugins: object) -> Any:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    for plugin in plugins:
        manager.register(plugin, name=type(plugin).__name__)
    return manager.hook


def make_runtime(
    browser: str, allow: str, resolver: TableResolver
) -> ChromeRuntime | FirefoxRuntime:
    """A runtime of one browser, as a worker makes it, with `allow` allowed.

    Firefox gets WebRTC back, and a setting and a plugin that try to undo its
    egress preferences: they must all lose.
    """
    if browser == "chrome":
        settings = Settings(chrome_binary=CHROME_BINARY, egress_allow=allow)
        runtime: ChromeRuntime | FirefoxRuntime = ChromeRuntime(settings)
    else:
        settings = Settings(
            egress_allow=allow,
            firefox_preferences='{"network.proxy.type": 0}',
        )
        preferences = {
            **loopback_only_preferences(),
            "media.peerconnection.enabled": True,
        }
        runtime = FirefoxRuntime(
            settings,
            hooks=plugin_hooks(UndoEgressPlugin()),
            extra_preferences=preferences,
        )
    runtime.egress.resolver = resolver
    return runtime


@pytest_asyncio.fixture(scope="module", params=BROWSERS)
async def guarded(
    request: pytest.FixtureRequest, canaries: Canaries
) -> AsyncIterator[tuple[ChromeRuntime | FirefoxRuntime, TableResolver]]:
    """A runtime with only the allowed canary on its allow-list."""
    resolver = TableResolver()
    runtime = make_runtime(
        request.param, f"127.0.0.1:{canaries.allowed.port}", resolver
    )
    await runtime.start()
    try:
        yield runtime, resolver
    finally:
        await runtime.stop()


@pytest_asyncio.fixture(scope="module", params=BROWSERS)
async def wide_open(
    request: pytest.FixtureRequest,
) -> AsyncIterator[ChromeRuntime | FirefoxRuntime]:
    """A runtime whose allow-list opens every port of 127.0.0.1 and ::1."""
    runtime = make_runtime(request.param, "127.0.0.1, ::1", TableResolver())
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


async def run(runtime: Any, url: str, payload: Any) -> RunOutcome:
    request = RunRequest(
        run_id=uuid.uuid4().hex,
        url=url,
        payload=payload,
        context={},
        deadline=time.monotonic() + 25,
    )
    outcome: RunOutcome = await runtime.execute(request)
    return outcome


def probe_payload(
    canaries: Canaries, targets: list[tuple[str, int]], named: dict[str, str]
) -> dict[str, Any]:
    return {
        "targets": targets,
        "kinds": PROBE_KINDS,
        "named": list(named.items()),
        "udpPort": canaries.udp_port,
        "tcpPort": canaries.refused.port,
    }


def refused_ports(caplog: pytest.LogCaptureFixture) -> dict[int, set[str]]:
    """The ports the proxy refused, with the reasons it logged."""
    refusals: dict[int, set[str]] = {}
    for record in caplog.records:
        pattern = r"egress refused host=\S+ port=(\d+) reason=(.*)"
        match = re.match(pattern, record.getMessage())
        if match:
            refusals.setdefault(int(match[1]), set()).add(match[2])
    return refusals


def browser_ports(runtime: ChromeRuntime | FirefoxRuntime) -> dict[str, int]:
    """The ports of the runtime's browser and driver, found the way a person would.

    The DevTools and Marionette ports from the files the browsers write to
    their profiles, the driver and BiDi ports from the drivers' command lines
    (a driver names the runtime's folder in its environment).
    """
    assert runtime.folder is not None
    ports: dict[str, int] = {}
    for path in runtime.folder.glob("browser-*/profile/**/*ActivePort"):
        ports[path.name] = int(path.read_text().split()[0])
    needle = os.fsencode(runtime.folder)
    for entry in Path("/proc").iterdir():
        try:
            environment = (entry / "environ").read_bytes()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        program = Path(os.fsdecode(argv[0])).name
        if needle not in environment or "driver" not in program:
            continue
        command = " ".join(os.fsdecode(part) for part in argv)
        for name, port in re.findall(r"--(port|websocket-port)[= ](\d+)", command):
            ports[f"{program.split('_')[0]} {name}"] = int(port)
    return ports


# The default: loopback, file: and the worker's ports are out of reach


@pytest.mark.browser
async def test_screen_reaches_no_loopback_form_and_no_file_but_its_own_origin(
    guarded: tuple[ChromeRuntime | FirefoxRuntime, TableResolver],
    canaries: Canaries,
    screen_url: str,
    caplog: pytest.LogCaptureFixture,
    record_property: Any,
) -> None:
    runtime, resolver = guarded
    canaries.reset()
    targets = [(form, canaries.refused.port) for form in LOOPBACK_FORMS]
    if canaries.refused_v6 is not None:
        targets.append(("[::1]", canaries.refused_v6.port))

    with caplog.at_level(logging.WARNING, logger=PROXY_LOGGER):
        outcome = await run(
            runtime, screen_url, probe_payload(canaries, targets, named={})
        )
        await asyncio.sleep(0.5)  # for beacons and late retries

    assert outcome.ok, outcome.error
    assert outcome.result["own"] == {"script": True, "data": {"own": True}}
    attempts: dict[str, str] = outcome.result["attempts"]
    record_property("attempts", attempts)
    assert len(attempts) == len(targets) * len(PROBE_KINDS) + 5
    assert canaries.counts() == {"refused": 0, "refused_v6": 0, "allowed": 0, "udp": 0}
    assert [name for name, seen in attempts.items() if CANARY_TEXT in seen] == []
    assert [name for name, seen in attempts.items() if "root:" in seen] == []
    assert {canaries.refused.port} <= set(refused_ports(caplog))
    assert resolver.asked == []


@pytest.mark.browser
async def test_allow_listed_server_is_reached(
    guarded: tuple[ChromeRuntime | FirefoxRuntime, TableResolver],
    canaries: Canaries,
    screen_url: str,
) -> None:
    runtime, _ = guarded
    canaries.reset()
    allowed = f"http://127.0.0.1:{canaries.allowed.port}/probe"

    outcome = await run(
        runtime, screen_url, probe_payload(canaries, [], named={"allowed": allowed})
    )

    assert outcome.ok, outcome.error
    assert outcome.result["attempts"]["allowed fetch"] == f"response 200 {CANARY_TEXT}"
    assert canaries.allowed.connections >= 1
    assert canaries.refused.connections == 0


@pytest.mark.browser
async def test_worker_ports_stay_refused_when_all_of_loopback_is_allowed(
    wide_open: ChromeRuntime | FirefoxRuntime,
    canaries: Canaries,
    screen_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    canaries.reset()
    ports = browser_ports(wide_open)
    named = {
        f"{name} on {host}": f"http://{host}:{port}/"
        for name, port in ports.items()
        for host in ("127.0.0.1", "[::1]")
    }
    named["allowed"] = f"http://127.0.0.1:{canaries.allowed.port}/probe"

    with caplog.at_level(logging.WARNING, logger=PROXY_LOGGER):
        outcome = await run(
            wide_open, screen_url, probe_payload(canaries, [], named=named)
        )

    assert outcome.ok, outcome.error
    attempts = outcome.result["attempts"]
    assert attempts["allowed fetch"] == f"response 200 {CANARY_TEXT}"
    expected = (
        {"DevToolsActivePort", "chromedriver port"}
        if wide_open.name == "chrome"
        else {"MarionetteActivePort", "geckodriver port", "geckodriver websocket-port"}
    )
    assert set(ports) == expected
    refusals = refused_ports(caplog)
    for name, port in ports.items():
        assert refusals.get(port) == {f"port {port} is one of the worker's own"}, name
        for host in ("127.0.0.1", "[::1]"):
            assert not attempts[f"{name} on {host} fetch"].startswith("response 2")


@pytest.mark.browser
async def test_unreachable_screen_origin_fails_quoting_the_proxys_answer(
    guarded: tuple[ChromeRuntime | FirefoxRuntime, TableResolver],
) -> None:
    runtime, _ = guarded
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{closed_port}/render/secret"

    outcome = await run(runtime, url, None)

    assert outcome.error is not None
    assert outcome.error.error_type == RUNTIME_ERROR
    assert url in outcome.error.message
    assert f"could not connect to 127.0.0.1 port {closed_port}" in outcome.error.message


# Nothing a setting or a plugin says takes a browser off the proxy


@pytest.mark.parametrize(
    "argument",
    [
        "--no-proxy-server",
        "--proxy-server=direct://",
        "--proxy-pac-url=data:,",
        "--proxy-auto-detect",
        "--proxy-bypass-list=*",
        "--force-webrtc-ip-handling-policy=default",
    ],
)
def test_chromium_arguments_that_would_bypass_the_proxy_are_refused(
    argument: str,
) -> None:
    options = chromium_options(Settings(), Path("/profile"), extra_arguments=[argument])

    with pytest.raises(LaunchError, match="APPTASKS_EGRESS_ALLOW"):
        command_line(options, ["--proxy-server=http://127.0.0.1:1"])


def test_egress_flags_end_chromiums_command_line() -> None:
    options = chromium_options(Settings(), Path("/profile"), ["--lang=fr"])
    final = ["--proxy-server=http://127.0.0.1:1", "--proxy-bypass-list=<-loopback>"]

    command = command_line(options, final)

    assert command[-3:] == [*final, "about:blank"]
    assert command.index("--lang=fr") < command.index(final[0])


class ProxyCapabilityPlugin:
    @hookimpl
    def apptasks_browser_options(self, options: Any) -> None:
        options.proxy = Proxy({"proxyType": ProxyType.DIRECT})


async def test_a_plugins_proxy_capability_stops_firefox_from_starting() -> None:
    runtime = FirefoxRuntime(Settings(), hooks=plugin_hooks(ProxyCapabilityPlugin()))

    with pytest.raises(ConfigurationError, match="APPTASKS_EGRESS_ALLOW"):
        await runtime.start()


# The allow-list setting


def test_allow_list_takes_commas_and_spaces() -> None:
    settings = Settings.from_env(
        {"APPTASKS_EGRESS_ALLOW": "127.0.0.1:8080, [::1]:9000 10.1.0.0/16,,"}
    )

    guard = EgressGuard(settings)

    assert guard.allow == ("127.0.0.1:8080", "[::1]:9000", "10.1.0.0/16")


@pytest.mark.parametrize("entry", ["127.0.0.1:port", "[::1]", "10.0.0.0/33"])
def test_bad_allow_list_entry_stops_the_runtime_naming_it(entry: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(repr(entry))):
        ChromeRuntime(Settings(egress_allow=entry))


@pytest.mark.parametrize(
    ("entry", "wide"),
    [
        ("127.0.0.1", True),
        ("127.0.0.0/8", True),
        ("0.0.0.0/0", True),
        ("::1", True),
        ("::/0", True),
        ("::ffff:127.0.0.1", True),
        ("127.0.0.1:8080", False),
        ("localhost:8080", False),
        ("10.0.0.0/8", False),
        ("fd00::/8", False),
    ],
)
def test_entries_that_open_every_port_of_loopback_are_told_apart(
    entry: str, wide: bool
) -> None:
    assert opens_own_machine(entry) is wide
