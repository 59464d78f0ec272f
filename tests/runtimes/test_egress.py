"""Where a screen may connect: the egress policy, and the proxy enforcing it.

Only loopback ever receives a packet here. Every other address is judged by
the pure policy without a connection; the proxy tests allow nothing but
servers started on 127.0.0.1 or ::1, names resolve through a table instead of
DNS, and a guard fails any test that opens a TCP connection elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import statistics
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from apptasks.errors import ConfigurationError
from apptasks.settings import CHROMIUM_BACKGROUND_HOSTS
from runtimes.egress import EgressPolicy, parse_host
from runtimes.egress_proxy import EgressProxy

PROXY_LOGGER = "apptasks.runtimes.egress"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6_LOOPBACK = _has_ipv6_loopback()


# Decisions: refused, in every category and notation

REFUSED = [
    # loopback, as a browser or inet_aton would spell it
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("127.1", "loopback"),
    ("127.0.1", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f000001", "loopback"),
    ("0X7F000001", "loopback"),
    ("017700000001", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("0x7f.1", "loopback"),
    ("0x7f.0.0.0x1", "loopback"),
    ("127.0.0.1.", "loopback"),
    ("127.0.0.0x", "loopback"),
    ("::1", "loopback"),
    ("[::1]", "loopback"),
    ("0:0:0:0:0:0:0:1", "loopback"),
    ("[::ffff:127.0.0.1]", "IPv4-mapped address for 127.0.0.1, which is loopback"),
    ("::ffff:7f00:1", "IPv4-mapped address for 127.0.0.1, which is loopback"),
    ("::ffff:127.8.9.10", "IPv4-mapped address for 127.8.9.10, which is loopback"),
    ("::127.0.0.1", "IPv4-compatible address for 127.0.0.1, which is loopback"),
    ("::7f00:1", "IPv4-compatible address for 127.0.0.1, which is loopback"),
    ("64:ff9b::127.0.0.1", "NAT64 address for 127.0.0.1, which is loopback"),
    ("64:ff9b::7f00:1", "NAT64 address for 127.0.0.1, which is loopback"),
    ("2002:7f00:1::1", "6to4 address for 127.0.0.1, which is loopback"),
    ("localhost", "the local machine"),
    ("LOCALHOST.", "the local machine"),
    ("screens.localhost", "the local machine"),
    # private
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("012.0.0.1", "private"),
    ("0xa.1", "private"),
    ("167772161", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("3232235777", "private"),
    ("0xc0.0xa8.1.1", "private"),
    ("::ffff:10.0.0.1", "IPv4-mapped address for 10.0.0.1, which is private"),
    ("::ffff:c0a8:101", "IPv4-mapped address for 192.168.1.1, which is private"),
    ("64:ff9b::a00:1", "NAT64 address for 10.0.0.1, which is private"),
    ("2002:c0a8:101::", "6to4 address for 192.168.1.1, which is private"),
    # link-local
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("[fe80::1234:5678]", "link-local"),
    ("febf::1", "link-local"),
    # cloud metadata, and its other spellings
    ("169.254.169.254", "cloud metadata"),
    ("169.254.43518", "cloud metadata"),
    ("0xa9fea9fe", "cloud metadata"),
    ("2852039166", "cloud metadata"),
    ("0251.0376.0251.0376", "cloud metadata"),
    ("169.254.170.2", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("::ffff:169.254.169.254", "169.254.169.254, which is a cloud metadata"),
    ("64:ff9b::a9fe:a9fe", "169.254.169.254, which is a cloud metadata"),
    ("2002:a9fe:a9fe::", "169.254.169.254, which is a cloud metadata"),
    ("metadata.google.internal", "cloud metadata"),
    ("METADATA.GOOGLE.INTERNAL.", "cloud metadata"),
    ("metadata", "cloud metadata"),
    ("instance-data.ec2.internal", "cloud metadata"),
    # carrier-grade NAT
    ("100.64.0.1", "carrier-grade NAT"),
    ("100.127.255.254", "carrier-grade NAT"),
    ("::ffff:100.64.0.1", "carrier-grade NAT"),
    # unique-local
    ("fc00::1", "unique-local"),
    ("fd12:3456:789a::1", "unique-local"),
    # multicast and broadcast
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("[ff05::1:3]", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("0xffffffff", "broadcast"),
    # unspecified
    ("0.0.0.0", "unspecified"),
    ("0", "unspecified"),
    ("0x0", "unspecified"),
    ("0.0", "unspecified"),
    ("::", "unspecified"),
    ("[::]", "unspecified"),
    ("::ffff:0.0.0.0", "unspecified"),
    # other ranges that are not the public network
    ("192.0.2.10", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("240.0.0.1", "reserved"),
    ("2001:db8::1", "documentation"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("fec0::1", "site-local"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("100::1", "not a global unicast address"),
    ("::ffff:0:7f00:1", "not a global unicast address"),
    ("::8.8.8.8", "IPv4-compatible address (deprecated"),
]


@pytest.mark.parametrize(("host", "why"), REFUSED, ids=[host for host, _ in REFUSED])
def test_policy_refuses_local_addresses_in_every_notation(host: str, why: str) -> None:
    decision = EgressPolicy().decide(host, 80)

    assert not decision.allowed
    assert not decision.needs_resolution
    assert why in decision.reason
    assert decision.addresses == ()


INVALID_HOSTS = [
    "",
    " ",
    "256.0.0.1",
    "4294967296",
    "0x100000000",
    "1.2.3.4.5",
    "08.0.0.1",
    "0x7g.0.0.1",
    "example.123",
    "127.0.0.1:80",
    "fe80::1%eth0",
    "[fe80::1%25eth0]",
    "1::2::3",
    "[127.0.0.1]",
    "[example.com]",
    "\uff11\uff12\uff17.0.0.1",
    "127.0.0.%31",
    "evil.com\x00.example",
    "a..b",
    "x" * 254,
]


@pytest.mark.parametrize("host", INVALID_HOSTS)
def test_policy_refuses_hosts_no_browser_would_send(host: str) -> None:
    decision = EgressPolicy().decide(host, 80)

    assert not decision.allowed
    assert not decision.needs_resolution
    assert "not a valid" in decision.reason or "zone identifier" in decision.reason


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_policy_refuses_ports_out_of_range(port: int) -> None:
    assert not EgressPolicy().decide("93.184.215.14", port).allowed


# Decisions: the public network, the screen origin, the allow-list

ALLOWED = [
    ("93.184.215.14", IPv4Address("93.184.215.14")),
    ("0x5db8d70e", IPv4Address("93.184.215.14")),
    ("1572394766", IPv4Address("93.184.215.14")),
    ("8.8.8.8", IPv4Address("8.8.8.8")),
    ("11.0.0.1", IPv4Address("11.0.0.1")),
    ("100.63.255.255", IPv4Address("100.63.255.255")),
    ("100.128.0.1", IPv4Address("100.128.0.1")),
    ("172.15.255.255", IPv4Address("172.15.255.255")),
    ("172.32.0.1", IPv4Address("172.32.0.1")),
    ("2606:4700::1111", IPv6Address("2606:4700::1111")),
    ("[2606:4700:4700::1111]", IPv6Address("2606:4700:4700::1111")),
    ("::ffff:93.184.215.14", IPv6Address("::ffff:93.184.215.14")),
    ("64:ff9b::5db8:d70e", IPv6Address("64:ff9b::5db8:d70e")),
    ("2002:5db8:d70e::1", IPv6Address("2002:5db8:d70e::1")),
]


@pytest.mark.parametrize(("host", "address"), ALLOWED, ids=[h for h, _ in ALLOWED])
def test_policy_allows_public_addresses(
    host: str, address: IPv4Address | IPv6Address
) -> None:
    decision = EgressPolicy().decide(host, 443)

    assert decision.allowed, decision.reason
    assert decision.reason == "a public address"
    assert decision.addresses == (address,)


LEGACY_IPV4 = ["127.1", "127.0.1", "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.1"]


@pytest.mark.parametrize("host", LEGACY_IPV4)
def test_policy_reads_legacy_ipv4_forms_as_inet_aton_does(host: str) -> None:
    # inet_aton is what resolvers (and getaddrinfo) accept; the policy must
    # never see a different address than the one a connection would reach.
    assert parse_host(host) == IPv4Address(socket.inet_aton(host))


def test_policy_leaves_a_host_name_to_its_resolved_addresses() -> None:
    decision = EgressPolicy().decide("Example.COM.", 443)

    assert decision.needs_resolution
    assert not decision.allowed  # a caller that skips resolution refuses


def test_screen_origin_is_allowed_in_any_notation_but_only_on_its_port() -> None:
    policy = EgressPolicy(screen_origins=["http://127.0.0.1:8000"])

    for host in ("127.0.0.1", "127.1", "2130706433", "0x7f.1"):
        decision = policy.decide(host, 8000)
        assert decision.allowed, host
        assert decision.reason == "the screen origin"
        assert decision.addresses == (IPv4Address("127.0.0.1"),)
    assert not policy.decide("127.0.0.1", 8001).allowed
    assert not policy.decide("localhost", 8000).allowed
    assert not policy.decide("127.0.0.2", 8000).allowed


def test_screen_origin_named_by_host_name_is_trusted_whatever_it_resolves_to() -> None:
    policy = EgressPolicy(
        screen_origins=["https://API.internal.test", "http://[::1]:81"]
    )

    decision = policy.decide("api.internal.test", 443)
    assert decision.allowed and decision.needs_resolution
    resolved = policy.decide_resolved("api.internal.test", 443, ["10.0.0.7"])
    assert resolved.allowed
    assert resolved.addresses == (IPv4Address("10.0.0.7"),)
    assert policy.decide("[::1]", 81).allowed
    assert not policy.decide("api.internal.test", 80).allowed


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [
        ("127.0.0.1", 9000, True),
        ("127.1", 9000, True),
        ("127.0.0.1", 9001, False),
        ("::1", 9001, True),
        ("[::1]", 9001, True),
        ("::1", 9000, False),
        ("10.1.2.3", 22, True),
        ("10.2.0.1", 22, False),
        ("192.168.5.5", 631, True),
        ("192.168.5.6", 631, False),
        ("printer.lan", 631, True),
        ("printer.lan", 80, False),
        ("localhost", 7000, True),
        ("localhost", 7001, False),
    ],
)
def test_allow_list_opens_specific_local_servers(
    host: str, port: int, allowed: bool
) -> None:
    policy = EgressPolicy(
        allow=[
            "127.0.0.1:9000",
            "[::1]:9001",
            "10.1.0.0/16",
            " 192.168.5.5 ",
            "printer.lan:631",
            "localhost:7000",
            "",
        ]
    )

    decision = policy.decide(host, port)

    assert decision.allowed is allowed
    if allowed:
        assert decision.reason.startswith("allow-list entry ")


@pytest.mark.parametrize(
    "entry", ["nonsense", "host:0", "host:99999", "10.0.0.0/33", "[::1]", "a b:80"]
)
def test_bad_allow_list_entry_is_a_configuration_error(entry: str) -> None:
    with pytest.raises(ConfigurationError, match="APPTASKS_EGRESS_ALLOW entry"):
        EgressPolicy(allow=[entry])


@pytest.mark.parametrize("origin", ["127.0.0.1:8000", "file:///srv/screens", "http://"])
def test_bad_screen_origin_is_a_configuration_error(origin: str) -> None:
    with pytest.raises(ConfigurationError, match="screen origin"):
        EgressPolicy(screen_origins=[origin])


def test_refused_ports_win_over_every_allowance() -> None:
    policy = EgressPolicy(
        screen_origins=["http://127.0.0.1:8000"],
        allow=["127.0.0.0/8", "localhost:9515"],
    )
    refusing = policy.refusing_ports(9515, 8000)

    assert policy.decide("127.0.0.1", 9515).allowed
    for host, port in [("127.0.0.1", 9515), ("localhost", 9515), ("127.0.0.1", 8000)]:
        decision = refusing.decide(host, port)
        assert not decision.allowed
        assert decision.reason == f"port {port} is one of the worker's own"
    assert not refusing.decide("93.184.215.14", 9515).allowed


# Decisions after resolution


@pytest.mark.parametrize(
    ("addresses", "why"),
    [
        (["10.0.0.1"], "intranet.test resolves to 10.0.0.1, which is private"),
        (["93.184.215.14", "127.0.0.1"], "127.0.0.1, which is loopback"),
        (["2606:4700::1111", "::1"], "::1, which is loopback"),
        (["93.184.215.14", "fe80::1%eth0"], "fe80::1, which is link-local"),
        (["::ffff:169.254.169.254"], "cloud metadata"),
        (["93.184.215.14", "not-an-address"], "not an address"),
        ([], "did not resolve"),
    ],
)
def test_resolved_name_is_refused_if_any_address_is(
    addresses: list[str], why: str
) -> None:
    decision = EgressPolicy().decide_resolved("intranet.test", 443, addresses)

    assert not decision.allowed
    assert why in decision.reason


def test_resolved_name_is_allowed_with_exactly_the_checked_addresses() -> None:
    decision = EgressPolicy().decide_resolved(
        "example.com", 443, ["93.184.215.14", "2606:2800:21f:cb07::1", "93.184.215.14"]
    )

    assert decision.allowed
    assert decision.addresses == (
        IPv4Address("93.184.215.14"),
        IPv6Address("2606:2800:21f:cb07::1"),
    )


def test_resolved_name_inside_an_allowed_block_is_allowed() -> None:
    policy = EgressPolicy(allow=["10.1.0.0/16"])

    assert policy.decide_resolved("build.corp", 80, ["10.1.4.2"]).allowed
    assert not policy.decide_resolved(
        "build.corp", 80, ["10.1.4.2", "10.9.0.1"]
    ).allowed


def test_literal_host_is_judged_by_itself_not_by_resolved_addresses() -> None:
    policy = EgressPolicy()

    assert not policy.decide_resolved("127.1", 80, ["93.184.215.14"]).allowed
    assert not policy.decide_resolved("localhost", 80, ["93.184.215.14"]).allowed


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("file:///etc/passwd", False),
        ("FILE://localhost/etc/passwd", False),
        ("ftp://93.184.215.14/", False),
        ("javascript:alert(1)", False),
        ("data:text/html,hi", False),
        ("http://127.1:8000/", False),
        ("ws://0x7f000001/", False),
        ("https://[::ffff:127.0.0.1]/", False),
        ("/relative/path", False),
        ("http://93.184.215.14/", True),
        ("wss://[2606:4700::1111]/socket", True),
    ],
)
def test_decide_url_refuses_file_and_every_non_web_scheme(
    url: str, allowed: bool
) -> None:
    assert EgressPolicy().decide_url(url).allowed is allowed


# The proxy, against canaries on loopback


@pytest.fixture(autouse=True)
def connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Every TCP connection opened through asyncio; anything but loopback fails."""
    real_open_connection = asyncio.open_connection
    opened: list[tuple[str, int]] = []
    elsewhere: list[tuple[str, int]] = []

    async def loopback_only(host: str, port: int, **options: Any) -> Any:
        if not ipaddress.ip_address(host).is_loopback:
            elsewhere.append((host, port))
            raise ConnectionRefusedError(f"test guard: {host} is not loopback")
        opened.append((host, port))
        return await real_open_connection(host, port, **options)

    monkeypatch.setattr(asyncio, "open_connection", loopback_only)
    yield opened
    assert elsewhere == [], "something tried to leave loopback"


Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LoopbackServer:
    """A TCP server on loopback that counts connections and answers one way."""

    def __init__(self, answer: Answer | None, host: str = "127.0.0.1") -> None:
        self.answer = answer
        self.host = host
        self.connections = 0
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> LoopbackServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            if self.answer is not None:
                await self.answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class HttpAnswer:
    """Answers one HTTP request with a fixed text and the request's body."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.heads: list[bytes] = []

    async def __call__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = self.text.encode() + await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()


class TableResolver:
    """Resolves names from a table, and remembers what it was asked."""

    def __init__(self, names: dict[str, list[str]] | None = None) -> None:
        self.names = names or {}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.names[host]


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Awaitable[LoopbackServer]]]:
    started: list[LoopbackServer] = []

    async def start(
        answer: Answer | None = None, host: str = "127.0.0.1"
    ) -> LoopbackServer:
        server = await LoopbackServer(answer, host).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def proxies() -> AsyncIterator[Callable[..., Awaitable[EgressProxy]]]:
    started: list[EgressProxy] = []

    async def start(policy: EgressPolicy | None = None, **options: Any) -> EgressProxy:
        options.setdefault("resolver", TableResolver())
        proxy = EgressProxy(policy or EgressPolicy(), **options)
        await proxy.start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.stop()


async def ask(proxy: EgressProxy, request: bytes, *, seconds: float = 5.0) -> bytes:
    """Send raw bytes to the proxy; everything it answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), seconds)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def get(host: str, port: int) -> bytes:
    return f"GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


