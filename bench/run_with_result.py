"""Measure runTaskWithResult end to end: GraphQL call to handler result and back.

Starts a real API and worker with the Chrome runtime twice in one run: with App
Tasks' queue poll (APPTASKS_QUEUE_POLL, 0.02 s) and with arq's default (0.5 s),
the baseline. Each makes CALLS calls of the hello screen after a warm-up, and
prints the median and p99 of each and the ratio of the medians.

    .venv/bin/python bench/run_with_result.py [calls]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import percentile

from tests.support.graphql import Client, new_app, new_task
from tests.support.paths import screen
from tests.support.services import RedisServer, Service

QUERY = 'mutation { runTaskWithResult(name: "bench", payload: {n: 1}) }'
WARM_UP = 5


async def measure(service: Service, calls: int) -> list[float]:
    client: Client = await new_app(service.url)
    await new_task(client, screen("hello.html"), name="bench")
    for _ in range(WARM_UP):
        await client.data(QUERY)

    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        await client.data(QUERY)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def run(label: str, queue_poll: str, calls: int, folder: Path, redis: str) -> float:
    service = Service(
        folder / label, redis, extra_env={"APPTASKS_QUEUE_POLL": queue_poll}
    )
    service.folder.mkdir()
    service.start()
    try:
        timings = asyncio.run(measure(service, calls))
    finally:
        service.stop()
    median = statistics.median(timings)
    sys.stdout.write(
        f"{label:28} poll={queue_poll:>5}s  median {median:7.1f} ms  "
        f"p99 {percentile(timings, 0.99):7.1f} ms  (n={calls})\n"
    )
    return median


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    with tempfile.TemporaryDirectory(prefix="bench-") as name:
        folder = Path(name)
        redis = RedisServer(folder)
        try:
            ours = run("app-tasks", "0.02", calls, folder, redis.url)
            baseline = run("arq-default-poll", "0.5", calls, folder, redis.url)
        finally:
            redis.stop()
    sys.stdout.write(f"baseline median / ours median = {baseline / ours:.1f}x\n")


if __name__ == "__main__":
    main()
