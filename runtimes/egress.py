"""Where a screen page may connect: the egress policy, as pure decisions.

A screen may reach the origin that serves it and the public network, never
the worker's own machine or its networks: loopback, private, link-local,
carrier-grade NAT, unique-local, multicast, unspecified and cloud metadata
addresses are refused, and so is every other spelling of them a browser or a
resolver accepts (`127.1`, `2130706433`, `0x7f.1`, `[::ffff:127.0.0.1]`, NAT64
and 6to4 addresses that embed them). An allow-list lets a deployment, or a
test, open specific local servers again.

Nothing here does I/O. `EgressPolicy.decide` settles a literal address at
once, and says when a host name must be resolved first;
`EgressPolicy.decide_resolved` then judges every address the name resolved
to. A caller that connects only to the addresses of an allowed decision cannot
be turned around by DNS rebinding: what was checked is what is dialled.

IPv4 literals are read the way the WHATWG URL standard reads a URL's host, so
this module and the browser agree on which host is a number. IPv6 is the
other way round: only global unicast (2000::/3) is public, less the ranges
below that are not really routable.
"""

from __future__ import annotations

import ipaddress
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

from apptasks.errors import ConfigurationError

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# First match wins, so the narrow metadata addresses come before their ranges.
REFUSED_IPV4: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(block), reason)
    for block, reason in (
        ("169.254.169.254/32", "a cloud metadata service"),
        ("169.254.170.2/32", "a cloud metadata service"),
        ("100.100.100.200/32", "a cloud metadata service"),
        ("0.0.0.0/8", "unspecified ('this network')"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved for IETF protocols"),
        ("192.0.2.0/24", "reserved for documentation"),
        ("192.88.99.0/24", "a 6to4 relay"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "reserved for benchmarking"),
        ("198.51.100.0/24", "reserved for documentation"),
        ("203.0.113.0/24", "reserved for documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved (or broadcast)"),
    )
)
REFUSED_IPV6: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(block), reason)
    for block, reason in (
        ("fd00:ec2::254/128", "a cloud metadata service"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("2001::/32", "a Teredo tunnel"),
        ("2001:2::/48", "reserved for benchmarking"),
        ("2001:10::/28", "an ORCHID identifier"),
        ("2001:20::/28", "an ORCHID identifier"),
        ("2001:db8::/32", "reserved for documentation"),
        ("3fff::/20", "reserved for documentation"),
    )
)
GLOBAL_UNICAST = IPv6Network("2000::/3")
IPV4_MAPPED = IPv6Network("::ffff:0:0/96")
IPV4_COMPATIBLE = IPv6Network("::/96")
NAT64 = IPv6Network("64:ff9b::/96")
IPV4_COMPATIBLE_KIND = "an IPv4-compatible address"

