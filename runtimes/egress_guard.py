"""Keeping a runtime's browsers behind the egress proxy, from start to stop.

Each browser runtime owns one `EgressGuard`: it starts an `EgressProxy` on
127.0.0.1 before the first browser, gives every browser the flags or
preferences that send all its requests there (loopback included), and stops
the proxy after the last browser. The policy it keeps up to date allows:

- the screen origin: the public URL's (`APPTASKS_PUBLIC_URL`), which serves
  every render link, and the origin of each run's own URL while that run goes
  on (the same one, except in tests that serve screens themselves);
- the public network;
- the servers listed in `APPTASKS_EGRESS_ALLOW`;

and refuses, whatever the allow-list says, the proxy's own port and every port
on which a browser of the runtime or its driver listens (WebDriver, DevTools,
Marionette, BiDi), found from `/proc` as soon as each browser is launched.

While a browser is being launched, allow-list entries that open every port of
a loopback address are set aside: its ports are not known yet, and a screen
running in another browser must not find them in between.

Known shortcoming: runs at once on one worker share the proxy, so a screen may
also reach the origin of another run going on at the same time; in a
deployment every run's origin is the public URL's anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from selenium.webdriver.common.service import Service

from apptasks.errors import ConfigurationError
from apptasks.settings import CHROMIUM_BACKGROUND_HOSTS, Settings
from runtimes.chrome_launch import egress_arguments
from runtimes.egress import EgressPolicy, url_endpoint
from runtimes.egress_proxy import EgressProxy, Resolver, system_resolver
from runtimes.firefox_preferences import Preference, egress_preferences
from runtimes.pool import PooledBrowser
from runtimes.processes import processes_mentioning

logger = logging.getLogger("apptasks.runtimes.egress")

# Addresses at which the worker's own machine answers, on every port.
OWN_MACHINE = tuple(
    ipaddress.ip_network(block)
    for block in (
        "127.0.0.0/8",
        "0.0.0.0/8",
        "::1/128",
        "::/128",
        "::ffff:127.0.0.0/104",
        "::ffff:0.0.0.0/104",
    )
)
TCP_LISTEN = "0A"
TCP_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


class GuardedBrowser(PooledBrowser, Protocol):
    """What the guard reads from a launched browser to find its ports."""

    @property
    def folder(self) -> Path:
        """The browser's private folder, named on its processes' command lines."""
        ...

    @property
    def service(self) -> Service | None:
        """The driver (chromedriver, geckodriver) that drives the browser."""
        ...


B = TypeVar("B", bound=GuardedBrowser)


class EgressGuard:
    """One runtime's egress proxy, and the policy it enforces.

    `resolver` is handed to the proxy (tests resolve names from a table); it
    may be replaced until `start`. Raises `ConfigurationError` for a public URL
    or an allow-list entry that cannot be read.
    """

    def __init__(
        self, settings: Settings, *, resolver: Resolver = system_resolver
    ) -> None:
        self.resolver = resolver
        self.public_origin = settings.effective_public_url
        self._public_screen_origin = screen_origin(self.public_origin)
        self.allow = allow_entries(settings.egress_allow)
        self._port_bound_allow = tuple(
            entry for entry in self.allow if not opens_own_machine(entry)
        )
        self._run_origins: Counter[str] = Counter()
        self._refused: set[int] = set()
        self._launching = 0
        self._proxy: EgressProxy | None = None
        self._policy()

    @property
    def proxy(self) -> EgressProxy:
        if self._proxy is None:
            raise RuntimeError("the egress guard is not running")
        return self._proxy

    def chrome_arguments(self) -> tuple[str, ...]:
        """Chromium flags that send every request through the proxy."""
        return egress_arguments(self.proxy.url)

    def firefox_preferences(self) -> dict[str, Preference]:
        """Firefox preferences that send every request through the proxy."""
        return egress_preferences(self.proxy.port)

    async def start(self) -> None:
        """Start the proxy on a free port of 127.0.0.1."""
        proxy = EgressProxy(self._policy(), resolver=self.resolver)
        await proxy.start()
        self._refused.add(proxy.port)
        self._proxy = proxy
        self._apply()

    async def stop(self) -> None:
        """Stop the proxy and cut whatever still goes through it."""
        proxy, self._proxy = self._proxy, None
        if proxy is not None:
            await proxy.stop()

    def launching(
        self, launch: Callable[[], Awaitable[B]]
    ) -> Callable[[], Awaitable[B]]:
        """`launch`, then refusing every port the new browser and its driver use."""

        async def launch_and_refuse_its_ports() -> B:
            self._launching += 1
            self._apply()
            try:
                browser = await launch()
                try:
                    ports = await asyncio.to_thread(browser_ports, browser)
                except BaseException:
                    # The pool never sees this browser: it must not live on.
                    browser.kill()
                    raise
                self._refused.update(ports)
            finally:
                self._launching -= 1
                self._apply()
            logger.debug(
                "browser %s ports refused to screens: %s",
                browser.name,
                ",".join(map(str, sorted(ports))),
            )
            return browser

        return launch_and_refuse_its_ports

    @contextlib.contextmanager
    def screen(self, url: str) -> Iterator[None]:
        """Allow the origin that serves `url` while a run loads and calls it."""
        origin = screen_origin(url)
        if origin is None or origin == self._public_screen_origin:
            yield
            return

        self._run_origins[origin] += 1
        if self._run_origins[origin] == 1:
            self._apply()
        try:
            yield
        finally:
            self._run_origins[origin] -= 1
            if not self._run_origins[origin]:
                del self._run_origins[origin]
                self._apply()

    def _policy(self) -> EgressPolicy:
        return EgressPolicy(
            screen_origins=(self.public_origin, *self._run_origins),
            allow=self._port_bound_allow if self._launching else self.allow,
            refused_ports=self._refused,
            quiet_names=CHROMIUM_BACKGROUND_HOSTS,
        )

    def _apply(self) -> None:
        if self._proxy is not None:
            self._proxy.policy = self._policy()


def allow_entries(text: str) -> tuple[str, ...]:
    """The entries of `APPTASKS_EGRESS_ALLOW`; `ConfigurationError` for a bad one."""
    entries = tuple(text.replace(",", " ").split())
    EgressPolicy(allow=entries)
    return entries


def opens_own_machine(entry: str) -> bool:
    """Whether an allow-list entry opens every port of a loopback address."""
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False  # host:port: one port only
    return any(
        network.version == own.version and network.overlaps(own) for own in OWN_MACHINE
    )


def screen_origin(url: str) -> str | None:
    """`scheme://host:port` of an http(s) URL a run loads; None for any other URL."""
    try:
        scheme, host, port = url_endpoint(url)
    except ValueError:
        return None
    if scheme not in ("http", "https") or not host:
        return None
    origin = (
        f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
    )
    try:
        EgressPolicy(screen_origins=[origin])
    except ConfigurationError:
        return None  # not a host the proxy could reach: nothing to allow
    return origin


def browser_ports(browser: GuardedBrowser) -> set[int]:
    """Blocking: every TCP port on which the browser or its driver listens."""
    pids = set(processes_mentioning(browser.folder))
    service = browser.service
    process = getattr(service, "process", None)
    if process is not None:
        pids.add(int(process.pid))
    ports = listening_ports(pids)
    if service is not None and service.port:
        ports.add(int(service.port))
    return ports


def listening_ports(pids: Iterable[int]) -> set[int]:
    """Blocking: the TCP ports on which the processes `pids` listen (Linux only)."""
    sockets = set()
    for pid in pids:
        folder = f"/proc/{pid}/fd"
        try:
            descriptors = os.listdir(folder)
        except OSError:
            continue  # gone already, or not ours to read
        for descriptor in descriptors:
            try:
                target = os.readlink(f"{folder}/{descriptor}")
            except OSError:
                continue
            if target.startswith("socket:["):
                sockets.add(target[len("socket:[") : -1])

    ports = set()
    for table in TCP_TABLES:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue  # no IPv6
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == TCP_LISTEN and fields[9] in sockets:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
