"""Run notifications: every plugin is told, and a failing one is logged by name."""

from __future__ import annotations

import logging
import threading

import pluggy
import pytest

from apptasks.hooks import PROJECT, hookimpl
from apptasks.runs import ON_DEMAND, RunOrder
from apptasks.settings import Settings
from plugins import hookspecs
from runtimes.stub import StubRuntime
from workers.executor import RunExecutor

ORDER = RunOrder(
    run_id="run-1",
    app_id=1,
    task_id=2,
    task_name="notify",
    page_id=3,
    environment="draft",
    page_version=None,
    mode=ON_DEMAND,
    payload={"secret": "not for logs"},
    timeout=10.0,
)


class Listener:
    def __init__(self) -> None:
        self.told: list[tuple[str, str]] = []

    @hookimpl
    def apptasks_run_started(self, order: RunOrder) -> None:
        self.told.append((order.run_id, threading.current_thread().name))


class BrokenListener:
    @hookimpl
    def apptasks_run_started(self) -> None:
        raise ValueError("cannot be told today")


async def test_a_failing_run_hook_is_logged_by_plugin_and_the_others_are_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before, after = Listener(), Listener()
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(after, name="after")
    manager.register(BrokenListener(), name="broken")
    manager.register(before, name="before")
    settings = Settings()
    executor = RunExecutor(
        settings,
        StubRuntime(settings),
        redis=None,  # type: ignore[arg-type]  # notifying never reaches Redis
        hooks=manager.hook,
    )

    with caplog.at_level(logging.WARNING, logger="apptasks.workers.executor"):
        await executor._notify("apptasks_run_started", order=ORDER)

    assert [run for run, _ in before.told + after.told] == ["run-1", "run-1"]
    # Told in a worker thread, not on the event loop.
    assert threading.main_thread().name not in {
        thread for _, thread in before.told + after.told
    }
    [record] = caplog.records
    assert record.getMessage() == (
        "plugin broken failed in hook apptasks_run_started run=run-1"
    )
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ValueError)
    assert "not for logs" not in caplog.text