# Names refused before any lookup: resolving them could only find the worker.
REFUSED_NAMES = {
    "localhost": "the local machine",
    "metadata": "a cloud metadata service",
    "metadata.google.internal": "a cloud metadata service",
    "instance-data": "a cloud metadata service",
    "instance-data.ec2.internal": "a cloud metadata service",
}
NAME_CHARACTERS = frozenset(string.ascii_lowercase + string.digits + "-_")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
MAX_HOST_LENGTH = 253


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one destination, and where a caller may then connect.

    `addresses` are the addresses this verdict covers: the only ones an
    allowed connection may use. `needs_resolution` marks a host name that
    only its resolved addresses can settle; it comes with `allowed=False`
    unless the name itself is trusted, so a caller that ignores it refuses.
    `quiet` marks a refusal expected in normal running (the browser's own
    background requests), not worth a warning.
    """

    allowed: bool
    reason: str
    addresses: tuple[IPAddress, ...] = ()
    needs_resolution: bool = False
    quiet: bool = False


class EgressPolicy:
    """The destinations a screen page may reach, judged one host and port at a time.

    `screen_origins` are URLs such as `http://127.0.0.1:8000`, always allowed.
    `allow` takes `host:port`, `[IPv6]:port`, a bare address or a CIDR block
    (every port), the way `APPTASKS_EGRESS_ALLOW` spells them. `refused_ports`
    are refused on every host, before anything is allowed: the WebDriver and
    DevTools ports of the worker's browsers, and the proxy's own port.
    `quiet_names` are public hosts the browser calls by itself (update and
    sign-in checks): refused without resolving them, and without a warning.
    """

    def __init__(
        self,
        screen_origins: Iterable[str] = (),
        allow: Iterable[str] = (),
        refused_ports: Iterable[int] = (),
        quiet_names: Iterable[str] = (),
    ) -> None:
        self.screen_origins = tuple(screen_origins)
        self.allow = tuple(allow)
        self.refused_ports = frozenset(refused_ports)
        self.quiet_names = frozenset(name.lower().rstrip(".") for name in quiet_names)
        self._origins = frozenset(_origin_endpoint(url) for url in self.screen_origins)
        self._endpoints: dict[tuple[str, int], str] = {}
        self._networks: list[tuple[IPNetwork, str]] = []
        for entry in self.allow:
            self._add_allowed(entry)

    def refusing_ports(self, *ports: int) -> EgressPolicy:
        """A copy of this policy that also refuses `ports` on every host."""
        return EgressPolicy(
            self.screen_origins,
            self.allow,
            self.refused_ports.union(ports),
            self.quiet_names,
        )

    def decide(self, host: str, port: int) -> Decision:
        """Judge `host` (a name or an address in any notation) and `port`."""
        if not 0 < port < 65536:
            return Decision(False, f"port {port} is out of range")
        if port in self.refused_ports:
            return Decision(False, f"port {port} is one of the worker's own")

        try:
            parsed = parse_host(host)
        except ValueError as exc:
            return Decision(False, str(exc))

        if isinstance(parsed, str):
            return self._decide_name(parsed, port)
        return self._decide_address(parsed, port)

    def decide_resolved(
        self, host: str, port: int, addresses: Sequence[str | IPAddress]
    ) -> Decision:
        """Judge a host name by what it resolved to: refused if any address is.

        A literal address, a refused name and a trusted name are settled as by
        `decide`; a trusted name's addresses are taken as they come.
        """
        decision = self.decide(host, port)
        if not decision.needs_resolution:
            return decision

        checked: list[IPAddress] = []
        for text in addresses:
            try:
                address = _resolved_address(text)
            except ValueError:
                return Decision(False, f"{host} resolved to {text!r}, not an address")
            if not decision.allowed and not self._decide_address(address, port).allowed:
                reason = refused_because(address)
                return Decision(
                    False, f"{host} resolves to {address}, which is {reason}"
                )
            if address not in checked:
                checked.append(address)

        if not checked:
            return Decision(False, f"{host} did not resolve to any address")
        reason = decision.reason if decision.allowed else "public addresses"
        return Decision(True, reason, tuple(checked))

    def decide_url(self, url: str) -> Decision:
        """Judge a URL: its scheme first (`file:` and the like never), then host."""
        try:
            scheme, host, port = url_endpoint(url)
        except ValueError as exc:
            return Decision(False, f"{url!r} is not a URL a screen may fetch: {exc}")
        if scheme not in DEFAULT_PORTS:
            return Decision(False, f"the {scheme}: scheme is not allowed")
        return self.decide(host, port)

    def _decide_name(self, name: str, port: int) -> Decision:
        if (name, port) in self._origins:
            return Decision(True, "the screen origin", needs_resolution=True)
        entry = self._endpoints.get((name, port))
        if entry is not None:
            return Decision(True, f"allow-list entry {entry}", needs_resolution=True)

        refused = REFUSED_NAMES.get(name)
        if refused is None and name.endswith(".localhost"):
            refused = "the local machine"
        if refused is not None:
            return Decision(False, f"{name} is {refused}")
        if name in self.quiet_names:
            reason = f"{name} is a background host of the browser"
            return Decision(False, reason, quiet=True)
        return Decision(False, f"{name} must be resolved first", needs_resolution=True)

    def _decide_address(self, address: IPAddress, port: int) -> Decision:
        if (str(address), port) in self._origins:
            return Decision(True, "the screen origin", (address,))
        entry = self._endpoints.get((str(address), port))
        if entry is None:
            entry = next(
                (text for network, text in self._networks if address in network), None
            )
        if entry is not None:
            return Decision(True, f"allow-list entry {entry}", (address,))

        refused = refused_because(address)
        if refused is not None:
            return Decision(False, f"{address} is {refused}")
        return Decision(True, "a public address", (address,))

    def _add_allowed(self, entry: str) -> None:
        text = entry.strip()
        if not text:
            return
        try:
            if "/" in text:
                self._networks.append((ipaddress.ip_network(text, strict=False), text))
            elif _is_address(text):
                self._networks.append((ipaddress.ip_network(text), text))
            else:
                self._endpoints[_allowed_endpoint(text)] = text
        except ValueError as exc:
            raise ConfigurationError(
                f"APPTASKS_EGRESS_ALLOW entry {entry!r}: {exc}; use host:port, "
                "[IPv6]:port, an address or a CIDR block such as 10.1.0.0/16"
            ) from exc


def refused_because(address: IPAddress) -> str | None:
    """Why `address` is off limits to a screen, or None if it is public."""
    if isinstance(address, IPv4Address):
        return next(
            (reason for network, reason in REFUSED_IPV4 if address in network), None
        )

    embedded = _embedded_ipv4(address)
    if embedded is not None:
        kind, inner = embedded
        inner_reason = refused_because(inner)
        if inner_reason is not None:
            return f"{kind} for {inner}, which is {inner_reason}"
        if kind == IPV4_COMPATIBLE_KIND:
            return f"{kind} (deprecated since 2006)"
        return None

    for network, reason in REFUSED_IPV6:
        if address in network:
            return reason
    if address not in GLOBAL_UNICAST:
        return "not a global unicast address"
    return None


def parse_host(host: str) -> IPAddress | str:
    """The address `host` spells, as a browser reads it, or its canonical name.

    Raises `ValueError` for what no browser would send: an empty or overlong
    host, non-ASCII, a zone identifier, a number that is not an IPv4 address.
    """
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        return _ipv6(text[1:-1], host)
    if ":" in text:
        return _ipv6(text, host)

    if text.endswith(".") and text != ".":
        text = text[:-1]
    if not text or len(text) > MAX_HOST_LENGTH or not text.isascii():
        raise ValueError(f"{host!r} is not a valid host")
    if _ends_in_number(text):
        return _browser_ipv4(text, host)

    labels = text.split(".")
    if any(not label or len(label) > 63 for label in labels) or not set(
        text.replace(".", "")
    ).issubset(NAME_CHARACTERS):
        raise ValueError(f"{host!r} is not a valid host name")
    return text


def url_endpoint(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of an absolute URL (default ports filled in)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not scheme:
        raise ValueError("it has no scheme")
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    return scheme, host, port


def _ipv6(text: str, original: str) -> IPv6Address:
    if "%" in text:
        raise ValueError(f"{original!r} has a zone identifier")
    try:
        return IPv6Address(text)
    except ValueError:
        raise ValueError(f"{original!r} is not a valid IPv6 address") from None


def _ends_in_number(text: str) -> bool:
    # WHATWG URL: a host whose last label is a number is an IPv4 address or
    # invalid, never a domain; "0x" and "0x1f" count as numbers too.
    last = text.split(".")[-1]
    if last.isdigit() and last.isascii():
        return True
    return _ipv4_number(last) is not None


def _browser_ipv4(text: str, original: str) -> IPv4Address:
    parts = text.split(".")
    numbers = [_ipv4_number(part) for part in parts]
    if len(parts) > 4 or None in numbers:
        raise ValueError(f"{original!r} is not a valid IPv4 address")
    values = [number for number in numbers if number is not None]
    if any(value > 255 for value in values[:-1]) or values[-1] >= 256 ** (
        5 - len(values)
    ):
        raise ValueError(f"{original!r} is not a valid IPv4 address (out of range)")

    # The last number fills every byte the others leave: 127.1 is 127.0.0.1.
    value = values[-1]
    for index, number in enumerate(values[:-1]):
        value += number * 256 ** (3 - index)
    return IPv4Address(value)


def _ipv4_number(part: str) -> int | None:
    if not part:
        return None
    digits, radix = part, 10
    if part.startswith("0x"):
        digits, radix = part[2:], 16
    elif len(part) > 1 and part.startswith("0"):
        digits, radix = part[1:], 8
    if not digits:
        return 0

    # int() alone would also take "+", "_", spaces and non-ASCII digits.
    allowed = {10: string.digits, 16: string.hexdigits, 8: string.octdigits}[radix]
    if any(char not in allowed for char in digits):
        return None
    return int(digits, radix)


def _embedded_ipv4(address: IPv6Address) -> tuple[str, IPv4Address] | None:
    last_32_bits = IPv4Address(int(address) & 0xFFFFFFFF)
    if address in IPV4_MAPPED:
        return "an IPv4-mapped address", last_32_bits
    if address in NAT64:
        return "a NAT64 address", last_32_bits
    if address.sixtofour is not None:
        return "a 6to4 address", address.sixtofour
    # :: and ::1 are the unspecified and loopback addresses, not IPv4-compatible.
    if address in IPV4_COMPATIBLE and int(address) > 1:
        return IPV4_COMPATIBLE_KIND, last_32_bits
    return None


def _origin_endpoint(url: str) -> tuple[str, int]:
    try:
        scheme, host, port = url_endpoint(url)
        if scheme not in ("http", "https") or not host:
            raise ValueError("expected an http:// or https:// origin")
        return _canonical(host), port
    except ValueError as exc:
        raise ConfigurationError(f"screen origin {url!r}: {exc}") from exc


def _allowed_endpoint(text: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("no port, or a port outside 1-65535")
    return _canonical(host), int(port)


def _canonical(host: str) -> str:
    parsed = parse_host(host)
    return parsed if isinstance(parsed, str) else str(parsed)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _resolved_address(text: str | IPAddress) -> IPAddress:
    if not isinstance(text, str):
        return text
    # Resolvers append the zone to link-local results (fe80::1%eth0); the
    # address alone decides.
    return ipaddress.ip_address(text.split("%", 1)[0])
