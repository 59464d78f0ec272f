"""Cron frequencies and time zones: validation and the next fire time.

A frequency is a 5-field cron expression (minute hour day-of-month month
day-of-week, Sunday 0 or 7); a time zone is an offset such as `+00`, `+0530`,
`-08:00`, or an IANA name such as `Europe/London`, which follows DST.

Known shortcoming: fire times are croniter's, which differ from ISC cron across
DST changes and when day-of-month and day-of-week are both restricted; error
messages for a malformed field are croniter's own and do not always name the
field.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from apptasks.errors import BadInput

_OFFSET = re.compile(r"(?P<sign>[+-])(?P<hours>[0-9]{2})(?::?(?P<minutes>[0-9]{2}))?")
_UTC_NAMES = {"z", "utc", "gmt"}
MAX_OFFSET = timedelta(hours=14)
MAX_FREQUENCY_LENGTH = 200
FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")


def parse_timezone(value: str) -> tzinfo:
    """The tzinfo for an offset (`+05:30`, `+0530`, `-08`, `Z`) or an IANA name."""
    text = value.strip()
    if text.lower() in _UTC_NAMES:
        return UTC

    match = _OFFSET.fullmatch(text)
    if match:
        minutes = int(match["minutes"] or 0)
        offset = timedelta(hours=int(match["hours"]), minutes=minutes)
        if minutes >= 60 or offset > MAX_OFFSET:
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
    if len(normalised) > MAX_FREQUENCY_LENGTH:
        raise BadInput(
            f"frequency: {len(normalised)} characters is more than the limit of "
            f"{MAX_FREQUENCY_LENGTH}"
        )
    parts = normalised.split(" ")
    if len(parts) != len(FIELD_NAMES):
        raise BadInput(
            f"frequency {expr!r}: expected 5 fields (minute hour day-of-month "
            f"month day-of-week), got {len(parts)}"
        )
    try:
        schedule = croniter(normalised, datetime(2000, 1, 1, tzinfo=UTC))
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise BadInput(f"frequency {expr!r}: {exc}") from None

    try:
        schedule.get_next(datetime)
    except CroniterBadDateError:
        raise BadInput(f"frequency {expr!r}: it can never fire") from None
    return normalised


def next_fire_after(expr: str, tz: tzinfo, instant: datetime) -> datetime:
    """The first fire strictly after `instant`, computed in `tz`, returned in UTC."""
    local = instant.astimezone(tz)
    fire: datetime = croniter(expr, local).get_next(datetime)
    return fire.astimezone(UTC)
