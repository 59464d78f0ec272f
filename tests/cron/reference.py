"""A brute-force cron, written apart from `apptasks.cron`, to check it against.

Random expressions are built together with their meaning (the sets of values
each field allows), so the reference never parses. Fire times come from
walking UTC minutes one by one and applying ISC cron's rules as its main loop
does: a wall time that clocks skip fires a fixed-time job at the first minute
after the jump, and a wall time seen a second time fires only jobs with `*` in
their minute or hour.
"""

from __future__ import annotations

import calendar
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo

MINUTE = timedelta(minutes=1)
MONTHS = [
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
]
WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


@dataclass
class Spec:
    """An expression's text and, independently, what it means."""

    text: str
    minutes: set[int]
    hours: set[int]
    days: set[int]
    months: set[int]
    weekdays: set[int]
    last_day: bool = False
    last_weekdays: set[int] = field(default_factory=set)
    nth_weekdays: set[tuple[int, int]] = field(default_factory=set)
    day_star: bool = False
    weekday_star: bool = False
    fixed: bool = False

    def matches_day(self, day: date) -> bool:
        length = calendar.monthrange(day.year, day.month)[1]
        weekday = day.isoweekday() % 7
        by_day = day.day in self.days or (self.last_day and day.day == length)
        by_weekday = (
            weekday in self.weekdays
            or (weekday in self.last_weekdays and day.day + 7 > length)
            or (weekday, (day.day - 1) // 7 + 1) in self.nth_weekdays
        )
        if self.day_star or self.weekday_star:
            return by_day and by_weekday
        return by_day or by_weekday

    def matches(self, wall: datetime) -> bool:
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and wall.month in self.months
            and self.matches_day(wall.date())
        )


# --- random expressions -------------------------------------------------------


def _spelled(rng: random.Random, value: int, names: list[str] | None) -> str:
    # 7 stays a number: its name, sun, means 0, which would reverse a range.
    if names is None or value == 7 or rng.random() < 0.6:
        return str(value)
    name = names[value] if names is WEEKDAYS else names[value - 1]
    return rng.choice([name, name.upper(), name.title()])


def _pick(rng: random.Random, low: int, high: int, favourites: list[int]) -> int:
    if favourites and rng.random() < 0.6:
        return rng.choice(favourites)
    return rng.randint(low, high)


def _item(
    rng: random.Random,
    low: int,
    high: int,
    names: list[str] | None,
    favourites: list[int],
) -> tuple[str, set[int]]:
    """One item that is not `*`: `a`, `a-b`, `a-b/s` or `a/s`."""
    first = _pick(rng, low, high, favourites)
    form = rng.choice(["a", "a", "a-b", "a-b/s", "a/s"])
    if form == "a":
        return _spelled(rng, first, names), {first}
    step = rng.randint(1, high)
    if form == "a/s":
        return f"{_spelled(rng, first, names)}/{step}", set(
            range(first, high + 1, step)
        )
    last = rng.randint(first, high)
    text = f"{_spelled(rng, first, names)}-{_spelled(rng, last, names)}"
    if form == "a-b":
        return text, set(range(first, last + 1))
    return f"{text}/{step}", set(range(first, last + 1, step))


def random_field(
    rng: random.Random,
    low: int,
    high: int,
    names: list[str] | None = None,
    favourites: list[int] | None = None,
    star: float = 0.4,
) -> tuple[str, set[int]]:
    """A field's text and the values it allows: `*`, `*/s`, an item or a list."""
    favourites = favourites or []
    roll = rng.random()
    if roll < star * 0.7:
        return "*", set(range(low, high + 1))
    if roll < star:
        step = rng.randint(1, high)
        return f"*/{step}", set(range(low, high + 1, step))
    items = [_item(rng, low, high, names, favourites) for _ in range(rng.randint(1, 3))]
    return ",".join(text for text, _ in items), set().union(*(v for _, v in items))


def random_spec(
    rng: random.Random,
    hours: list[int] | None = None,
    day: date | None = None,
    time_star: float = 0.4,
    day_star: float = 0.75,
) -> Spec:
    """A random expression; `hours` and `day` bias it towards a clock change."""
    if rng.random() < 0.05:
        return random_macro(rng)
    minute, minutes = random_field(rng, 0, 59, None, [0, 15, 30, 45, 59], time_star)
    hour, hour_set = random_field(rng, 0, 23, None, hours or [], time_star)
    days_text, days, last_day = _random_days(rng, day, day_star)
    month, months = random_field(
        rng, 1, 12, MONTHS, [day.month] if day else [], day_star
    )
    weekday_text, weekdays, last, nth = _random_weekdays(rng, day, day_star)
    return Spec(
        text=f"{minute} {hour} {days_text} {month} {weekday_text}",
        minutes=minutes,
        hours=hour_set,
        days=days,
        months=months,
        weekdays=weekdays,
        last_day=last_day,
        last_weekdays=last,
        nth_weekdays=nth,
        day_star=days_text.startswith("*"),
        weekday_star=weekday_text.startswith("*"),
        fixed=not (minute.startswith("*") or hour.startswith("*")),
    )


