"""Schedules over GraphQL: upcomingRuns, previewSchedule and a task's fire ledger."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.graphql import Client, new_app, new_task
from tests.support.services import Service

FIVE_MINUTES = timedelta(minutes=5)
HELLO = "<script>Fliplet.Page.onRemoteExecution(() => 1)</script>"
FIRE_FIELDS = "at local dstChange dstNote"
UPCOMING = f"""
query($id: ID!, $count: Int!, $after: DateTime) {{
  task(id: $id) {{ nextRunAt upcomingRuns(count: $count, after: $after) {{
    {FIRE_FIELDS} }} }}
}}
"""
PREVIEW = f"""
query($frequency: String!, $timezone: String!, $count: Int!, $after: DateTime) {{
  previewSchedule(frequency: $frequency, timezone: $timezone, count: $count,
                  after: $after) {{ {FIRE_FIELDS} }}
}}
"""
LEDGER = """
query($id: ID!) { task(id: $id) { nextRunAt fires { fireAt outcome reason runId } } }
"""
UPDATE = """
mutation($id: ID!, $input: UpdateTaskInput!) {
  updateTask(id: $id, input: $input) {
    active nextRunAt upcomingRuns(count: 1) { at } fires { fireAt outcome reason }
  }
}
"""
CREATE = """
mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }
"""


@pytest.fixture
async def client(stub_service: Service) -> Client:
    return await new_app(stub_service.url)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def test_upcoming_runs_show_utc_and_local_times_and_a_moved_fire(
    client: Client,
) -> None:
    task = await new_task(
        client, HELLO, frequency="30 1 * * *", timezone="Europe/London"
    )

    data = await client.data(
        UPCOMING, id=task["id"], count=2, after="2026-03-28T12:00:00Z"
    )

    moved, ordinary = data["task"]["upcomingRuns"]
    # 01:30 does not exist on the day clocks go forward: it runs at 02:00 BST.
    assert _at(moved["at"]) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert moved["local"] == "2026-03-29T02:00:00+01:00"
    assert moved["dstChange"] == "MOVED"
    assert "01:30 does not exist on 2026-03-29" in moved["dstNote"]
    assert _at(ordinary["at"]) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)
    assert ordinary["local"] == "2026-03-30T01:30:00+01:00"
    assert ordinary["dstChange"] is None and ordinary["dstNote"] is None


async def test_preview_schedule_flags_both_passes_of_a_repeated_hour(
    client: Client,
) -> None:
    data = await client.data(
        PREVIEW,
        frequency="30 * * * *",
        timezone="Europe/London",
        count=4,
        after="2026-10-25T00:00:00+01:00",
    )

    fires = data["previewSchedule"]
    assert [fire["local"] for fire in fires] == [
        "2026-10-25T00:30:00+01:00",
        "2026-10-25T01:30:00+01:00",
        "2026-10-25T01:30:00+00:00",
        "2026-10-25T02:30:00+00:00",
    ]
    assert [fire["dstChange"] for fire in fires] == [None, "DOUBLED", "DOUBLED", None]
    assert "this is the second" in fires[2]["dstNote"]


async def test_preview_schedule_starts_after_now_by_default(client: Client) -> None:
    before = datetime.now(UTC)

    data = await client.data(
        '{ previewSchedule(frequency: "*/5 * * * *", timezone: "+05:30") { at } }'
    )

    instants = [_at(fire["at"]) for fire in data["previewSchedule"]]
    assert len(instants) == 10
    assert before < instants[0] <= before + FIVE_MINUTES
    assert instants[0].minute % 5 == 0 and instants[0].second == 0
    gaps = {later - earlier for earlier, later in itertools.pairwise(instants)}
    assert gaps == {FIVE_MINUTES}


@pytest.mark.parametrize(
    ("frequency", "timezone"),
    [
        ("61 * * * *", "+00"),
        ("* * * *", "+00"),
        ("0 0 31 2 *", "+00"),
        ("* * * * *", "Mars/Olympus_Mons"),
        ("* * * * *", "+15:00"),
    ],
)
async def test_preview_schedule_refuses_what_create_task_refuses_in_the_same_words(
    client: Client, frequency: str, timezone: str
) -> None:
    task = await new_task(client, HELLO, name="valid")
    refused = await client.error(
        CREATE,
        input={
            "name": "invalid",
            "pageId": task["pageId"],
            "frequency": frequency,
            "timezone": timezone,
        },
    )

    preview = await client.error(
        PREVIEW, frequency=frequency, timezone=timezone, count=3, after=None
    )

    assert preview["extensions"] == refused["extensions"]
    assert preview["extensions"]["code"] == "BAD_USER_INPUT"
    assert preview["message"] == refused["message"]


@pytest.mark.parametrize(
    ("count", "after", "message"),
    [
        (101, None, "count 101: ask for 0 to 100 fires"),
        (-1, None, "count -1: ask for 0 to 100 fires"),
        (3, "2026-01-01T00:00:00", "give a UTC offset"),
        (3, "9999-12-31T23:00:00Z", "must be between 1970 and the year 9000"),
    ],
)
async def test_preview_arguments_out_of_range_are_refused(
    client: Client, count: int, after: str | None, message: str
) -> None:
    task = await new_task(client, HELLO, frequency="* * * * *")

    for error in (
        await client.error(
            PREVIEW, frequency="* * * * *", timezone="+00", count=count, after=after
        ),
        await client.error(UPCOMING, id=task["id"], count=count, after=after),
    ):
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert message in error["message"]


async def test_on_demand_and_paused_tasks_have_no_upcoming_runs(
    client: Client,
) -> None:
    on_demand = await new_task(client, HELLO, name="ondemand")
    paused = await new_task(
        client, HELLO, name="paused", frequency="* * * * *", active=False
    )

    for task in (on_demand, paused):
        data = await client.data(UPCOMING, id=task["id"], count=5, after=None)
        assert data["task"] == {"nextRunAt": None, "upcomingRuns": []}


async def test_next_run_at_is_always_the_first_upcoming_run_after_edits(
    client: Client,
) -> None:
    task = await new_task(client, HELLO, frequency="* * * * *")
    edits: list[dict[str, Any]] = [
        {"frequency": "0 9 * * 1-5", "timezone": "Asia/Tokyo"},
        {"timezone": "-08:00"},
        {"name": "renamed"},
        {"frequency": "@yearly"},
    ]

    for edit in edits:
        updated = (await client.data(UPDATE, id=task["id"], input=edit))["updateTask"]
        assert _at(updated["nextRunAt"]) == _at(updated["upcomingRuns"][0]["at"]), edit
        assert updated["fires"] == []

    assert _at(updated["nextRunAt"]).month == 1


async def test_pausing_records_the_cancelled_fire_and_resuming_in_time_drops_it(
    client: Client,
) -> None:
    task = await new_task(client, HELLO, frequency="0 0 1 1 *")
    pending = task["nextRunAt"]

    paused = (await client.data(UPDATE, id=task["id"], input={"active": False}))[
        "updateTask"
    ]

    assert paused["nextRunAt"] is None and paused["upcomingRuns"] == []
    assert paused["fires"] == [
        {"fireAt": pending, "outcome": "PAUSED", "reason": "inactive"}
    ]
    resumed = (await client.data(UPDATE, id=task["id"], input={"active": True}))[
        "updateTask"
    ]
    assert resumed["nextRunAt"] == pending
    assert resumed["fires"] == [], "the cancelled fire has not come due: it will run"


async def test_another_apps_task_and_its_ledger_are_not_found(
    client: Client, stub_service: Service
) -> None:
    task = await new_task(client, HELLO, frequency="0 0 1 1 *")
    await client.data(UPDATE, id=task["id"], input={"active": False})
    other = await new_app(stub_service.url, name="other")

    error = await other.error(LEDGER, id=task["id"])

    assert error["extensions"]["code"] == "NOT_FOUND"
    assert len((await client.data(LEDGER, id=task["id"]))["task"]["fires"]) == 1
