import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.fields.base import OnDelete
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name="App",
            fields=[
                (
                    "id",
                    fields.IntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                ("name", fields.CharField(max_length=200)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "apps",
                "app": "models",
                "pk_attr": "id",
                "table_description": "A tenant: every page, task and log belongs to exactly one app.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Page",
            fields=[
                (
                    "id",
                    fields.IntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                (
                    "app",
                    fields.ForeignKeyField(
                        "models.App",
                        source_field="app_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="pages",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("name", fields.CharField(max_length=200)),
                ("draft_html", fields.TextField(unique=False)),
                ("live_version", fields.IntField(null=True)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "pages",
                "app": "models",
                "pk_attr": "id",
                "table_description": "A screen: its current draft and the number of its live (published) version.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="PageVersion",
            fields=[
                (
                    "id",
                    fields.IntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                (
                    "page",
                    fields.ForeignKeyField(
                        "models.Page",
                        source_field="page_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="versions",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("number", fields.IntField()),
                ("html", fields.TextField(unique=False)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={
                "table": "page_versions",
                "app": "models",
                "unique_together": (("page", "number"),),
                "pk_attr": "id",
                "table_description": "A published snapshot of a page, numbered 1, 2, ... per page.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Task",
            fields=[
                (
                    "id",
                    fields.IntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                (
                    "app",
                    fields.ForeignKeyField(
                        "models.App",
                        source_field="app_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="tasks",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                (
                    "page",
                    fields.ForeignKeyField(
                        "models.Page",
                        source_field="page_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="tasks",
                        on_delete=OnDelete.RESTRICT,
                    ),
                ),
                ("name", fields.CharField(max_length=64)),
                ("active", fields.BooleanField(default=True)),
                ("frequency", fields.CharField(null=True, max_length=200)),
                ("timezone", fields.CharField(default="+00", max_length=64)),
                ("timeout", fields.FloatField(default=10.0)),
                (
                    "last_run_at",
                    fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
                ),
                (
                    "next_run_at",
                    fields.DatetimeField(
                        null=True, db_index=True, auto_now=False, auto_now_add=False
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ("updated_at", fields.DatetimeField(auto_now=True, auto_now_add=False)),
            ],
            options={
                "table": "tasks",
                "app": "models",
                "unique_together": (("app", "name"),),
                "pk_attr": "id",
                "table_description": "A screen to run on a schedule (with a frequency) or on demand.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="TaskLog",
            fields=[
                (
                    "id",
                    fields.BigIntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                (
                    "app",
                    fields.ForeignKeyField(
                        "models.App",
                        source_field="app_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="logs",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("task_id", fields.IntField(null=True, db_index=True)),
                ("type", fields.CharField(db_index=True, max_length=64)),
                (
                    "data",
                    fields.JSONField(
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
                (
                    "created_at",
                    fields.DatetimeField(
                        db_index=True, auto_now=False, auto_now_add=True
                    ),
                ),
            ],
            options={
                "table": "task_logs",
                "app": "models",
                "pk_attr": "id",
                "table_description": "One entry per run: `app.task.completed` or `app.task.failed`, with its data.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="Token",
            fields=[
                (
                    "id",
                    fields.IntField(
                        generated=True, primary_key=True, unique=True, db_index=True
                    ),
                ),
                (
                    "app",
                    fields.ForeignKeyField(
                        "models.App",
                        source_field="app_id",
                        db_constraint=True,
                        to_field="id",
                        related_name="tokens",
                        on_delete=OnDelete.CASCADE,
                    ),
                ),
                ("name", fields.CharField(max_length=200)),
                ("secret_digest", fields.CharField(unique=True, max_length=64)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=True)),
                (
                    "revoked_at",
                    fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
                ),
            ],
            options={
                "table": "tokens",
                "app": "models",
                "pk_attr": "id",
                "table_description": "An app's bearer token. Only a SHA-256 digest of the secret is stored.",
            },
            bases=["Model"],
        ),
    ]
