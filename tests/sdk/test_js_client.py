"""The browser client `/sdk/apptasks.js`, driven in real headless Chromium.

The page that loads the client is served from its own origin on 127.0.0.1, so
every call also proves that the API answers cross-origin requests. Screens and
apps are set up through the Python test client (pages are not part of the
seed's JavaScript API); everything a user of `Fliplet.App.Tasks` does goes
through the browser.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from selenium import webdriver

from tests.sdk.browser import PageServer, chromium
from tests.support.graphql import Client, new_app, new_task
from tests.support.paths import screen
from tests.support.services import Service, free_port

pytestmark = pytest.mark.browser

# runWithResult waits for a real run in the worker's Chromium.
SCRIPT_TIMEOUT = 60.0
LOG_WAIT = 20.0

TASK_FIELDS = {
    *("id", "name", "active", "frequency", "timezone", "timeout", "lastRunAt"),
    *("nextRunAt", "createdAt", "updatedAt", "appId", "pageId"),
}
CONTEXT_SCREEN = """<!doctype html><html><body><script>
  Fliplet.Page.onRemoteExecution(function (payload, context) {
    return { environment: context.environment, requestedBy: context.requestedBy };
  });
</script></body></html>
"""

# Connects with the options given, evaluates EXPRESSION (with `tasks` and
# `args` in scope) and reports how its promise settled, as JSON.
CALL_SCRIPT = """
const done = arguments[arguments.length - 1];
const [options, args] = arguments;
const report = (outcome) => done(JSON.stringify(outcome));
const describe = (error) => ({
  isError: error instanceof Error,
  message: error && error.message,
  code: error && error.code,
  extensions: (error && error.extensions) || null,
  errors: (error && error.errors) || null,
});
Promise.resolve()
  .then(() => {
    const tasks = AppTasks.connect(options);
    return (EXPRESSION);
  })
  .then((value) => report({ value: value === undefined ? null : value }))
  .catch((error) => report({ error: describe(error) }));
