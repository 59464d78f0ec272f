"""Plain HTTP endpoints beside GraphQL: screen pages for runtimes, and health."""

from __future__ import annotations

import logging
from importlib.resources import files

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from apptasks.broker import resolve_render_link
from apptasks.models import Page, PageVersion
from apptasks.screens import render_screen
from apptasks.settings import Settings

logger = logging.getLogger("apptasks.web")

_NO_STORE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


async def render_page(request: Request) -> Response:
    """The screen of one run, at the secret URL its worker was given."""
    settings: Settings = request.app.state.settings
    redis: Redis = request.app.state.redis
    target = await resolve_render_link(redis, settings, request.path_params["secret"])
    if target is None:
        return PlainTextResponse("no such screen", status_code=404, headers=_NO_STORE)

    html = await _screen_html(target["appId"], target["pageId"], target["version"])
    if html is None:
        return PlainTextResponse("no such screen", status_code=404, headers=_NO_STORE)
    return HTMLResponse(render_screen(html), headers=_NO_STORE)


async def _screen_html(app_id: int, page_id: int, version: int | None) -> str | None:
    page = await Page.get_or_none(id=page_id, app_id=app_id)
    if page is None:
        return None
    if version is None:
        return page.draft_html
    snapshot = await PageVersion.get_or_none(page_id=page_id, number=version)
    return None if snapshot is None else snapshot.html


async def javascript_client(_: Request) -> Response:
    """The browser client, `/sdk/apptasks.js`: the seed's calls over GraphQL."""
    source = files("apptasks").joinpath("static/apptasks.js").read_text("utf-8")
    return Response(
        source,
        media_type="application/javascript",
        headers={"Cache-Control": "public, max-age=300"},
    )


async def health(request: Request) -> Response:
    """Liveness and readiness: answers 200 when the database and Redis answer."""
    redis: Redis = request.app.state.redis
    checks = {"database": "ok", "redis": "ok"}
    try:
        await Page.first()
    except Exception as exc:
        logger.warning("health check: database failed: %r", exc)
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        await redis.ping()
    except Exception as exc:
        logger.warning("health check: redis failed: %r", exc)
        checks["redis"] = f"error: {type(exc).__name__}"
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse(checks, status_code=200 if healthy else 503)
