"""The `apptasks` command: serve everything, or run one part (api, worker, migrate).

Logging is configured here, at the entry point, and nowhere on import.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

import uvicorn

from apptasks import db
from apptasks.bootstrap import DEMO_TASK, admin_token, ensure_demo_app
from apptasks.errors import ConfigurationError
from apptasks.local_redis import PrivateRedis, redis_answers
from apptasks.settings import Settings

logger = logging.getLogger("apptasks.cli")

WORKER_STOP_SECONDS = 40


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="apptasks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="API, one worker and (if needed) Redis, together")
    commands.add_parser("api", help="the API only")
    commands.add_parser("worker", help="one worker only")
    commands.add_parser("migrate", help="bring the database schema up to date")
    commands.add_parser("settings", help="list every APPTASKS_ setting")
    commands.add_parser("schema", help="print the GraphQL schema (SDL)")
    arguments = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        print(f"apptasks: {exc.message}", file=sys.stderr)  # noqa: T201
        return 2
    _configure_logging(settings)

    try:
        return int(COMMANDS[arguments.command](settings))
    except ConfigurationError as exc:
        logger.error("%s", exc.message)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C during start-up: everything started so far is already stopped.
        return 130


def serve(settings: Settings) -> int:
    """Everything on one machine: Redis if needed, migrations, a worker, the API."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings = dataclasses.replace(settings, admin_token=admin_token(settings))

    private_redis = None
    if not redis_answers(settings.redis_url):
        if not PrivateRedis.available():
            raise ConfigurationError(
                f"nothing answers at APPTASKS_REDIS_URL={settings.redis_url} and "
                "redis-server is not installed: apt-get install redis-server"
            )
        private_redis = PrivateRedis(settings.data_dir)
        private_redis.start()
        settings = dataclasses.replace(settings, redis_url=private_redis.url)
        logger.info("started a private Redis at %s", private_redis.url)

    worker = None
    exit_code = 0
    try:
        asyncio.run(_prepare(settings))
        worker = _spawn_worker(settings)
        server = _api_server(settings)
        _stop_when_worker_exits(worker, server)
        server.run()
        if worker.poll() not in (None, 0):
            exit_code = 1
    finally:
        if worker is not None:
            _stop_worker(worker)
        if private_redis is not None:
            private_redis.stop()
    return exit_code


async def _prepare(settings: Settings) -> None:
    await db.migrate(settings)
    await db.connect(settings)
    try:
        demo = await ensure_demo_app(settings)
    finally:
        await db.close()
    _print_welcome(settings, demo.token)


def _print_welcome(settings: Settings, demo_token: str | None) -> None:
    url = settings.effective_public_url
    query = (
        '{"query":"mutation { runTaskWithResult(name: \\"'
        + DEMO_TASK
        + '\\", payload: {name: \\"you\\"}) }"}'
    )
    lines = [
        "",
        "App Tasks is starting",
        f"  GraphQL and GraphiQL: {url}/graphql",
        f"  database:             {settings.effective_database_url}",
        f"  redis:                {settings.redis_url}",
        f"  admin token:          {settings.admin_token}",
        f"  demo app token:       {demo_token or '(see the data folder)'}",
        "",
        "Try it:",
        f"  curl -s {url}/graphql -H 'Content-Type: application/json' \\",
        f"    -H 'Authorization: Bearer {demo_token or '<demo token>'}' \\",
        f"    -d '{query}'",
        "",
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()


def _spawn_worker(settings: Settings) -> subprocess.Popen[bytes]:
    environment = dict(os.environ)
    environment["APPTASKS_REDIS_URL"] = settings.redis_url
    environment["APPTASKS_DATA_DIR"] = str(settings.data_dir)
    command = [sys.executable, "-m", "apptasks.cli", "worker"]
    # A session of its own, so that Ctrl-C reaches only `serve`, which then
    # stops the API, the worker (SIGTERM: it quits its browsers) and Redis in
    # that order.
    return subprocess.Popen(command, env=environment, start_new_session=True)


def _stop_worker(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=WORKER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        logger.warning("worker did not stop in %ds; killing it", WORKER_STOP_SECONDS)
        worker.kill()
        worker.wait()


def _stop_when_worker_exits(
    worker: subprocess.Popen[bytes], server: uvicorn.Server
) -> None:
    """Without its worker, `serve` would take runs nobody runs: stop it too."""

    def watch() -> None:
        code = worker.wait()
        if not server.should_exit:
            logger.error("the worker exited with %s; stopping", code)
            server.should_exit = True

    threading.Thread(target=watch, name="worker-watch", daemon=True).start()


def _api_server(settings: Settings) -> uvicorn.Server:
    from apptasks.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
    )
    return uvicorn.Server(config)


def api(settings: Settings) -> int:
    if not settings.admin_token:
        settings = dataclasses.replace(settings, admin_token=admin_token(settings))
    _api_server(settings).run()
    return 0


def worker(settings: Settings) -> int:
    from workers.worker import run_worker

    run_worker(settings)
    return 0


def migrate(settings: Settings) -> int:
    asyncio.run(db.migrate(settings))
    return 0


def show_settings(_: Settings) -> int:
    for variable, default, meaning in Settings.describe():
        sys.stdout.write(f"{variable:32} {default!s:28} {meaning}\n")
    return 0


def print_schema(_: Settings) -> int:
    from schema.schema import sdl

    sys.stdout.write(sdl())
    return 0


COMMANDS = {
    "serve": serve,
    "api": api,
    "worker": worker,
    "migrate": migrate,
    "settings": show_settings,
    "schema": print_schema,
}


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("apptasks").setLevel(settings.log_level.upper())
    # arq's own job lines quote the job's arguments, which hold payloads; the
    # executor logs each run's lifecycle instead.
    logging.getLogger("arq").setLevel(logging.WARNING)
    # websocket-client reports every killed browser's lost BiDi connection as an
    # error; the runtime logs the kill itself.
    logging.getLogger("websocket").setLevel(logging.CRITICAL)


if __name__ == "__main__":
    sys.exit(main())
