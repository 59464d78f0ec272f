"""The GraphQL schema: each domain's queries, mutations and subscriptions merged."""

from __future__ import annotations

from functools import partial

import strawberry
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.tools import merge_types

from schema.apps import AppMutation, AppQuery
from schema.errors import ErrorCodes
from schema.live import LiveSubscription
from schema.logs import LogQuery
from schema.pages import PageMutation, PageQuery
from schema.runs import RunMutation, RunQuery
from schema.schedules import ScheduleQuery
from schema.tasks import TaskMutation, TaskQuery

Query = merge_types(
    "Query", (TaskQuery, ScheduleQuery, PageQuery, RunQuery, LogQuery, AppQuery)
)
Mutation = merge_types(
    "Mutation", (AppMutation, PageMutation, TaskMutation, RunMutation)
)


@strawberry.type(
    description="Live updates, over WebSocket (graphql-transport-ws) with the "
    'token in the connection_init payload: {"authorization": "Bearer <token>"}.'
)
class Subscription(LiveSubscription):
    pass


class AppTasksSchema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None):  # type: ignore[no-untyped-def]
        # ErrorCodes has already logged what deserves logging (our own bugs);
        # the default would log every user error with a traceback.
        return None


# Limits on what one request may ask, so that no query is costly to parse or
# run: nesting depth, aliases (one field asked many times) and tokens.
MAX_DEPTH = 8
MAX_ALIASES = 20
MAX_TOKENS = 2000

schema = AppTasksSchema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    extensions=[
        ErrorCodes,
        partial(QueryDepthLimiter, max_depth=MAX_DEPTH),
        partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
        partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
    ],
)


def sdl() -> str:
    """The schema in SDL, as checked in at schema/schema.graphql."""
    return schema.as_str() + "\n"
