"""Database models: apps and their tokens, screens (pages) with versions, tasks, logs.

Logs keep the task id as a plain column rather than a foreign key, so that a
removed task's log entries stay readable for the retention period.
"""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model

# Tortoise copies model docstrings into table comments and splits the SQLite
# schema at semicolons, so the docstrings here avoid them.


class App(Model):
    """A tenant: every page, task and log belongs to exactly one app."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "apps"


class Token(Model):
    """An app's bearer token. Only a SHA-256 digest of the secret is stored."""

    id = fields.IntField(primary_key=True)
    app: fields.ForeignKeyRelation[App] = fields.ForeignKeyField(
        "models.App", related_name="tokens", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=200)
    secret_digest = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "tokens"


class Page(Model):
    """A screen: its current draft and the number of its live (published) version."""

    id = fields.IntField(primary_key=True)
    app: fields.ForeignKeyRelation[App] = fields.ForeignKeyField(
        "models.App", related_name="pages", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=200)
    draft_html = fields.TextField()
    live_version = fields.IntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "pages"


class PageVersion(Model):
    """A published snapshot of a page, numbered 1, 2, ... per page."""

    id = fields.IntField(primary_key=True)
    page: fields.ForeignKeyRelation[Page] = fields.ForeignKeyField(
        "models.Page", related_name="versions", on_delete=fields.CASCADE
    )
    number = fields.IntField()
    html = fields.TextField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "page_versions"
        unique_together = (("page", "number"),)


class Task(Model):
    """A screen to run on a schedule (with a frequency) or on demand."""

    id = fields.IntField(primary_key=True)
    app: fields.ForeignKeyRelation[App] = fields.ForeignKeyField(
        "models.App", related_name="tasks", on_delete=fields.CASCADE
    )
    page: fields.ForeignKeyRelation[Page] = fields.ForeignKeyField(
        "models.Page", related_name="tasks", on_delete=fields.RESTRICT
    )
    name = fields.CharField(max_length=64)
    active = fields.BooleanField(default=True)
    frequency = fields.CharField(max_length=200, null=True)
    timezone = fields.CharField(max_length=64, default="+00")
    timeout = fields.FloatField(default=10.0)
    last_run_at = fields.DatetimeField(null=True)
    next_run_at = fields.DatetimeField(null=True, db_index=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    app_id: int
    page_id: int

    class Meta:
        table = "tasks"
        unique_together = (("app", "name"),)


class TaskLog(Model):
    """One entry per run: `app.task.completed` or `app.task.failed`, with its data."""

    id = fields.BigIntField(primary_key=True)
    app: fields.ForeignKeyRelation[App] = fields.ForeignKeyField(
        "models.App", related_name="logs", on_delete=fields.CASCADE
    )
    task_id = fields.IntField(null=True, db_index=True)
    type = fields.CharField(max_length=64, db_index=True)
    data: Any = fields.JSONField()
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)

    app_id: int

    class Meta:
        table = "task_logs"


class FailureBundle(Model):
    """A failed run's screenshot, page HTML and console lines, for its app to read."""

    id = fields.BigIntField(primary_key=True)
    app: fields.ForeignKeyRelation[App] = fields.ForeignKeyField(
        "models.App", related_name="failure_bundles", on_delete=fields.CASCADE
    )
    task_id = fields.IntField(null=True)
    run_id = fields.CharField(max_length=64, unique=True)
    screenshot_png = fields.BinaryField(null=True)
    html = fields.TextField(null=True)
    console: Any = fields.JSONField()
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)

    app_id: int

    class Meta:
        table = "failure_bundles"


class Run(Model):
    """One run of a task, from the moment it is accepted to its end.

    The database is the source of truth on runs: Redis only carries the work.
    `order` keeps what a worker needs to start the run (payload included) and
    is cleared when the run ends. A running run holds a lease: past
    `lease_until` with no end, its worker is taken as lost.
    """

    id = fields.CharField(max_length=32, primary_key=True)
    app: fields.ForeignKeyRelation[App] = fields.ForeignKeyField(
        "models.App", related_name="runs", on_delete=fields.CASCADE
    )
    task_id = fields.IntField(db_index=True)
    task_name = fields.CharField(max_length=64)
    mode = fields.CharField(max_length=16)
    status = fields.CharField(max_length=16, db_index=True)
    environment = fields.CharField(max_length=16)
    page_version = fields.IntField(null=True)
    fire_at = fields.DatetimeField(null=True)
    order: Any = fields.JSONField(null=True)
    worker = fields.CharField(max_length=100, null=True)
    lease_until = fields.DatetimeField(null=True, db_index=True)
    log_id = fields.BigIntField(null=True)
    error_type = fields.CharField(max_length=100, null=True)
    created_at = fields.DatetimeField(auto_now_add=True, db_index=True)
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)

    app_id: int

    class Meta:
        table = "runs"


class Fire(Model):
    """The ledger of a schedule: one row per expected fire and what came of it.

    The unique key on (task, fire time) is what makes a fire run at most once,
    whatever the number of workers and schedulers.
    """

    id = fields.BigIntField(primary_key=True)
    app: fields.ForeignKeyRelation[App] = fields.ForeignKeyField(
        "models.App", related_name="fires", on_delete=fields.CASCADE
    )
    task_id = fields.IntField()
    fire_at = fields.DatetimeField()
    outcome = fields.CharField(max_length=16)
    reason = fields.CharField(max_length=200, null=True)
    run_id = fields.CharField(max_length=32, null=True)
    recorded_at = fields.DatetimeField(auto_now_add=True)

    app_id: int

    class Meta:
        table = "fires"
        unique_together = (("task_id", "fire_at"),)
