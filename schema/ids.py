"""GraphQL IDs are strings; the database's are integers."""

from __future__ import annotations

import re

import strawberry

from apptasks.errors import NotFound

# Plain ASCII digits within a 64-bit integer; anything else names nothing.
_ID = re.compile(r"[1-9][0-9]{0,18}")
MAX_ID = 2**63 - 1


def parse_id(value: strawberry.ID | str, what: str, scope: str = " in this app") -> int:
    """The integer behind an ID; a malformed one is simply not found."""
    text = str(value)
    if not _ID.fullmatch(text) or int(text) > MAX_ID:
        raise NotFound(f"{what} {value!r}: no such {what}{scope}")
    return int(text)


def optional_id(value: strawberry.ID | None, what: str) -> int | None:
    return None if value is None else parse_id(value, what)
