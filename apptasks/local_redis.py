"""A private Redis for one `apptasks serve`, when none answers at the configured URL.

It listens on a unix socket in the data folder only, keeps nothing on disk, and
is stopped when `serve` exits.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

START_TIMEOUT_SECONDS = 10.0


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class PrivateRedis:
    """A `redis-server` child process on a unix socket in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.socket = folder.resolve() / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self) -> None:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        command = [
            "redis-server",
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--save", "",
            "--appendonly", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        # A session of its own: Ctrl-C in the terminal must not stop Redis
        # before the worker has finished with it; `stop` ends it last.
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, start_new_session=True
        )

        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.process.returncode}"
                )
            if self.socket.exists() and redis_answers(self.url):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer within 10 seconds")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.socket.unlink(missing_ok=True)
