"""What the `remote` runtime asks of the endpoint: its settings and capabilities.

The capabilities are built in layers, later ones winning: the runtime's own
(the browser, headless, the flags or preferences the local runtimes use, BiDi),
then `APPTASKS_CHROME_ARGUMENTS` or `APPTASKS_FIREFOX_PREFERENCES`, then the
plugins' `apptasks_browser_options`, then `APPTASKS_REMOTE_CAPABILITIES`. A
Selenium Grid reads its own `se:...` capabilities from that last setting too.

A screen runs JavaScript only: every request of a run's tab is held by a BiDi
network intercept until `is_javascript_request` has said whether it may go on.
"""

from __future__ import annotations

import json
import shlex
from typing import Any
from urllib.parse import urlsplit

from selenium import webdriver

from apptasks.errors import ConfigurationError
from apptasks.settings import Settings
from runtimes.chrome_launch import CHROME_FLAGS
from runtimes.firefox import configured_preferences
from runtimes.firefox_preferences import QUIET_ENVIRONMENT, runtime_preferences

BROWSERS = ("chrome", "firefox")

# What a request is for, as WebDriver BiDi names it (the Fetch standard's
# "destination"). The empty string is fetch(), XHR and beacons; workers and
# worklets run scripts. Styles, images, fonts, media, objects and manifests are
# refused, and so is any destination the browser may add later.
JAVASCRIPT_DESTINATIONS = frozenset(
    {
        "",
        "document",
        "iframe",
        "frame",
        "script",
        "json",
        "worker",
        "sharedworker",
        "serviceworker",
        "audioworklet",
        "paintworklet",
    }
)
# What asked for a request (BiDi's "initiatorType"), when that is an asset.
ASSET_INITIATORS = frozenset(
    {"audio", "css", "embed", "font", "image", "img", "input", "object", "track"}
    | {"video"}
)
# Chromium's own word for what a request is for, which ChromeDriver adds to
# the BiDi event as "goog:resourceType". ChromeDriver 156 reports fonts and
# media with an empty destination, like fetch(), and their initiator type only
# now and then; this one it always reports for a held request.
CHROMIUM_RESOURCE_TYPE = "goog:resourceType"
CHROMIUM_ASSET_TYPES = frozenset(
    {"Stylesheet", "Image", "Media", "Font", "TextTrack", "Manifest"}
)

Options = webdriver.ChromeOptions | webdriver.FirefoxOptions


class OptionsRejected(Exception):
    """A plugin's `apptasks_browser_options` failed; the message names it."""


def endpoint_url(settings: Settings) -> str:
    """`APPTASKS_REMOTE_URL`, checked: an http(s) URL with a host."""
    url = settings.remote_url.strip()
    if not url:
        raise ConfigurationError(
            "APPTASKS_REMOTE_URL is empty: the remote runtime needs the address "
            "of a WebDriver endpoint, e.g. http://127.0.0.1:4444 for a Selenium Grid"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"APPTASKS_REMOTE_URL={url!r}: not an http:// or https:// URL with a "
            "host, e.g. http://127.0.0.1:4444"
        )
    return url.rstrip("/")


def browser_kind(settings: Settings) -> str:
    """`APPTASKS_REMOTE_BROWSER`, checked: `chrome` or `firefox`."""
    browser = settings.remote_browser
    if browser not in BROWSERS:
        raise ConfigurationError(
            f"APPTASKS_REMOTE_BROWSER={browser!r}: the remote runtime drives "
            f"{' or '.join(BROWSERS)}"
        )
    return browser


def extra_capabilities(settings: Settings) -> dict[str, Any]:
    """`APPTASKS_REMOTE_CAPABILITIES`: a JSON object, or empty."""
    text = settings.remote_capabilities
    if not text.strip():
        return {}
    try:
        capabilities = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(
            f"APPTASKS_REMOTE_CAPABILITIES is not JSON: {exc}"
        ) from None
    if not isinstance(capabilities, dict):
        raise ConfigurationError(
            "APPTASKS_REMOTE_CAPABILITIES must be a JSON object of capabilities, "
            'e.g. {"se:name": "app-tasks", "goog:chromeOptions": {"args": [...]}}'
        )
    return capabilities


def session_capabilities(settings: Settings, hooks: Any = None) -> dict[str, Any]:
    """The capabilities of a new session, every layer applied.

    Raises `OptionsRejected` when a plugin fails, and `ConfigurationError`
    for a bad setting.
    """
    browser = browser_kind(settings)
    options = (
        chrome_options(settings) if browser == "chrome" else firefox_options(settings)
    )
    if hooks is not None:
        apply_plugins(hooks, options, settings)

    capabilities = options.to_capabilities()
    if browser == "firefox":
        firefox = capabilities.setdefault("moz:firefoxOptions", {})
        firefox["env"] = {**QUIET_ENVIRONMENT, **firefox.get("env", {})}
    capabilities = merge_capabilities(capabilities, extra_capabilities(settings))
    # Runs need BiDi, whatever the settings say: user contexts, the request
    # filter and the time limit all depend on it.
    capabilities["webSocketUrl"] = True
    return capabilities


def chrome_options(settings: Settings) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    for flag in (*CHROME_FLAGS, *shlex.split(settings.chrome_arguments)):
        options.add_argument(flag)
    # Nobody can answer alert() in a task; dismissing keeps the browser usable.
    options.unhandled_prompt_behavior = "dismiss"
    return options


def firefox_options(settings: Settings) -> webdriver.FirefoxOptions:
    options = webdriver.FirefoxOptions()
    options.add_argument("-headless")
    for name, value in {
        **runtime_preferences(),
        **configured_preferences(settings),
    }.items():
        options.set_preference(name, value)
    options.unhandled_prompt_behavior = "dismiss"
    return options


def apply_plugins(hooks: Any, options: Options, settings: Settings) -> None:
    """Call every `apptasks_browser_options` implementation; name one that fails."""
    offered = {"browser": "remote", "options": options, "settings": settings}
    # One implementation at a time, in the order pluggy would call them.
    for implementation in reversed(hooks.apptasks_browser_options.get_hookimpls()):
        wanted = {
            name: value
            for name, value in offered.items()
            if name in implementation.argnames
        }
        try:
            implementation.function(**wanted)
        except Exception as exc:
            raise OptionsRejected(
                f"plugin {implementation.plugin_name!r}, hook "
                f"apptasks_browser_options: {type(exc).__name__}: {exc}"
            ) from exc


def merge_capabilities(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it: objects merged key by key, lists appended."""
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = merge_capabilities(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = [*current, *value]
        else:
            merged[key] = value
    return merged


def is_javascript_request(request: dict[str, Any]) -> bool:
    """Whether a held request (BiDi `network.beforeRequestSent`) may go on.

    Chromium's resource type decides when ChromeDriver gives one; otherwise the
    request's destination and initiator type, as WebDriver BiDi defines them.

    Known shortcoming: a browser that reports none of them (destination and
    initiator type are new in WebDriver BiDi) gets every request let through,
    assets too.
    """
    resource_type = request.get(CHROMIUM_RESOURCE_TYPE)
    if isinstance(resource_type, str):
        return resource_type not in CHROMIUM_ASSET_TYPES
    destination = request.get("destination")
    if isinstance(destination, str) and destination not in JAVASCRIPT_DESTINATIONS:
        return False
    return request.get("initiatorType") not in ASSET_INITIATORS
