"""Every hook is documented and tested; plugin loading fails loudly and by name."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from types import ModuleType

import pytest

from apptasks.errors import ConfigurationError
from apptasks.settings import Settings
from plugins import hookspecs
from plugins.manager import build_plugin_manager, build_runtime, runtime_factories
from runtimes.stub import StubRuntime

REPO = Path(__file__).resolve().parents[2]
HOOKS = sorted(
    name
    for name, value in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("apptasks_")
)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_in_the_plugin_readme(hook: str) -> None:
    readme = (REPO / "plugins" / "README.md").read_text()
    assert f"### `{hook}(" in readme


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test_named_after_it(hook: str) -> None:
    tests = "\n".join(path.read_text() for path in (REPO / "tests").rglob("test_*.py"))
    assert f"def test_hook_{hook}" in tests


def test_hook_apptasks_register_runtimes_registers_the_built_in_runtimes() -> None:
    factories = runtime_factories(build_plugin_manager(Settings()))

    assert {"chrome", "stub"} <= set(factories)
    assert factories["stub"] is StubRuntime


def test_an_unknown_runtime_name_lists_the_registered_ones() -> None:
    settings = Settings(runtime="nonesuch")

    with pytest.raises(ConfigurationError, match=r"'nonesuch'.*chrome.*stub"):
        build_runtime(settings, build_plugin_manager(settings))


def test_a_plugin_module_that_cannot_be_imported_is_named() -> None:
    settings = Settings(plugins=("no_such_plugin_module",))

    with pytest.raises(ConfigurationError, match=r"'no_such_plugin_module'.*failed"):
        build_plugin_manager(settings)


def test_a_plugin_registering_a_taken_runtime_name_names_both_plugins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _plugin_module(
        "duplicate_stub_plugin",
        "from apptasks.hooks import hookimpl\n"
        "from runtimes.stub import StubRuntime\n"
        "class Again(StubRuntime):\n"
        "    pass\n"
        "@hookimpl\n"
        "def apptasks_register_runtimes():\n"
        "    return [Again]\n",
    )
    monkeypatch.setitem(sys.modules, module.__name__, module)
    settings = Settings(plugins=(module.__name__,))

    with pytest.raises(ConfigurationError, match=r"'stub'.*'stub'.*duplicate_stub"):
        runtime_factories(build_plugin_manager(settings))


def test_a_plugin_implementing_an_unknown_hook_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _plugin_module(
        "misspelt_hook_plugin",
        "from apptasks.hooks import hookimpl\n"
        "@hookimpl\n"
        "def apptasks_register_runtime():\n"
        "    return []\n",
    )
    monkeypatch.setitem(sys.modules, module.__name__, module)

    with pytest.raises(ConfigurationError, match="misspelt_hook_plugin"):
        build_plugin_manager(Settings(plugins=(module.__name__,)))


def _plugin_module(name: str, source: str) -> ModuleType:
    module = ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module
