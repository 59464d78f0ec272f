"""Outages of a few seconds: Redis restarted, PostgreSQL cut, SQLite locked.

Real API and worker processes with the stub runtime, each test with services of
its own: a private Redis that it stops and starts again, or a PostgreSQL that
it reaches through a proxy it can cut. In every outage a run in flight ends
once, with one log entry, the API answers SERVICE_UNAVAILABLE rather than
hanging, and afterwards everything works without a restart.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from tortoise import Tortoise

from apptasks import db, records
from apptasks.apps import create_app
from apptasks.errors import Unavailable
from apptasks.models import Run, Task
from apptasks.pages import create_page
from apptasks.runs import Environment, RunOrder, on_demand_order
from apptasks.settings import Settings
from apptasks.tasks import TaskInput, create_task
from tests.support.graphql import Client, new_app, new_task
from tests.support.paths import screen
from tests.support.postgres import ADMIN_DSN
from tests.support.proxy import TcpProxy
from tests.support.services import RedisServer, Service, wait_until
from workers.queue import REDIS_ANSWER_SECONDS, RunQueue

RUN_TASK = "mutation($name: String) { runTask(name: $name) { runId } }"
RUN_WITH_RESULT = "mutation($name: String!) { runTaskWithResult(name: $name) }"
RUN = "query($id: String!) { run(id: $id) { id status errorType logId } }"
RUNS = "query { runs(limit: 100) { id status } }"
LOGS = "query { taskLogs(limit: 500) { logs { type data } } }"

# The slow run lasts long enough for the outage to begin while it runs.
SLOW = {"slow": {"result": "done", "delay": 2.5}}
OUTAGE_SECONDS = 4.0
# What "promptly" means for an API that has lost a service.
PROMPT_SECONDS = REDIS_ANSWER_SECONDS + 2


def service_with(
    folder: Path, redis_url: str, database_url: str = "", **env: str
) -> Service:
    """A stub-runtime service whose `slow` task lasts `SLOW`'s delay."""
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "stub-table.json"
    table.write_text(json.dumps(SLOW))
    return Service(
        folder,
        redis_url,
        runtime="stub",
        database_url=database_url,
        extra_env={"APPTASKS_STUB_TABLE": str(table), **env},
    )


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, which it may stop and start again."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    yield server
    if server.process.poll() is None:
        server.stop()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


async def run_task(client: Client, name: str) -> str:
    run_id: str = (await client.data(RUN_TASK, name=name))["runTask"]["runId"]
    return run_id