def connect(host: str, port: int) -> bytes:
    return f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()


LOOPBACK_FORMS = [
    "127.0.0.1",
    "127.1",
    "localhost",
    "LocalHost.",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "0x7f.1",
    "127.0.0.1.",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[64:ff9b::7f00:1]",
    "[::1]",
]


@pytest.mark.parametrize("form", LOOPBACK_FORMS)
async def test_proxy_refuses_every_loopback_form_without_connecting(
    form: str,
    servers: Callable[..., Awaitable[LoopbackServer]],
    proxies: Callable[..., Awaitable[EgressProxy]],
    connections: list[tuple[str, int]],
) -> None:
    canary = await servers()
    canaries = [canary]
    port = canary.port
    if form == "[::1]":
        if not IPV6_LOOPBACK:
            pytest.skip("no IPv6 loopback here")
        canaries.append(await servers(host="::1"))
        port = canaries[-1].port
    resolver = TableResolver()
    proxy = await proxies(resolver=resolver)

    for request in (get(form, port), connect(form, port)):
        answer = await ask(proxy, request)
        assert status_of(answer) == 403, answer
        assert b"egress refused: " in answer

    assert [server.connections for server in canaries] == [0] * len(canaries)
    assert connections == [("127.0.0.1", proxy.port)] * 2
    assert resolver.asked == []


