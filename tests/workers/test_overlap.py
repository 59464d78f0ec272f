"""A scheduled fire starts nothing while the task's previous scheduled run goes on."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.graphql import new_app, new_task
from tests.support.services import Service
from tests.workers.support import (
    MINUTE,
    instant,
    ledger,
    scheduled_runs,
    sleep_until,
    start_early_in_a_minute,
)

HELLO = "<script>Fliplet.Page.onRemoteExecution(() => 'hi')</script>"


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_fire_is_skipped_while_the_previous_scheduled_run_is_running(
    make_service: Any, tmp_path: Path
) -> None:
    # A run of 70 s, longer than the minute between fires; two browsers, so
    # that the second fire's job is taken while the first run goes on.
    table = tmp_path / "stub.json"
    table.write_text(json.dumps({"slow": {"delay": 70, "result": "done"}}))
    service: Service = make_service(
        runtime="stub",
        extra_env={
            "APPTASKS_STUB_TABLE": str(table),
            "APPTASKS_MAX_TIMEOUT": "90",
            "APPTASKS_BROWSERS": "2",
        },
    ).start()
    client = await new_app(service.url)
    await start_early_in_a_minute(50)
    task = await new_task(client, HELLO, name="slow", frequency="* * * * *", timeout=80)
    first = instant(task["nextRunAt"])

    await sleep_until(first + MINUTE + timedelta(seconds=3))

    assert await ledger(client, task["id"]) == [
        (first, "RAN", None),
        (first + MINUTE, "SKIPPED", "overlap"),
    ]
    runs = scheduled_runs(service, task["id"])
    assert [(fire_at, status) for fire_at, status, _ in runs] == [(first, "running")]
    run_id = (await client.data(_FIRES, id=task["id"]))["task"]["fires"][-1]["runId"]
    assert (
        f"fire skipped task=slow fire_at={(first + MINUTE).isoformat()} "
        f"reason=overlap running={run_id}"
    ) in service.log("worker0")


_FIRES = "query($id: ID!) { task(id: $id) { fires { runId } } }"
