"""Every fire runs exactly once with three workers racing for it.

Three real worker processes share one SQLite database (WAL) and one Redis, and
each scans and queues every fire; thirty every-minute tasks fire three times.
The ledger, the run records, the log entries and the workers' log lines must
all tell the same story: each expected fire ran once, none twice, none missing.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from tests.support.graphql import new_app, new_task
from tests.workers.support import (
    MINUTE,
    fire_lines,
    instant,
    ledger,
    query,
    sleep_until,
    start_early_in_a_minute,
)

HELLO = "<script>Fliplet.Page.onRemoteExecution(() => 'hi')</script>"
APPS = 6
TASKS_PER_APP = 5
FIRES = 3
WORKERS = ("worker0", "worker1", "worker2")


@pytest.mark.slow
@pytest.mark.timeout(330)
async def test_three_workers_run_every_fire_of_thirty_tasks_exactly_once(
    make_service: Any,
) -> None:
    service = make_service(runtime="stub").start(workers=len(WORKERS))
    await start_early_in_a_minute(35)
    tasks = []
    for app in range(APPS):
        client = await new_app(service.url, name=f"app{app}")
        for number in range(TASKS_PER_APP):
            task = await new_task(
                client, HELLO, name=f"t{app}_{number}", frequency="* * * * *"
            )
            tasks.append((client, task))
    first = {instant(task["nextRunAt"]) for _, task in tasks}
    assert len(first) == 1, "every task must start at the same minute"
    fire_times = [min(first) + n * MINUTE for n in range(FIRES)]
    expected = {(int(task["id"]), fire) for _, task in tasks for fire in fire_times}

    await sleep_until(fire_times[-1] + timedelta(seconds=8))

    for client, task in tasks:
        rows = [
            row for row in await ledger(client, task["id"]) if row[0] <= fire_times[-1]
        ]
        assert rows == [(fire, "RAN", None) for fire in fire_times], task["name"]
    runs = Counter(
        (task_id, instant(fire_at))
        for task_id, fire_at in query(
            service,
            "SELECT task_id, fire_at FROM runs WHERE mode = 'scheduled' "
            "AND status = 'completed'",
        )
        if instant(fire_at) <= fire_times[-1]
    )
    assert set(runs) == expected and set(runs.values()) == {1}
    # Each ledger row names the run of its own task and fire time.
    assert query(service, "SELECT DISTINCT outcome FROM fires") == [("ran",)]
    assert query(
        service,
        "SELECT COUNT(*) FROM fires LEFT JOIN runs ON runs.id = fires.run_id "
        "AND runs.task_id = fires.task_id AND runs.fire_at = fires.fire_at "
        "WHERE runs.id IS NULL",
    ) == [(0,)]
    entries = Counter(
        (task_id, instant(scheduled_for))
        for task_id, scheduled_for in query(
            service,
            "SELECT task_id, json_extract(data, '$.scheduledFor') FROM task_logs",
        )
        if instant(scheduled_for) <= fire_times[-1]
    )
    assert set(entries) == expected and set(entries.values()) == {1}

    lines = fire_lines(service, *WORKERS)
    fired = Counter(line.split("fire_at=")[1].split()[0] for line in lines)
    wanted = {fire.isoformat() for fire in fire_times}
    assert {when: count for when, count in fired.items() if when in wanted} == {
        when: len(tasks) for when in wanted
    }
    busy = [worker for worker in WORKERS if fire_lines(service, worker)]
    assert len(busy) >= 2, "the workers did not share the fires"
