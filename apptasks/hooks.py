"""The pluggy markers under the project name `apptasks`.

Plugins decorate their functions with `apptasks.hookimpl`; the specifications
live in `plugins.hookspecs`.
"""

from __future__ import annotations

import pluggy

PROJECT = "apptasks"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