async def wait_for_status(
    client: Client, run_id: str, statuses: set[str], seconds: float
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        run: dict[str, Any] = (await client.data(RUN, id=run_id))["run"]
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run stuck in {run['status']}"
        await asyncio.sleep(0.1)


async def entries_for(client: Client, run_id: str) -> list[dict[str, Any]]:
    logs = (await client.data(LOGS))["taskLogs"]["logs"]
    return [entry for entry in logs if entry["data"]["runId"] == run_id]


async def screen_running(service: Service, run_id: str) -> None:
    """Wait until the worker has handed the run to its runtime."""
    await asyncio.to_thread(
        wait_until,
        lambda: f"run started run={run_id}" in service.log("worker0"),
        10,
        "the run's start",
    )


async def timed_error(client: Client, query: str, **variables: Any) -> dict[str, Any]:
    """The request's one error, asserted to have come promptly."""
    started = time.monotonic()
    error = await client.error(query, **variables)
    assert time.monotonic() - started < PROMPT_SECONDS, "the API hung"
    return error


async def assert_each_run_ended_once(client: Client, run_ids: list[str]) -> None:
    """The app's runs are exactly these, completed, with one log entry each."""
    runs = (await client.data(RUNS))["runs"]
    assert sorted(run["id"] for run in runs) == sorted(run_ids)
    assert {run["status"] for run in runs} == {"COMPLETED"}
    for run_id in run_ids:
        entries = await entries_for(client, run_id)
        assert [entry["type"] for entry in entries] == ["app.task.completed"]


# Redis


async def test_a_redis_restart_mid_run_leaves_the_worker_running_and_the_run_recorded_once(  # noqa: E501
    own_redis: RedisServer, services: list[Service], tmp_path: Path
) -> None:
    # Two browsers: with one of them free, arq's loop polls the queue during
    # the outage, and loses Redis while a run goes on.
    service = service_with(tmp_path / "service", own_redis.url, APPTASKS_BROWSERS="2")
    services.append(service.start())
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="slow")
    await new_task(client, screen("hello.html"), name="quick")
    slow = await run_task(client, "slow")
    await wait_for_status(client, slow, {"RUNNING"}, 10)

    own_redis.stop()
    refused = [
        await timed_error(client, RUN_TASK, name="quick"),
        await timed_error(client, RUN_WITH_RESULT, name="quick"),
    ]
    await asyncio.sleep(OUTAGE_SECONDS)
    own_redis.restart()
    await wait_for_status(client, slow, {"COMPLETED"}, 20)
    quick = await run_task(client, "quick")
    await wait_for_status(client, quick, {"COMPLETED"}, 20)

    for error in refused:
        assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert error["extensions"]["service"] == "Redis"
        assert error["message"].startswith("Redis did not answer")
    await assert_each_run_ended_once(client, [slow, quick])
    assert service.processes["worker0"].poll() is None, "the worker exited"
    log = service.log("worker0")
    assert "queue loop stopped: Redis did not answer" in log
    assert "queue loop started again" in log
    assert log.count(f"run started run={slow}") == 1


