"""Calling plugins one by one: pluggy's order, failures named, the rest still told."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pluggy
import pytest

from apptasks.hooks import PROJECT, hookimpl
from plugins import hookspecs
from plugins.manager import call_each_plugin


class Named:
    """Answers the browser-options hook with its name and what it was given."""

    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def apptasks_browser_options(self, browser: str, options: Any) -> str:
        options.append(self.name)
        return f"{self.name} for {browser}"


class NamedFirst(Named):
    @hookimpl(tryfirst=True)
    def apptasks_browser_options(self, browser: str, options: Any) -> str:
        return super().apptasks_browser_options(browser, options)


class Failing:
    @hookimpl
    def apptasks_browser_options(self) -> None:
        raise ValueError("no options today")


class Wrapping:
    """A wrapper: it surrounds pluggy's own call of the hook, and no other."""

    @hookimpl(wrapper=True)
    def apptasks_browser_options(self, options: Any) -> Iterator[None]:
        options.append("wrapper")
        return (yield)


def hook_with(*plugins: object) -> pluggy.HookCaller:
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    for plugin in plugins:
        manager.register(plugin, name=getattr(plugin, "name", type(plugin).__name__))
    hook: pluggy.HookCaller = manager.hook.apptasks_browser_options
    return hook


def test_call_each_plugin_calls_in_pluggy_order_with_the_arguments_each_names() -> None:
    hook = hook_with(Named("a"), NamedFirst("first"), Named("b"), Wrapping())
    expected = hook(browser="chrome", options=[], settings=None)
    options: list[str] = []

    calls = list(
        call_each_plugin(hook, browser="chrome", options=options, settings=None)
    )

    assert [call.value for call in calls] == expected
    assert expected == ["first for chrome", "b for chrome", "a for chrome"]
    assert options == ["first", "b", "a"]
    assert [call.plugin_name for call in calls] == ["first", "b", "a"]
    assert all(call.error is None for call in calls)


def test_call_each_plugin_names_a_failing_plugin_and_still_calls_the_rest() -> None:
    hook = hook_with(Named("after"), Failing(), Named("before"))
    options: list[str] = []

    calls = list(call_each_plugin(hook, browser="firefox", options=options))

    assert [call.plugin_name for call in calls] == ["before", "Failing", "after"]
    failed = calls[1]
    assert isinstance(failed.error, ValueError)
    assert failed.value is None
    assert failed.failure == (
        "plugin 'Failing', hook apptasks_browser_options: ValueError: no options today"
    )
    assert options == ["before", "after"]


def test_call_each_plugin_calls_no_plugin_past_where_the_caller_stops() -> None:
    hook = hook_with(Named("after"), Failing(), Named("before"))
    options: list[str] = []

    with pytest.raises(RuntimeError, match="'Failing'"):
        for call in call_each_plugin(hook, browser="chrome", options=options):
            if call.error is not None:
                raise RuntimeError(call.failure)

    assert options == ["before"]


def test_call_each_plugin_with_no_plugin_calls_nothing() -> None:
    assert list(call_each_plugin(hook_with(), browser="chrome", options=[])) == []
