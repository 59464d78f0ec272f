"""The app factory: the ASGI application that serves GraphQL and screens.

This module and the CLI are the only places that wire the layers together.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cross_web import HTTPException
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from apptasks import db
from apptasks.limits import BodySizeLimit
from apptasks.settings import Settings
from apptasks.web import health, javascript_client, render_page
from schema.context import Context
from schema.schema import schema
from workers.queue import RunQueue


class AppTasksGraphQL(GraphQL[Context, None]):
    """Strawberry's ASGI app with our context."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(schema, graphql_ide="graphiql", allow_queries_via_get=True)
        self.settings = settings

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
