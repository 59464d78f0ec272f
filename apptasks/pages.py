"""Screens (pages): a draft that changes freely, and published live versions."""

from __future__ import annotations

from tortoise.transactions import in_transaction

from apptasks.errors import BadInput, NotFound, check_text
from apptasks.models import Page, PageVersion

MAX_NAME_LENGTH = 200
MAX_HTML_BYTES = 2 * 1024 * 1024


async def create_page(app_id: int, name: str, html: str) -> Page:
    return await Page.create(
        app_id=app_id, name=_check_name(name), draft_html=_check_html(html)
    )


async def update_page(
    app_id: int, page_id: int, name: str | None = None, html: str | None = None
) -> Page:
    """Change the draft (and maybe the name); the live version stays as it is."""
    page = await get_page(app_id, page_id)
    if name is not None:
        page.name = _check_name(name)
    if html is not None:
        page.draft_html = _check_html(html)
    await page.save()
    return page


async def publish_page(app_id: int, page_id: int) -> PageVersion:
    """Make the current draft live as the next version number."""
    async with in_transaction():
        page = await get_page(app_id, page_id)
        number = (page.live_version or 0) + 1
        version = await PageVersion.create(
            page=page, number=number, html=page.draft_html
        )
        page.live_version = number
        await page.save(update_fields=["live_version", "updated_at"])
    return version


async def get_page(app_id: int, page_id: int) -> Page:
    page = await Page.get_or_none(id=page_id, app_id=app_id)
    if page is None:
        raise NotFound(f"page {page_id}: no such page in this app")
    return page


async def list_pages(app_id: int) -> list[Page]:
    return await Page.filter(app_id=app_id).order_by("id")


async def list_versions(page_id: int) -> list[PageVersion]:
    return await PageVersion.filter(page_id=page_id).order_by("number")


def _check_name(name: str) -> str:
    name = check_text("name", name).strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise BadInput(f"name {name!r}: must be 1 to {MAX_NAME_LENGTH} characters")
    return name


def _check_html(html: str) -> str:
    size = len(check_text("html", html, allow_nul=True).encode("utf-8"))
    if size > MAX_HTML_BYTES:
        raise BadInput(
            f"html: {size} bytes is more than the limit of {MAX_HTML_BYTES} bytes"
        )
    return html
