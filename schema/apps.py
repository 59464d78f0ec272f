"""Apps: the tenants. Only the admin token creates them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from apptasks.apps import create_app
from apptasks.models import App as AppModel
from schema.context import Info


@strawberry.type(description="A tenant: its tokens see and change only its own tasks.")
class App:
    id: strawberry.ID = strawberry.field(description="The app's id.")
    name: str = strawberry.field(description="The app's name.")
    created_at: datetime = strawberry.field(description="When the app was created.")

    @classmethod
    def from_model(cls, app: AppModel) -> App:
        return cls(
            id=strawberry.ID(str(app.id)), name=app.name, created_at=app.created_at
        )


@strawberry.type(description="A new app and its first token.")
class CreateAppPayload:
    app: App = strawberry.field(description="The app just created.")
    token: str = strawberry.field(
        description="The app's bearer token. Shown only this once: keep it."
    )


@strawberry.type
class AppMutation:
    @strawberry.mutation(description="Create an app and its first token (admin only).")
    async def create_app(
        self,
        info: Info,
        name: Annotated[
            str, strawberry.argument(description="A name for people to read.")
        ],
    ) -> CreateAppPayload:
        (await info.context.principal()).require_admin()
        app, token = await create_app(name)
        return CreateAppPayload(app=App.from_model(app), token=token.secret)
