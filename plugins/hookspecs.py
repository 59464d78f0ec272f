"""Hook specifications: what a plugin may implement.

Every hook is listed in `plugins/README.md` and has a test; a test fails when a
hook lacks either.
"""

from __future__ import annotations

from collections.abc import Sequence

from apptasks.execution import RuntimeFactory
from apptasks.hooks import hookspec

# Runtimes


@hookspec
def apptasks_register_runtimes() -> Sequence[RuntimeFactory]:
    """Name the runtimes this plugin provides.

    Return a sequence of runtime factories: callables (usually classes) with a
    class attribute `name` that take the `Settings` and return an object
    following the `apptasks.Runtime` protocol. Only the runtime chosen by the
    `APPTASKS_RUNTIME` setting is built and started. Two plugins registering
    the same name stop start-up with an error naming both.
    """
    raise NotImplementedError