async def test_a_run_whose_work_cannot_be_queued_is_withdrawn_and_not_accepted(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    """Redis lost between the rate check and the queueing: no run is left behind."""
    settings = Settings(data_dir=tmp_path / "data", redis_url=own_redis.url)
    await db.migrate(settings)
    await db.connect(settings)
    queue = await RunQueue.connect(settings)
    try:
        app, token = await create_app("outage")
        task = await _task(app.id, settings)
        order = await on_demand_order(
            task, {}, Environment.DRAFT, settings, token.token.name
        )

        own_redis.stop()
        started = time.monotonic()
        with pytest.raises(Unavailable) as refused:
            await queue.submit(order)
        took = time.monotonic() - started
        own_redis.restart()
        retried = await on_demand_order(
            task, {}, Environment.DRAFT, settings, token.token.name
        )
        await queue.submit(retried)

        assert took < PROMPT_SECONDS
        assert refused.value.code == "SERVICE_UNAVAILABLE"
        assert refused.value.message.startswith(
            f"Redis did not answer while queueing run {order.run_id}"
        )
        assert "the run was not accepted, and nothing was recorded" in (
            refused.value.message
        )
        assert await Run.filter(id=order.run_id).count() == 0
        assert await Run.filter(id=retried.run_id, status="queued").count() == 1
    finally:
        await queue.close()
        await db.close()


async def _task(app_id: int, settings: Settings) -> Task:
    page = await create_page(app_id, "screen", "<p>screen</p>")
    return await create_task(
        app_id, TaskInput(name="ondemand", page_id=page.id), settings
    )


# PostgreSQL


@pytest.fixture
def postgres_proxy(postgres_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy to the test's PostgreSQL database, and the URL through it."""
    port = int(ADMIN_DSN.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = TcpProxy(port).start()
    name = postgres_url.rsplit("/", 1)[1]
    yield proxy, f"postgres://postgres@127.0.0.1:{proxy.port}/{name}"
    proxy.stop()


async def test_a_postgres_outage_mid_run_delays_the_run_and_records_it_once(
    postgres_proxy: tuple[TcpProxy, str],
    postgres_url: str,
    own_redis: RedisServer,
    services: list[Service],
    tmp_path: Path,
) -> None:
    proxy, proxied_url = postgres_proxy
    service = service_with(
        tmp_path / "service", own_redis.url, database_url=proxied_url
    )
    services.append(service.start())
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="slow")
    await new_task(client, screen("hello.html"), name="quick")
    slow = await run_task(client, "slow")
    await screen_running(service, slow)

    proxy.cut()
    cut_at = time.monotonic()
    refused = [
        await timed_error(client, RUN, id=slow),
        await timed_error(client, RUN_TASK, name="quick"),
    ]
    await asyncio.sleep(OUTAGE_SECONDS - (time.monotonic() - cut_at))
    proxy.restore()
    await wait_for_status(client, slow, {"COMPLETED"}, 20)
    quick = await run_task(client, "quick")
    await wait_for_status(client, quick, {"COMPLETED"}, 20)

    for error in refused:
        assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert error["extensions"]["service"] == "the database"
        assert error["message"].startswith("the database did not answer")
    await assert_each_run_ended_once(client, [slow, quick])
    # Straight from the server, past the API: one record, one entry.
    connection = await asyncpg.connect(postgres_url, timeout=5)
    try:
        runs = await connection.fetch("SELECT id, status FROM runs")
        entries = await connection.fetchval(
            "SELECT count(*) FROM task_logs WHERE data::jsonb->>'runId' = $1", slow
        )
    finally:
        await connection.close()
    assert sorted((row["id"], row["status"]) for row in runs) == sorted(
        [(slow, "completed"), (quick, "completed")]
    )
    assert entries == 1
    log = service.log("worker0")
    assert f"the database did not answer while ending run {slow}" in log
    assert f"the database answered again while ending run {slow}" in log


async def test_an_end_whose_commit_acknowledgement_is_lost_is_recorded_once(
    postgres_proxy: tuple[TcpProxy, str],
    own_redis: RedisServer,
    services: list[Service],
    tmp_path: Path,
) -> None:
    """The run's end commits, its answer is lost, and the retry finds it done.

    The retry writes nothing more, yet knows the end for its own, so that the
    caller waiting for the result still hears of it.
    """
    proxy, proxied_url = postgres_proxy
    service = service_with(
        tmp_path / "service", own_redis.url, database_url=proxied_url
    )
    services.append(service.start())
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="slow")

    waiting = asyncio.create_task(client.execute(RUN_WITH_RESULT, name="slow"))
    await asyncio.to_thread(
        wait_until, lambda: "run started run=" in service.log("worker0"), 10, "start"
    )
    # The next transaction to commit is the run's end: nothing else writes.
    proxy.lose_reply_to(b"COMMIT")
    answer = await waiting

    assert answer == {"data": {"runTaskWithResult": "done"}}
    assert proxy.replies_lost == 1
    run_id = (await client.data(RUNS))["runs"][0]["id"]
    await assert_each_run_ended_once(client, [run_id])
    log = service.log("worker0")
    assert f"the database did not answer while ending run {run_id}" in log
    assert "run outcome dropped" not in log


async def test_a_hung_postgres_gets_a_prompt_service_unavailable_then_works_again(
    postgres_proxy: tuple[TcpProxy, str],
    own_redis: RedisServer,
    services: list[Service],
    tmp_path: Path,
) -> None:
    """A server that stops answering, rather than refusing: the timeouts end the wait.

    The URL's own `timeout` and `command_timeout` stand in for the defaults.
    """
    proxy, proxied_url = postgres_proxy
    hung_after = f"{proxied_url}?timeout=1&command_timeout=1"
    service = service_with(tmp_path / "service", own_redis.url, database_url=hung_after)
    services.append(service.start())
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="quick")

    proxy.stall()
    started = time.monotonic()
    error = await client.error(RUNS)
    took = time.monotonic() - started
    proxy.restore()
    quick = await run_task(client, "quick")
    await wait_for_status(client, quick, {"COMPLETED"}, 20)

    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert error["extensions"]["service"] == "the database"
    assert took < 4, f"the API took {took:.1f} s"
    await assert_each_run_ended_once(client, [quick])


