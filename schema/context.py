"""The per-request context every resolver receives: settings, queue and caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from strawberry.types import Info as StrawberryInfo

from apptasks.auth import Principal, authenticate, bearer_secret
from apptasks.settings import Settings
from workers.queue import RunQueue


@dataclass
class Context:
    """What resolvers know about the request; the caller is resolved on first use."""

    settings: Settings
    queue: RunQueue
    authorization: str | None
    request: Any = None
    response: Any = None
    _principal: Principal | None = field(default=None, init=False)

    async def principal(self) -> Principal:
        if self._principal is None:
            secret = bearer_secret(self.authorization)
            self._principal = await authenticate(secret, self.settings.admin_token)
        return self._principal

    async def app_id(self) -> int:
        """The caller's app; fails for the admin token and for unknown tokens."""
        return (await self.principal()).require_app()


Info = StrawberryInfo[Context, None]
