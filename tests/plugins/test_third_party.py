"""A third-party plugin, installed from its own folder, runs a task end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.graphql import new_app, new_task
from tests.support.services import RedisServer, Service

SAMPLE = Path(__file__).parent / "sample_plugin"


@pytest.fixture(scope="module")
def installed_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample plugin pip-installed into a folder of its own (not the venv)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"),
            *("--no-build-isolation", "--target", str(target), str(SAMPLE)),
        ],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture(scope="module")
async def sample_run(
    redis_server: RedisServer,
    installed_sample: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]]:
    """One task run through the sample runtime: result, log data, hook events."""
    folder = tmp_path_factory.mktemp("sample-service")
    events = folder / "events.jsonl"
    service = Service(
        folder,
        redis_server.url,
        runtime="sample-echo",
        extra_env={
            "PYTHONPATH": str(installed_sample),
            "APPTASKS_SAMPLE_EVENTS": str(events),
        },
    ).start()
    try:
        client = await new_app(service.url)
        await new_task(client, "<p>not used by this runtime</p>", name="third")
        result = await client.data(
            'mutation { runTaskWithResult(name: "third", payload: {hi: 1}) }'
        )
        logs = await client.data("{ taskLogs { logs { data } } }")
        recorded = [json.loads(line) for line in events.read_text().splitlines()]
        yield result, logs["taskLogs"]["logs"][0]["data"], recorded
    finally:
        service.stop()


async def test_a_runtime_from_an_installed_plugin_runs_the_task(
    sample_run: tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]],
) -> None:
    result, entry, _ = sample_run

    assert result["runTaskWithResult"] == {"echoed": {"hi": 1}, "by": "sample-echo"}
    assert entry["browser"] == "sample-echo"
    assert entry["console"] == ["sample: ran third"]


async def test_hook_apptasks_run_started_is_told_before_the_run(
    sample_run: tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, entry, recorded = sample_run

    assert recorded[0] == {"event": "started", "task": "third", "run": entry["runId"]}


async def test_hook_apptasks_run_finished_is_told_the_outcome(
    sample_run: tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, entry, recorded = sample_run

    assert recorded[1:] == [
        {"event": "finished", "task": "third", "run": entry["runId"], "ok": True}
    ]


@pytest.mark.parametrize("runtime", ["chrome", "firefox"])
async def test_hook_apptasks_browser_options_changes_the_browsers_a_runtime_starts(
    make_service: Callable[..., Service], installed_sample: Path, runtime: str
) -> None:
    service = make_service(
        runtime=runtime, extra_env={"PYTHONPATH": str(installed_sample)}
    ).start()
    client = await new_app(service.url)
    await new_task(
        client,
        "<script>Fliplet.Page.onRemoteExecution(() => navigator.userAgent)</script>",
        name="agent",
    )

    result = await client.data('mutation { runTaskWithResult(name: "agent") }')

    assert result["runTaskWithResult"] == "AppTasksSamplePlugin/1.0"
