"""Live logs and run updates over WebSocket (graphql-transport-ws).

Every test talks to a real API and worker (the stub runtime, which answers from
a table in milliseconds) through a real WebSocket client, the way a dashboard
or a script would; entries are produced by real runs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from apptasks import db, live, logs, records
from apptasks.broker import app_log_channel
from apptasks.models import App, Run, TaskLog
from apptasks.settings import Settings
from tests.support.graphql import Client, new_app, new_task
from tests.support.services import ADMIN_TOKEN, RedisServer, Service

PROTOCOL = "graphql-transport-ws"
WAIT = 15.0
# How long a test listens after the expected entries, to see that no more come.
QUIET = 1.0
SCREEN = "<!doctype html><script>Fliplet.Page.onRemoteExecution(() => 1)</script>"
STUB_TABLE = {
    "slow": {"delay": 1.5, "result": {"slow": True}},
    "broken": {"error": {"errorType": "TypeError", "errorMessage": "on purpose"}},
}
ENTRY_FIELDS = {"id", "createdAt", "type", "taskId", "data"}

TASK_LOGS = """
subscription($id: ID, $where: LogFilter, $afterId: ID) {
  taskLogs(id: $id, where: $where, afterId: $afterId) {
    id createdAt type taskId data
  }
}
"""
RUN_UPDATES = """
subscription($runId: String!) {
  runUpdates(runId: $runId) {
    runId taskId status logId duration result errorType errorMessage
  }
}
"""
LOGS = """
query($id: ID) {
  taskLogs(id: $id, limit: 500) { logs { id createdAt type taskId data } }
}
"""
RUN_WITH_RESULT = "mutation($name: String!) { runTaskWithResult(name: $name) }"
RUN = "mutation($name: String!) { runTask(name: $name) { runId } }"


@pytest.fixture(scope="module")
def live_service(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """API and worker with the stub runtime and a table of slow and failing tasks."""
    folder = tmp_path_factory.mktemp("live-service")
    table = folder / "stub-table.json"
    table.write_text(json.dumps(STUB_TABLE))
    service = Service(
        folder,
        redis_server.url,
        runtime="stub",
        extra_env={"APPTASKS_STUB_TABLE": str(table)},
    )
    service.start()
    yield service
    service.stop()


def socket_url(service: Service) -> str:
    return service.url.replace("http://", "ws://", 1) + "/graphql"


class Subscriber:
    """One graphql-transport-ws connection: subscribe, then read what arrives."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    async def subscribe(
        self, query: str, operation: str = "1", **variables: Any
    ) -> None:
        message = {"query": query, "variables": variables}
        await self.send({"id": operation, "type": "subscribe", "payload": message})

    async def send(self, message: dict[str, Any]) -> None:
        await self.connection.send(json.dumps(message))

    async def receive(self, within: float = WAIT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv(), within)
        message: dict[str, Any] = json.loads(raw)
        return message

    async def results(self, count: int, operation: str = "1") -> list[dict[str, Any]]:
        """The data of the next `count` results of one operation."""
        return [data async for data in self._results(count, operation)]

    async def _results(
        self, count: int, operation: str
    ) -> AsyncIterator[dict[str, Any]]:
        deadline = time.monotonic() + WAIT
        while count:
            message = await self.receive(max(0.01, deadline - time.monotonic()))
            assert message.get("id") == operation, message
            assert message["type"] == "next", message
            assert "errors" not in message["payload"], message
            count -= 1
            yield message["payload"]["data"]

    async def collect(
        self, until: dict[str, int], quiet: float = QUIET
    ) -> dict[str, list[dict[str, Any]]]:
        """Results by operation until each has `until[operation]`, then `quiet` s more.

        Anything that arrives in the quiet time is kept too, so that a test can
        see that nothing more came.
        """
        received: dict[str, list[dict[str, Any]]] = {name: [] for name in until}
        deadline = time.monotonic() + WAIT
        while any(len(received[name]) < want for name, want in until.items()):
            message = await self.receive(max(0.01, deadline - time.monotonic()))
            assert message["type"] == "next", message
            received[message["id"]].append(message["payload"]["data"])
        try:
            while True:
                message = await self.receive(quiet)
                received[message["id"]].append(message["payload"]["data"])
        except TimeoutError:
            pass
        return received


