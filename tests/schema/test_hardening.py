"""GraphQL over HTTP is hardened: limits, no mutations over GET, masked internals."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import strawberry
from graphql import GraphQLInputObjectType, GraphQLNamedType, GraphQLObjectType

from schema.errors import ErrorCodes
from schema.schema import schema, sdl
from tests.support.graphql import new_app
from tests.support.paths import REPO
from tests.support.services import Service


async def _post(service: Service, body: object, token: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(
            f"{service.url}/graphql",
            content=json.dumps(body),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
            },
        )


async def test_a_query_with_too_many_tokens_is_refused(stub_service: Service) -> None:
    client = await new_app(stub_service.url)
    wide = "{ " + "tasks { id } " * 700 + "}"

    error = await client.error(wide)

    assert "token" in error["message"].lower()
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


async def test_too_many_aliases_are_refused(stub_service: Service) -> None:
    client = await new_app(stub_service.url)
    many = "{ " + " ".join(f"a{n}: tasks {{ id }}" for n in range(25)) + " }"

    error = await client.error(many)

    assert "aliases" in error["message"]


async def test_a_mutation_over_get_is_refused(stub_service: Service) -> None:
    client = await new_app(stub_service.url)
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(
            f"{stub_service.url}/graphql",
            params={
                "query": 'mutation { createPage(input: {name: "x", html: "y"}) { id } }'
            },
            headers={"Authorization": f"Bearer {client.token}"},
        )

    assert response.status_code in (400, 405)
    assert (await client.data("{ pages { id } }"))["pages"] == []


async def test_batched_requests_are_refused(stub_service: Service) -> None:
    client = await new_app(stub_service.url)
    assert client.token is not None

    response = await _post(
        stub_service,
        [{"query": "{ tasks { id } }"}, {"query": "{ pages { id } }"}],
        client.token,
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_request_body_over_the_limit_is_refused_with_413(
    stub_service: Service,
) -> None:
    client = await new_app(stub_service.url)
    assert client.token is not None
    body = {"query": "{ tasks { id } }", "variables": {"pad": "x" * 4_300_000}}

    response = await _post(stub_service, body, client.token)

    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


def test_an_internal_error_is_masked_and_logged_with_a_reference(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @strawberry.type
    class Query:
        @strawberry.field
        def broken(self) -> str:
            raise RuntimeError("SELECT secret FROM tokens")

    masked = strawberry.Schema(query=Query, extensions=[ErrorCodes])
    with caplog.at_level(logging.ERROR, logger="apptasks.schema.errors"):
        result = masked.execute_sync("{ broken }")

    assert result.errors is not None
    error = result.errors[0].formatted
    reference = error["extensions"]["reference"]
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert "SELECT" not in json.dumps(error)
    assert reference in error["message"]
    assert reference in caplog.text and "SELECT secret" in caplog.text


def test_the_checked_in_schema_is_the_one_the_code_prints() -> None:
    checked_in = (REPO / "schema" / "schema.graphql").read_text()

    assert checked_in == sdl(), "run: .venv/bin/apptasks schema > schema/schema.graphql"


def _our_types() -> list[GraphQLNamedType]:
    return [
        named
        for name, named in schema._schema.type_map.items()
        if not name.startswith("__")
        and isinstance(named, (GraphQLObjectType, GraphQLInputObjectType))
    ]


def test_every_type_field_and_argument_has_a_description() -> None:
    missing = []
    for named in _our_types():
        if named.name not in ("Query", "Mutation") and not named.description:
            missing.append(named.name)
        for field_name, field in named.fields.items():  # type: ignore[attr-defined]
            if not field.description:
                missing.append(f"{named.name}.{field_name}")
            for argument_name, argument in getattr(field, "args", {}).items():
                if not argument.description:
                    missing.append(f"{named.name}.{field_name}({argument_name})")

    assert missing == []
