"""Cron frequencies and time zones: validation, the next fire and a preview.

A frequency is an ISC (Vixie) cron expression: five fields (minute hour
day-of-month month day-of-week), with `L`, `nL`, `n#k` and the `@daily`-style
macros; `apptasks.cron_expression` gives the grammar and how day of month and
day of week combine. A time zone is an offset such as `+00`, `+0530` or
`-08:00`, which never shifts, or an IANA name such as `Europe/London`, which
follows DST.

Fire times follow ISC cron across a clock change. A fixed-time job (neither
minute nor hour starts with `*`) whose time is skipped when clocks go forward
runs once, at the first valid time after the change; when clocks go back it
runs once, in the first pass of the repeated times. A job with `*` in its
minute or hour skips the times that do not exist and runs in both passes of
the repeated ones, so it keeps one run per real interval. The same rules apply
to a zone's other offset changes, however large.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, datetime, timedelta, timezone, tzinfo
from enum import StrEnum
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apptasks.cron_expression import CronExpression, parse_expression
from apptasks.errors import BadInput

_OFFSET = re.compile(r"(?P<sign>[+-])(?P<hours>[0-9]{2})(?::?(?P<minutes>[0-9]{2}))?")
_UTC_NAMES = {"z", "utc", "gmt"}
MAX_OFFSET = timedelta(hours=14)
MAX_FREQUENCY_LENGTH = 200
MAX_UPCOMING = 100
# A valid expression waits at most decades between fires (a 29th of February
# that is a Sunday); finding none in this many years means that the zone's
# clock changes skip every time it names.
SEARCH_YEARS = 400


class DstChange(StrEnum):
    """How a clock change altered a fire."""

    MOVED = "moved"
    """Its time was skipped (clocks went forward); it runs just after the gap."""
    DOUBLED = "doubled"
    """Its time happens twice (clocks went back); it runs in both passes."""
    FIRST_PASS_ONLY = "first_pass_only"
    """Its time happens twice (clocks went back); it runs in the first only."""


@dataclass(frozen=True)
class Fire:
    """One fire: the instant, the wall time in the zone, and any DST change."""

    at_utc: datetime
    local: datetime
    dst_note: str | None = None
    dst_change: DstChange | None = None


def parse_timezone(value: str) -> tzinfo:
    """The tzinfo for an offset (`+05:30`, `+0530`, `-08`, `Z`) or an IANA name."""
    text = value.strip()
    if text.lower() in _UTC_NAMES:
        return UTC

    match = _OFFSET.fullmatch(text)
    if match:
        minutes = int(match["minutes"] or 0)
        offset = timedelta(hours=int(match["hours"]), minutes=minutes)
        if minutes >= 60:
            raise BadInput(
                f"timezone {value!r}: the minutes of an offset must be 00-59"
            )
        if offset > MAX_OFFSET:
            raise BadInput(
                f"timezone {value!r}: an offset must be between -14:00 and +14:00"
            )
        return timezone(-offset if match["sign"] == "-" else offset)

    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(
            f"timezone {value!r}: not an offset like '+05:30' or a known IANA "
            "zone name like 'Europe/London'"
        ) from None


def validate_frequency(expr: str) -> str:
    """The expression, normalised, or BadInput naming what is wrong with it."""
    normalised = " ".join(expr.split())
    if not normalised:
        raise BadInput(
            f"frequency {expr!r}: blank; give a cron expression such as "
            "'0 9 * * *', or null (or \"\") for a task that runs only on demand"
        )
    if len(normalised) > MAX_FREQUENCY_LENGTH:
        raise BadInput(
            f"frequency: {len(normalised)} characters is more than the limit of "
            f"{MAX_FREQUENCY_LENGTH}"
        )

    expression = parse_expression(expr)
    if not expression.can_fire():
        raise BadInput(
            f"frequency {expr!r}: it can never fire, no date matches its day of "
            "month, month and day of week"
        )
    return normalised.lower() if normalised.startswith("@") else normalised


def next_fire_after(expr: str, tz: tzinfo, instant: datetime) -> datetime:
    """The first fire strictly after `instant`, computed in `tz`, returned in UTC."""
    return _next_fire(expr, parse_expression(expr), tz, instant).at_utc


def upcoming_fires(expr: str, tz: tzinfo, after: datetime, count: int) -> list[Fire]:
    """The next `count` fires strictly after `after`, each with its DST change."""
    if not 0 <= count <= MAX_UPCOMING:
        raise BadInput(f"count {count}: ask for 0 to {MAX_UPCOMING} fires")
    expression = parse_expression(expr)

    fires: list[Fire] = []
    instant = after
    for _ in range(count):
        fire = _next_fire(expr, expression, tz, instant)
        fires.append(fire)
        instant = fire.at_utc
    return fires


class _Candidate(NamedTuple):
    """A possible fire, and the wall time the expression named for it."""

    at_utc: datetime
    local: datetime
    wall: datetime
    change: DstChange | None


def _next_fire(
    expr: str, expression: CronExpression, tz: tzinfo, instant: datetime
) -> Fire:
    """The first fire after `instant`: walk the matching wall times in order.

    A wall time's fires are never earlier than its first instant, and first
    instants never go down as wall times go up; so the walk stops at the first
    wall time whose first instant is no earlier than the best fire so far. A
    second pass of a repeated time is the one fire that can come after a later
    wall time's, hence the walk starting early enough to see it. From within a
    second pass, though, the first passes are over, and the first fire found
    is the earliest.
    """
    if instant.tzinfo is None:
        raise ValueError(f"instant {instant.isoformat()} has no time zone")
    instant = instant.astimezone(UTC)
    local = instant.astimezone(tz)
    start = _earliest_wall_time(tz, instant, local)
    in_second_pass = local.fold == 1

    best: _Candidate | None = None
    last_year = min(start.year + SEARCH_YEARS, MAXYEAR - 1)
    for wall in expression.matches_from(start, last_year):
        first_instant, candidates = _candidates(expression, tz, wall)
        for candidate in candidates:
            if candidate.at_utc > instant and (
                best is None or candidate.at_utc < best.at_utc
            ):
                best = candidate
        if best is not None and (in_second_pass or first_instant >= best.at_utc):
            return _fire(best, tz)

    raise BadInput(
        f"frequency {expr!r}: it never fires in time zone {tz}, whose clock "
        "changes skip every time it names; use a time outside the skipped hours"
    )


def _earliest_wall_time(tz: tzinfo, instant: datetime, local: datetime) -> datetime:
    """The earliest wall time that can still fire after `instant` (UTC, `local`).

    That is the wall time now, unless clocks go back before the wall time
    reaches it again: then the repeated times come again, in their second pass.
    A zone is assumed to change its offset at most once a day.
    """
    now = local.utcoffset() or timedelta(0)
    wall = local.replace(tzinfo=None, second=0, microsecond=0)
    back = now - _offset(tz, instant + timedelta(days=1))
    if back <= timedelta(0) or _offset(tz, instant + back) == now:
        return wall

    change = _first_change(tz, instant, instant + back)
    return change.replace(tzinfo=None) + _offset(tz, change)


def _candidates(
    expression: CronExpression, tz: tzinfo, wall: datetime
) -> tuple[datetime, list[_Candidate]]:
    """The fires for one matching wall time, and the first instant it maps to.

    zoneinfo resolves a wall time twice (PEP 495 `fold`): the same instant for
    an ordinary time, two instants in order for a repeated one, and two in
    reverse order for one that a forward change skips.
    """
    early = wall.replace(tzinfo=tz)
    late = wall.replace(tzinfo=tz, fold=1)
    first, second = early.astimezone(UTC), late.astimezone(UTC)
    if first == second:
        return first, [_Candidate(first, early, wall, None)]

    if first < second and expression.fixed_time:
        return first, [_Candidate(first, early, wall, DstChange.FIRST_PASS_ONLY)]
    if first < second:
        return first, [
            _Candidate(first, early, wall, DstChange.DOUBLED),
            _Candidate(second, late, wall, DstChange.DOUBLED),
        ]

    if not expression.fixed_time:
        return second, []
    moved = _first_change(tz, second, first)
    return moved, [_Candidate(moved, moved.astimezone(tz), wall, DstChange.MOVED)]


def _fire(candidate: _Candidate, tz: tzinfo) -> Fire:
    """The fire, with a note saying how a clock change shaped it."""
    at_utc, local, wall, change = candidate
    if change is None:
        return Fire(at_utc, local)
    if change is DstChange.MOVED:
        note = (
            f"{wall:%H:%M} does not exist on {wall:%Y-%m-%d} as clocks go "
            f"forward; runs at {local:%H:%M %Z} instead"
        )
        return Fire(at_utc, local, note, change)

    early, late = wall.replace(tzinfo=tz), wall.replace(tzinfo=tz, fold=1)
    repeated = (
        f"{wall:%H:%M} happens twice on {wall:%Y-%m-%d} "
        f"({early:%Z}, then {late:%Z}) as clocks go back"
    )
    if change is DstChange.FIRST_PASS_ONLY:
        return Fire(at_utc, local, f"{repeated}; runs in the first pass only", change)
    which = "second" if local.fold else "first"
    return Fire(at_utc, local, f"{repeated}; runs in both, this is the {which}", change)


def _offset(tz: tzinfo, instant: datetime) -> timedelta:
    return instant.astimezone(tz).utcoffset() or timedelta(0)


def _first_change(tz: tzinfo, before: datetime, after: datetime) -> datetime:
    """The instant the offset changes, between one before it and one after it."""
    old_offset = _offset(tz, before)
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == old_offset:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)
