"""Give every GraphQL error an `extensions.code`, and mask our own bugs.

An `AppTasksError` reaches the client with its message and code unchanged. Any
other exception is logged with a correlation id and replaced by a message that
carries only that id, so that no stack trace or SQL leaves the server.
"""

from __future__ import annotations

import logging
import uuid

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from apptasks.errors import AppTasksError

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
