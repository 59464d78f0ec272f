"""A small GraphQL-over-HTTP client for tests, with the calls most tests need."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.services import ADMIN_TOKEN


class GraphQLFailure(AssertionError):
    """The response carried errors where the test expected none."""


@dataclass
class Client:
    """Talks to one API as one token."""

    url: str
    token: str | None

    async def execute(self, query: str, **variables: Any) -> dict[str, Any]:
        """The whole response body: `data` and maybe `errors`."""
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # json.dumps rather than httpx's json=, which refuses NaN: tests send
        # what a careless client could.
        body = json.dumps({"query": query, "variables": variables})
        async with httpx.AsyncClient(timeout=60) as http:
            response = await http.post(
                f"{self.url}/graphql", content=body, headers=headers
            )
        body: dict[str, Any] = response.json()
        return body

    async def data(self, query: str, **variables: Any) -> dict[str, Any]:
        """The `data` of a response that must have no errors."""
        body = await self.execute(query, **variables)
        if body.get("errors"):
            raise GraphQLFailure(body["errors"])
        result: dict[str, Any] = body["data"]
        return result

    async def error(self, query: str, **variables: Any) -> dict[str, Any]:
        """The single error of a response that must fail."""
        body = await self.execute(query, **variables)
        errors = body.get("errors") or []
        assert len(errors) == 1, body
        error: dict[str, Any] = errors[0]
        return error


async def new_app(url: str, name: str = "tests") -> Client:
    """A fresh app, and a client that acts with its token."""
    admin = Client(url, ADMIN_TOKEN)
    data = await admin.data(
        "mutation($name: String!) { createApp(name: $name) { app { id } token } }",
        name=name,
    )
    return Client(url, data["createApp"]["token"])


async def new_task(
    client: Client,
    html: str,
    name: str = "task",
    publish: bool = True,
    **task_fields: Any,
) -> dict[str, Any]:
    """A screen with `html` (published unless told not to) and a task running it."""
    page = await client.data(
        'mutation($html: String!) { createPage(input: {name: "screen", html: $html})'
        " { id } }",
        html=html,
    )
    page_id = page["createPage"]["id"]
    if publish:
        await client.data(
            "mutation($id: ID!) { publishPage(id: $id) { id } }", id=page_id
        )
    task_input = {"name": name, "pageId": page_id, **task_fields}
    created = await client.data(
        "mutation($input: CreateTaskInput!) { createTask(input: $input) {"
        " id name pageId frequency timezone active lastRunAt nextRunAt } }",
        input=task_input,
    )
    task: dict[str, Any] = created["createTask"]
    return task