async def test_refusal_is_logged_once_without_the_request_contents(
    servers: Callable[..., Awaitable[LoopbackServer]],
    proxies: Callable[..., Awaitable[EgressProxy]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = await servers()
    proxy = await proxies()
    request = (
        f"GET http://127.1:{canary.port}/?token=secret-in-query HTTP/1.1\r\n"
        f"Host: 127.1:{canary.port}\r\nAuthorization: Bearer secret-in-header\r\n\r\n"
    ).encode()

    with caplog.at_level(logging.WARNING, logger=PROXY_LOGGER):
        answer = await ask(proxy, request)

    assert status_of(answer) == 403
    assert answer.endswith(b"\r\n\r\negress refused: 127.0.0.1 is loopback\n")
    messages = [r.getMessage() for r in caplog.records if r.name == PROXY_LOGGER]
    assert messages == [
        f"egress refused host=127.1 port={canary.port} reason=127.0.0.1 is loopback"
    ]
    assert "secret" not in caplog.text
    assert canary.connections == 0


@pytest.mark.parametrize(
    ("name", "addresses"),
    [
        ("intranet.test", ["10.0.0.1"]),
        ("rebind.test", ["93.184.215.14", "127.0.0.1"]),
        ("metadata.test", ["169.254.169.254"]),
        ("mapped.test", ["::ffff:127.0.0.1"]),
    ],
)
async def test_proxy_refuses_a_name_resolving_to_a_local_address_without_connecting(
    name: str,
    addresses: list[str],
    proxies: Callable[..., Awaitable[EgressProxy]],
    connections: list[tuple[str, int]],
) -> None:
    resolver = TableResolver({name: addresses})
    proxy = await proxies(resolver=resolver)

    for request in (get(name, 80), connect(name, 443)):
        answer = await ask(proxy, request)
        assert status_of(answer) == 403
        assert f"{name} resolves to ".encode() in answer

    assert resolver.asked == [name, name]
    # The only connections are the test's own, to the proxy: none to the name.
    assert connections == [("127.0.0.1", proxy.port)] * 2


async def test_proxy_answers_502_for_a_name_that_does_not_resolve(
    proxies: Callable[..., Awaitable[EgressProxy]],
) -> None:
    proxy = await proxies()

    answer = await ask(proxy, connect("nowhere.test", 443))

    assert status_of(answer) == 502
    assert b"could not resolve nowhere.test" in answer


async def test_proxy_refuses_its_own_port_even_when_loopback_is_allowed(
    proxies: Callable[..., Awaitable[EgressProxy]],
) -> None:
    proxy = await proxies(EgressPolicy(allow=["127.0.0.0/8"]))

    answer = await ask(proxy, get("127.0.0.1", proxy.port))

    assert status_of(answer) == 403
    assert f"port {proxy.port} is one of the worker's own".encode() in answer


async def test_screen_origin_is_reached_through_the_proxy(
    servers: Callable[..., Awaitable[LoopbackServer]],
    proxies: Callable[..., Awaitable[EgressProxy]],
) -> None:
    answer = HttpAnswer("hello from the screen origin")
    origin = await servers(answer)
    proxy = await proxies(EgressPolicy([f"http://127.0.0.1:{origin.port}"]))

    async with httpx.AsyncClient(proxy=proxy.url, trust_env=False) as client:
        response = await client.get(f"http://127.0.0.1:{origin.port}/screen?x=1")

    assert response.status_code == 200
    assert response.text == "hello from the screen origin"
    assert response.headers["connection"] == "close"
    assert origin.connections == 1
    head = answer.heads[0].decode()
    assert head.startswith("GET /screen?x=1 HTTP/1.1\r\n")
    assert "Connection: close\r\n" in head
    assert "proxy-connection" not in head.lower()


async def test_allow_listed_server_is_reached_by_address_or_by_name(
    servers: Callable[..., Awaitable[LoopbackServer]],
    proxies: Callable[..., Awaitable[EgressProxy]],
) -> None:
    server = await servers(HttpAnswer("allowed"))
    resolver = TableResolver({"localhost": ["127.0.0.1"]})
    policy = EgressPolicy(
        allow=[f"127.0.0.1:{server.port}", f"localhost:{server.port}"]
    )
    proxy = await proxies(policy, resolver=resolver)

    for host in ("127.1", "localhost"):
        answer = await ask(proxy, get(host, server.port))
        assert status_of(answer) == 200
        assert answer.endswith(b"\r\n\r\nallowed")

    assert server.connections == 2
    assert resolver.asked == ["localhost"]


async def test_post_body_is_relayed_to_an_allowed_server(
    servers: Callable[..., Awaitable[LoopbackServer]],
    proxies: Callable[..., Awaitable[EgressProxy]],
) -> None:
    server = await servers(HttpAnswer("got: "))
    proxy = await proxies(EgressPolicy(allow=[f"127.0.0.1:{server.port}"]))

    async with httpx.AsyncClient(proxy=proxy.url, trust_env=False) as client:
        response = await client.post(
            f"http://127.0.0.1:{server.port}/run", content=b"x" * 200_000
        )

    assert response.status_code == 200
    assert response.content == b"got: " + b"x" * 200_000


async def test_connect_tunnel_relays_bytes_both_ways(
    servers: Callable[..., Awaitable[LoopbackServer]],
    proxies: Callable[..., Awaitable[EgressProxy]],
) -> None:
    server = await servers(echo)
    proxy = await proxies(EgressPolicy(allow=[f"127.0.0.1:{server.port}"]))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)

    writer.write(connect("127.0.0.1", server.port))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head == b"HTTP/1.1 200 Connection established\r\n\r\n"
    for message in (b"ping", b"\x16\x03\x01 binary \x00\xff", b"y" * 300_000):
        writer.write(message)
        echoed = await asyncio.wait_for(reader.readexactly(len(message)), 5)
        assert echoed == message
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 5) == b""

    writer.close()
    assert server.connections == 1


