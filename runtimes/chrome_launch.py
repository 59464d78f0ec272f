"""Starting Chromium for the `chrome` runtime, and attaching chromedriver to it.

The runtime starts Chromium itself, on a first page of `about:blank`, and
chromedriver only attaches: the standalone headless shell
(`chromium-headless-shell`, far cheaper per run than the full browser) opens no
page by itself, and chromedriver would drop a first page given to it. Both the
shell and the full browser are started the same way.

Plugins still get Selenium `ChromeOptions` to change (`apptasks_browser_options`),
from which the command line is built: the binary and the arguments. What
chromedriver alone would have applied (extensions, preferences, a proxy
capability) is refused rather than lost.

Every request of the browser goes through the runtime's egress proxy
(`runtimes.egress_guard`): its flags (`egress_arguments`) come last on the
command line, after the settings' and the plugins' arguments, and any argument
that could change where requests go is refused, because some of Chromium's
proxy switches win over `--proxy-server` wherever they stand.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selenium import webdriver

from apptasks.settings import Settings
from plugins.manager import call_each_plugin

CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--disable-default-apps",
    "--blink-settings=imagesEnabled=false",
    # Chromium lowers the priority of renderers it deems in the background,
    # which in headless mode can be the only tab: on a busy machine its first
    # navigation then stalls until WebDriver gives up.
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    # NetworkTimeServiceQuerying: otherwise Chromium asks clients2.google.com for
    # the time at start-up. BackForwardCache: otherwise a screen left behind
    # stays alive in memory. Chromium reads only the last --disable-features
    # switch, so every feature goes in this one.
    "--disable-features=NetworkTimeServiceQuerying,BackForwardCache",
)
# What chromedriver adds when it starts Chromium itself, and a run depends on.
AUTOMATION_FLAGS = (
    "--enable-automation",
    "--disable-hang-monitor",
    "--password-store=basic",
    "--use-mock-keychain",
    # Chromium picks a free port and writes it to the profile; it listens on
    # 127.0.0.1 only.
    "--remote-debugging-port=0",
)
# Switches that decide where Chromium's requests go. Chromium reads the last
# value of a repeated switch, but --no-proxy-server, --proxy-pac-url and
# --proxy-auto-detect win over --proxy-server wherever they stand.
EGRESS_SWITCHES = frozenset(
    (
        "--proxy-server",
        "--proxy-bypass-list",
        "--no-proxy-server",
        "--proxy-pac-url",
        "--proxy-auto-detect",
        "--winhttp-proxy-resolver",
        "--force-webrtc-ip-handling-policy",
        "--webrtc-ip-handling-policy",
    )
)
# Without a first page, Debian's Chromium opens the new-tab page, which it fills
# from start.duckduckgo.com, and the headless shell opens none.
FIRST_PAGE = "about:blank"

# Seconds between looks for the DevTools port of a starting Chromium.
PORT_POLL = 0.02


class LaunchError(Exception):
    """Chromium could not be started as asked."""


def chromium_options(
    settings: Settings,
    profile: Path,
    extra_arguments: Sequence[str] = (),
    hooks: Any = None,
) -> webdriver.ChromeOptions:
    """The options Chromium is started from, after plugins have changed them."""
    options = webdriver.ChromeOptions()
    options.binary_location = settings.chrome_binary
    for flag in (*CHROME_FLAGS, *extra_arguments):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if hooks is not None:
        apply_plugins(hooks, options, settings)
    return options


def apply_plugins(
    hooks: Any, options: webdriver.ChromeOptions, settings: Settings
) -> None:
    """Call every `apptasks_browser_options` implementation; name one that fails."""
    for call in call_each_plugin(
        hooks.apptasks_browser_options,
        browser="chrome",
        options=options,
        settings=settings,
    ):
        if call.error is not None:
            raise LaunchError(call.failure) from call.error


def egress_arguments(proxy_url: str) -> tuple[str, ...]:
    """Flags that send every request of Chromium through the proxy at `proxy_url`.

    `<-loopback>` removes Chromium's implicit bypass of localhost and
    127.0.0.0/8, so a page's requests for loopback reach the proxy too, which
    refuses them. WebRTC may send UDP only through a proxy, and an HTTP proxy
    carries none: a page gets no UDP at all. The headless shell reads that
    policy from the first WebRTC switch, the full browser from the second.
    """
    return (
        f"--proxy-server={proxy_url}",
        "--proxy-bypass-list=<-loopback>",
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
        "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    )


def command_line(
    options: webdriver.ChromeOptions, final_arguments: Sequence[str] = ()
) -> list[str]:
    """Chromium's command line: binary, arguments, automation flags, first page.

    `final_arguments` (the egress flags) come after every other argument, so
    that none before them can override them.
    """
    ignored = [
        name
        for name, value in (
            ("extensions", options.extensions),
            ("experimental options", options.experimental_options),
            ("a proxy capability", options.proxy),
        )
        if value
    ]
    if ignored:
        raise LaunchError(
            f"the chrome runtime starts Chromium from the options' binary and "
            f"arguments only, so {' and '.join(ignored)} would be ignored: give "
            "them as arguments instead (--load-extension=...; a proxy is the "
            "runtime's own)"
        )
    redirecting = [
        argument
        for argument in options.arguments
        if argument.split("=", 1)[0] in EGRESS_SWITCHES
    ]
    if redirecting:
        raise LaunchError(
            f"the chrome runtime sends every request through its egress proxy, so "
            f"{', '.join(map(repr, redirecting))} cannot be given (in "
            "APPTASKS_CHROME_ARGUMENTS or by a plugin); to let screens reach a "
            "local server, list it in APPTASKS_EGRESS_ALLOW"
        )
    return [
        options.binary_location,
        *options.arguments,
        *AUTOMATION_FLAGS,
        *final_arguments,
        FIRST_PAGE,
    ]


def wait_for_devtools_port(
    process: subprocess.Popen[bytes], profile: Path, timeout: float
) -> int:
    """Blocking: the DevTools port a starting Chromium writes to its profile."""
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise LaunchError(
                f"Chromium exited while starting (status {process.returncode})"
            )
        try:
            lines = port_file.read_text().split()
        except FileNotFoundError:
            lines = []
        if len(lines) >= 2:
            return int(lines[0])
        if time.monotonic() > deadline:
            raise LaunchError(f"Chromium opened no DevTools port within {timeout:.0f}s")
        time.sleep(PORT_POLL)


def attach_options(port: int) -> webdriver.ChromeOptions:
    """Options with which chromedriver attaches to the Chromium on `port`."""
    options = webdriver.ChromeOptions()
    options.debugger_address = f"127.0.0.1:{port}"
    # Nobody can answer alert() in a task; dismissing keeps the browser usable.
    options.unhandled_prompt_behavior = "dismiss"
    return options
