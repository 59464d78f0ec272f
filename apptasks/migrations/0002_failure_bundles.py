from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0001_initial')]

    initial = False

    operations = [
        ops.CreateModel(
            name='FailureBundle',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('app', fields.ForeignKeyField('models.App', source_field='app_id', db_constraint=True, to_field='id', related_name='failure_bundles', on_delete=OnDelete.CASCADE)),
                ('task_id', fields.IntField(null=True)),
                ('run_id', fields.CharField(unique=True, max_length=64)),
                ('screenshot_png', fields.BinaryField(null=True)),
                ('html', fields.TextField(null=True, unique=False)),
                ('console', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('created_at', fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=True)),
            ],
            options={'table': 'failure_bundles', 'app': 'models', 'pk_attr': 'id', 'table_description': "A failed run's screenshot, page HTML and console lines, for its app to read."},
            bases=['Model'],
        ),
    ]
