"""The task API's calls, as the seed's Fliplet.App.Tasks users meet them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.support.graphql import Client, new_app, new_task
from tests.support.services import Service

HELLO = "<script>Fliplet.Page.onRemoteExecution(() => 1)</script>"
TASK_FIELDS = (
    "id name active frequency timezone timeout lastRunAt nextRunAt createdAt "
    "updatedAt appId pageId"
)
UPDATE = f"""
mutation($id: ID, $name: String, $input: UpdateTaskInput!) {{
  updateTask(id: $id, name: $name, input: $input) {{ {TASK_FIELDS} }}
}}
"""
CREATE = f"""
mutation($input: CreateTaskInput!) {{ createTask(input: $input) {{ {TASK_FIELDS} }} }}
"""


@pytest.fixture
async def client(stub_service: Service) -> Client:
    return await new_app(stub_service.url)


async def _page(client: Client, html: str = HELLO) -> str:
    data = await client.data(
        'mutation($html: String!) { createPage(input: {name: "s", html: $html}) '
        "{ id } }",
        html=html,
    )
    page_id: str = data["createPage"]["id"]
    return page_id


async def test_create_task_has_every_field_of_the_seed_with_defaults(
    client: Client,
) -> None:
    page_id = await _page(client)

    task = (await client.data(CREATE, input={"name": "nightly", "pageId": page_id}))[
        "createTask"
    ]

    assert task["name"] == "nightly"
    assert task["pageId"] == page_id
    assert task["active"] is True
    assert task["frequency"] is None
    assert task["timezone"] == "+00"
    assert task["timeout"] == 10
    assert task["lastRunAt"] is None and task["nextRunAt"] is None
    assert task["createdAt"] and task["updatedAt"] and task["appId"]
    listed = (await client.data(f"{{ tasks {{ {TASK_FIELDS} }} }}"))["tasks"]
    assert listed == [task]
    by_name = await client.data(f'{{ task(name: "nightly") {{ {TASK_FIELDS} }} }}')
    assert by_name["task"] == task


@pytest.mark.parametrize(
    ("timezone", "offset"),
    [
        ("+00", timedelta(0)),
        ("+05:30", timedelta(hours=5, minutes=30)),
        ("+0530", timedelta(hours=5, minutes=30)),
        ("-08", timedelta(hours=-8)),
        ("-08:00", timedelta(hours=-8)),
        ("Z", timedelta(0)),
        ("UTC", timedelta(0)),
    ],
)
async def test_a_scheduled_task_fires_next_at_its_local_time_in_utc(
    client: Client, timezone: str, offset: timedelta
) -> None:
    page_id = await _page(client)

    task = (
        await client.data(
            CREATE,
            input={
                "name": "daily",
                "pageId": page_id,
                "frequency": "30 9 * * *",
                "timezone": timezone,
            },
        )
    )["createTask"]

    fire = datetime.fromisoformat(task["nextRunAt"])
    local = fire + offset
    assert fire.utcoffset() == timedelta(0)
    assert (local.hour, local.minute) == (9, 30)
    assert timedelta(0) < fire - datetime.now(fire.tzinfo) <= timedelta(days=1)


async def test_an_iana_zone_follows_that_zone(client: Client) -> None:
    page_id = await _page(client)

    task = (
        await client.data(
            CREATE,
            input={
                "name": "london",
                "pageId": page_id,
                "frequency": "0 9 * * *",
                "timezone": "Europe/London",
            },
        )
    )["createTask"]

    fire = datetime.fromisoformat(task["nextRunAt"]).astimezone(
        ZoneInfo("Europe/London")
    )
    assert (fire.hour, fire.minute) == (9, 0)


async def test_update_task_changes_fields_and_recomputes_the_next_run(
    client: Client,
) -> None:
    task = await new_task(client, HELLO, name="report")
    other_page = await _page(client)

    scheduled = (
        await client.data(
            UPDATE,
            name="report",
            input={"frequency": "0 6 * * 1", "timezone": "-05:00"},
        )
    )["updateTask"]
    paused = (await client.data(UPDATE, id=task["id"], input={"active": False}))[
        "updateTask"
    ]
    resumed = (await client.data(UPDATE, id=task["id"], input={"active": True}))[
        "updateTask"
    ]
    renamed = (
        await client.data(
            UPDATE,
            id=task["id"],
            input={"name": "weekly-report", "pageId": other_page, "timeout": 25},
        )
    )["updateTask"]
    on_demand = (await client.data(UPDATE, id=task["id"], input={"frequency": None}))[
        "updateTask"
    ]

    fire = datetime.fromisoformat(scheduled["nextRunAt"]) - timedelta(hours=5)
    assert (fire.weekday(), fire.hour, fire.minute) == (0, 6, 0)
    assert paused["nextRunAt"] is None and paused["frequency"] == "0 6 * * 1"
    assert resumed["nextRunAt"] == scheduled["nextRunAt"]
    assert renamed["name"] == "weekly-report"
    assert renamed["pageId"] == other_page
    assert renamed["timeout"] == 25
    assert renamed["timezone"] == "-05:00", "fields not given stay as they were"
    assert on_demand["frequency"] is None and on_demand["nextRunAt"] is None


async def test_remove_task_frees_its_name_and_keeps_its_logs(client: Client) -> None:
    task = await new_task(client, HELLO, name="once")
    await client.data('mutation { runTaskWithResult(name: "once") }')

    removed = await client.data('mutation { removeTask(name: "once") { id name } }')
    gone = await client.error("query($id: ID!) { task(id: $id) { id } }", id=task["id"])
    logs = await client.data(
        "query($id: ID) { taskLogs(id: $id) { count logs { type } } }", id=task["id"]
    )
    again = await new_task(client, HELLO, name="once")

    assert removed["removeTask"] == {"id": task["id"], "name": "once"}
    assert gone["extensions"]["code"] == "NOT_FOUND"
    assert logs["taskLogs"]["count"] == 1
    assert again["id"] != task["id"]


async def test_a_scheduled_task_can_run_now_on_demand(client: Client) -> None:
    task = await new_task(client, HELLO, name="hourly", frequency="0 * * * *")

    result = await client.data(
        'mutation { runTaskWithResult(name: "hourly", payload: {now: true}, '
        'caller: {user: "ada"}) }'
    )
    logs = await client.data(
        "query($id: ID) { taskLogs(id: $id) { logs { data } } }", id=task["id"]
    )

    context = result["runTaskWithResult"]["context"]
    assert context["mode"] == "on-demand"
    assert context["requestedBy"] == {"token": "default", "caller": {"user": "ada"}}
    entry = logs["taskLogs"]["logs"][0]["data"]
    assert entry["mode"] == "on-demand"
    assert "ada" not in str(entry), "the caller is never stored in logs"
    assert "result" not in entry


async def test_task_logs_page_newest_first_with_a_count_and_a_type_filter(
    client: Client,
) -> None:
    task = await new_task(client, HELLO, name="many")
    for number in range(7):
        await client.data(
            'mutation($n: Int) { runTaskWithResult(name: "many", payload: {n: $n}) }',
            n=number,
        )

    first = await client.data("{ taskLogs(limit: 3) { count logs { id type } } }")
    second = await client.data(
        "{ taskLogs(limit: 3, offset: 3) { count logs { id } } }"
    )
    completed = await client.data(
        'query($id: ID) { taskLogs(id: $id, where: {type: "app.task.completed"}) '
        "{ count } }",
        id=task["id"],
    )
    failed = await client.data(
        '{ taskLogs(where: {type: "app.task.failed"}) { count logs { id } } }'
    )

    ids = [int(log["id"]) for log in first["taskLogs"]["logs"]] + [
        int(log["id"]) for log in second["taskLogs"]["logs"]
    ]
    assert first["taskLogs"]["count"] == 7
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 6
    assert completed["taskLogs"]["count"] == 7
    assert failed["taskLogs"] == {"count": 0, "logs": []}


async def test_pages_keep_a_draft_and_numbered_live_versions(client: Client) -> None:
    page_id = await _page(client, "<p>one</p>")
    query = (
        "query($id: ID!) { page(id: $id) { draftHtml liveVersion "
        "versions { number html } } }"
    )

    unpublished = await client.data(query, id=page_id)
    await client.data("mutation($id: ID!) { publishPage(id: $id) { id } }", id=page_id)
    await client.data(
        'mutation($id: ID!) { updatePage(id: $id, input: {html: "<p>two</p>"}) '
        "{ id } }",
        id=page_id,
    )
    edited = await client.data(query, id=page_id)
    await client.data("mutation($id: ID!) { publishPage(id: $id) { id } }", id=page_id)
    republished = await client.data(query, id=page_id)

    assert unpublished["page"]["liveVersion"] is None
    assert edited["page"] == {
        "draftHtml": "<p>two</p>",
        "liveVersion": 1,
        "versions": [{"number": 1, "html": "<p>one</p>"}],
    }
    assert republished["page"]["liveVersion"] == 2
    assert [v["html"] for v in republished["page"]["versions"]] == [
        "<p>one</p>",
        "<p>two</p>",
    ]


async def _concurrent_creates_at_the_limit(service: Service) -> None:
    client = await new_app(service.url)
    page_id = await _page(client)
    for number in range(4):
        await client.data(CREATE, input={"name": f"t{number}", "pageId": page_id})

    bodies = await asyncio.gather(
        *(
            client.execute(CREATE, input={"name": f"race{n}", "pageId": page_id})
            for n in range(2)
        )
    )

    errors = [
        body["errors"][0]["extensions"]["code"] for body in bodies if body.get("errors")
    ]
    assert errors == ["TASK_LIMIT_REACHED"]
    assert len((await client.data("{ tasks { id } }"))["tasks"]) == 5


async def test_two_concurrent_creates_at_four_tasks_end_with_five_on_sqlite(
    stub_service: Service,
) -> None:
    await _concurrent_creates_at_the_limit(stub_service)


async def test_two_concurrent_creates_at_four_tasks_end_with_five_on_postgresql(
    make_service: Callable[..., Service], postgres_url: str
) -> None:
    service = make_service(runtime="stub", database_url=postgres_url).start()
    for _ in range(5):
        await _concurrent_creates_at_the_limit(service)


async def test_on_demand_runs_are_rate_limited_per_app(
    make_service: Callable[..., Service],
) -> None:
    service = make_service(
        runtime="stub", extra_env={"APPTASKS_RUNS_PER_MINUTE": "3"}
    ).start()
    client = await new_app(service.url)
    other = await new_app(service.url)
    await new_task(client, HELLO, name="busy")
    await new_task(other, HELLO, name="busy")
    run = 'mutation { runTask(name: "busy") { runId } }'

    while True:
        minute = int(time.time() // 60)
        answers: list[dict[str, Any]] = [await client.execute(run) for _ in range(4)]
        if int(time.time() // 60) == minute:
            break

    codes = [
        a["errors"][0]["extensions"]["code"] if a.get("errors") else "ok"
        for a in answers
    ]
    assert codes == ["ok", "ok", "ok", "RATE_LIMITED"]
    assert 0 < answers[3]["errors"][0]["extensions"]["retryAfter"] <= 60
    assert (await other.data(run))["runTask"]["runId"], "other apps are not limited"
