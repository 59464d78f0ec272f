"""`subscribeLogs` of the browser client, over a real WebSocket in Chromium.

The page wraps the browser's WebSocket only to watch it: it records every
socket and every message the client sends, and can cut the network (new
sockets then go to a port where nothing listens) to show how the client comes
back. Runs are made through the Python test client, on the stub runtime
(its table makes the task named `broken` fail): here the browser under test is
the one running the client, not the screens.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver

from tests.sdk.browser import PageServer, chromium
from tests.support.graphql import Client, new_app, new_task
from tests.support.services import RedisServer, Service, free_port

pytestmark = pytest.mark.browser

SCRIPT_TIMEOUT = 30.0
WAIT = 15.0
QUIET = 1.0
SCREEN = "<!doctype html><script>Fliplet.Page.onRemoteExecution(() => 1)</script>"
LOGS = """
query($id: ID) {
  taskLogs(id: $id, limit: 500) { logs { id createdAt type taskId data } }
}
"""
RUN_WITH_RESULT = "mutation($name: String!) { runTaskWithResult(name: $name) }"
STUB_TABLE = {"broken": {"error": {"errorType": "TypeError", "errorMessage": "no"}}}

# Subscribes with the options given and reports once the feed is live (or
# refused). Every socket, message sent, entry, status and error stays on
# `window` for the test to read.
SUBSCRIBE_SCRIPT = """
const done = arguments[arguments.length - 1];
const [connection, options, deadEnd] = arguments;
Object.assign(window, { sockets: [], sent: [], received: [], statuses: [],
  errors: [], offline: false });
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(url, protocols) {
    super(window.offline ? deadEnd : url, protocols);
    window.sockets.push(this);
  }
  send(data) {
    window.sent.push(JSON.parse(data));
    super.send(data);
  }
};
let settled = false;
const settle = (outcome) => {
  if (!settled) { settled = true; done(JSON.stringify(outcome)); }
};
const tasks = AppTasks.connect(connection);
window.stop = tasks.subscribeLogs(Object.assign({}, options, {
  onStatus: (status) => {
    window.statuses.push(status);
    if (status === "live") { settle({ live: true }); }
  },
  onError: (error) => {
    const described = { code: error.code, message: error.message };
    window.errors.push(described);
    settle({ error: described });
  },
}), (entry) => window.received.push(entry));
"""


class LivePage:
    """A page of the test origin with one subscribeLogs feed."""

    def __init__(self, driver: webdriver.Chrome, pages: PageServer) -> None:
        self.driver = driver
        self.pages = pages

    def subscribe(self, token: str, **options: Any) -> dict[str, Any]:
        """Open a fresh page and subscribe; how it settled: live or an error."""
        self.driver.get(f"{self.pages.url}/plain.html")
        dead_end = f"ws://127.0.0.1:{free_port()}/graphql"
        outcome: dict[str, Any] = json.loads(
            self.driver.execute_async_script(
                SUBSCRIBE_SCRIPT, {"token": token}, options, dead_end
            )
        )
        return outcome

    def read(self, name: str) -> Any:
        return self.driver.execute_script(f"return window.{name};")

    def run(self, statement: str) -> None:
        self.driver.execute_script(statement)

    def wait_for(self, name: str, count: int) -> list[Any]:
        """`window[name]` once it has `count` items, then QUIET s more."""
        deadline = time.monotonic() + WAIT
        while len(self.read(name)) < count:
            assert time.monotonic() < deadline, f"{name}: {self.read(name)}"
            time.sleep(0.05)
        time.sleep(QUIET)
        items: list[Any] = self.read(name)
        return items


@pytest.fixture(scope="module")
def live_service(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """API and worker with the stub runtime, whose table fails `broken` runs."""
    folder = tmp_path_factory.mktemp("live-js-service")
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


@pytest.fixture(scope="module")
def page_server(live_service: Service) -> Iterator[PageServer]:
    server = PageServer(live_service.url)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    with chromium(SCRIPT_TIMEOUT) as chrome:
        yield chrome


@pytest.fixture
def page(driver: webdriver.Chrome, page_server: PageServer) -> Iterator[LivePage]:
    live = LivePage(driver, page_server)
    yield live
    live.run("window.stop && window.stop();")


async def app_with_tasks(
    service: Service, *names: str
) -> tuple[Client, str, dict[str, int]]:
    """A new app with a task of each name, its token, and the task ids by name."""
    client = await new_app(service.url)
    ids = {}
    for name in names:
        task = await new_task(client, SCREEN, name=name)
        ids[name] = int(task["id"])
    assert client.token is not None
    return client, client.token, ids


async def run(client: Client, *names: str) -> None:
    """Run each task to its end (failures too), so that its entry is written."""
    for name in names:
        await client.execute(RUN_WITH_RESULT, name=name)


async def stored_entries(client: Client, task_id: int | None = None) -> list[Any]:
    """The entries as getLogs answers them (ids as numbers), oldest first."""
    data = await client.data(LOGS, id=task_id)
    entries = reversed(data["taskLogs"]["logs"])
    return [
        {**entry, "id": int(entry["id"]), "taskId": int(entry["taskId"])}
        for entry in entries
    ]


async def test_subscribe_logs_calls_back_with_each_new_entry_like_get_logs(
    live_service: Service, page: LivePage
) -> None:
    client, token, _ = await app_with_tasks(live_service, "alpha", "broken")

    assert page.subscribe(token) == {"live": True}
    await run(client, "alpha", "broken")
    received = page.wait_for("received", 2)

    assert received == await stored_entries(client)
    assert [entry["type"] for entry in received] == [
        "app.task.completed",
        "app.task.failed",
    ]


async def test_subscribe_logs_filters_by_task_and_type(
    live_service: Service, page: LivePage
) -> None:
    client, token, ids = await app_with_tasks(live_service, "alpha", "beta", "broken")

    outcome = page.subscribe(
        token, id=ids["alpha"], where={"type": "app.task.completed"}
    )
    await run(client, "beta", "broken", "alpha", "beta", "alpha")
    received = page.wait_for("received", 2)

    assert outcome == {"live": True}
    assert received == await stored_entries(client, ids["alpha"])


async def test_subscribe_logs_with_after_id_replays_the_entries_after_it(
    live_service: Service, page: LivePage
) -> None:
    client, token, _ = await app_with_tasks(live_service, "alpha")
    await run(client, "alpha", "alpha", "alpha")
    stored = await stored_entries(client)

    assert page.subscribe(token, afterId=stored[0]["id"]) == {"live": True}
    received = page.wait_for("received", 2)

    assert received == stored[1:]


async def test_after_a_dropped_connection_it_resumes_after_the_last_entry(
    live_service: Service, page: LivePage
) -> None:
    client, token, _ = await app_with_tasks(live_service, "alpha")
    assert page.subscribe(token) == {"live": True}
    await run(client, "alpha", "alpha")
    before = page.wait_for("received", 2)

    # The network goes away; entries are written meanwhile, and at least one
    # attempt to come back fails before it returns.
    page.run("window.offline = true; window.sockets[0].close();")
    await run(client, "alpha", "alpha", "alpha")
    page.wait_for("sockets", 2)
    page.run("window.offline = false;")
    await run(client, "alpha", "alpha")
    received = page.wait_for("received", 7)

    assert received == await stored_entries(client)
    subscriptions = [
        message["payload"]["variables"]
        for message in page.read("sent")
        if message.get("id") == "logs" and message["type"] == "subscribe"
    ]
    assert subscriptions[-1]["afterId"] == str(before[-1]["id"])
    assert page.read("statuses").count("reconnecting") >= 2
    assert page.read("statuses")[-1] == "live"
    assert page.read("errors") == []


async def test_unsubscribing_closes_the_socket_and_stops_the_calls(
    live_service: Service, page: LivePage
) -> None:
    client, token, _ = await app_with_tasks(live_service, "alpha")
    assert page.subscribe(token) == {"live": True}
    await run(client, "alpha")
    page.wait_for("received", 1)

    page.run("window.stop();")
    await run(client, "alpha")

    assert len(page.wait_for("received", 1)) == 1
    assert page.read("statuses")[-1] == "closed"
    assert page.read("sockets.map((socket) => socket.readyState)") == [3]


async def test_a_bad_token_is_reported_once_and_not_retried(page: LivePage) -> None:
    outcome = page.subscribe("apt_not_a_real_token")

    assert outcome["error"]["code"] == "UNAUTHENTICATED"
    assert "4403" in outcome["error"]["message"]
    assert len(page.wait_for("sockets", 1)) == 1
    assert page.read("statuses")[-1] == "closed"


async def test_an_unknown_option_is_refused_at_once(
    live_service: Service, page: LivePage
) -> None:
    client = await new_app(live_service.url)
    page.driver.get(f"{page.pages.url}/plain.html")

    thrown = page.driver.execute_script(
        "try { AppTasks.connect({ token: arguments[0] })"
        ".subscribeLogs({ afterID: 3 }, () => {}); return null; }"
        " catch (error) { return { code: error.code, message: error.message }; }",
        client.token,
    )

    assert thrown["code"] == "BAD_USER_INPUT"
    assert "afterID" in thrown["message"]
