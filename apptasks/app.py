"""The app factory: the ASGI application that serves GraphQL and screens.

This module and the CLI are the only places that wire the layers together.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError, OperationType, parse
from graphql.utilities import get_operation_ast
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLRequestData
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
)
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from apptasks import db
from apptasks.errors import BadInput, Unauthenticated
from apptasks.limits import BodySizeLimit
from apptasks.settings import Settings
from apptasks.web import health, javascript_client, render_page
from schema.context import Context
from schema.schema import schema
from workers.queue import RunQueue

logger = logging.getLogger("apptasks.app")

# How often an open WebSocket's token is looked up again, so that revoking a
# token ends its subscriptions within about this long.
TOKEN_CHECK_SECONDS = 2.0
# graphql-transport-ws's close code for a refused connection_init; used too
# when the token is revoked later.
FORBIDDEN_CLOSE = 4403


class TokenCheckingHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, closing the connection once its token is revoked."""

    token_watch: asyncio.Task[None] | None = None

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged and self.token_watch is None:
            self.token_watch = asyncio.create_task(self.close_when_revoked())

    async def shutdown(self) -> None:
        if self.token_watch is not None:
            self.token_watch.cancel()
            with suppress(asyncio.CancelledError):
                await self.token_watch
        await super().shutdown()

    async def close_when_revoked(self) -> None:
        while True:
            await asyncio.sleep(TOKEN_CHECK_SECONDS)
            if not await self._token_still_valid():
                break

        # The operations go first, so that none of them sends on a closed socket.
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        await self.websocket.close(code=FORBIDDEN_CLOSE, reason="token revoked")
        principal = await self.context.principal()
        logger.info(
            "websocket closed: token revoked app=%s token=%s",
            principal.app_id,
            principal.token_name,
        )

    async def _token_still_valid(self) -> bool:
        try:
            return await self.context.token_still_valid()
        except Exception:
            # A database that does not answer says nothing about the token:
            # the connection stays, and the next check decides.
            logger.warning("token check failed; connection kept", exc_info=True)
            return True


class AppTasksGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI app with our context and our WebSocket rules.

    Subscriptions speak graphql-transport-ws only (the legacy graphql-ws
    protocol is refused with 4406) and authenticate with the token in the
    `connection_init` payload, `{"authorization": "Bearer <token>"}`.
    """

    graphql_transport_ws_handler_class = TokenCheckingHandler

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql",
            allow_queries_via_get=True,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(seconds=10),
            # The token travels in connection_init, never in a cookie, so a
            # page on any origin the HTTP API accepts may open a socket too.
            allowed_origins=settings.cors_origins,
        )
        self.settings = settings

    async def run(
        self,
        request: Request | WebSocket,
        context: Any = UNSET,
        root_value: Any = UNSET,
    ) -> Any:
        """Strawberry's, answering a refused HTTP request in GraphQL's shape.

        Strawberry answers a body it cannot use (not JSON, a batch, no query)
        with plain text; clients read `errors` and `extensions.code` instead,
        as they do for every other refusal, 413 included.
        """
        try:
            return await super().run(request, context, root_value)
        except HTTPException as exc:
            if isinstance(request, WebSocket):
                raise
            error = {"message": exc.reason, "extensions": {"code": BadInput.code}}
            return JSONResponse({"errors": [error]}, status_code=exc.status_code)

    def parse_json(self, data: str | bytes) -> Any:
        """The request body as JSON, refusing what is not a GraphQL request."""
        try:
            parsed = super().parse_json(data)
        except (RecursionError, UnicodeDecodeError) as exc:
            raise HTTPException(400, "the request body is not usable JSON") from exc
        if not isinstance(parsed, dict | list):
            raise HTTPException(
                400, 'the request body must be a JSON object: {"query": "..."}'
            )
        return parsed

    async def execute_single(
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """Strawberry's, refusing a subscription sent as a plain HTTP request.

        Strawberry would run it as a query, which ends in an internal error.
        """
        if _is_subscription(request_data):
            error = GraphQLError(
                "subscriptions are served over WebSocket only: open one on "
                "/graphql with the graphql-transport-ws protocol, and send the "
                'token in connection_init as {"authorization": "Bearer ..."}',
                extensions={"code": BadInput.code},
            )
            return ExecutionResult(data=None, errors=[error])
        return await super().execute_single(
            request, request_adapter, sub_response, context, root_value, request_data
        )

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket | None = None
    ) -> Context:
        return Context(
            settings=self.settings,
            queue=request.app.state.queue,
            authorization=request.headers.get("authorization"),
            request=request,
            response=response,
        )

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object]:
        """Accept the connection only for a known token in connection_init."""
        given = (context.connection_params or {}).get("authorization")
        if not isinstance(given, str):
            given = None
        context.authorization = given
        try:
            await context.principal()
        except Unauthenticated as exc:
            raise ConnectionRejectionError({"message": exc.message}) from exc
        return UnsetType()  # the singleton: a plain connection_ack


def _is_subscription(request_data: GraphQLRequestData) -> bool:
    """Whether the request's operation is a subscription (a cheap look first)."""
    query = request_data.query
    if not query or "subscription" not in query:
        return False
    try:
        document = parse(query)
    except GraphQLError:
        return False  # Strawberry answers the syntax error itself.
    operation = get_operation_ast(document, request_data.operation_name)
    return operation is not None and operation.operation == OperationType.SUBSCRIPTION


def create_app(settings: Settings) -> Starlette:
    """The API for these settings; connects to the database and Redis on start."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await db.connect(settings)
        queue = await RunQueue.connect(settings)
        app.state.settings = settings
        app.state.queue = queue
        app.state.redis = queue.redis
        try:
            yield
        finally:
            await queue.close()
            await db.close()

    async def home(_: Any) -> Response:
        return RedirectResponse("/graphql")

    graphql = AppTasksGraphQL(settings)
    routes = [
        Route("/", home),
        Route("/healthz", health),
        Route("/render/{secret}", render_page),
        Route("/sdk/apptasks.js", javascript_client),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
    ]
    middleware = [
        # Pages on other origins (dashboards, the JS client) call the API with
        # a bearer token and no cookies, so any listed origin may.
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        ),
        # Inside CORS, so that a browser can read the 413 it answers.
        Middleware(BodySizeLimit, max_bytes=settings.max_request_bytes),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
