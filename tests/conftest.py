"""Session-wide fixtures: a private Redis and running App Tasks services."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import shared_dir
from tests.support.postgres import ADMIN_DSN, create_database, drop_database
from tests.support.services import RedisServer, Service


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chrome_service(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """API and one worker with the Chrome runtime, shared by a session."""
    service = Service(tmp_path_factory.mktemp("chrome-service"), redis_server.url)
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def stub_service(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """API and one worker with the stub runtime: for what surrounds a runtime."""
    service = Service(
        tmp_path_factory.mktemp("stub-service"), redis_server.url, runtime="stub"
    )
    service.start()
    yield service
    service.stop()


@pytest.fixture
def make_service(
    redis_server: RedisServer, tmp_path: Path
) -> Iterator[type[Service] | object]:
    """Build services of one's own (own database, own settings); stopped after."""
    started: list[Service] = []

    def factory(**options: object) -> Service:
        folder = tmp_path / f"service{len(started)}"
        folder.mkdir()
        service = Service(folder, redis_server.url, **options)  # type: ignore[arg-type]
        started.append(service)
        return service

    yield factory
    for service in started:
        service.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new database on the local PostgreSQL, dropped afterwards.

    Without a reachable server the test is skipped, except in CI, where
    `.ci/run` starts PostgreSQL and a skip would hide a broken set-up.
    """
    try:
        url = create_database()
    except OSError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL at {ADMIN_DSN} ({exc}); set APPTASKS_TEST_POSTGRES")
    yield url
    drop_database(url)


def pytest_sessionstart(session: pytest.Session) -> None:
    screens = shared_dir() / "screens"
    if not (screens / "hello.html").exists():
        raise pytest.UsageError(
            f"the sample screens are missing: expected {screens}. The tests use "
            "the team's shared folder beside the clone (../shared); set "
            "APPTASKS_SHARED_DIR to its path if it lives elsewhere."
        )
