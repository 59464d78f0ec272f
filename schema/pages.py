"""Screens (pages): a draft to edit, and live versions to run on a schedule."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from apptasks import pages
from apptasks.models import Page as PageModel
from schema.context import Info
from schema.ids import parse_id

PageIdArgument = Annotated[strawberry.ID, strawberry.argument(description="Page id.")]


@strawberry.type(description="A published snapshot of a screen.")
class PageVersion:
    number: int = strawberry.field(description="1 for the first publication, ...")
    html: str = strawberry.field(description="The screen's HTML as published.")
    created_at: datetime = strawberry.field(description="When it was published.")


@strawberry.type(description="A screen: HTML whose script registers a handler.")
class Page:
    id: strawberry.ID = strawberry.field(description="The page's id.")
    name: str = strawberry.field(description="The page's name.")
    draft_html: str = strawberry.field(
        description="The current draft, run by on-demand runs from DRAFT."
    )
    live_version: int | None = strawberry.field(
        description="Number of the published version; null until first published."
    )
    created_at: datetime = strawberry.field(description="When the page was created.")
    updated_at: datetime = strawberry.field(description="When it last changed.")

    @strawberry.field(description="Every published version, oldest first.")
    async def versions(self) -> list[PageVersion]:
        found = await pages.list_versions(int(self.id))
        return [
            PageVersion(number=v.number, html=v.html, created_at=v.created_at)
            for v in found
        ]

    @classmethod
    def from_model(cls, page: PageModel) -> Page:
        return cls(
            id=strawberry.ID(str(page.id)),
            name=page.name,
            draft_html=page.draft_html,
            live_version=page.live_version,
            created_at=page.created_at,
            updated_at=page.updated_at,
        )


@strawberry.input(description="A new screen.")
class CreatePageInput:
    name: str = strawberry.field(description="A name for people to read.")
    html: str = strawberry.field(description="The screen's HTML, kept as the draft.")


@strawberry.input(description="Changes to a screen's draft; omitted fields stay.")
class UpdatePageInput:
    name: str | None = strawberry.field(default=None, description="A new name.")
    html: str | None = strawberry.field(default=None, description="A new draft.")


@strawberry.type
class PageQuery:
    @strawberry.field(description="The app's screens, oldest first.")
    async def pages(self, info: Info) -> list[Page]:
        app_id = await info.context.app_id()
        return [Page.from_model(page) for page in await pages.list_pages(app_id)]

    @strawberry.field(description="One screen of the app.")
    async def page(self, info: Info, id: PageIdArgument) -> Page:
        app_id = await info.context.app_id()
        return Page.from_model(await pages.get_page(app_id, parse_id(id, "page")))


@strawberry.type
class PageMutation:
    @strawberry.mutation(description="Create a screen; it is a draft until published.")
    async def create_page(
        self,
        info: Info,
        input: Annotated[
            CreatePageInput, strawberry.argument(description="The new screen.")
        ],
    ) -> Page:
        app_id = await info.context.app_id()
        page = await pages.create_page(app_id, input.name, input.html)
        return Page.from_model(page)

    @strawberry.mutation(description="Change a screen's draft; the live version stays.")
    async def update_page(
        self,
        info: Info,
        id: PageIdArgument,
        input: Annotated[
            UpdatePageInput, strawberry.argument(description="What to change.")
        ],
    ) -> Page:
        app_id = await info.context.app_id()
        page = await pages.update_page(
            app_id, parse_id(id, "page"), name=input.name, html=input.html
        )
        return Page.from_model(page)

    @strawberry.mutation(description="Make the draft live as the next version number.")
    async def publish_page(self, info: Info, id: PageIdArgument) -> Page:
        app_id = await info.context.app_id()
        page_id = parse_id(id, "page")
        await pages.publish_page(app_id, page_id)
        return Page.from_model(await pages.get_page(app_id, page_id))
