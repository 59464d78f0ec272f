"""A forward proxy on loopback that lets browsers reach only what the policy allows.

The worker's browsers send every request here (plain HTTP in absolute form,
HTTPS and WebSockets as CONNECT tunnels). For each one the proxy reads the
target, resolves a host name itself, asks the `EgressPolicy`, and then either
answers 403 with the reason or connects to an address it has just checked and
relays bytes both ways. It never connects before the decision, and never
resolves the name a second time: the address judged is the address dialled.

Each client connection carries one request or one tunnel; plain HTTP is sent
upstream with `Connection: close` and answered to the browser the same way,
so a second request never rides a connection opened for another host.

Known shortcoming: the proxy does not know which run a request belongs to, so
a refusal is logged with the host and port but without the run id.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from runtimes.egress import Decision, EgressPolicy, IPAddress, url_endpoint

logger = logging.getLogger("apptasks.runtimes.egress")

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

HOP_BY_HOP = frozenset(
    (
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
    )
)
REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
CHUNK_BYTES = 65536
# Browsers accept response heads of a few hundred KiB (Chromium: 256 KiB).
MAX_RESPONSE_HEAD_BYTES = 262144
# Interim (1xx) responses passed on before the final one; more is a broken server.
MAX_INTERIM_RESPONSES = 8
MAX_ADDRESSES_TRIED = 8
# How long, and for how many bytes, a refused client may go on sending.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1048576


class Refused(Exception):
    """A request the proxy answers itself, with a status and a short reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """The head of one request to the proxy, split into what routing needs."""

    method: str
    scheme: str  # "connect" for a tunnel
    host: str
    port: int
    head: bytes  # what goes upstream: empty for a tunnel


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, through the event loop's getaddrinfo."""
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]) for _, _, _, _, sockaddr in found]


