"""Apps (tenants) and their tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.transactions import in_transaction

from apptasks.auth import digest, new_secret
from apptasks.errors import BadInput, NotFound, check_text
from apptasks.models import App, Token

MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class NewToken:
    """A token just made: the only time its secret exists outside the caller."""

    token: Token
    secret: str


async def create_app(name: str, token_name: str = "default") -> tuple[App, NewToken]:
    """A new app with one token."""
    name = _check_name("name", name)

    async with in_transaction():
        app = await App.create(name=name)
        new = await create_token(app, token_name)
    return app, new


async def create_token(app: App, name: str) -> NewToken:
    name = _check_name("token name", name)
    secret = new_secret()
    token = await Token.create(app=app, name=name, secret_digest=digest(secret))
    return NewToken(token=token, secret=secret)


async def get_app(app_id: int) -> App:
    app = await App.get_or_none(id=app_id)
    if app is None:
        raise NotFound(f"app {app_id}: no such app")
    return app


async def list_apps() -> list[App]:
    return await App.all().order_by("id")


async def list_tokens(app_id: int) -> list[Token]:
    await get_app(app_id)
    return await Token.filter(app_id=app_id).order_by("id")


async def revoke_token(token_id: int) -> Token:
    """Stop a token at once; revoking twice keeps the first revocation time."""
    token = await Token.get_or_none(id=token_id)
    if token is None:
        raise NotFound(f"token {token_id}: no such token")
    if token.revoked_at is None:
        token.revoked_at = datetime.now(UTC)
        await token.save(update_fields=["revoked_at"])
    return token


def _check_name(field: str, value: str) -> str:
    value = check_text(field, value).strip()
    if not value or len(value) > MAX_NAME_LENGTH:
        raise BadInput(f"{field} {value!r}: must be 1 to {MAX_NAME_LENGTH} characters")
    return value
