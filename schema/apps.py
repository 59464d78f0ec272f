"""Apps and their tokens: the tenants. Only the admin token manages them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from apptasks import apps
from apptasks.models import App as AppModel
from apptasks.models import Token as TokenModel
from schema.context import Info
from schema.ids import parse_id

AppIdArgument = Annotated[strawberry.ID, strawberry.argument(description="App id.")]
NameArgument = Annotated[
    str, strawberry.argument(description="A name for people to read.")
]


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


@strawberry.type(description="An app's bearer token; its secret is never shown here.")
class Token:
    id: strawberry.ID = strawberry.field(description="The token's id.")
    name: str = strawberry.field(description="What the token is for.")
    app_id: strawberry.ID = strawberry.field(description="The app it acts for.")
    created_at: datetime = strawberry.field(description="When it was made.")
    revoked_at: datetime | None = strawberry.field(
        description="When it was revoked; null while it works."
    )

    @classmethod
    def from_model(cls, token: TokenModel) -> Token:
        return cls(
            id=strawberry.ID(str(token.id)),
            name=token.name,
            app_id=strawberry.ID(str(token.app_id)),  # type: ignore[attr-defined]
            created_at=token.created_at,
            revoked_at=token.revoked_at,
        )


@strawberry.type(description="A new app and its first token.")
class CreateAppPayload:
    app: App = strawberry.field(description="The app just created.")
    token: str = strawberry.field(
        description="The app's bearer token. Shown only this once: keep it."
    )


@strawberry.type(description="A new token and its secret.")
class CreateTokenPayload:
    token: Token = strawberry.field(description="The token just made.")
    secret: str = strawberry.field(
        description="The bearer token itself. Shown only this once: keep it."
    )


@strawberry.type
class AppQuery:
    @strawberry.field(description="Every app (admin only).")
    async def apps(self, info: Info) -> list[App]:
        (await info.context.principal()).require_admin()
        return [App.from_model(app) for app in await apps.list_apps()]

    @strawberry.field(description="An app's tokens, without secrets (admin only).")
    async def tokens(self, info: Info, app_id: AppIdArgument) -> list[Token]:
        (await info.context.principal()).require_admin()
        found = await apps.list_tokens(parse_id(app_id, "app", scope=""))
        return [Token.from_model(token) for token in found]


@strawberry.type
class AppMutation:
    @strawberry.mutation(description="Create an app and its first token (admin only).")
    async def create_app(self, info: Info, name: NameArgument) -> CreateAppPayload:
        (await info.context.principal()).require_admin()
        app, token = await apps.create_app(name)
        return CreateAppPayload(app=App.from_model(app), token=token.secret)

    @strawberry.mutation(description="Make another token for an app (admin only).")
    async def create_token(
        self, info: Info, app_id: AppIdArgument, name: NameArgument
    ) -> CreateTokenPayload:
        (await info.context.principal()).require_admin()
        app = await apps.get_app(parse_id(app_id, "app", scope=""))
        new = await apps.create_token(app, name)
        return CreateTokenPayload(token=Token.from_model(new.token), secret=new.secret)

    @strawberry.mutation(description="Stop a token at once (admin only).")
    async def revoke_token(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="Token id.")],
    ) -> Token:
        (await info.context.principal()).require_admin()
        token_id = parse_id(id, "token", scope="")
        return Token.from_model(await apps.revoke_token(token_id))
