from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0002_failure_bundles')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Fire',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('app', fields.ForeignKeyField('models.App', source_field='app_id', db_constraint=True, to_field='id', related_name='fires', on_delete=OnDelete.CASCADE)),
                ('task_id', fields.IntField()),
                ('fire_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('outcome', fields.CharField(max_length=16)),
                ('reason', fields.CharField(null=True, max_length=200)),
                ('run_id', fields.CharField(null=True, max_length=32)),
                ('recorded_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'fires', 'app': 'models', 'unique_together': (('task_id', 'fire_at'),), 'pk_attr': 'id', 'table_description': 'The ledger of a schedule: one row per expected fire and what came of it.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Run',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=32)),
                ('app', fields.ForeignKeyField('models.App', source_field='app_id', db_constraint=True, to_field='id', related_name='runs', on_delete=OnDelete.CASCADE)),
                ('task_id', fields.IntField(db_index=True)),
                ('task_name', fields.CharField(max_length=64)),
                ('mode', fields.CharField(max_length=16)),
                ('status', fields.CharField(db_index=True, max_length=16)),
                ('environment', fields.CharField(max_length=16)),
                ('page_version', fields.IntField(null=True)),
                ('fire_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('order', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('worker', fields.CharField(null=True, max_length=100)),
                ('lease_until', fields.DatetimeField(null=True, db_index=True, auto_now=False, auto_now_add=False)),
                ('log_id', fields.BigIntField(null=True)),
                ('error_type', fields.CharField(null=True, max_length=100)),
                ('created_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=True)),
                ('started_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'runs', 'app': 'models', 'pk_attr': 'id', 'table_description': 'One run of a task, from the moment it is accepted to its end.'},
            bases=['Model'],
        ),
    ]
