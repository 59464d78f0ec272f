"""Start App Tasks the way a user does: real processes, real Redis, real HTTP.

`Service` runs `apptasks api` and `apptasks worker` as subprocesses against a
private Redis and its own database, and tears everything down afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from tests.support.paths import REPO

ADMIN_TOKEN = "apt_admin_test_" + uuid.uuid4().hex
READY_TIMEOUT = 60.0
# Tests reach nothing but loopback: Chromium may resolve no other host name.
LOOPBACK_ONLY = "--host-resolver-rules='MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(
    condition: Any, timeout: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} did not happen within {timeout:g} s")


class RedisServer:
    """A private redis-server on a unix socket, for one test session.

    `stop()` then `restart()` stages an outage: the server comes back on the
    same socket, empty, as a Redis without persistence does after a crash.
    """

    def __init__(self, folder: Path) -> None:
        self.socket = folder / "redis.sock"
        self.process = self._spawn()

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """Start the server again on the same socket, after `stop()`."""
        if self.process.poll() is None:
            raise RuntimeError("redis-server is still running: stop() it first")
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.socket.unlink(missing_ok=True)
        process = subprocess.Popen(
            [
                *("redis-server", "--port", "0", "--unixsocket", str(self.socket)),
                *("--save", "", "--appendonly", "no", "--loglevel", "warning"),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until(self.socket.exists, 10, "redis-server start")
        return process


@dataclass
class Service:
    """One App Tasks installation: API and workers as real processes."""

    folder: Path
    redis_url: str
    runtime: str = "chrome"
    database_url: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    log_files: list[IO[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "APPTASKS_DATA_DIR": str(self.folder / "data"),
                "APPTASKS_REDIS_URL": self.redis_url,
                "APPTASKS_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
                "APPTASKS_PORT": str(self.port),
                "APPTASKS_ADMIN_TOKEN": ADMIN_TOKEN,
                "APPTASKS_RUNTIME": self.runtime,
                "APPTASKS_LOG_LEVEL": "INFO",
                "APPTASKS_DATABASE_URL": self.database_url,
                "APPTASKS_CHROME_ARGUMENTS": LOOPBACK_ONLY,
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, workers: int = 1) -> Service:
        self._env = self.env
        self._run_cli("migrate")
        self._start_api()
        for number in range(workers):
            self.start_worker(f"worker{number}")
        return self

    def _start_api(self, attempts: int = 3) -> None:
        # free_port() can race with another process taking the same port
        # before the API binds it: then the API starts again on a new one.
        for attempt in range(attempts):
            self.processes["api"] = self._spawn("api", "api")
            try:
                wait_until(self._api_ready, READY_TIMEOUT, "API start")
                return
            except RuntimeError:
                if "address already in use" not in self.log("api") or (
                    attempt == attempts - 1
                ):
                    raise
            self.port = free_port()
            self._env["APPTASKS_PORT"] = str(self.port)

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        process = self._spawn(name, "worker")
        self.processes[name] = process
        wait_until(
            lambda: "worker ready" in self.log(name), READY_TIMEOUT, f"{name} start"
        )
        return process

    def database_rows(self) -> dict[str, list[tuple[object, ...]]]:
        """Every row of every table of the service's SQLite database."""
        path = self.folder / "data" / "apptasks.sqlite3"
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = [
                name
                for (name,) in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            return {
                table: db.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()
                for table in tables
            }

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        for log in self.log_files:
            log.close()
        self.log_files.clear()

    def _run_cli(self, *arguments: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "apptasks.cli", *arguments],
            env=self._env,
            cwd=REPO,
            check=True,
            capture_output=True,
        )

    def _spawn(self, name: str, command: str) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115
        self.log_files.append(log)
        return subprocess.Popen(
            [sys.executable, "-m", "apptasks.cli", command],
            env=self._env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def _api_ready(self) -> bool:
        if self.processes["api"].poll() is not None:
            raise RuntimeError(f"API exited early:\n{self.log('api')}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
