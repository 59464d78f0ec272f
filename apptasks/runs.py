"""What a run is before it reaches a runtime: a `RunOrder`, checked and queued.

An order says which task, which screen version, in which mode, with which
payload; the worker turns it into a `RunRequest` for the runtime. Orders travel
through the queue as plain dicts.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from apptasks.errors import BadInput, PayloadTooLarge
from apptasks.models import Page, Task
from apptasks.settings import Settings

ON_DEMAND = "on-demand"
MAX_PAYLOAD_DEPTH = 100
SCHEDULED = "scheduled"


class Environment(StrEnum):
    """Which version of a screen runs: the live (published) one or the draft."""

    DRAFT = "draft"
    LIVE = "live"


@dataclass(frozen=True)
class RunOrder:
    """One run to execute: everything the worker needs, in JSON-safe fields."""

    run_id: str
    app_id: int
    task_id: int
    task_name: str
    page_id: int
    environment: str
    page_version: int | None
    mode: str
    payload: Any
    timeout: float
    token_name: str | None = None
    caller: Any = None
    fire_at: str | None = None

    def to_message(self) -> dict[str, Any]:
        # Shallow on purpose: asdict would copy the payload recursively.
        return {spec.name: getattr(self, spec.name) for spec in fields(self)}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> RunOrder:
        return cls(**message)

    def context(self) -> dict[str, Any]:
        """The second argument of the screen's handler: who and what this run is."""
        context: dict[str, Any] = {
            "runId": self.run_id,
            "taskId": self.task_id,
            "taskName": self.task_name,
            "mode": self.mode,
            "environment": self.environment,
        }
        if self.mode == SCHEDULED:
            context["scheduledFor"] = self.fire_at
        else:
            context["requestedBy"] = {"token": self.token_name, "caller": self.caller}
        return context


def new_run_id() -> str:
    return uuid.uuid4().hex


async def on_demand_order(
    task: Task,
    payload: Any,
    environment: Environment,
    settings: Settings,
    token_name: str,
    caller: Any = None,
) -> RunOrder:
    """An order for a run someone asked for, or BadInput if it cannot run."""
    check_payload(payload, settings)
    check_payload(caller, settings, field="caller")
    page = await Page.get(id=task.page_id)
    version = _version_to_run(page, environment)
    return RunOrder(
        run_id=new_run_id(),
        app_id=task.app_id,
        task_id=task.id,
        task_name=task.name,
        page_id=task.page_id,
        environment=environment.value,
        page_version=version,
        mode=ON_DEMAND,
        payload=payload,
        timeout=task.timeout,
        token_name=token_name,
        caller=caller,
    )


def scheduled_order(
    task: Task, fire_at: datetime, live_version: int | None
) -> RunOrder:
    """An order for a scheduled fire: always the screen's published version."""
    return RunOrder(
        run_id=new_run_id(),
        app_id=task.app_id,
        task_id=task.id,
        task_name=task.name,
        page_id=task.page_id,
        environment=Environment.LIVE.value,
        page_version=live_version,
        mode=SCHEDULED,
        payload=None,
        timeout=task.timeout,
        fire_at=fire_at.isoformat(),
    )


def check_payload(payload: Any, settings: Settings, field: str = "payload") -> None:
    """Refuse what the screen could not receive as JSON, or that is too big."""
    if _depth(payload) > MAX_PAYLOAD_DEPTH:
        raise BadInput(f"{field}: nested more than {MAX_PAYLOAD_DEPTH} levels deep")
    try:
        text = json.dumps(payload, ensure_ascii=False, allow_nan=False)
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadInput(
            f"{field}: contains a lone UTF-16 surrogate, which is not valid text"
        ) from None
    except ValueError:
        raise BadInput(f"{field}: NaN and Infinity are not JSON numbers") from None
    if size > settings.max_payload_bytes:
        raise PayloadTooLarge(
            f"{field}: {size} bytes of JSON is more than the limit of "
            f"{settings.max_payload_bytes} bytes",
            limit=settings.max_payload_bytes,
        )


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a JSON value, without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, level = pending.pop()
        deepest = max(deepest, level)
        if deepest > MAX_PAYLOAD_DEPTH:
            break
        if isinstance(item, dict):
            pending.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, level + 1) for child in item)
    return deepest


def _version_to_run(page: Page, environment: Environment) -> int | None:
    if environment is Environment.DRAFT:
        return None
    if page.live_version is None:
        raise BadInput(
            f"page {page.id} has never been published, so it has no live version: "
            "publish it (publishPage) or run with environment DRAFT"
        )
    return page.live_version
