"""What the `firefox` runtime tells Firefox: preferences, and a blocking extension.

Firefox calls out on its own (updates, telemetry, experiments, remote settings,
safe-browsing lists, captive-portal and connectivity probes, push) unless its
preferences say otherwise; `QUIET_PREFERENCES` says otherwise for each. Where a
screen itself may connect is up to the runtime's egress proxy, which
`egress_preferences` sends every request to, loopback included.

A screen runs JavaScript only. Preferences stop images and downloadable fonts,
but Firefox has none for stylesheets or media, so a small extension cancels
every request for a stylesheet, image, font or media file before it is sent.
It lives in the browser, so a run pays nothing for it.
"""

from __future__ import annotations

import json
from pathlib import Path

Preference = str | int | bool

QUIET_PREFERENCES: dict[str, Preference] = {
    # Updates of Firefox, its add-ons, system add-ons and media plugins.
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "app.update.disabledForTesting": True,
    "extensions.update.enabled": False,
    "extensions.update.autoUpdateDefault": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "extensions.blocklist.enabled": False,
    "media.gmp-manager.url": "",
    "media.gmp-gmpopenh264.enabled": False,
    "media.gmp-widevinecdm.enabled": False,
    # Telemetry, health reports, studies and experiments.
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.archive.enabled": False,
    "toolkit.telemetry.server": "",
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "app.shield.optoutstudies.enabled": False,
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "messaging-system.rsexperimentloader.enabled": False,
    "browser.discovery.enabled": False,
    # Remote settings, and the features that only fetch through them.
    # Firefox honours this only with MOZ_REMOTE_SETTINGS_DEVTOOLS=1 in its
    # environment (see `QUIET_ENVIRONMENT`). It must be a URL with a host: its
    # Rust client falls back to Mozilla's server for anything else, such as a
    # data: URL. Port 1 is one Firefox refuses to connect to.
    "services.settings.server": "http://127.0.0.1:1/remote-settings-off/v1",
    "security.remote_settings.crlite_filters.enabled": False,
    "security.remote_settings.intermediates.enabled": False,
    "browser.translations.enable": False,
    "browser.ml.enable": False,
    # Safe browsing and tracking-protection lists.
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.downloads.remote.enabled": False,
    "browser.safebrowsing.provider.google.updateURL": "",
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    # Probes for captive portals and connectivity, push, geolocation, region.
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "dom.push.enabled": False,
    "dom.push.serverURL": "",
    "geo.provider.network.url": "",
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    "browser.search.update": False,
    # Certificate revocation checks go to the certificate authorities' hosts.
    "security.OCSP.enabled": 0,
    # DNS over HTTPS off outright (mode 5), rather than left to a rollout.
    "network.trr.mode": 5,
    "doh-rollout.enabled": False,
    # Connections made on a guess, before a page asks for anything.
    "network.prefetch-next": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "browser.urlbar.speculativeConnect.enabled": False,
    # The start page, the new-tab page and what fills them.
    "browser.startup.page": 0,
    "browser.startup.homepage": "about:blank",
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.system.topstories": False,
    "browser.newtabpage.activity-stream.feeds.topsites": False,
    "browser.topsites.contile.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "identity.fxaccounts.enabled": False,
    # Nothing in a task can take a call.
    "media.peerconnection.enabled": False,
}

QUIET_ENVIRONMENT = {
    # Lets a release build honour the `services.settings.server` preference.
    "MOZ_REMOTE_SETTINGS_DEVTOOLS": "1",
    # Crash reports of a killed browser are expected, and must not be sent.
    "MOZ_CRASHREPORTER_DISABLE": "1",
}

JAVASCRIPT_ONLY_PREFERENCES: dict[str, Preference] = {
    "permissions.default.image": 2,
    "browser.display.use_document_fonts": 0,
    "gfx.downloadable_fonts.enabled": False,
    "browser.chrome.site_icons": False,
    "media.autoplay.default": 5,
}

PERFORMANCE_PREFERENCES: dict[str, Preference] = {
    # Every user context has content processes of its own whatever this says
    # (Firefox's process key for a page is "web=^userContextId=N"), so each run
    # starts one. Site isolation would add one per site the screen frames.
    "fission.autostart": False,
    # A screen left behind must not stay alive in the back-forward cache.
    "browser.sessionhistory.max_total_viewers": 0,
    # Nothing of a run is kept for later. Recording each visit in the history
    # database cost the browser's main thread ~15 ms a run, back to back; the
    # disk cache, the network predictor (which learns from every page load)
    # and the preloaded new-tab page are work for nobody here.
    "places.history.enabled": False,
    "browser.cache.disk.enable": False,
    "network.predictor.enabled": False,
    "browser.newtab.preload": False,
    # Without it the loading indicator of each run's tab is animated, which
    # roughly doubled the browser's own CPU time per run (it showed as ~80 ms
    # of the main process per page load). Screens see `prefers-reduced-motion`.
    "ui.prefersReducedMotion": 1,
}