@pytest.mark.parametrize(
    ("request_bytes", "status", "text"),
    [
        (b"GET file:///etc/passwd HTTP/1.1\r\n\r\n", 403, b"the file: scheme"),
        (b"GET https://93.184.215.14/ HTTP/1.1\r\n\r\n", 403, b"the https: scheme"),
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, b"absolute http://"),
        (b"GET /\r\n\r\n", 400, b"malformed request line"),
        (b"CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n", 400, b"host:port"),
        (b"CONNECT 93.184.215.14:99999 HTTP/1.1\r\n\r\n", 403, b"out of range"),
        (b"GET http://127.0.0.1/ SPDY/3\r\n\r\n", 400, b"unsupported protocol"),
    ],
)
async def test_proxy_answers_requests_it_cannot_route(
    request_bytes: bytes,
    status: int,
    text: bytes,
    proxies: Callable[..., Awaitable[EgressProxy]],
) -> None:
    proxy = await proxies()

    answer = await ask(proxy, request_bytes)

    assert status_of(answer) == status
    assert text in answer


async def test_oversized_request_head_is_refused(
    proxies: Callable[..., Awaitable[EgressProxy]],
) -> None:
    proxy = await proxies(max_header_bytes=4096)
    request = (
        b"GET http://93.184.215.14/ HTTP/1.1\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n"
    )

    answer = await ask(proxy, request)

    assert status_of(answer) == 431