class EgressProxy:
    """HTTP forward proxy on 127.0.0.1 enforcing an `EgressPolicy`.

    `resolver` replaces DNS (tests map names to addresses without a lookup).
    Every wait is bounded: `connect_timeout` covers resolving and connecting,
    `idle_timeout` a request head and a relay with no bytes either way;
    `max_header_bytes` bounds a request head and `max_connections` the
    connections open at once (more are answered 503).
    """

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver = system_resolver,
        connect_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        max_header_bytes: int = 32768,
        max_connections: int = 128,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_header_bytes = max_header_bytes
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._port = 0
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the egress proxy is not running")
        return self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`, for a browser's proxy setting."""
        return f"http://127.0.0.1:{self.port}"

    def refuse_ports(self, *ports: int) -> None:
        """Refuse `ports` from now on (say, a new browser's WebDriver port)."""
        self.policy = self.policy.refusing_ports(*ports)

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, limit=self.max_header_bytes
        )
        self._port = int(self._server.sockets[0].getsockname()[1])
        # A page must not reach the proxy through the proxy, whatever is allowed.
        self.refuse_ports(self._port)
        logger.info("egress proxy listening url=%s", self.url)

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()
        logger.info("egress proxy stopped port=%d", self._port)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None  # a stream callback always runs in a task
        self._connections.add(task)
        try:
            if len(self._connections) > self.max_connections:
                await _answer(
                    reader, writer, 503, "too many connections through the proxy"
                )
                return
            await self._handle(reader, writer)
        except Refused as refusal:
            await _answer(reader, writer, refusal.status, refusal.reason)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the browser went away or fell silent: nothing to tell it
        except Exception:
            logger.exception("egress proxy failed on a connection")
        finally:
            writer.close()
            self._connections.discard(task)

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), self.idle_timeout
            )
        except asyncio.LimitOverrunError:
            raise Refused(431, "request head too large") from None
        request = parse_request(head)

        if request.scheme in ("connect", "http"):
            decision = await self._decide(request.host, request.port)
        else:
            # https:// and wss:// come as CONNECT; file: and the rest never.
            reason = f"the {request.scheme}: scheme is not allowed through the proxy"
            decision = Decision(False, reason)
        if not decision.allowed:
            logger.log(
                logging.DEBUG if decision.quiet else logging.WARNING,
                "egress refused host=%s port=%d reason=%s",
                _loggable(request.host),
                request.port,
                decision.reason,
            )
            raise Refused(403, f"egress refused: {decision.reason}")

        upstream_reader, upstream_writer = await self._connect(
            decision.addresses, request.port
        )
        try:
            if request.scheme == "connect":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await self._relay(reader, writer, upstream_reader, upstream_writer)
            else:
                upstream_writer.write(request.head)
                await self._relay(
                    reader, writer, upstream_reader, upstream_writer, http=True
                )
        finally:
            upstream_writer.close()

    async def _decide(self, host: str, port: int) -> Decision:
        # One policy for both steps, even if it is replaced in between.
        policy = self.policy
        decision = policy.decide(host, port)
        if not decision.needs_resolution:
            return decision
        try:
            addresses = await asyncio.wait_for(
                self.resolver(host, port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            raise Refused(502, f"could not resolve {host}: {exc}") from exc
        return policy.decide_resolved(host, port, addresses)

    async def _connect(
        self, addresses: Sequence[IPAddress], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        failure = "no address to try"
        for address in addresses[:MAX_ADDRESSES_TRIED]:
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(
                        str(address), port, limit=MAX_RESPONSE_HEAD_BYTES
                    ),
                    max(0.0, deadline - loop.time()),
                )
            except (OSError, TimeoutError) as exc:
                failure = f"{address} port {port}: {exc or 'timed out'}"
        raise Refused(502, f"could not connect to {failure}")

    async def _relay(
        self,
        client_reader: asyncio.StreamReader,
        client_writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
        *,
        http: bool = False,
    ) -> None:
        """Copy bytes both ways until both sides finish or nothing moves for long."""
        activity = Activity()
        downstream = (
            _pass_response(upstream_reader, client_writer, activity)
            if http
            else _pump(upstream_reader, client_writer, activity)
        )
        directions = {
            asyncio.create_task(_pump(client_reader, upstream_writer, activity)): (
                upstream_writer
            ),
            asyncio.create_task(downstream): client_writer,
        }
        pending = set(directions)
        try:
            while pending:
                silent = activity.seconds_silent()
                if silent >= self.idle_timeout:
                    break
                done, pending = await asyncio.wait(
                    pending,
                    timeout=self.idle_timeout - silent,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for finished in done:
                    # One side has said all it will: let the other side know.
                    _half_close(directions[finished])
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*directions, return_exceptions=True)


class Activity:
    """When bytes last moved through a relay, in event-loop time."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.last = self._loop.time()

    def touch(self) -> None:
        self.last = self._loop.time()

    def seconds_silent(self) -> float:
        return self._loop.time() - self.last


def parse_request(head: bytes) -> ProxyRequest:
    """Split a request head; raise `Refused` (400) for what a proxy cannot route."""
    lines = head[:-4].split(b"\r\n")
    try:
        method, target, version = lines[0].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "malformed request line") from None
    if not version.startswith("HTTP/1."):
        raise Refused(400, f"unsupported protocol {version!r}")

    if method == "CONNECT":
        host, separator, port = target.rpartition(":")
        if not separator or not port.isdigit():
            raise Refused(400, "CONNECT needs host:port")
        return ProxyRequest(method, "connect", host.strip("[]"), int(port), b"")

    try:
        scheme, host, default_or_given_port = url_endpoint(target)
    except ValueError:
        raise Refused(400, "expected an absolute http:// URL") from None
    path = "/" + (target.split("/", 3)[3] if target.count("/") >= 3 else "")
    head = _upstream_head(f"{method} {path} {version}", lines[1:])
    return ProxyRequest(method, scheme, host, default_or_given_port, head)


def _upstream_head(request_line: str, header_lines: Sequence[bytes]) -> bytes:
    # Hop-by-hop headers end here, except that a WebSocket upgrade keeps its
    # Upgrade header: without it there is nothing to upgrade.
    names = [_header_name(line) for line in header_lines]
    upgrade = b"upgrade" in names
    kept = [
        line
        for line, name in zip(header_lines, names, strict=True)
        if name not in HOP_BY_HOP or (upgrade and name == b"upgrade")
    ]
    connection = b"Connection: Upgrade" if upgrade else b"Connection: close"
    return b"\r\n".join((request_line.encode("ascii"), *kept, connection)) + b"\r\n\r\n"


def _header_name(line: bytes) -> bytes:
    return line.split(b":", 1)[0].strip().lower()


async def _pass_response(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: Activity
) -> None:
    """Relay an HTTP response, telling the browser the connection then closes."""
    for _ in range(MAX_INTERIM_RESPONSES):
        head = await reader.readuntil(b"\r\n\r\n")
        activity.touch()
        status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
        if status == b"101" or not status.startswith(b"1"):
            break
        writer.write(head)
    else:
        return

    if status != b"101":
        lines = head[:-4].split(b"\r\n")
        kept = [line for line in lines[1:] if _header_name(line) not in HOP_BY_HOP]
        head = b"\r\n".join((lines[0], *kept, b"Connection: close")) + b"\r\n\r\n"
    writer.write(head)
    await _pump(reader, writer, activity)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, activity: Activity
) -> None:
    while chunk := await reader.read(CHUNK_BYTES):
        activity.touch()
        writer.write(chunk)
        await writer.drain()


def _half_close(writer: asyncio.StreamWriter) -> None:
    try:
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        pass  # already gone: the other direction finishes on its own


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, text: str
) -> None:
    """Answer with a short plain-text reason, then wait for the client to hang up.

    Closing with unread request bytes would reset the connection, and a reset
    can reach the client before the answer does; so what is left is read and
    dropped, within `LINGER_SECONDS` and `LINGER_BYTES`.
    """
    body = f"{text}\n".encode("ascii", "replace")
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    dropped = 0
    try:
        async with asyncio.timeout(LINGER_SECONDS):
            writer.write(head.encode("ascii") + body)
            _half_close(writer)
            while dropped < LINGER_BYTES and (chunk := await reader.read(CHUNK_BYTES)):
                dropped += len(chunk)
    except (ConnectionError, TimeoutError):
        pass  # the client left, or lingers: either way the answer is sent


def _loggable(host: str) -> str:
    # The host comes from the page: keep log lines one line of plain ASCII.
    text = host[:255]
    return (
        text
        if text.isascii() and text.isprintable() and " " not in text
        else repr(text)
    )
