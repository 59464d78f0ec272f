"""Load plugins, look up the runtimes they register, and call their hooks one by one.

Plugins come from the `apptasks` entry-point group (the built-in runtimes are
registered there, exactly like a third party's) and from module names in the
`APPTASKS_PLUGINS` setting. Loading happens when asked, never at import.

Calling a hook through pluggy runs every implementation in one go, and an
exception does not say whose it was. Where a failure must name its plugin, or
must not keep the other plugins from being told, `call_each_plugin` calls the
implementations one at a time instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, cast

import pluggy

from apptasks.errors import ConfigurationError
from apptasks.execution import Runtime, RuntimeFactory
from apptasks.hooks import PROJECT
from apptasks.settings import Settings
from plugins import hookspecs


def build_plugin_manager(settings: Settings) -> pluggy.PluginManager:
    """A plugin manager with every entry-point plugin and configured module loaded."""
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)

    for entry in entry_points(group=PROJECT):
        _register(manager, entry.name, entry.load)
    for module_name in settings.plugins:
        _register(manager, module_name, partial(importlib.import_module, module_name))

    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigurationError(
            f"plugin {exc.plugin!r} implements an unknown hook: {exc}"
        ) from None
    return manager


def _register(
    manager: pluggy.PluginManager, name: str, load: Callable[[], ModuleType]
) -> None:
    if manager.get_plugin(name) is not None:
        return
    try:
        module = load()
    except Exception as exc:
        raise ConfigurationError(
            f"plugin {name!r} failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    if manager.is_registered(module):
        return
    try:
        manager.register(module, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise ConfigurationError(f"plugin {name!r} is invalid: {exc}") from None


def runtime_factories(manager: pluggy.PluginManager) -> dict[str, RuntimeFactory]:
    """Every registered runtime by name; a name registered twice is an error."""
    factories: dict[str, RuntimeFactory] = {}
    owners: dict[str, str] = {}
    # Each implementation is called on its own so that a bad registration can be
    # blamed on the plugin that made it.
    for impl in manager.hook.apptasks_register_runtimes.get_hookimpls():
        plugin_name = impl.plugin_name
        try:
            registered = cast(Iterable[RuntimeFactory], impl.function())
        except Exception as exc:
            raise ConfigurationError(
                f"plugin {plugin_name!r}, hook apptasks_register_runtimes: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        for factory in list(registered):
            name = getattr(factory, "name", None)
            if not isinstance(name, str) or not name:
                raise ConfigurationError(
                    f"plugin {plugin_name!r}, hook apptasks_register_runtimes: "
                    f"{factory!r} has no 'name' attribute"
                )
            if name in factories:
                raise ConfigurationError(
                    f"runtime {name!r} is registered by both plugin "
                    f"{owners[name]!r} and plugin {plugin_name!r}"
                )
            factories[name] = factory
            owners[name] = plugin_name
    return factories


def build_runtime(settings: Settings, manager: pluggy.PluginManager) -> Runtime:
    """Build the runtime the settings name, or fail listing the ones there are."""
    factories = runtime_factories(manager)
    factory = factories.get(settings.runtime)
    if factory is None:
        known = ", ".join(sorted(factories)) or "none"
        raise ConfigurationError(
            f"APPTASKS_RUNTIME={settings.runtime!r} is not a registered runtime "
            f"(registered: {known})"
        )
    return factory(settings, hooks=manager.hook)


@dataclass(frozen=True)
class PluginCall:
    """What one plugin's implementation of a hook returned, or raised."""

    plugin_name: str
    hook_name: str
    value: Any = None
    error: Exception | None = None

    @property
    def failure(self) -> str:
        """The error, naming the plugin and the hook: for messages and log lines."""
        return (
            f"plugin {self.plugin_name!r}, hook {self.hook_name}: "
            f"{type(self.error).__name__}: {self.error}"
        )


def call_each_plugin(
    hook: pluggy.HookCaller, /, **arguments: Any
) -> Iterator[PluginCall]:
    """Call every plugin's implementation of `hook` on its own, in pluggy's order.

    Each implementation gets the `arguments` it names, as pluggy would give
    them, and each call is yielded as a `PluginCall` holding what it returned
    or the `Exception` it raised. Calls are made as the caller iterates: one
    that stops at the first failure leaves the later plugins uncalled, one that
    reads to the end tells every plugin whatever the others did.
    """
    # get_hookimpls() lists them in the reverse of the order pluggy calls them.
    for implementation in reversed(hook.get_hookimpls()):
        if implementation.wrapper or implementation.hookwrapper:
            # A wrapper surrounds a whole hook call, which this is not.
            continue
        wanted = {
            name: value
            for name, value in arguments.items()
            if name in implementation.argnames
        }
        call = PluginCall(implementation.plugin_name, hook.name)
        try:
            call = replace(call, value=implementation.function(**wanted))
        except Exception as exc:
            call = replace(call, error=exc)
        yield call
