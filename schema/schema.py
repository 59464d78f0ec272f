"""The GraphQL schema: each domain's queries and mutations merged into one."""

from __future__ import annotations

import strawberry
from strawberry.tools import merge_types

from schema.apps import AppMutation
from schema.errors import ErrorCodes
from schema.logs import LogQuery
from schema.pages import PageMutation, PageQuery
from schema.tasks import TaskMutation, TaskQuery

Query = merge_types("Query", (TaskQuery, PageQuery, LogQuery))
Mutation = merge_types("Mutation", (AppMutation, PageMutation, TaskMutation))


class AppTasksSchema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None):  # type: ignore[no-untyped-def]
        # ErrorCodes has already logged what deserves logging (our own bugs);
        # the default would log every user error with a traceback.
        return None


schema = AppTasksSchema(query=Query, mutation=Mutation, extensions=[ErrorCodes])
