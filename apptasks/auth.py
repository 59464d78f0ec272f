"""Bearer tokens: who is calling, and for which app.

App tokens are random secrets shown once; the database keeps only their SHA-256
digest, which is safe for secrets of this much entropy and lets a token be
found with one indexed lookup. The admin token comes from the settings.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from apptasks.errors import Forbidden, Unauthenticated
from apptasks.models import Token

TOKEN_PREFIX = "apt_"


@dataclass(frozen=True)
class Principal:
    """The caller of a request: the admin, or one token of one app."""

    app_id: int | None
    token_name: str
    is_admin: bool = False

    def require_app(self) -> int:
        if self.app_id is None:
            raise Forbidden(
                "this call acts on one app's tasks: use that app's token, "
                "not the admin token"
            )
        return self.app_id

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("only the admin token may do this")


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def bearer_secret(header: str | None) -> str:
    """The token in an `Authorization: Bearer <token>` header value."""
    if not header:
        raise Unauthenticated(
            "no token: send the header 'Authorization: Bearer <token>'"
        )
    scheme, _, secret = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated(
            "malformed Authorization header: expected 'Bearer <token>'"
        )
    return secret.strip()


async def authenticate(secret: str, admin_token: str) -> Principal:
    """The principal a token stands for, or Unauthenticated."""
    if admin_token and hmac.compare_digest(secret, admin_token):
        return Principal(app_id=None, token_name="admin", is_admin=True)

    token = await Token.get_or_none(secret_digest=digest(secret), revoked_at=None)
    if token is None:
        raise Unauthenticated(
            "unknown or revoked token: check the Authorization header, or ask "
            "the admin for a new token (createToken)"
        )
    return Principal(app_id=token.app_id, token_name=token.name)  # type: ignore[attr-defined]