def _random_days(
    rng: random.Random, day: date | None, star: float
) -> tuple[str, set[int], bool]:
    favourites = [day.day] if day else [1, 28, 29, 30, 31]
    text, days = random_field(rng, 1, 31, None, favourites, star)
    if text.startswith("*") or rng.random() < 0.8:
        return text, days, False
    if rng.random() < 0.5:
        return "L", set(), True
    return f"{text},L", days, True


def _random_weekdays(
    rng: random.Random, day: date | None, star: float
) -> tuple[str, set[int], set[int], set[tuple[int, int]]]:
    favourites = [day.isoweekday() % 7] if day else []
    text, values = random_field(rng, 0, 7, WEEKDAYS, favourites, star)
    weekdays = {value % 7 for value in values}
    if text.startswith("*") or rng.random() < 0.6:
        return text, weekdays, set(), set()

    weekday = _pick(rng, 0, 7, favourites)
    spelled = _spelled(rng, weekday, WEEKDAYS)
    if rng.random() < 0.5:
        item, last, nth = f"{spelled}L", {weekday % 7}, set()
    else:
        week = rng.randint(1, 5)
        item, last, nth = f"{spelled}#{week}", set(), {(weekday % 7, week)}
    if rng.random() < 0.5:
        return item, set(), last, nth
    return f"{text},{item}", weekdays, last, nth


def random_macro(rng: random.Random) -> Spec:
    """One of the @ macros, in random case, with the five fields it stands for."""
    name = rng.choice(["hourly", "daily", "midnight", "weekly", "monthly", "yearly"])
    text = "@" + rng.choice([name, name.upper()])
    every_hour, every_day = set(range(24)), set(range(1, 32))
    every_month, every_weekday = set(range(1, 13)), set(range(7))
    fields = {
        "hourly": ({0}, every_hour, every_day, every_month, every_weekday),
        "daily": ({0}, {0}, every_day, every_month, every_weekday),
        "midnight": ({0}, {0}, every_day, every_month, every_weekday),
        "weekly": ({0}, {0}, every_day, every_month, {0}),
        "monthly": ({0}, {0}, {1}, every_month, every_weekday),
        "yearly": ({0}, {0}, {1}, {1}, every_weekday),
    }[name]
    return Spec(
        text,
        *fields,
        day_star=name != "monthly" and name != "yearly",
        weekday_star=name != "weekly",
        fixed=name != "hourly",
    )


# --- brute-force fires --------------------------------------------------------


@dataclass
class Minute:
    """One UTC minute of a walk, with what the zone's clock did at it."""

    at_utc: datetime
    wall: datetime
    skipped: list[datetime]
    first_pass: bool


@dataclass
class Walk:
    """UTC minutes after `start` up to `end`, and how often each wall time occurs."""

    tz: tzinfo
    start: datetime
    end: datetime
    minutes: list[Minute]
    occurrences: Counter[datetime]


def walk(tz: tzinfo, start: datetime, end: datetime) -> Walk:
    """Every UTC minute in (start, end], from three hours before to after it.

    The margins let a repeated time's first pass, or its second, fall outside
    the window and still be counted.
    """
    margin = timedelta(hours=3)
    instant = (start - margin).replace(second=0, microsecond=0)
    previous = (instant - MINUTE).astimezone(tz).replace(tzinfo=None)
    seen: set[datetime] = set()
    occurrences: Counter[datetime] = Counter()
    minutes: list[Minute] = []
    while instant <= end + margin:
        wall = instant.astimezone(tz).replace(tzinfo=None)
        skipped = []
        gap = previous + MINUTE
        while gap < wall:
            skipped.append(gap)
            gap += MINUTE
        if start < instant <= end:
            minutes.append(Minute(instant, wall, skipped, wall not in seen))
        seen.add(wall)
        occurrences[wall] += 1
        previous = wall
        instant += MINUTE
    return Walk(tz, start, end, minutes, occurrences)


def reference_fires(spec: Spec, walk: Walk) -> list[tuple[datetime, str | None]]:
    """Each fire in the walk's window, with the DST change that shaped it."""
    fires: list[tuple[datetime, str | None]] = []
    for minute in walk.minutes:
        if spec.fixed and any(spec.matches(wall) for wall in minute.skipped):
            fires.append((minute.at_utc, "moved"))
            continue
        if not spec.matches(minute.wall):
            continue
        if spec.fixed and not minute.first_pass:
            continue
        if walk.occurrences[minute.wall] == 1:
            fires.append((minute.at_utc, None))
        else:
            fires.append(
                (minute.at_utc, "first_pass_only" if spec.fixed else "doubled")
            )
    return fires


def reference_days(spec: Spec, start: date, count: int, years: int) -> list[date]:
    """The first `count` matching days from `start`, day by day, within `years`."""
    found: list[date] = []
    day = start
    last = start + timedelta(days=366 * years)
    while len(found) < count and day <= last:
        if day.month in spec.months and spec.matches_day(day):
            found.append(day)
        day += timedelta(days=1)
    return found


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)
