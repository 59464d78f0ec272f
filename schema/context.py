"""The per-request context every resolver receives: settings, queue and caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strawberry.types import Info as StrawberryInfo

from apptasks.auth import Principal, authenticate, bearer_secret
from apptasks.errors import Unauthenticated
from apptasks.settings import Settings
from workers.queue import RunQueue


@dataclass
class Context:
    """What resolvers know about the request; the caller is resolved on first use.

    Over WebSocket there is one context per connection: `connection_params` is
    the `connection_init` payload, which carries the token.
    """

    settings: Settings
    queue: RunQueue
    authorization: str | None
    request: Any = None
    response: Any = None
    connection_params: dict[str, Any] | None = None
    _principal: Principal | None = field(default=None, init=False)

    async def principal(self) -> Principal:
        if self._principal is None:
            secret = bearer_secret(self.authorization)
            self._principal = await authenticate(secret, self.settings.admin_token)
        return self._principal

    async def token_still_valid(self) -> bool:
        """Whether the token is still known and not revoked, asked anew.

        For connections that outlive a request: a revoked token must not keep
        a subscription open.
        """
        try:
            await authenticate(
                bearer_secret(self.authorization), self.settings.admin_token
            )
        except Unauthenticated:
            return False
        return True

    async def app_id(self) -> int:
        """The caller's app; fails for the admin token and for unknown tokens."""
        return (await self.principal()).require_app()


Info = StrawberryInfo[Context, None]
