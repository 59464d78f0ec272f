"""Give every GraphQL error an `extensions.code`, and mask our own bugs.

An `AppTasksError` reaches the client with its message and code unchanged. A
database or Redis that did not answer becomes `SERVICE_UNAVAILABLE`, naming
the service, so that a caller knows to try again. Any other exception is logged
with a correlation id and replaced by a message that carries only that id, so
that no stack trace or SQL leaves the server.
"""

from __future__ import annotations

import logging
import uuid

from graphql import GraphQLError
from redis.exceptions import RedisError
from strawberry.extensions import MaskErrors

from apptasks.broker import REDIS
from apptasks.db import DATABASE
from apptasks.errors import AppTasksError, Unavailable
from apptasks.outages import causes, describe

logger = logging.getLogger("apptasks.schema.errors")

VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
BAD_INPUT = "BAD_USER_INPUT"
INTERNAL = "INTERNAL_SERVER_ERROR"


def _graphql_error_code(error: GraphQLError) -> str:
    if error.message.startswith("Variable '$") or isinstance(
        error.original_error, GraphQLError
    ):
        return BAD_INPUT
    return VALIDATION_FAILED


def _outage(error: Exception) -> Unavailable | None:
    """Unavailable if the error says the database or Redis did not answer.

    redis-py wraps the socket's own error, which alone would look like the
    database's: a Redis error anywhere in the chain makes it Redis's.
    """
    from_redis = any(isinstance(cause, RedisError) for cause in causes(error))
    dependency = REDIS if from_redis else DATABASE
    return dependency.unavailable(error) if dependency.is_outage(error) else None


def _always(_: GraphQLError) -> bool:
    return True


class ErrorCodes(MaskErrors):
    """Rewrites each error of a result into the client-facing shape."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_always)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if isinstance(original, AppTasksError):
            return self._rebuild(
                error, original.message, {"code": original.code, **original.extensions}
            )
        if original is None or isinstance(original, GraphQLError):
            # graphql-core's own errors: a query that does not fit the schema,
            # or a variable of the wrong shape; their messages say what to fix.
            code = (error.extensions or {}).get("code") or _graphql_error_code(error)
            return self._rebuild(error, error.message, {"code": code})

        outage = _outage(original)
        if outage is not None:
            logger.warning(
                "service unavailable path=%s: %s", error.path, describe(original)
            )
            return self._rebuild(
                error, outage.message, {"code": outage.code, **outage.extensions}
            )

        reference = uuid.uuid4().hex[:12]
        logger.error(
            "internal error reference=%s path=%s",
            reference,
            error.path,
            exc_info=original,
        )
        return self._rebuild(
            error,
            f"internal error (reference {reference}); it has been logged",
            {"code": INTERNAL, "reference": reference},
        )

    @staticmethod
    def _rebuild(
        error: GraphQLError, message: str, extensions: dict[str, object]
    ) -> GraphQLError:
        return GraphQLError(
            message=message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions=extensions,
        )
