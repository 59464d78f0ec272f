"""Random expressions, zones and starts agree with a brute-force reference.

The generator is seeded, so a failure repeats; its message carries the
expression, the zone and the start to replay it by hand.
"""

from __future__ import annotations

import calendar
import random
from datetime import UTC, date, datetime, time, timedelta, tzinfo

import pytest

from apptasks.cron import (
    Fire,
    next_fire_after,
    parse_timezone,
    upcoming_fires,
    validate_frequency,
)
from apptasks.errors import BadInput
from tests.cron.reference import (
    Spec,
    Walk,
    random_spec,
    reference_days,
    reference_fires,
    walk,
)

SEED = 20250309
DST_ZONES = [
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
]
STEADY_ZONES = ["Asia/Kolkata", "UTC", "+05:45", "-03:30", "+14:00", "-12:00"]
WINDOW = timedelta(hours=30)
EXPRESSIONS_PER_WINDOW = 25


def _clock_changes(tz: tzinfo, first_year: int, last_year: int) -> list[datetime]:
    """Each hour, in UTC, in which the zone's offset changes."""
    changes = []
    instant = datetime(first_year, 1, 1, tzinfo=UTC)
    offset = instant.astimezone(tz).utcoffset()
    while instant.year <= last_year:
        instant += timedelta(hours=1)
        now = instant.astimezone(tz).utcoffset()
        if now != offset:
            changes.append(instant)
            offset = now
    return changes


def _random_instant(rng: random.Random, first_year: int, last_year: int) -> datetime:
    low = datetime(first_year, 1, 1, tzinfo=UTC).timestamp()
    high = datetime(last_year, 12, 31, tzinfo=UTC).timestamp()
    return datetime.fromtimestamp(rng.uniform(low, high), UTC).replace(microsecond=0)


def _starts(rng: random.Random, tz: tzinfo) -> list[datetime]:
    """Starts up to 5 hours before each clock change, and a few anywhere."""
    starts = []
    for change in _clock_changes(tz, 2024, 2026):
        before = timedelta(minutes=rng.randint(0, 300), seconds=rng.choice([0, 0, 31]))
        starts.append(change - before)
    anywhere = 2 if starts else 6
    return starts + [_random_instant(rng, 1975, 2060) for _ in range(anywhere)]


def _fires_until(expr: str, tz: tzinfo, start: datetime, end: datetime) -> list[Fire]:
    fires: list[Fire] = []
    instant = start
    while True:
        for fire in upcoming_fires(expr, tz, instant, 16):
            if fire.at_utc > end:
                return fires
            fires.append(fire)
            instant = fire.at_utc


def _check_against_walk(spec: Spec, walk: Walk, rng: random.Random) -> None:
    where = f"{spec.text!r} in {walk.tz} from {walk.start.isoformat()}"
    expected = reference_fires(spec, walk)

    fires = _fires_until(spec.text, walk.tz, walk.start, walk.end)

    assert [(f.at_utc, f.dst_change) for f in fires] == expected, where
    for fire in fires:
        wall = fire.at_utc.astimezone(walk.tz)
        assert fire.local.astimezone(UTC) == fire.at_utc, where
        assert fire.local.replace(tzinfo=None) == wall.replace(tzinfo=None), where
        assert (fire.dst_note is None) == (fire.dst_change is None), where
    for _ in range(3):
        instant = rng.choice(walk.minutes).at_utc - timedelta(
            seconds=rng.randint(0, 59)
        )
        after = [at for at, _ in expected if at > instant]
        if after:
            assert next_fire_after(spec.text, walk.tz, instant) == after[0], (
                f"{where}, next after {instant.isoformat()}"
            )


@pytest.mark.parametrize("zone", DST_ZONES + STEADY_ZONES)
def test_fires_around_clock_changes_match_a_minute_by_minute_walk(zone: str) -> None:
    rng = random.Random(f"{SEED}-{zone}")
    tz = parse_timezone(zone)
    starts = _starts(rng, tz)
    checked = 0

    for start in starts:
        window = walk(tz, start, start + WINDOW)
        day = (start + timedelta(hours=5)).astimezone(tz).date()
        hours = sorted(
            {(start + timedelta(hours=h)).astimezone(tz).hour for h in (0, 3, 5)}
        )
        for _ in range(EXPRESSIONS_PER_WINDOW):
            spec = random_spec(rng, hours=hours, day=day)
            try:
                validate_frequency(spec.text)
            except BadInput as error:
                assert "it can never fire" in error.message, spec.text
                continue
            _check_against_walk(spec, window, rng)
            checked += 1

    assert checked > 0.8 * len(starts) * EXPRESSIONS_PER_WINDOW


def _never_matches(spec: Spec) -> bool:
    """Whether no day matches in a whole 400-year Gregorian cycle."""
    for year in range(2000, 2400):
        for month in sorted(spec.months):
            length = calendar.monthrange(year, month)[1]
            for day in range(1, length + 1):
                if spec.matches_day(date(year, month, day)):
                    return False
    return True


@pytest.mark.parametrize("zone", ["UTC", "+05:30", "-09:30"])
def test_day_rules_match_a_day_by_day_walk_over_decades(zone: str) -> None:
    rng = random.Random(f"{SEED}-days-{zone}")
    tz = parse_timezone(zone)
    refused = 0

    for _ in range(150):
        spec = random_spec(rng, time_star=0.1, day_star=0.3)
        start = _random_instant(rng, 1990, 2090)
        try:
            validate_frequency(spec.text)
        except BadInput as error:
            assert "it can never fire" in error.message, spec.text
            assert _never_matches(spec), f"{spec.text!r} was refused but can fire"
            refused += 1
            continue

        local_start = start.astimezone(tz)
        expected: list[datetime] = []
        for day in reference_days(spec, local_start.date(), 4, years=150):
            for hour in sorted(spec.hours):
                for minute in sorted(spec.minutes):
                    fire = datetime.combine(day, time(hour, minute), tzinfo=tz)
                    if fire > start:
                        expected.append(fire)
        fires = upcoming_fires(spec.text, tz, start, 3)

        assert [f.at_utc for f in fires] == expected[:3], (
            f"{spec.text!r} in {zone} from {start.isoformat()}"
        )

    assert refused < 150 // 3
