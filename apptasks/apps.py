"""Apps (tenants) and their tokens."""

from __future__ import annotations

from dataclasses import dataclass

from tortoise.transactions import in_transaction

from apptasks.auth import digest, new_secret
from apptasks.errors import BadInput
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


def _check_name(field: str, value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_NAME_LENGTH:
        raise BadInput(f"{field} {value!r}: must be 1 to {MAX_NAME_LENGTH} characters")
    return value
