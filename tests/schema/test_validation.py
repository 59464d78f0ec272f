"""Every rule the server enforces: a clear error with its code, and nothing changed.

Each bad request is made against an app that already has a screen and a task;
the whole database is compared before and after.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.graphql import ADMIN_TOKEN, Client, new_app, new_task
from tests.support.services import Service

HELLO = "<script>Fliplet.Page.onRemoteExecution(() => 1)</script>"
CREATE = """
mutation($input: CreateTaskInput!) { createTask(input: $input) { id } }
"""
UPDATE = """
mutation($id: ID, $name: String, $input: UpdateTaskInput!) {
  updateTask(id: $id, name: $name, input: $input) { id }
}
"""
RUN = """
mutation($id: ID, $name: String, $payload: JSON, $environment: Environment) {
  runTask(id: $id, name: $name, payload: $payload, environment: $environment) {
    runId
  }
}
"""
LOGS = """
query($limit: Int, $offset: Int) { taskLogs(limit: $limit, offset: $offset) { count } }
"""


async def _app_with_a_task(service: Service) -> tuple[Client, dict[str, Any]]:
    client = await new_app(service.url)
    task = await new_task(client, HELLO, name="existing", frequency="0 9 * * *")
    return client, task


def _task_input(task: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "fresh", "pageId": task["pageId"], **fields}


CREATE_CASES = [
    ("space in name", {"name": "bad name"}, "BAD_USER_INPUT", "name 'bad name'"),
    ("empty name", {"name": ""}, "BAD_USER_INPUT", "name ''"),
    ("65 characters", {"name": "x" * 65}, "BAD_USER_INPUT", "1 to 64"),
    ("name taken", {"name": "existing"}, "NAME_TAKEN", "'existing'"),
    ("unknown page", {"pageId": "99999"}, "NOT_FOUND", "pageId 99999"),
    ("page id not a number", {"pageId": "abc"}, "NOT_FOUND", "'abc'"),
    ("minute 61", {"frequency": "61 * * * *"}, "BAD_USER_INPUT", "'61 * * * *'"),
    ("four fields", {"frequency": "* * * *"}, "BAD_USER_INPUT", "5 fields"),
    ("never fires", {"frequency": "0 0 31 2 *"}, "BAD_USER_INPUT", "never fire"),
    ("step zero", {"frequency": "*/0 * * * *"}, "BAD_USER_INPUT", "'*/0 * * * *'"),
    ("unknown zone", {"timezone": "Mars/Olympus"}, "BAD_USER_INPUT", "Mars/Olympus"),
    ("offset too far", {"timezone": "+15:00"}, "BAD_USER_INPUT", "+14:00"),
    ("offset minutes", {"timezone": "+05:61"}, "BAD_USER_INPUT", "00-59"),
    ("timeout zero", {"timeout": 0}, "BAD_USER_INPUT", "timeout 0"),
    ("timeout 31", {"timeout": 31}, "BAD_USER_INPUT", "between 1 and 30"),
    ("trailing newline", {"name": "a\n"}, "BAD_USER_INPUT", "name 'a\\n'"),
    (
        "long frequency",
        {"frequency": "0 " + "1," * 100 + "2 * * *"},
        "BAD_USER_INPUT",
        "limit of 200",
    ),
    ("non-ASCII digits", {"timezone": "+05:3\uff10"}, "BAD_USER_INPUT", "timezone"),
]


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [case[1:] for case in CREATE_CASES],
    ids=[case[0] for case in CREATE_CASES],
)
async def test_create_task_refuses_bad_input_and_changes_nothing(
    stub_service: Service, fields: dict[str, Any], code: str, message: str
) -> None:
    client, task = await _app_with_a_task(stub_service)
    before = stub_service.database_rows()

    error = await client.error(CREATE, input=_task_input(task, **fields))

    assert error["extensions"]["code"] == code
    assert message in error["message"]
    assert stub_service.database_rows() == before


UPDATE_CASES = [
    ("bad name", {"id": True}, {"name": "no spaces"}, "BAD_USER_INPUT", "name"),
    (
        "bad frequency",
        {"id": True},
        {"frequency": "* 25 * * *"},
        "BAD_USER_INPUT",
        "'* 25 * * *'",
    ),
    (
        "bad zone",
        {"id": True},
        {"timezone": "Nowhere/Land"},
        "BAD_USER_INPUT",
        "Nowhere/Land",
    ),
    ("bad timeout", {"id": True}, {"timeout": 45}, "BAD_USER_INPUT", "timeout 45"),
    ("null active", {"id": True}, {"active": None}, "BAD_USER_INPUT", "active"),
    ("unknown page", {"id": True}, {"pageId": "424242"}, "NOT_FOUND", "pageId 424242"),
    (
        "both id and name",
        {"id": True, "name": "existing"},
        {"active": False},
        "BAD_USER_INPUT",
        "exactly one",
    ),
    ("neither id nor name", {}, {"active": False}, "BAD_USER_INPUT", "exactly one"),
    ("unknown name", {"name": "ghost"}, {"active": False}, "NOT_FOUND", "'ghost'"),
]


@pytest.mark.parametrize(
    ("address", "changes", "code", "message"),
    [case[1:] for case in UPDATE_CASES],
    ids=[case[0] for case in UPDATE_CASES],
)
async def test_update_task_refuses_bad_input_and_changes_nothing(
    stub_service: Service,
    address: dict[str, Any],
    changes: dict[str, Any],
    code: str,
    message: str,
) -> None:
    client, task = await _app_with_a_task(stub_service)
    variables = {
        key: task["id"] if value is True else value for key, value in address.items()
    }
    before = stub_service.database_rows()

    error = await client.error(UPDATE, input=changes, **variables)

    assert error["extensions"]["code"] == code
    assert message in error["message"]
    assert stub_service.database_rows() == before


async def test_update_task_to_a_taken_name_is_refused(stub_service: Service) -> None:
    client, task = await _app_with_a_task(stub_service)
    await new_task(client, HELLO, name="second")
    before = stub_service.database_rows()

    error = await client.error(UPDATE, id=task["id"], input={"name": "second"})

    assert error["extensions"]["code"] == "NAME_TAKEN"
    assert stub_service.database_rows() == before


async def test_the_sixth_task_of_an_app_is_refused(stub_service: Service) -> None:
    client, task = await _app_with_a_task(stub_service)
    for number in range(4):
        await client.data(CREATE, input=_task_input(task, name=f"task{number}"))
    before = stub_service.database_rows()

    error = await client.error(CREATE, input=_task_input(task, name="sixth"))

    assert error["extensions"]["code"] == "TASK_LIMIT_REACHED"
    assert "5 tasks" in error["message"]
    assert stub_service.database_rows() == before


async def test_a_payload_over_the_limit_is_refused(stub_service: Service) -> None:
    client, _ = await _app_with_a_task(stub_service)
    before = stub_service.database_rows()

    error = await client.error(RUN, name="existing", payload={"blob": "x" * 70_000})

    assert error["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "65536" in error["message"]
    assert stub_service.database_rows() == before


async def test_running_a_never_published_screen_live_says_how_to_fix_it(
    stub_service: Service,
) -> None:
    client = await new_app(stub_service.url)
    await new_task(client, HELLO, name="draft-only", publish=False)

    error = await client.error(RUN, name="draft-only")
    draft = await client.data(RUN, name="draft-only", environment="DRAFT")

    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "never been published" in error["message"]
    assert "publishPage" in error["message"]
    assert draft["runTask"]["runId"]


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (501, 0), (10, -1)])
async def test_task_logs_refuses_limits_out_of_range(
    stub_service: Service, limit: int, offset: int
) -> None:
    client, _ = await _app_with_a_task(stub_service)

    error = await client.error(LOGS, limit=limit, offset=offset)

    assert error["extensions"]["code"] == "BAD_USER_INPUT"


AUTH_CASES = [
    ("no token", None, "{ tasks { id } }", "UNAUTHENTICATED"),
    ("unknown token", "apt_not-a-real-token", "{ tasks { id } }", "UNAUTHENTICATED"),
    ("admin token on app data", ADMIN_TOKEN, "{ tasks { id } }", "FORBIDDEN"),
    (
        "app token creating apps",
        "APP",
        'mutation { createApp(name: "x") { token } }',
        "FORBIDDEN",
    ),
    ("app token listing apps", "APP", "{ apps { id } }", "FORBIDDEN"),
]


@pytest.mark.parametrize(
    ("token", "query", "code"),
    [case[1:] for case in AUTH_CASES],
    ids=[case[0] for case in AUTH_CASES],
)
async def test_tokens_are_checked_on_every_call(
    stub_service: Service, token: str | None, query: str, code: str
) -> None:
    client, _ = await _app_with_a_task(stub_service)
    caller = client if token == "APP" else Client(stub_service.url, token)
    before = stub_service.database_rows()

    error = await caller.error(query)

    assert error["extensions"]["code"] == code
    assert stub_service.database_rows() == before


async def test_a_revoked_token_stops_working_at_once(stub_service: Service) -> None:
    admin = Client(stub_service.url, ADMIN_TOKEN)
    created = await admin.data('mutation { createApp(name: "r") { app { id } token } }')
    app_id = created["createApp"]["app"]["id"]
    extra = await admin.data(
        'mutation($app: ID!) { createToken(appId: $app, name: "ci") '
        "{ token { id name revokedAt } secret } }",
        app=app_id,
    )
    token = Client(stub_service.url, extra["createToken"]["secret"])
    assert (await token.data("{ tasks { id } }"))["tasks"] == []

    revoked = await admin.data(
        "mutation($id: ID!) { revokeToken(id: $id) { revokedAt } }",
        id=extra["createToken"]["token"]["id"],
    )
    error = await token.error("{ tasks { id } }")
    listed = await admin.data(
        "query($app: ID!) { tokens(appId: $app) { name revokedAt } }", app=app_id
    )

    assert revoked["revokeToken"]["revokedAt"] is not None
    assert error["extensions"]["code"] == "UNAUTHENTICATED"
    assert {t["name"] for t in listed["tokens"]} == {"default", "ci"}
    assert "secret" not in str(listed).lower()


async def test_task_logs_refuses_an_unknown_type_naming_the_known_ones(
    stub_service: Service,
) -> None:
    client, _ = await _app_with_a_task(stub_service)

    error = await client.error('{ taskLogs(where: {type: "failed"}) { count } }')

    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert "'app.task.failed'" in error["message"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"a": float("nan")}, "NaN"),
        ({"a": float("inf")}, "NaN and Infinity"),
        ({"s": "\ud800"}, "surrogate"),
        (json.loads("[" * 150 + "]" * 150), "levels deep"),
    ],
    ids=["nan", "infinity", "lone surrogate", "150 levels"],
)
async def test_a_payload_that_is_not_plain_json_is_refused_before_queueing(
    stub_service: Service, payload: Any, message: str
) -> None:
    client, _ = await _app_with_a_task(stub_service)
    before = stub_service.database_rows()

    error = await client.error(RUN, name="existing", payload=payload)

    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert message in error["message"]
    assert stub_service.database_rows() == before


@pytest.mark.parametrize(
    "page_id", ["9223372036854775808", "1" * 40, " 1", "01", "+1", "\u0661"]
)
async def test_ids_out_of_range_or_oddly_written_are_not_found(
    stub_service: Service, page_id: str
) -> None:
    client, _ = await _app_with_a_task(stub_service)

    error = await client.error("query($id: ID!) { page(id: $id) { id } }", id=page_id)

    assert error["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "body", [b"null", b"5", b'"x"', b"\xff\xfe{}", b"[" * 20_000 + b"]" * 20_000]
)
async def test_a_body_that_is_not_a_graphql_request_gets_a_400(
    stub_service: Service, body: bytes
) -> None:
    client, _ = await _app_with_a_task(stub_service)
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{stub_service.url}/graphql",
            content=body,
            headers={
                "Authorization": f"Bearer {client.token}",
                "Content-Type": "application/json",
            },
        )

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["message"]
    assert (await client.data("{ tasks { id } }"))["tasks"], "still answering"


@pytest.mark.parametrize("name", ["a\u0000b", "bad \ud800"])
async def test_app_and_page_names_must_be_text(
    stub_service: Service, name: str
) -> None:
    client, _ = await _app_with_a_task(stub_service)
    admin = Client(stub_service.url, ADMIN_TOKEN)
    before = stub_service.database_rows()

    app_error = await admin.error(
        "mutation($n: String!) { createApp(name: $n) { token } }", n=name
    )
    page_error = await client.error(
        'mutation($n: String!) { createPage(input: {name: $n, html: "x"}) { id } }',
        n=name,
    )

    assert app_error["extensions"]["code"] == "BAD_USER_INPUT"
    assert page_error["extensions"]["code"] == "BAD_USER_INPUT"
    assert stub_service.database_rows() == before
