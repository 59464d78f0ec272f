"""Two tenants: each tries every query and mutation on the other's ids.

Another app's id must answer exactly like an id that does not exist, and
change nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.graphql import Client, new_app, new_task
from tests.support.services import Service

HELLO = "<script>Fliplet.Page.onRemoteExecution(() => 1)</script>"
MISSING = "987654"

OPERATIONS = {
    "page": ("query($id: ID!) { page(id: $id) { id } }", "page"),
    "updatePage": (
        'mutation($id: ID!) { updatePage(id: $id, input: {html: "x"}) { id } }',
        "page",
    ),
    "publishPage": ("mutation($id: ID!) { publishPage(id: $id) { id } }", "page"),
    "task": ("query($id: ID!) { task(id: $id) { id } }", "task"),
    "updateTask": (
        "mutation($id: ID!) { updateTask(id: $id, input: {active: false}) { id } }",
        "task",
    ),
    "removeTask": ("mutation($id: ID!) { removeTask(id: $id) { id } }", "task"),
    "runTask": ("mutation($id: ID!) { runTask(id: $id) { runId } }", "task"),
    "runTaskWithResult": ("mutation($id: ID!) { runTaskWithResult(id: $id) }", "task"),
    "createTask on its page": (
        'mutation($id: ID!) { createTask(input: {name: "steal", pageId: $id}) { id } }',
        "page",
    ),
}


@pytest.fixture
async def tenants(stub_service: Service) -> tuple[Client, Client, dict[str, Any]]:
    owner = await new_app(stub_service.url, "owner")
    intruder = await new_app(stub_service.url, "intruder")
    task = await new_task(owner, HELLO, name="private", frequency="*/5 * * * *")
    await owner.data('mutation { runTaskWithResult(name: "private") }')
    await new_task(intruder, HELLO, name="mine")
    return owner, intruder, task


def _without_ids(error: dict[str, Any]) -> tuple[str, str]:
    """The error's code, and its message with the id replaced."""
    return error["extensions"]["code"], error["message"]


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
async def test_another_apps_id_is_not_found_like_a_missing_one(
    stub_service: Service,
    tenants: tuple[Client, Client, dict[str, Any]],
    operation: str,
) -> None:
    _, intruder, task = tenants
    query, kind = OPERATIONS[operation]
    foreign_id = task["pageId"] if kind == "page" else task["id"]
    before = stub_service.database_rows()

    foreign = await intruder.error(query, id=foreign_id)
    missing = await intruder.error(query, id=MISSING)

    assert foreign["extensions"]["code"] == "NOT_FOUND"
    assert foreign["message"].replace(foreign_id, "ID") == missing["message"].replace(
        MISSING, "ID"
    )
    assert stub_service.database_rows() == before


async def test_lists_and_logs_show_only_the_callers_app(
    tenants: tuple[Client, Client, dict[str, Any]],
) -> None:
    owner, intruder, task = tenants

    intruder_tasks = await intruder.data("{ tasks { name } pages { id } }")
    foreign_logs = await intruder.data(
        "query($id: ID) { taskLogs(id: $id) { count } }", id=task["id"]
    )
    all_logs = await intruder.data("{ taskLogs { count } }")
    by_name = await intruder.error('{ task(name: "private") { id } }')
    owner_logs = await owner.data(
        "query($id: ID) { taskLogs(id: $id) { count } }", id=task["id"]
    )

    assert [t["name"] for t in intruder_tasks["tasks"]] == ["mine"]
    assert task["pageId"] not in [p["id"] for p in intruder_tasks["pages"]]
    assert foreign_logs["taskLogs"]["count"] == 0
    assert all_logs["taskLogs"]["count"] == 0
    assert by_name["extensions"]["code"] == "NOT_FOUND"
    assert owner_logs["taskLogs"]["count"] == 1