# SQLite


@pytest.mark.parametrize(
    ("busy_timeout_ms", "retried"),
    [(None, False), (300, True)],
    ids=["within-busy-timeout", "past-busy-timeout"],
)
async def test_a_sqlite_writer_holding_the_lock_delays_a_run_without_failing_it(
    busy_timeout_ms: int | None,
    retried: bool,
    own_redis: RedisServer,
    services: list[Service],
    tmp_path: Path,
) -> None:
    """A lock held for seconds: SQLite waits out its busy timeout, then we retry."""
    folder = tmp_path / "service"
    path = folder / "data" / "apptasks.sqlite3"
    database_url = ""
    if busy_timeout_ms is not None:
        database_url = f"sqlite://{path}?busy_timeout={busy_timeout_ms}"
    service = service_with(folder, own_redis.url, database_url)
    services.append(service.start())
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="slow")
    slow = await run_task(client, "slow")
    await screen_running(service, slow)

    async with exclusive_lock(path):
        # Past the run's own delay, its end waits for the lock.
        await asyncio.sleep(OUTAGE_SECONDS)
        during = (await client.data(RUN, id=slow))["run"]["status"]
    await wait_for_status(client, slow, {"COMPLETED"}, 20)

    assert during == "RUNNING"
    await assert_each_run_ended_once(client, [slow])
    log = service.log("worker0")
    assert (f"the database did not answer while ending run {slow}" in log) is retried


@asynccontextmanager
async def exclusive_lock(path: Path) -> AsyncIterator[None]:
    """SQLite's write lock on a file, held from a connection of the test's own."""
    holder = sqlite3.connect(
        path, timeout=10, isolation_level=None, check_same_thread=False
    )
    with closing(holder):
        await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")


# Lost acknowledgements, in this process against a real SQLite file: the
# statement takes effect, then its answer is lost on the way back.


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Settings]:
    settings = Settings(data_dir=tmp_path / "data")
    await db.migrate(settings)
    await db.connect(settings)
    try:
        yield settings
    finally:
        await db.close()


def lose_answer_once(
    monkeypatch: pytest.MonkeyPatch, method: str, marker: str
) -> list[str]:
    """The next statement containing `marker` runs, then its answer is lost."""
    connection = Tortoise.get_connection("default")
    real = getattr(connection, method)
    lost: list[str] = []

    async def run_then_lose(query: str, *values: Any) -> Any:
        answer = await real(query, *values)
        if marker in query and not lost:
            lost.append(query)
            raise ConnectionResetError("the answer was lost on the way back")
        return answer

    monkeypatch.setattr(connection, method, run_then_lose)
    return lost


async def test_a_start_whose_answer_is_lost_still_takes_the_run(
    database: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = await _order(database)
    await records.accept(order)
    lost = lose_answer_once(monkeypatch, "execute_query", '"worker"')

    taken = await records.start(order.run_id, "worker-a", order.timeout)

    assert len(lost) == 1
    assert taken == order
    run = await Run.get(id=order.run_id)
    assert (run.status, run.worker) == ("running", "worker-a")


async def test_an_accept_whose_answer_is_lost_records_the_run_once(
    database: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    order = await _order(database)
    lost = lose_answer_once(monkeypatch, "execute_insert", '"runs"')

    run = await records.accept(order)

    assert len(lost) == 1
    assert run.id == order.run_id
    assert await Run.filter(task_id=order.task_id).count() == 1


async def _order(settings: Settings) -> RunOrder:
    app, token = await create_app("acks")
    task = await _task(app.id, settings)
    return await on_demand_order(
        task, {}, Environment.DRAFT, settings, token.token.name
    )
