"""Turn a screen's HTML into the page a runtime loads.

The shim goes in before any of the screen's own scripts, so that a script in
`<head>` can already call `Fliplet.Page.onRemoteExecution`. Tags that only fetch
styles or images are dropped, since a task loads JavaScript only.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_DOCTYPE = re.compile(r"^\s*<!doctype[^>]*>", re.IGNORECASE)
# Stylesheet, icon and image tags; the browser itself refuses other media.
_FETCHING_TAGS = re.compile(r"<(?:link|img)\b[^>]*>", re.IGNORECASE)


@cache
def shim_source() -> str:
    return files("apptasks").joinpath("static/shim.js").read_text(encoding="utf-8")


def render_screen(html: str) -> str:
    """The screen's HTML with fetching tags dropped and the shim injected first."""
    stripped = _FETCHING_TAGS.sub("", html)
    shim = f"<script>{shim_source()}</script>"

    doctype = _DOCTYPE.match(stripped)
    if doctype:
        return stripped[: doctype.end()] + shim + stripped[doctype.end() :]
    return shim + stripped
