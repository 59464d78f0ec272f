"""Cron expressions: the five fields, parsed, and the wall-clock minutes they match.

The grammar is ISC (Vixie) cron's, with three common extensions:

- fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or `jan`-`dec`,
  day of week 0-7 or `sun`-`sat` (0 and 7 are both Sunday); names in any case;
- items: `*`, `n`, `a-b`, each with an optional `/step`; `n/step` means
  `n-max/step`; items are joined by commas, and `*` may only be the first one;
- extensions: `L` in day of month (the month's last day), `nL` in day of week
  (the month's last such weekday: `5L`, the last Friday) and `n#k` in day of
  week (the k-th such weekday, k 1-5: `1#2`, the second Monday);
- macros: `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly`
  (`@annually`), which stand for their usual five fields.

Day of month and day of week combine as in ISC cron: when both are restricted a
day matches if either does; when either field starts with `*` (`*/2` too) a day
must match both.

This module knows nothing of time zones: it answers which naive wall-clock
minutes match. `apptasks.cron` maps them onto instants across DST changes.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from apptasks.errors import BadInput

FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec"
MONTH_NAMES = {name: number for number, name in enumerate(_MONTHS.split(), start=1)}
_WEEKDAYS = "sun mon tue wed thu fri sat"
WEEKDAY_NAMES = {name: number for number, name in enumerate(_WEEKDAYS.split())}
# Every Gregorian year has the calendar of one of the years 2001-2028 (the 14
# kinds of year all occur there), so a day rule that matches no day in them
# matches no day ever.
_REFERENCE_YEARS = range(2001, 2029)
_DIGITS = re.compile(r"[0-9]+")
# `5L` (the last Friday) or `1#2` (the second Monday), names allowed.
_LAST_OR_NTH = re.compile(r"(?P<weekday>[0-9A-Za-z]+?)(?:[Ll]|#(?P<nth>[0-9]*))")
_ONE_MINUTE = timedelta(minutes=1)
# Bits d, d+7, d+14, ... (days of one weekday in a month), by the first day d.
_SAME_WEEKDAY = [sum(1 << day for day in range(first, 32, 7)) for first in range(8)]


@dataclass(frozen=True)
class _Field:
    """One of the five fields: its name, its bounds and the names it accepts."""

    name: str
    low: int
    high: int
    names: dict[str, int]
    hint: str


_FIELDS = (
    _Field("minute", 0, 59, {}, "0-59"),
    _Field("hour", 0, 23, {}, "0-23"),
    _Field("day of month", 1, 31, {}, "1-31 or L"),
    _Field("month", 1, 12, MONTH_NAMES, "1-12 or jan-dec"),
    _Field("day of week", 0, 7, WEEKDAY_NAMES, "0-7 (0 and 7 are Sunday) or sun-sat"),
)
_MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY = _FIELDS


class _FieldError(ValueError):
    """A field is wrong; `parse_expression` adds the expression to the message."""


@dataclass(frozen=True)
class CronExpression:
    """A parsed expression: the sets each field allows, and ISC cron's flags.

    Day sets are bit masks (bit d for day d, bit w for weekday w, Sunday 0).
    """

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: int
    last_day: bool
    months: frozenset[int]
    weekdays: tuple[int, ...]
    last_weekdays: tuple[int, ...]
    nth_weekdays: tuple[tuple[int, int], ...]
    day_star: bool
    weekday_star: bool
    fixed_time: bool
    """True when neither minute nor hour starts with `*`: across DST, such a
    job runs once in a repeated hour and is moved out of a skipped one."""

    def day_mask(self, year: int, month: int) -> int:
        """The days of that month that match, as a bit mask (bit d for day d)."""
        first_weekday, length = calendar.monthrange(year, month)
        first_weekday = (first_weekday + 1) % 7  # calendar counts from Monday
        in_month = (1 << (length + 1)) - 2

        by_day = self.days | (1 << length if self.last_day else 0)
        by_weekday = 0
        for weekday in self.weekdays:
            by_weekday |= _SAME_WEEKDAY[(weekday - first_weekday) % 7 + 1]
        for weekday in self.last_weekdays:
            same = _SAME_WEEKDAY[(weekday - first_weekday) % 7 + 1] & in_month
            by_weekday |= 1 << (same.bit_length() - 1)
        for weekday, nth in self.nth_weekdays:
            by_weekday |= 1 << ((weekday - first_weekday) % 7 + 1 + 7 * (nth - 1))

        if self.day_star or self.weekday_star:
            return by_day & by_weekday & in_month
        return (by_day | by_weekday) & in_month

    def can_fire(self) -> bool:
        """Whether any date at all matches the day and month fields."""
        return any(
            self.day_mask(year, month)
            for year in _REFERENCE_YEARS
            for month in self.months
        )

    def next_match(self, start: datetime, last_year: int) -> datetime | None:
        """The first matching wall-clock minute at or after `start`, if any.

        `start` is naive; the search ends with `last_year`. It goes month by
        month and day by day through the allowed values, never minute by minute.
        """
        year, month, day = start.year, start.month, start.day
        hour, minute = start.hour, start.minute
        while year <= last_year:
            if month in self.months:
                days = self.day_mask(year, month) >> day << day
                while days:
                    matching_day = (days & -days).bit_length() - 1
                    if matching_day != day:
                        day, hour, minute = matching_day, 0, 0
                    time = self._time_from(hour, minute)
                    if time is not None:
                        return datetime(year, month, day, *time)
                    days &= days - 1
                    hour, minute = 0, 0
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            day, hour, minute = 1, 0, 0
        return None

    def matches_from(self, start: datetime, last_year: int) -> Iterator[datetime]:
        """Every matching wall-clock minute from `start` on, in order."""
        match = self.next_match(start, last_year)
        while match is not None:
            yield match
            match = self.next_match(match + _ONE_MINUTE, last_year)

    def _time_from(self, hour: int, minute: int) -> tuple[int, int] | None:
        """The first matching (hour, minute) at or after the one given, that day."""
        at = bisect_left(self.hours, hour)
        if at < len(self.hours) and self.hours[at] == hour:
            minute_at = bisect_left(self.minutes, minute)
            if minute_at < len(self.minutes):
                return hour, self.minutes[minute_at]
            at += 1
        if at < len(self.hours):
            return self.hours[at], self.minutes[0]
        return None


def parse_expression(expr: str) -> CronExpression:
    """The parsed expression, or BadInput naming the field and the value."""
    try:
        return _parse(" ".join(expr.split()))
    except _FieldError as exc:
        raise BadInput(f"frequency {expr!r}: {exc}") from None


@lru_cache(maxsize=1024)
def _parse(text: str) -> CronExpression:
    fields = MACROS.get(text.lower(), text).split(" ")
    if text.startswith("@") and text.lower() not in MACROS:
        raise _FieldError(
            f"unknown macro {text!r}, use one of {', '.join(sorted(MACROS))}"
        )
    if len(fields) != len(FIELD_NAMES):
        extra = "; seconds and years are not supported" if len(fields) > 5 else ""
        raise _FieldError(
            "expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)}{extra}"
        )

    minute, hour, day, month, weekday = fields
    days, last_day = _parse_days(day)
    weekdays, last_weekdays, nth_weekdays = _parse_weekdays(weekday)
    return CronExpression(
        minutes=tuple(sorted(_parse_field(minute, _MINUTE))),
        hours=tuple(sorted(_parse_field(hour, _HOUR))),
        days=sum(1 << each for each in days),
        last_day=last_day,
        months=frozenset(_parse_field(month, _MONTH)),
        weekdays=tuple(sorted(weekdays)),
        last_weekdays=tuple(sorted(last_weekdays)),
        nth_weekdays=tuple(sorted(nth_weekdays)),
        day_star=day.startswith("*"),
        weekday_star=weekday.startswith("*"),
        fixed_time=not (minute.startswith("*") or hour.startswith("*")),
    )


def _items(text: str, field: _Field) -> list[str]:
    """The comma-separated items of a field, none empty, `*` only first."""
    items = text.split(",")
    if "" in items:
        raise _FieldError(f"{field.name} has an empty item in {text!r}")
    if any("*" in item for item in items[1:]):
        raise _FieldError(
            f"{field.name}: '*' may only start a field, got {text!r}; "
            "it already covers every value"
        )
    return items


def _parse_field(text: str, field: _Field) -> set[int]:
    return {value for item in _items(text, field) for value in _parse_item(item, field)}


def _parse_days(text: str) -> tuple[set[int], bool]:
    """Day of month: the days named, and whether `L` (the last day) is one."""
    days: set[int] = set()
    last_day = False
    for item in _items(text, _DAY):
        if item in ("L", "l"):
            last_day = True
        elif "L" in item.upper():
            raise _FieldError(
                f"day of month: 'L' (the last day) stands alone, got {item!r}"
            )
        else:
            days.update(_parse_item(item, _DAY))
    return days, last_day


def _parse_weekdays(
    text: str,
) -> tuple[set[int], set[int], set[tuple[int, int]]]:
    """Day of week: plain weekdays, `nL` last weekdays and `n#k` k-th weekdays."""
    weekdays: set[int] = set()
    last: set[int] = set()
    nth: set[tuple[int, int]] = set()
    for item in _items(text, _WEEKDAY):
        if item in ("L", "l"):
            raise _FieldError(
                "day of week: 'L' needs a weekday before it, like 5L for the "
                "last Friday of the month"
            )
        special = _LAST_OR_NTH.fullmatch(item)
        if special is None and ("#" in item or item.endswith(("L", "l"))):
            raise _FieldError(
                f"day of week: {item!r} must be one weekday then L or #k, "
                "like 5L or 1#2"
            )
        if special is None:
            weekdays.update(value % 7 for value in _parse_item(item, _WEEKDAY))
            continue

        weekday = _value(special["weekday"], _WEEKDAY) % 7
        nth_text = special["nth"]
        if nth_text is None:
            last.add(weekday)
        elif _DIGITS.fullmatch(nth_text) and 1 <= int(nth_text) <= 5:
            nth.add((weekday, int(nth_text)))
        else:
            raise _FieldError(
                f"day of week: the week in {item!r} must be #1-#5, got #{nth_text}"
            )
    return weekdays, last, nth


def _parse_item(item: str, field: _Field) -> range:
    """`*`, `n`, `a-b`, each with an optional `/step`; `n/step` runs to the max."""
    body, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not _DIGITS.fullmatch(step_text) or not 1 <= int(step_text) <= field.high:
            shown = step_text if _DIGITS.fullmatch(step_text) else repr(step_text)
            raise _FieldError(
                f"{field.name} step must be 1-{field.high}, got {shown} in {item!r}"
            )
        step = int(step_text)

    if body == "*":
        return range(field.low, field.high + 1, step)
    first_text, dash, last_text = body.partition("-")
    first = _value(first_text, field)
    last = _value(last_text, field) if dash else field.high if slash else first
    if first > last:
        raise _FieldError(
            f"{field.name} range {body!r} is reversed; write the smaller value "
            "first, or a list such as '22,23,0-2'"
        )
    return range(first, last + 1, step)


def _value(text: str, field: _Field) -> int:
    """One number or name of a field, checked against the field's bounds."""
    if _DIGITS.fullmatch(text):
        value = int(text)
        if field.low <= value <= field.high:
            return value
        raise _FieldError(f"{field.name} must be {field.hint}, got {text}")
    if text.lower() in field.names:
        return field.names[text.lower()]
    if field.names and text.isalpha():
        raise _FieldError(f"{field.name}: unknown name {text!r}, use {field.hint}")
    raise _FieldError(f"{field.name} must be {field.hint}, got {text!r}")