"""


class BrowserPage:
    """Runs client calls in a page of the test origin, as a web app would."""

    def __init__(self, driver: webdriver.Chrome, pages: PageServer, api: str) -> None:
        self.driver = driver
        self.pages = pages
        self.api = api

    def call(
        self,
        token: str,
        expression: str,
        *args: Any,
        page: str = "plain.html",
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        """How `expression` settled on a fresh page: {"value": v} or {"error": e}."""
        self.driver.get(f"{self.pages.url}/{page}")
        options = {"token": token, "endpoint": endpoint}
        script = CALL_SCRIPT.replace("EXPRESSION", expression)
        outcome: dict[str, Any] = json.loads(
            self.driver.execute_async_script(script, options, list(args))
        )
        return outcome

    def resolved(self, token: str, expression: str, *args: Any, **loading: Any) -> Any:
        outcome = self.call(token, expression, *args, **loading)
        assert "error" not in outcome, outcome["error"]
        return outcome["value"]

    def rejected(
        self, token: str, expression: str, *args: Any, **loading: Any
    ) -> dict[str, Any]:
        outcome = self.call(token, expression, *args, **loading)
        assert "error" in outcome, f"resolved with {outcome['value']!r}"
        error: dict[str, Any] = outcome["error"]
        assert error["isError"], error
        return error


@pytest.fixture(scope="module")
def page_server(chrome_service: Service) -> Iterator[PageServer]:
    server = PageServer(chrome_service.url)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    with chromium(SCRIPT_TIMEOUT) as chrome:
        yield chrome


@pytest.fixture
def browser(
    driver: webdriver.Chrome, page_server: PageServer, chrome_service: Service
) -> BrowserPage:
    return BrowserPage(driver, page_server, chrome_service.url)


@pytest.fixture
async def client(chrome_service: Service) -> Client:
    return await new_app(chrome_service.url)


def token(client: Client) -> str:
    assert client.token is not None
    return client.token


async def published_screen(client: Client, html: str) -> str:
    """The id of a new screen with `html`, published."""
    created = await client.data(
        'mutation($html: String!) { createPage(input: {name: "screen", html: $html})'
        " { id } }",
        html=html,
    )
    page_id: str = created["createPage"]["id"]
    await client.data("mutation($id: ID!) { publishPage(id: $id) { id } }", id=page_id)
    return page_id


# Managing tasks: create, get, update, remove.


async def test_create_makes_an_on_demand_task_for_a_published_screen(
    client: Client, browser: BrowserPage
) -> None:
    page_id = await published_screen(client, screen("hello.html"))

    task = browser.resolved(
        token(client),
        "Fliplet.App.Tasks.create({ name: 'hello', pageId: args[0] })",
        page_id,
    )

    assert set(task) == TASK_FIELDS
    assert task["name"] == "hello"
    assert task["pageId"] == int(page_id), "ids are numbers, as in the seed"
    assert isinstance(task["id"], int)
    assert task["active"] is True
    assert task["frequency"] is None
    assert task["nextRunAt"] is None


async def test_get_lists_the_apps_tasks_with_last_and_next_run(
    client: Client, browser: BrowserPage
) -> None:
    created = await new_task(client, screen("hello.html"), name="hello")

    tasks = browser.resolved(token(client), "Fliplet.App.Tasks.get()")

    assert [task["id"] for task in tasks] == [int(created["id"])]
    assert set(tasks[0]) == TASK_FIELDS
    assert tasks[0]["lastRunAt"] is None
    assert tasks[0]["nextRunAt"] is None


async def test_update_by_id_with_a_frequency_schedules_the_next_run(
    client: Client, browser: BrowserPage
) -> None:
    created = await new_task(client, screen("hello.html"), name="hello")

    task = browser.resolved(
        token(client),
        "Fliplet.App.Tasks.update(args[0],"
        " { frequency: '0 9 * * *', timezone: 'Europe/London' })",
        int(created["id"]),
    )

    assert task["frequency"] == "0 9 * * *"
    assert task["timezone"] == "Europe/London"
    next_run = datetime.fromisoformat(task["nextRunAt"])
    in_london = next_run.astimezone(ZoneInfo("Europe/London"))
    assert (in_london.hour, in_london.minute) == (9, 0)


async def test_update_by_name_with_a_null_frequency_makes_it_on_demand(
    client: Client, browser: BrowserPage
) -> None:
    await new_task(
        client,
        screen("hello.html"),
        name="nightly",
        frequency="0 2 * * *",
        timezone="Europe/London",
    )

    task = browser.resolved(
        token(client), "Fliplet.App.Tasks.update('nightly', { frequency: null })"
    )

    assert task["frequency"] is None
    assert task["nextRunAt"] is None
    assert task["timezone"] == "Europe/London"  # left out, so left alone


async def test_a_string_of_digits_names_a_task_it_is_never_an_id(
    client: Client, browser: BrowserPage
) -> None:
    created = await new_task(client, screen("hello.html"), name="hello")

    error = browser.rejected(
        token(client),
        "Fliplet.App.Tasks.update(args[0], { active: false })",
        created["id"],
    )

    assert error["code"] == "NOT_FOUND"
    assert created["id"] in error["message"]


async def test_remove_by_name_then_get_no_longer_lists_it(
    client: Client, browser: BrowserPage
) -> None:
    created = await new_task(client, screen("hello.html"), name="hello")

    removed = browser.resolved(token(client), "Fliplet.App.Tasks.remove('hello')")
    tasks = browser.resolved(token(client), "Fliplet.App.Tasks.get()")

    assert removed == {"id": int(created["id"]), "name": "hello"}
    assert tasks == []


# Running tasks and reading their logs.


async def test_run_with_result_resolves_with_the_hello_screens_value(
    client: Client, browser: BrowserPage
) -> None:
    await new_task(client, screen("hello.html"), name="hello")

    result = browser.resolved(
        token(client), "Fliplet.App.Tasks.runWithResult('hello', { any: 'thing' })"
    )

    assert result == {"a": 1, "b": 2}


async def test_run_with_result_by_id_passes_the_payload_to_the_screen(
    client: Client, browser: BrowserPage
) -> None:
    created = await new_task(client, screen("echo.html"), name="echo")
    payload = {"text": "héllo ✓", "nested": {"list": [1, 2.5, None, True]}}

    result = browser.resolved(
        token(client),
        "Fliplet.App.Tasks.runWithResult(args[0], args[1])",
        int(created["id"]),
        payload,
    )

    assert result["received"] == payload


async def test_run_options_choose_the_draft_and_name_the_caller(
    client: Client, browser: BrowserPage
) -> None:
    await new_task(client, CONTEXT_SCREEN, name="context", publish=False)

    result = browser.resolved(
        token(client),
        "Fliplet.App.Tasks.runWithResult('context', {},"
        " { environment: 'DRAFT', caller: { userId: 7 } })",
    )

    assert result["environment"] == "draft"
    assert result["requestedBy"]["caller"] == {"userId": 7}


async def test_run_resolves_once_queued_with_a_run_id(
    client: Client, browser: BrowserPage
) -> None:
    created = await new_task(client, screen("hello.html"), name="hello")

    receipt = browser.resolved(token(client), "Fliplet.App.Tasks.run('hello')")

    assert set(receipt) == {"runId", "taskId", "queuedAt"}
    assert receipt["runId"]
    assert receipt["taskId"] == int(created["id"])


async def test_get_logs_eventually_returns_the_completed_run(
    client: Client, browser: BrowserPage
) -> None:
    created = await new_task(client, screen("hello.html"), name="hello")
    receipt = browser.resolved(token(client), "Fliplet.App.Tasks.run('hello')")
    ask_for_logs = (
        "Fliplet.App.Tasks.getLogs("
        "{ id: args[0], limit: 10, where: { type: 'app.task.completed' } })"
    )

    deadline = asyncio.get_running_loop().time() + LOG_WAIT
    answer = browser.resolved(token(client), ask_for_logs, int(created["id"]))
    while answer["count"] == 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
        answer = browser.resolved(token(client), ask_for_logs, int(created["id"]))

    assert answer["count"] == 1
    [entry] = answer["logs"]
    assert set(entry) == {"id", "createdAt", "type", "taskId", "data"}
    assert entry["type"] == "app.task.completed"
    assert entry["taskId"] == int(created["id"])
    assert entry["data"]["mode"] == "on-demand"
    assert entry["data"]["runId"] == receipt["runId"]


# Failures: each rejects with an Error carrying the server's code.


async def test_a_throwing_screen_rejects_with_task_failed_and_its_error_type(
    client: Client, browser: BrowserPage
) -> None:
    await new_task(client, screen("throws.html"), name="mailer")

    error = browser.rejected(
        token(client),
        "Fliplet.App.Tasks.runWithResult('mailer', { Email: 'someone@example.com' })",
    )

    assert error["code"] == "TASK_FAILED"
    assert error["extensions"]["errorType"] == "TypeError"
    assert "sendEmail" in error["extensions"]["errorMessage"]
    assert error["message"]
    assert [each["extensions"]["code"] for each in error["errors"]] == ["TASK_FAILED"]


async def test_a_bad_token_rejects_with_unauthenticated(browser: BrowserPage) -> None:
    error = browser.rejected("apt_not_a_real_token", "Fliplet.App.Tasks.get()")

    assert error["code"] == "UNAUTHENTICATED"
    assert error["message"]


async def test_a_bad_frequency_rejects_with_bad_user_input_quoting_it(
    client: Client, browser: BrowserPage
) -> None:
    page_id = await published_screen(client, screen("hello.html"))

    error = browser.rejected(
        token(client),
        "Fliplet.App.Tasks.create({ name: 'odd', pageId: args[0],"
        " frequency: '61 * * * *' })",
        page_id,
    )

    assert error["code"] == "BAD_USER_INPUT"
    assert "61 * * * *" in error["message"]


@pytest.mark.parametrize(
    "kilobytes",
    [
        pytest.param(100, id="over-payload-limit"),
        pytest.param(300, id="over-body-limit"),
    ],
)
async def test_a_payload_over_the_limit_rejects_with_payload_too_large(
    client: Client, browser: BrowserPage, kilobytes: int
) -> None:
    await new_task(client, screen("echo.html"), name="echo")

    error = browser.rejected(
        token(client),
        "Fliplet.App.Tasks.run('echo', { text: 'x'.repeat(args[0] * 1024) })",
        kilobytes,
    )

    assert error["code"] == "PAYLOAD_TOO_LARGE", error["message"]


async def test_a_misspelt_task_field_rejects_naming_the_field(
    client: Client, browser: BrowserPage
) -> None:
    page_id = await published_screen(client, screen("hello.html"))

    error = browser.rejected(
        token(client),
        "Fliplet.App.Tasks.create({ name: 'odd', pageId: args[0],"
        " frecuency: '0 9 * * *' })",
        page_id,
    )

    assert error["code"] != "INTERNAL_SERVER_ERROR"
    assert "frecuency" in error["message"]


async def test_an_unknown_option_is_refused_before_anything_is_sent(
    client: Client, browser: BrowserPage
) -> None:
    error = browser.rejected(token(client), "Fliplet.App.Tasks.getLogs({ limt: 10 })")

    assert error["code"] == "BAD_USER_INPUT"
    assert "limt" in error["message"]


async def test_an_unreachable_endpoint_rejects_with_network_error(
    browser: BrowserPage,
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}/graphql"

    error = browser.rejected("any", "tasks.get()", endpoint=nobody)

    assert error["code"] == "NETWORK_ERROR"
    assert nobody in error["message"]


async def test_an_endpoint_that_is_not_graphql_rejects_with_its_http_status(
    browser: BrowserPage,
) -> None:
    not_graphql = f"{browser.pages.url}/not-graphql"

    error = browser.rejected("any", "tasks.get()", endpoint=not_graphql)

    assert error["code"] == "HTTP_404"
    assert error["extensions"] == {"code": "HTTP_404"}
    assert "nothing here" in error["message"]  # what the server said, in short


# Connecting: where the client talks to, and Fliplet.App.Tasks.


async def test_the_default_endpoint_is_the_api_the_script_came_from(
    client: Client, browser: BrowserPage
) -> None:
    await new_task(client, screen("hello.html"), name="hello")

    seen = browser.resolved(
        token(client),
        "tasks.get().then((list) => ({ origin: location.origin, names: list.map("
        "(task) => task.name) }))",
    )

    assert urlsplit(seen["origin"]).port != urlsplit(browser.api).port  # cross-origin
    assert seen["names"] == ["hello"]


async def test_connect_installs_the_client_as_fliplet_app_tasks_when_free(
    client: Client, browser: BrowserPage
) -> None:
    installed = browser.resolved(token(client), "Fliplet.App.Tasks === tasks")

    assert installed is True


async def test_connect_never_replaces_the_pages_own_fliplet_app_tasks(
    client: Client, browser: BrowserPage
) -> None:
    await new_task(client, screen("hello.html"), name="hello")

    seen = browser.resolved(
        token(client),
        "tasks.get().then((list) => ({ pages: Fliplet.App.Tasks,"
        " names: list.map((task) => task.name) }))",
        page="own-tasks.html",
    )

    assert seen["pages"] == {"ownedByThePage": True}
    assert seen["names"] == ["hello"]


async def test_an_id_from_get_can_be_passed_back_as_it_is(
    client: Client, browser: BrowserPage
) -> None:
    await new_task(client, screen("hello.html"), name="hello")

    task = browser.resolved(
        token(client),
        "Fliplet.App.Tasks.get().then(function (tasks) {"
        " return Fliplet.App.Tasks.update(tasks[0].id, { active: false }); })",
    )

    assert task["name"] == "hello"
    assert task["active"] is False