async def test_connections_past_the_cap_are_answered_503(
    servers: Callable[..., Awaitable[LoopbackServer]],
    proxies: Callable[..., Awaitable[EgressProxy]],
) -> None:
    server = await servers(echo)
    proxy = await proxies(
        EgressPolicy(allow=[f"127.0.0.1:{server.port}"]), max_connections=1
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(connect("127.0.0.1", server.port))
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)

    answer = await ask(proxy, connect("127.0.0.1", server.port))

    assert status_of(answer) == 503
    writer.close()


async def test_silent_tunnel_is_closed_after_the_idle_timeout(
    servers: Callable[..., Awaitable[LoopbackServer]],
    proxies: Callable[..., Awaitable[EgressProxy]],
) -> None:
    server = await servers(echo)
    proxy = await proxies(
        EgressPolicy(allow=[f"127.0.0.1:{server.port}"]), idle_timeout=0.3
    )
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(connect("127.0.0.1", server.port))
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    started = loop.time()

    assert await asyncio.wait_for(reader.read(), 5) == b""

    assert 0.25 < loop.time() - started < 2.0
    writer.close()


async def test_silent_client_is_dropped_after_the_idle_timeout(
    proxies: Callable[..., Awaitable[EgressProxy]],
) -> None:
    proxy = await proxies(idle_timeout=0.3)

    answer = await ask(proxy, b"GET http://93.184.215.14/ HTTP/1.1\r\n")

    assert answer == b""


