"""App Tasks on PostgreSQL: migrations apply, and a run is logged there."""

from __future__ import annotations

from collections.abc import Callable

from tests.support.graphql import new_app, new_task
from tests.support.paths import screen
from tests.support.services import Service


async def test_a_service_on_postgresql_runs_and_logs_a_task(
    make_service: Callable[..., Service], postgres_url: str
) -> None:
    service = make_service(runtime="stub", database_url=postgres_url).start()
    client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="pg")

    result = await client.data(
        'mutation { runTaskWithResult(name: "pg", payload: {n: 1}) }'
    )
    logs = await client.data("{ taskLogs { count logs { type data } } }")

    assert result["runTaskWithResult"]["payload"] == {"n": 1}
    assert logs["taskLogs"]["count"] == 1
    assert logs["taskLogs"]["logs"][0]["type"] == "app.task.completed"