@asynccontextmanager
async def subscriber(
    service: Service, token: str | None, **payload: Any
) -> AsyncIterator[Subscriber]:
    """A connection acknowledged by the API for `token`."""
    init = {"authorization": f"Bearer {token}", **payload} if token else payload
    async with connect(socket_url(service), subprotocols=[PROTOCOL]) as connection:
        live = Subscriber(connection)
        await live.send({"type": "connection_init", "payload": init})
        acknowledgement = await live.receive()
        assert acknowledgement["type"] == "connection_ack", acknowledgement
        yield live


async def close_code_for(service: Service, init: dict[str, Any]) -> int | None:
    """How the API closes a connection whose connection_init payload is `init`."""
    async with connect(socket_url(service), subprotocols=[PROTOCOL]) as connection:
        await connection.send(json.dumps({"type": "connection_init", "payload": init}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(connection.recv(), WAIT)
        return connection.close_code


async def app_with_tasks(
    service: Service, *names: str
) -> tuple[Client, dict[str, str]]:
    """A new app with a task of each name; the task ids by name."""
    client = await new_app(service.url)
    ids = {}
    for name in names:
        ids[name] = (await new_task(client, SCREEN, name=name))["id"]
    return client, ids


async def run(client: Client, name: str) -> None:
    """Run the task to its end (a failure too), so that its entry is written."""
    await client.execute(RUN_WITH_RESULT, name=name)


async def stored_entries(
    client: Client, task_id: str | None = None, at_least: int = 0
) -> list[Any]:
    """The app's entries as taskLogs answers them, oldest first.

    With `at_least`, once there are that many (runs queued earlier end).
    """
    deadline = time.monotonic() + WAIT
    while True:
        data = await client.data(LOGS, id=task_id)
        entries = list(reversed(data["taskLogs"]["logs"]))
        if len(entries) >= at_least:
            return entries
        assert time.monotonic() < deadline, f"{len(entries)} entries, not {at_least}"
        await asyncio.sleep(0.05)


def ids(entries: list[dict[str, Any]]) -> list[str]:
    return [entry["id"] for entry in entries]


def entries_of(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [result["taskLogs"] for result in results]


# Authentication: the token comes in connection_init.


async def test_a_token_in_connection_init_is_acknowledged(
    live_service: Service,
) -> None:
    client = await new_app(live_service.url)

    async with subscriber(live_service, client.token) as live:
        await live.send({"type": "ping"})
        assert (await live.receive())["type"] == "pong"


@pytest.mark.parametrize(
    "init",
    [
        pytest.param({}, id="no-token"),
        pytest.param({"authorization": "Bearer apt_not_a_real_token"}, id="unknown"),
        pytest.param({"authorization": "apt_not_a_real_token"}, id="no-bearer"),
        pytest.param({"authorization": 42}, id="not-text"),
    ],
)
async def test_a_missing_or_bad_token_closes_the_socket_with_4403(
    live_service: Service, init: dict[str, Any]
) -> None:
    assert await close_code_for(live_service, init) == 4403


async def test_a_token_in_the_upgrade_headers_alone_is_not_enough(
    live_service: Service,
) -> None:
    client = await new_app(live_service.url)
    headers = {"Authorization": f"Bearer {client.token}"}

    async with connect(
        socket_url(live_service), subprotocols=[PROTOCOL], additional_headers=headers
    ) as connection:
        await connection.send(json.dumps({"type": "connection_init", "payload": {}}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(connection.recv(), WAIT)

    assert connection.close_code == 4403


async def test_revoking_the_token_closes_its_open_subscriptions(
    live_service: Service,
) -> None:
    admin = Client(live_service.url, ADMIN_TOKEN)
    created = await admin.data('mutation { createApp(name: "revoked") { app { id } } }')
    made = await admin.data(
        'mutation($app: ID!) { createToken(appId: $app, name: "dashboard")'
        " { token { id } secret } }",
        app=created["createApp"]["app"]["id"],
    )
    secret = made["createToken"]["secret"]

    async with subscriber(live_service, secret) as live:
        await live.subscribe(TASK_LOGS)
        await asyncio.sleep(0.2)
        revoked_at = time.monotonic()
        await admin.data(
            "mutation($id: ID!) { revokeToken(id: $id) { revokedAt } }",
            id=made["createToken"]["token"]["id"],
        )
        with pytest.raises(ConnectionClosed):
            await live.receive(within=10)
        closed_after = time.monotonic() - revoked_at

    assert live.connection.close_code == 4403
    assert live.connection.close_reason == "token revoked"
    assert closed_after < 5


async def test_the_legacy_graphql_ws_protocol_is_refused(live_service: Service) -> None:
    async with connect(socket_url(live_service), subprotocols=["graphql-ws"]) as old:
        # No connection_init: the API closes the socket before one could be read.
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(old.recv(), WAIT)

    assert old.subprotocol is None
    assert old.close_code == 4406


@pytest.mark.parametrize(
    "subscription",
    [
        "subscription { taskLogs { id } }",
        'subscription { runUpdates(runId: "x") { status } }',
    ],
)
@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
async def test_a_subscription_sent_over_http_is_refused_saying_where_to_go(
    live_service: Service, subscription: str, with_token: bool
) -> None:
    client = await new_app(live_service.url)
    if not with_token:
        client = Client(live_service.url, None)
    tracebacks = live_service.log("api").count("Traceback")

    error = await client.error(subscription)

    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "WebSocket" in error["message"]
    assert live_service.log("api").count("Traceback") == tracebacks


async def test_the_admin_token_cannot_subscribe_to_logs(live_service: Service) -> None:
    async with subscriber(live_service, ADMIN_TOKEN) as live:
        await live.subscribe(TASK_LOGS)
        answer = await live.receive()

    assert answer["type"] == "error"
    [error] = answer["payload"]
    assert error["extensions"]["code"] == "FORBIDDEN"
    assert "admin token" in error["message"]


# taskLogs: every new entry of the token's app, in the seed's log shape.


async def test_task_logs_delivers_each_new_entry_as_stored(
    live_service: Service,
) -> None:
    client, _ = await app_with_tasks(live_service, "alpha", "broken")

    async with subscriber(live_service, client.token) as live:
        await live.subscribe(TASK_LOGS)
        await asyncio.sleep(0.2)
        await run(client, "alpha")
        await run(client, "broken")
        received = entries_of(await live.results(2))

    assert all(set(entry) == ENTRY_FIELDS for entry in received)
    assert received == await stored_entries(client)
    assert [entry["type"] for entry in received] == [
        "app.task.completed",
        "app.task.failed",
    ]


async def test_task_logs_filters_by_task_and_by_type(live_service: Service) -> None:
    client, task_ids = await app_with_tasks(live_service, "alpha", "beta", "broken")

    async with subscriber(live_service, client.token) as live:
        await live.subscribe(TASK_LOGS, operation="all")
        await live.subscribe(TASK_LOGS, operation="alpha", id=task_ids["alpha"])
        await live.subscribe(
            TASK_LOGS, operation="failed", where={"type": "app.task.failed"}
        )
        await asyncio.sleep(0.3)
        for name in ("alpha", "beta", "broken", "alpha"):
            await run(client, name)
        received = await live.collect({"all": 4, "alpha": 2, "failed": 1})

    everything = entries_of(received["all"])
    assert everything == await stored_entries(client)
    assert entries_of(received["alpha"]) == await stored_entries(
        client, task_ids["alpha"]
    )
    [failed] = entries_of(received["failed"])
    assert failed["taskId"] == task_ids["broken"]
    assert failed["type"] == "app.task.failed"


async def test_a_subscriber_never_sees_another_apps_entries(
    live_service: Service,
) -> None:
    first, _ = await app_with_tasks(live_service, "alpha", "beta")
    second, _ = await app_with_tasks(live_service, "alpha", "beta")

    async with (
        subscriber(live_service, first.token) as first_live,
        subscriber(live_service, second.token) as second_live,
    ):
        await first_live.subscribe(TASK_LOGS)
        await second_live.subscribe(TASK_LOGS)
        await asyncio.sleep(0.3)
        await asyncio.gather(
            *(
                run(client, name)
                for _ in range(3)
                for client in (first, second)
                for name in ("alpha", "beta")
            )
        )
        first_seen, second_seen = await asyncio.gather(
            first_live.collect({"1": 6}), second_live.collect({"1": 6})
        )

    first_ids = ids(entries_of(first_seen["1"]))
    second_ids = ids(entries_of(second_seen["1"]))
    assert sorted(first_ids, key=int) == ids(await stored_entries(first))
    assert sorted(second_ids, key=int) == ids(await stored_entries(second))
    assert not set(first_ids) & set(second_ids)


async def test_resuming_with_after_id_misses_and_repeats_nothing(
    live_service: Service,
) -> None:
    client, _ = await app_with_tasks(live_service, "alpha")
    runs = 10

    async def produce() -> None:
        for _ in range(runs):
            await run(client, "alpha")
            await asyncio.sleep(0.05)

    async with subscriber(live_service, client.token) as live:
        await live.subscribe(TASK_LOGS)
        await asyncio.sleep(0.2)
        producer = asyncio.create_task(produce())
        before = entries_of(await live.results(3))

    # Entries are written while no one listens, and go on being written
    # while the subscriber comes back.
    await stored_entries(client, at_least=6)
    async with subscriber(live_service, client.token) as live:
        await live.subscribe(TASK_LOGS, afterId=before[-1]["id"])
        after = entries_of(await live.results(runs - 3))
        await producer
        extra = (await live.collect({"1": 0}))["1"]

    assert extra == []
    assert ids(before + after) == ids(await stored_entries(client))


async def test_after_id_zero_replays_the_apps_entries_oldest_first(
    live_service: Service,
) -> None:
    client, _ = await app_with_tasks(live_service, "alpha", "broken")
    for name in ("alpha", "broken", "alpha"):
        await run(client, name)

    async with subscriber(live_service, client.token) as live:
        await live.subscribe(
            TASK_LOGS, afterId="0", where={"type": "app.task.completed"}
        )
        replayed = entries_of(await live.results(2))

    stored = await stored_entries(client)
    assert replayed == [entry for entry in stored if entry["type"] != "app.task.failed"]


@pytest.mark.parametrize(
    ("variables", "quoted"),
    [
        pytest.param({"afterId": "last"}, "'last'", id="after-id"),
        pytest.param({"where": {"type": "app.task.done"}}, "app.task.done", id="type"),
    ],
)
async def test_bad_task_logs_arguments_are_refused_naming_the_value(
    live_service: Service, variables: dict[str, Any], quoted: str
) -> None:
    client = await new_app(live_service.url)

    async with subscriber(live_service, client.token) as live:
        await live.subscribe(TASK_LOGS, **variables)
        answer = await live.receive()

    assert answer["type"] == "error"
    [error] = answer["payload"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert quoted in error["message"]


async def test_entries_arrive_within_a_second_of_being_written(
    live_service: Service,
) -> None:
    client, _ = await app_with_tasks(live_service, "alpha")
    arrivals: list[float] = []

    async with subscriber(live_service, client.token) as live:
        await live.subscribe(TASK_LOGS)
        await asyncio.sleep(0.2)
        for _ in range(20):
            await client.data(RUN, name="alpha")
            [result] = await live.results(1)
            written = datetime.fromisoformat(result["taskLogs"]["createdAt"])
            arrivals.append(time.time() - written.timestamp())

    arrivals.sort()
    p99 = arrivals[int(0.99 * (len(arrivals) - 1))]
    assert p99 < 1.0, arrivals


# runUpdates: one run's status, from now to its end.


async def run_updates(
    service: Service, client: Client, run_id: str
) -> list[dict[str, Any]]:
    """Every update of the run, until the API completes the subscription."""
    updates = []
    async with subscriber(service, client.token) as live:
        await live.subscribe(RUN_UPDATES, runId=run_id)
        while (message := await live.receive())["type"] == "next":
            updates.append(message["payload"]["data"]["runUpdates"])
    assert message == {"id": "1", "type": "complete"}
    return updates


async def test_run_updates_follow_a_run_from_running_to_completed(
    live_service: Service,
) -> None:
    client, task_ids = await app_with_tasks(live_service, "slow")
    run_id = (await client.data(RUN, name="slow"))["runTask"]["runId"]

    updates = await run_updates(live_service, client, run_id)

    statuses = [update["status"] for update in updates]
    assert statuses in (["queued", "running", "completed"], ["running", "completed"])
    end = updates[-1]
    assert end["runId"] == run_id
    assert end["taskId"] == task_ids["slow"]
    assert end["result"] == {"slow": True}
    assert end["duration"] >= 1000
    [entry] = await stored_entries(client)
    assert end["logId"] == entry["id"]


async def test_run_updates_of_an_ended_run_give_its_final_status_and_end(
    live_service: Service,
) -> None:
    client, _ = await app_with_tasks(live_service, "broken")
    run_id = (await client.data(RUN, name="broken"))["runTask"]["runId"]
    await stored_entries(client, at_least=1)

    updates = await run_updates(live_service, client, run_id)

    [update] = updates
    assert update["status"] == "failed"
    assert update["errorType"] == "TypeError"
    assert update["logId"] == (await stored_entries(client))[0]["id"]


async def test_another_apps_run_is_not_found_like_an_unknown_one(
    live_service: Service,
) -> None:
    owner, _ = await app_with_tasks(live_service, "alpha")
    stranger = await new_app(live_service.url)
    run_id = (await owner.data(RUN, name="alpha"))["runTask"]["runId"]

    answers = []
    for asked in (run_id, "no-such-run"):
        async with subscriber(live_service, stranger.token) as live:
            await live.subscribe(RUN_UPDATES, runId=asked)
            answers.append(await live.receive())

    for answer, asked in zip(answers, (run_id, "no-such-run"), strict=True):
        assert answer["type"] == "error"
        [error] = answer["payload"]
        assert error["extensions"]["code"] == "NOT_FOUND"
        assert error["message"] == f"run {asked!r}: no such run in this app"


# The request limits apply to subscriptions too.


@pytest.mark.parametrize(
    ("selection", "said"),
    [
        pytest.param(" ".join(f"a{n}: id" for n in range(25)), "aliases", id="aliases"),
        pytest.param("id " * 2100, "token", id="tokens"),
    ],
)
async def test_request_limits_apply_to_subscriptions(
    live_service: Service, selection: str, said: str
) -> None:
    client = await new_app(live_service.url)

    async with subscriber(live_service, client.token) as live:
        await live.subscribe(f"subscription {{ taskLogs {{ {selection} }} }}")
        answer = await live.receive()

    assert answer["type"] == "error"
    [error] = answer["payload"]
    assert said in error["message"].lower()
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


# Where the replay meets the live side: entries written at the worst moments.
# These drive `apptasks.live.follow_logs` in this process, against a real
# database and Redis, and write entries between its steps.


@pytest.fixture
async def feed_settings(
    redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[Settings]:
    settings = Settings(
        data_dir=tmp_path,
        redis_url=redis_server.url,
        redis_prefix=f"test-{uuid.uuid4().hex[:8]}:",
    )
    await db.migrate(settings)
    await db.connect(settings)
    try:
        yield settings
    finally:
        await db.close()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    connection = Redis.from_url(redis_server.url)
    try:
        yield connection
    finally:
        await connection.aclose()


class Worker:
    """Writes and announces log entries the way a worker does."""

    def __init__(self, settings: Settings, redis: Redis, app_id: int) -> None:
        self.settings = settings
        self.redis = redis
        self.app_id = app_id

    async def write(self) -> TaskLog:
        return await TaskLog.create(
            app_id=self.app_id, task_id=1, type=logs.COMPLETED, data={}
        )

    async def announce(self, entry: TaskLog) -> None:
        channel = app_log_channel(self.settings, self.app_id)
        await self.redis.publish(channel, json.dumps(logs.log_message(entry)))


@pytest.fixture
async def worker(feed_settings: Settings, redis: Redis) -> Worker:
    app = await App.create(name="feed")
    return Worker(feed_settings, redis, app.id)


# The real replay, for the stand-ins below to call before or after their writes.
read_missed = live.missed_entries


async def take(feed: AsyncIterator[dict[str, Any]], count: int) -> list[int]:
    return [(await asyncio.wait_for(anext(feed), WAIT))["id"] for _ in range(count)]


async def test_an_entry_written_before_the_replay_is_read_comes_once(
    worker: Worker, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await worker.write()
    raced: list[TaskLog] = []

    async def written_just_before(
        selection: live.LogSelection, after_id: int
    ) -> list[TaskLog]:
        raced.append(await worker.write())
        await worker.announce(raced[0])
        return await read_missed(selection, after_id)

    monkeypatch.setattr(live, "missed_entries", written_just_before)
    selection = live.LogSelection(app_id=worker.app_id)
    async with aclosing(live.follow_logs(redis, worker.settings, selection, 0)) as feed:
        replayed = await take(feed, 2)
        later = await worker.write()
        await worker.announce(later)
        after = await take(feed, 1)

    assert replayed + after == [first.id, raced[0].id, later.id]


async def test_an_entry_written_after_the_replay_was_read_comes_live(
    worker: Worker, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await worker.write()
    raced: list[TaskLog] = []

    async def written_just_after(
        selection: live.LogSelection, after_id: int
    ) -> list[TaskLog]:
        missed = await read_missed(selection, after_id)
        raced.append(await worker.write())
        await worker.announce(raced[0])
        return missed

    monkeypatch.setattr(live, "missed_entries", written_just_after)
    selection = live.LogSelection(app_id=worker.app_id)
    async with aclosing(live.follow_logs(redis, worker.settings, selection, 0)) as feed:
        received = await take(feed, 2)

    assert received == [first.id, raced[0].id]


async def test_an_entry_committed_out_of_id_order_after_the_replay_still_comes(
    worker: Worker, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = await worker.write()
    fast = await worker.write()

    async def slow_not_committed_yet(
        selection: live.LogSelection, after_id: int
    ) -> list[TaskLog]:
        missed = await read_missed(selection, after_id)
        await worker.announce(slow)
        return [entry for entry in missed if entry.id != slow.id]

    monkeypatch.setattr(live, "missed_entries", slow_not_committed_yet)
    selection = live.LogSelection(app_id=worker.app_id)
    async with aclosing(live.follow_logs(redis, worker.settings, selection, 0)) as feed:
        received = await take(feed, 2)

    assert received == [fast.id, slow.id]


async def test_a_run_that_ends_unannounced_is_seen_in_its_record(
    worker: Worker, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "RUN_RECHECK_SECONDS", 0.2)
    await Run.create(
        id="lost-run",
        app_id=worker.app_id,
        task_id=1,
        task_name="alpha",
        mode="on-demand",
        status=records.RUNNING,
        environment="live",
    )

    updates = live.follow_run(redis, worker.settings, worker.app_id, "lost-run")
    async with aclosing(updates) as feed:
        first = await asyncio.wait_for(anext(feed), WAIT)
        # Its worker died: the run is ended in the database, and nobody says so.
        await Run.filter(id="lost-run").update(
            status=records.FAILED, error_type=records.WORKER_LOST
        )
        last = await asyncio.wait_for(anext(feed), WAIT)
        rest = [update async for update in feed]

    assert first["status"] == "running"
    assert (last["status"], last["errorType"]) == ("failed", "WorkerLost")
    assert rest == []