# Request types the extension cancels, as Firefox's webRequest API names them.
BLOCKED_REQUEST_TYPES = (
    "font",
    "image",
    "imageset",
    "media",
    "object",
    "stylesheet",
    "web_manifest",
)
EXTENSION_ID = "javascript-only@apptasks"
EXTENSION_MANIFEST = {
    "manifest_version": 2,
    "name": "App Tasks: JavaScript only",
    "version": "1.0",
    "browser_specific_settings": {"gecko": {"id": EXTENSION_ID}},
    "permissions": ["webRequest", "webRequestBlocking", "<all_urls>"],
    "background": {"scripts": ["background.js"]},
}
EXTENSION_SCRIPT = """\
"use strict";
browser.webRequest.onBeforeRequest.addListener(
  () => ({ cancel: true }),
  { urls: ["<all_urls>"], types: BLOCKED_TYPES },
  ["blocking"]
);
""".replace("BLOCKED_TYPES", json.dumps(list(BLOCKED_REQUEST_TYPES)))


def runtime_preferences() -> dict[str, Preference]:
    """Every preference the runtime sets on each Firefox it starts."""
    return {
        **QUIET_PREFERENCES,
        **JAVASCRIPT_ONLY_PREFERENCES,
        **PERFORMANCE_PREFERENCES,
    }


def egress_preferences(proxy_port: int) -> dict[str, Preference]:
    """Preferences that send every request of Firefox to the proxy on `proxy_port`.

    Set over every other preference, so that no setting or plugin can change
    them. Loopback addresses and `localhost` go to the proxy too (Firefox
    bypasses it for them by default), nothing falls back to a direct connection
    when the proxy refuses, and neither HTTP/3 nor WebTransport (UDP, which an
    HTTP proxy cannot carry) nor WebRTC outside the proxy is left to go around
    it. No name is resolved ahead of a request, or by Firefox at all: the proxy
    resolves each name it is asked for.
    """
    proxy = "127.0.0.1"
    return {
        "network.proxy.type": 1,
        "network.proxy.http": proxy,
        "network.proxy.http_port": proxy_port,
        "network.proxy.ssl": proxy,
        "network.proxy.ssl_port": proxy_port,
        "network.proxy.share_proxy_settings": False,
        "network.proxy.socks": "",
        "network.proxy.socks_port": 0,
        "network.proxy.socks_remote_dns": True,
        "network.proxy.no_proxies_on": "",
        "network.proxy.allow_hijacking_localhost": True,
        "network.proxy.failover_direct": False,
        "network.http.http3.enable": False,
        "network.webtransport.enabled": False,
        # WebRTC is off (`QUIET_PREFERENCES`); should a deployment turn it on,
        # it may still only relay through a TURN server reached by the proxy.
        "media.peerconnection.ice.proxy_only": True,
        "media.peerconnection.ice.no_host": True,
        "media.peerconnection.ice.default_address_only": True,
        "network.dns.disablePrefetch": True,
        "network.dns.disablePrefetchFromHTTPS": True,
        "network.predictor.enabled": False,
        "network.prefetch-next": False,
        "network.http.speculative-parallel-limit": 0,
    }


def loopback_only_preferences(closed_port: int = 1) -> dict[str, Preference]:
    """Preferences that keep Firefox off every address but 127.0.0.1.

    Firefox resolves no names at all (IP literals still work), and sends every
    request but those for loopback addresses to a proxy on a closed loopback
    port, where it fails: nothing leaves the machine, and screens on 127.0.0.1
    still load. For tests, and for Firefox started without the runtime: the
    runtime sets `egress_preferences` over the proxy entries here, and keeps
    the rest.
    """
    proxy = "127.0.0.1"
    return {
        "network.dns.disabled": True,
        "network.proxy.type": 1,
        "network.proxy.http": proxy,
        "network.proxy.http_port": closed_port,
        "network.proxy.ssl": proxy,
        "network.proxy.ssl_port": closed_port,
        "network.proxy.socks": proxy,
        "network.proxy.socks_port": closed_port,
        "network.proxy.socks_remote_dns": True,
        "network.proxy.no_proxies_on": "",
        "network.proxy.allow_hijacking_localhost": False,
        "network.proxy.failover_direct": False,
        "network.http.http3.enable": False,
    }


def write_extension(folder: Path) -> Path:
    """Write the blocking extension's files into `folder`; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = json.dumps(EXTENSION_MANIFEST, indent=2)
    (folder / "manifest.json").write_text(manifest, encoding="utf-8")
    (folder / "background.js").write_text(EXTENSION_SCRIPT, encoding="utf-8")
    return folder
