"""Runs as records: statuses, cancelling, worker loss, graceful stop, RUN_PENDING.

Real API and worker processes, real Redis and SQLite. The stub runtime stands in
for the browser: what is tested here is what surrounds a runtime.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.graphql import Client, new_app, new_task
from tests.support.paths import screen
from tests.support.services import Service, wait_until

RUN_TASK = "mutation($name: String) { runTask(name: $name) { runId } }"
RUN = "query($id: String!) { run(id: $id) { id status errorType logId startedAt } }"
RUNS = """
query($taskId: ID, $status: RunStatus) {
  runs(taskId: $taskId, status: $status) { id status }
}
"""
RUNS_STARTED = "query { runs(limit: 100) { mode startedAt } }"
CANCEL = "mutation($id: String!) { cancelRun(id: $id) { id status errorType } }"
LOGS = "query { taskLogs(limit: 500) { logs { type data } } }"

ServiceFactory = Callable[..., Service]


def stub_service(
    make_service: ServiceFactory, tmp_path: Path, table: dict[str, Any], **env: str
) -> Service:
    path = tmp_path / "stub-table.json"
    path.write_text(json.dumps(table))
    return make_service(
        runtime="stub", extra_env={"APPTASKS_STUB_TABLE": str(path), **env}
    )


async def run_task(client: Client, name: str) -> str:
    data = await client.data(RUN_TASK, name=name)
    run_id: str = data["runTask"]["runId"]
    return run_id


async def status_of(client: Client, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = (await client.data(RUN, id=run_id))["run"]
    return run


async def wait_for_status(
    client: Client, run_id: str, statuses: set[str], seconds: float
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        run = await status_of(client, run_id)
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run stuck in {run['status']}"
        await asyncio.sleep(0.1)


async def entries_for(client: Client, run_id: str) -> list[dict[str, Any]]:
    logs = (await client.data(LOGS))["taskLogs"]["logs"]
    return [entry for entry in logs if entry["data"]["runId"] == run_id]


async def test_a_run_is_a_record_from_queued_to_completed(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    service = stub_service(make_service, tmp_path, {}).start()
    client = await new_app(service.url)
    task = await new_task(client, screen("hello.html"), name="hello")

    run_id = await run_task(client, "hello")
    run = await wait_for_status(client, run_id, {"COMPLETED"}, 10)

    assert run["logId"] is not None and run["startedAt"] is not None
    listed = (await client.data(RUNS, taskId=task["id"], status="COMPLETED"))["runs"]
    assert [item["id"] for item in listed] == [run_id]
    assert (await client.data(RUNS, status="QUEUED"))["runs"] == []
    assert len(await entries_for(client, run_id)) == 1


async def test_another_apps_run_is_not_found(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    service = stub_service(make_service, tmp_path, {}).start()
    owner = await new_app(service.url, "owner")
    stranger = await new_app(service.url, "stranger")
    await new_task(owner, screen("hello.html"), name="hello")
    run_id = await run_task(owner, "hello")

    for query in (RUN, CANCEL):
        error = await stranger.error(query, id=run_id)
        assert error["extensions"]["code"] == "NOT_FOUND"
    assert (await stranger.data(RUNS))["runs"] == []


BUNDLE = "query($run: String!) { failureBundle(runId: $run) { runId } }"


async def test_a_queued_run_cancelled_never_runs(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    service = stub_service(make_service, tmp_path, {}).start(workers=0)
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="hello")
    run_id = await run_task(client, "hello")

    cancelled = (await client.data(CANCEL, id=run_id))["cancelRun"]
    service.start_worker("worker0")
    await asyncio.sleep(1.0)

    assert cancelled["status"] == "CANCELLED"
    assert (await status_of(client, run_id))["status"] == "CANCELLED"
    entries = await entries_for(client, run_id)
    assert [(e["type"], e["data"]["errorType"]) for e in entries] == [
        ("app.task.failed", "Cancelled")
    ]
    assert f"run started run={run_id}" not in service.log("worker0")
    again = await client.error(CANCEL, id=run_id)
    assert again["extensions"]["code"] == "BAD_USER_INPUT"
    assert "already ended (cancelled)" in again["message"]


async def test_a_running_run_cancelled_stops_and_its_worker_goes_on(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    table = {"slow": {"result": "late", "delay": 8}}
    service = stub_service(make_service, tmp_path, table).start()
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="slow", timeout=10)
    await new_task(client, screen("hello.html"), name="quick")
    run_id = await run_task(client, "slow")
    await wait_for_status(client, run_id, {"RUNNING"}, 10)

    cancelled = (await client.data(CANCEL, id=run_id))["cancelRun"]
    wait_until(
        lambda: f"run cancel requested run={run_id}" in service.log("worker0"),
        5,
        "the worker to stop the run",
    )
    quick = await run_task(client, "quick")
    await wait_for_status(client, quick, {"COMPLETED"}, 5)

    assert cancelled["status"] == "CANCELLED"
    assert cancelled["errorType"] == "Cancelled"
    [entry] = await entries_for(client, run_id)
    assert (await status_of(client, run_id))["status"] == "CANCELLED"
    # The page never answered: there is no bundle, and the entry says so.
    assert entry["data"]["bundle"] is False
    no_bundle = await client.error(BUNDLE, run=run_id)
    assert no_bundle["extensions"]["code"] == "NOT_FOUND"


async def test_run_pending_carries_the_run_id_and_the_run_goes_on(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    service = stub_service(make_service, tmp_path, {}, APPTASKS_WAIT_SLACK="1")
    service.start(workers=0)
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="hello")

    started = time.monotonic()
    error = await client.error(
        'mutation { runTaskWithResult(name: "hello") }',
    )
    waited = time.monotonic() - started
    service.start_worker("worker0")

    assert error["extensions"]["code"] == "RUN_PENDING"
    assert waited < 3
    run_id = error["extensions"]["runId"]
    await wait_for_status(client, run_id, {"COMPLETED"}, 10)


async def test_a_queued_run_survives_its_dead_worker(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    service = stub_service(make_service, tmp_path, {}).start()
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="hello")
    service.processes["worker0"].kill()
    service.processes["worker0"].wait()

    run_id = await run_task(client, "hello")
    await asyncio.sleep(0.5)
    assert (await status_of(client, run_id))["status"] == "QUEUED"
    service.start_worker("worker1")

    await wait_for_status(client, run_id, {"COMPLETED"}, 10)
    assert len(await entries_for(client, run_id)) == 1


async def test_sigterm_lets_the_run_in_flight_finish(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    table = {"slow": {"result": "done", "delay": 3}}
    service = stub_service(make_service, tmp_path, table).start()
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="slow")
    run_id = await run_task(client, "slow")
    await wait_for_status(client, run_id, {"RUNNING"}, 10)

    worker = service.processes["worker0"]
    worker.send_signal(signal.SIGTERM)
    await asyncio.to_thread(worker.wait, 20)

    run = await status_of(client, run_id)
    assert run["status"] == "COMPLETED"
    assert worker.returncode == 0
    assert len(await entries_for(client, run_id)) == 1


async def test_a_worker_killed_anywhere_in_a_run_loses_nothing_and_doubles_nothing(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    """SIGKILL at random points: before, during and right after the handler.

    Every run ends exactly once, with one log entry: completed when the worker
    recorded it in time, otherwise failed with WorkerLost within the run's
    limit plus the lease; no run is started twice.
    """
    table = {"work": {"result": "done", "delay": 1.0}}
    service = stub_service(make_service, tmp_path, table).start()
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="work", timeout=2)
    chooser = random.Random(20261204)
    outcomes: list[str] = []

    for attempt in range(6):
        worker_name = f"worker{attempt}"
        run_id = await run_task(client, "work")
        await wait_for_status(client, run_id, {"RUNNING", "COMPLETED"}, 10)
        await asyncio.sleep(chooser.uniform(0.0, 1.2))
        service.processes[worker_name].kill()
        service.processes[worker_name].wait()
        service.start_worker(f"worker{attempt + 1}")

        run = await wait_for_status(client, run_id, {"COMPLETED", "FAILED"}, 2 + 5 + 5)
        outcomes.append(run["errorType"] or "completed")
        entries = await entries_for(client, run_id)
        assert len(entries) == 1, entries
        started_lines = sum(
            service.log(f"worker{n}").count(f"run started run={run_id}")
            for n in range(attempt + 2)
        )
        assert started_lines == 1

    assert "WorkerLost" in outcomes


async def test_logs_are_pruned_by_count_per_task_keeping_the_newest(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    env = {"APPTASKS_LOG_MAX_PER_TASK": "3", "APPTASKS_PRUNE_INTERVAL": "1"}
    service = stub_service(make_service, tmp_path, {}, **env).start()
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="hello")
    run_ids = [await run_task(client, "hello") for _ in range(6)]
    for run_id in run_ids:
        await wait_for_status(client, run_id, {"COMPLETED"}, 10)

    async def kept() -> list[str]:
        logs = (await client.data(LOGS))["taskLogs"]["logs"]
        return [entry["data"]["runId"] for entry in logs]

    for _ in range(25):
        if len(await kept()) <= 3:
            break
        await asyncio.sleep(0.2)
    assert await kept() == run_ids[:2:-1]


async def test_logs_and_runs_are_pruned_by_age(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    # 0.00003 days is about 2.6 s.
    env = {"APPTASKS_LOG_MAX_AGE_DAYS": "0.00003", "APPTASKS_PRUNE_INTERVAL": "1"}
    service = stub_service(make_service, tmp_path, {}, **env).start()
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="hello")
    run_id = await run_task(client, "hello")
    await wait_for_status(client, run_id, {"COMPLETED"}, 10)
    assert len(await entries_for(client, run_id)) == 1

    for _ in range(30):
        if not (await client.execute(RUN, id=run_id)).get("data"):
            break
        await asyncio.sleep(0.3)
    error = await client.error(RUN, id=run_id)
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert await entries_for(client, run_id) == []


@pytest.mark.slow
async def test_an_on_demand_run_does_not_wait_behind_scheduled_fires(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    """15 scheduled fires of 2 s each queue at the minute on a one-run worker.

    An on-demand run asked for just after them must start next, ahead of the
    ~28 s of scheduled work still queued.
    """
    table = {f"cron{n}": {"result": n, "delay": 2} for n in range(15)}
    service = stub_service(make_service, tmp_path, table).start()
    clients = [await new_app(service.url, f"app{n}") for n in range(4)]
    # All 15 tasks must first fire at the same minute: not across its turn.
    if time.time() % 60 > 45:
        await asyncio.sleep(61 - time.time() % 60)
    for number in range(15):
        owner = clients[number % 3]
        await new_task(
            owner, screen("hello.html"), name=f"cron{number}", frequency="* * * * *"
        )
    await new_task(clients[3], screen("hello.html"), name="now")
    # Just after the next minute, while the fires fill the queue.
    await asyncio.sleep(61 - time.time() % 60)

    started = time.monotonic()
    await clients[3].data('mutation { runTaskWithResult(name: "now") }')
    waited = time.monotonic() - started

    runs = await every_run(clients, until=16, seconds=45)
    on_demand = next(run for run in runs if run["mode"] == "on-demand")
    scheduled = [run["startedAt"] for run in runs if run["mode"] == "scheduled"]
    after = [moment for moment in scheduled if moment > on_demand["startedAt"]]
    assert len(after) >= 12, (on_demand, sorted(scheduled))
    assert waited < 4.5, f"the on-demand run waited {waited:.1f} s"


async def every_run(
    clients: list[Client], until: int, seconds: float
) -> list[dict[str, Any]]:
    """The runs of all the apps, once there are `until` started ones."""
    runs: list[dict[str, Any]] = []
    for _ in range(int(seconds / 0.5)):
        runs = []
        for client in clients:
            runs += (await client.data(RUNS_STARTED))["runs"]
        if sum(run["startedAt"] is not None for run in runs) >= until:
            break
        await asyncio.sleep(0.5)
    return runs
