"""GraphQL IDs are strings; the database's are integers."""

from __future__ import annotations

import strawberry

from apptasks.errors import NotFound


def parse_id(value: strawberry.ID | str, what: str) -> int:
    """The integer behind an ID; a malformed one is simply not found."""
    try:
        number = int(str(value))
    except ValueError:
        raise NotFound(f"{what} {value!r}: no such {what} in this app") from None
    if number < 1:
        raise NotFound(f"{what} {value!r}: no such {what} in this app")
    return number


def optional_id(value: strawberry.ID | None, what: str) -> int | None:
    return None if value is None else parse_id(value, what)