async def test_stop_cuts_open_tunnels(
    servers: Callable[..., Awaitable[LoopbackServer]],
) -> None:
    server = await servers(echo)
    proxy = EgressProxy(EgressPolicy(allow=[f"127.0.0.1:{server.port}"]))
    await proxy.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(connect("127.0.0.1", server.port))
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)

    await asyncio.wait_for(proxy.stop(), 5)

    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    with pytest.raises(RuntimeError, match="not running"):
        _ = proxy.url


# Quiet names: the browser's own background hosts


def test_quiet_names_are_refused_without_resolution_or_warning() -> None:
    policy = EgressPolicy(quiet_names=["Update.GoogleAPIs.com."]).refusing_ports(9)

    decision = policy.decide("update.googleapis.com", 443)

    assert not decision.allowed
    assert not decision.needs_resolution
    assert decision.quiet
    assert (
        decision.reason == "update.googleapis.com is a background host of the browser"
    )
    assert not EgressPolicy().decide("10.0.0.1", 80).quiet


async def test_quiet_refusal_is_logged_at_debug_only(
    proxies: Callable[..., Awaitable[EgressProxy]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = await proxies(EgressPolicy(quiet_names=["accounts.google.com"]))

    with caplog.at_level(logging.DEBUG, logger=PROXY_LOGGER):
        answer = await ask(proxy, connect("accounts.google.com", 443))

    assert status_of(answer) == 403
    levels = [r.levelno for r in caplog.records if r.message.startswith("egress")]
    assert levels == [logging.DEBUG]


# Headless Chromium through the proxy

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
# What the chrome runtime must add: every request (loopback too) through the
# proxy, and WebRTC kept off UDP, which no HTTP proxy carries.
PROXY_PREFERENCES = {"webrtc": {"ip_handling_policy": "disable_non_proxied_udp"}}
# What a probe answers when it got through; anything else failed to connect.
REACHED = {"loaded", "open", "ready", "response 200"}
SCRIPT_LOADS = 60


def proxy_flags(proxy: EgressProxy) -> tuple[str, ...]:
    return (f"--proxy-server={proxy.url}", "--proxy-bypass-list=<-loopback>")


PROBE_PAGE = (
    b"<!doctype html><html><head><title>probe</title></head><body></body></html>"
)
SAME_ORIGIN_SCRIPT = b"window.sameOriginLoads = (window.sameOriginLoads || 0) + 1;"

# Every way a page can ask for a URL, each settled within a few seconds.
PROBE_SCRIPT = """
const [targets, udpPort, done] = arguments;
const results = {};
const settle = (promise) => Promise.race(
  [promise, new Promise((resolve) => setTimeout(() => resolve("timeout"), 5000))]);
const viaFetch = (url) => fetch(url, {cache: "no-store"}).then(
  (response) => "response " + response.status, (error) => "error " + error.name);
const viaTag = (tag, url) => new Promise((resolve) => {
  const element = document.createElement(tag);
  element.onload = () => resolve("loaded");
  element.onerror = () => resolve("error");
  element.src = url;
  document.body.appendChild(element);
});
const viaSocket = (url) => new Promise((resolve) => {
  const socket = new WebSocket(url);
  socket.onopen = () => { resolve("open"); socket.close(); };
  socket.onerror = () => resolve("error");
});
const viaWebRtc = async () => {
  const connection = new RTCPeerConnection(
    {iceServers: [{urls: "stun:127.0.0.1:" + udpPort}]});
  connection.createDataChannel("probe");
  await connection.setLocalDescription(await connection.createOffer());
  await new Promise((resolve) => setTimeout(resolve, 2000));
  connection.close();
  return "gathered";
};
const viaWebTransport = async () => {
  const transport = new WebTransport("https://127.0.0.1:" + udpPort + "/");
  return transport.ready.then(() => "ready", (error) => "error " + error.name);
};
const probes = [
  settle(viaWebRtc()).then((outcome) => { results["webrtc stun"] = outcome; }),
  settle(viaWebTransport()).then((outcome) => { results["webtransport"] = outcome; }),
];
for (const [form, port] of targets) {
  const authority = form + ":" + port;
  const kinds = {
    "fetch http": () => viaFetch("http://" + authority + "/fetch"),
    "fetch https": () => viaFetch("https://" + authority + "/fetch"),
    "img": () => viaTag("img", "http://" + authority + "/image.png"),
    "script": () => viaTag("script", "http://" + authority + "/script.js"),
    "ws": () => viaSocket("ws://" + authority + "/socket"),
    "wss": () => viaSocket("wss://" + authority + "/socket"),
  };
  for (const [kind, probe] of Object.entries(kinds)) {
    probes.push(settle(probe()).then((outcome) => {
      results[form + " " + kind] = outcome;
    }));
  }
}
const own = Promise.all([
  fetch("/data.json").then((response) => response.json()),
  viaTag("script", "/same-origin.js"),
]).then(([data, script]) => "data " + data.ok + ", script " + script);
Promise.all([own, ...probes]).then(async () => done(
  {results, own: await own, loads: window.sameOriginLoads || 0}));
"""

TIMING_SCRIPT = """
const [count, done] = arguments;
const durations = [];
const loadOnce = (index) => new Promise((resolve) => {
  const element = document.createElement("script");
  const started = performance.now();
  element.onload = element.onerror = () => {
    durations.push(performance.now() - started);
    resolve();
  };
  element.src = "/same-origin.js?n=" + index;
  document.body.appendChild(element);
});
(async () => {
  for (let index = 0; index < count; index += 1) {
    await loadOnce(index);
  }
  done(durations);
})();
"""


class ProbeOrigin(BaseHTTPRequestHandler):
    """The screen origin for the browser tests: a page, a script, some data."""

    # Keep-alive and no Nagle delay, as the API's own server: the direct path
    # reuses its connection, which is what the proxy is measured against.
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    routes: ClassVar[dict[str, tuple[str, bytes]]] = {
        "/": ("text/html", PROBE_PAGE),
        "/same-origin.js": ("text/javascript", SAME_ORIGIN_SCRIPT),
        "/data.json": ("application/json", b'{"ok": true}'),
    }

    def do_GET(self) -> None:
        route = self.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self.send_error(404)
            return
        content_type, body = route
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines would only clutter the test output


@pytest.fixture
def probe_origin() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ProbeOrigin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


class UdpCanary(asyncio.DatagramProtocol):
    """Counts the datagrams that reach it."""

    def __init__(self) -> None:
        self.datagrams = 0

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.datagrams += 1


@pytest.fixture
async def udp_canary() -> AsyncIterator[tuple[UdpCanary, int]]:
    loop = asyncio.get_running_loop()
    transport, canary = await loop.create_datagram_endpoint(
        UdpCanary, local_addr=("127.0.0.1", 0)
    )
    yield canary, int(transport.get_extra_info("sockname")[1])
    transport.close()


@pytest.fixture
async def chromium(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[webdriver.Chrome]]]:
    """Launch headless Chromium with extra flags; every one is quit afterwards."""
    launched: list[webdriver.Chrome] = []

    async def launch(*flags: str, preferences: dict[str, Any] | None = None) -> Any:
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        profile = tmp_path / f"profile{len(launched)}"
        for flag in (*CHROMIUM_FLAGS, *flags, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        options.add_experimental_option(
            "prefs",
            {
                "session": {"restore_on_startup": 4, "startup_urls": ["about:blank"]},
                **(preferences or {}),
            },
        )
        service = Service(executable_path="/usr/bin/chromedriver")
        driver = await asyncio.to_thread(
            webdriver.Chrome, options=options, service=service
        )
        launched.append(driver)
        driver.set_script_timeout(30)
        return driver

    yield launch
    for driver in launched:
        await asyncio.to_thread(driver.quit)


def probe_targets(v4_port: int, v6_port: int | None) -> list[tuple[str, int]]:
    forms = [
        "127.0.0.1",
        "127.1",
        "localhost",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "0x7f.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
    ]
    targets = [(form, v4_port) for form in forms]
    if v6_port is not None:
        targets.append(("[::1]", v6_port))
    return targets


@pytest.mark.browser
async def test_chromium_through_the_proxy_reaches_only_its_screen_origin(
    chromium: Callable[..., Awaitable[webdriver.Chrome]],
    probe_origin: str,
    servers: Callable[..., Awaitable[LoopbackServer]],
    proxies: Callable[..., Awaitable[EgressProxy]],
    udp_canary: tuple[UdpCanary, int],
    caplog: pytest.LogCaptureFixture,
    record_property: Callable[[str, object], None],
) -> None:
    canaries = [await servers()]
    if IPV6_LOOPBACK:
        canaries.append(await servers(host="::1"))
    resolver = TableResolver()
    policy = EgressPolicy([probe_origin], quiet_names=CHROMIUM_BACKGROUND_HOSTS)
    proxy = await proxies(policy, resolver=resolver)
    driver = await chromium(*proxy_flags(proxy), preferences=PROXY_PREFERENCES)
    v6_port = canaries[1].port if IPV6_LOOPBACK else None
    targets = probe_targets(canaries[0].port, v6_port)
    udp, udp_port = udp_canary

    with caplog.at_level(logging.WARNING, logger=PROXY_LOGGER):
        await asyncio.to_thread(driver.get, probe_origin + "/")
        outcome = await asyncio.to_thread(
            driver.execute_async_script, PROBE_SCRIPT, targets, udp_port
        )

    assert outcome["own"] == "data true, script loaded"
    assert outcome["loads"] == 1
    results: dict[str, str] = outcome["results"]
    record_property("probe_results", results)
    assert len(results) == 6 * len(targets) + 2
    reached = {probe: result for probe, result in results.items() if result in REACHED}
    assert reached == {}
    assert [canary.connections for canary in canaries] == [0] * len(canaries)
    assert udp.datagrams == 0

    refused_ports = {
        int(record.getMessage().split(" port=")[1].split(" ")[0])
        for record in caplog.records
        if record.getMessage().startswith("egress refused ")
    }
    assert {canary.port for canary in canaries} <= refused_ports
    assert not set(resolver.asked) & set(CHROMIUM_BACKGROUND_HOSTS)


@pytest.mark.browser
async def test_proxy_adds_little_to_a_same_origin_script_load(
    chromium: Callable[..., Awaitable[webdriver.Chrome]],
    probe_origin: str,
    proxies: Callable[..., Awaitable[EgressProxy]],
    record_property: Callable[[str, object], None],
) -> None:
    proxy = await proxies(EgressPolicy([probe_origin]))
    direct = await chromium()
    proxied = await chromium(*proxy_flags(proxy), preferences=PROXY_PREFERENCES)

    medians = {}
    for name, driver in (("direct", direct), ("proxied", proxied)):
        await asyncio.to_thread(driver.get, probe_origin + "/")
        durations = await asyncio.to_thread(
            driver.execute_async_script, TIMING_SCRIPT, SCRIPT_LOADS
        )
        # The first loads open connections and warm caches on both paths alike.
        medians[name] = statistics.median(durations[5:])
        record_property(f"{name}_median_ms", round(medians[name], 2))

    overhead = medians["proxied"] - medians["direct"]
    record_property("proxy_overhead_ms", round(overhead, 2))
    logging.getLogger(__name__).info(
        "same-origin script load: direct %.2f ms, proxied %.2f ms, overhead %.2f ms",
        medians["direct"],
        medians["proxied"],
        overhead,
    )
    # Loose: a proxy on loopback costs a connection or two, never tens of ms.
    assert overhead < 25.0
