"""App Tasks' cron against croniter, the library the stack names for cron.

The scheduler parses and matches expressions itself (`apptasks.cron_expression`)
because croniter departs from the rules App Tasks promises (ISC cron, see the
README): the cases below pin each departure, so that a croniter that comes
round to the rules shows up here. Where the two share a grammar, in zones
without clock changes, they must agree fire for fire.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from croniter import croniter

from apptasks.cron import parse_timezone, upcoming_fires, validate_frequency
from apptasks.cron_expression import MONTH_NAMES, WEEKDAY_NAMES
from apptasks.errors import BadInput
from tests.cron.reference import random_spec

SEED = 20261204
EXPRESSIONS = 400
FIRES = 12
ZONES = ["UTC", "+05:45", "-03:30"]


def croniter_fires(expr: str, start: datetime, count: int) -> list[datetime]:
    schedule = croniter(expr, start)
    return [schedule.get_next(datetime) for _ in range(count)]


def number(text: str) -> int:
    names = {**MONTH_NAMES, **WEEKDAY_NAMES}
    return int(text) if text.isdigit() else names[text.lower()]


def has_one_value_range(text: str) -> bool:
    """Whether an item like `30-30` or `11-nov` names one value as a range."""
    for item in re.split("[ ,]", text):
        body = item.partition("/")[0]
        first, dash, last = body.partition("-")
        if dash and number(first) == number(last):
            return True
    return False


def shared_grammar(text: str) -> bool:
    """No `L` or `#`, which croniter writes differently or not at all; no range
    of one value (`30-30`), which croniter reads as the whole field; no step in
    the day of week but `*/s` (ISC runs `2/1` on to 7, Sunday, croniter stops
    at 6, and starts `7/6` from 0); and no day field that starts with `*`
    while the other is restricted: ISC cron then wants both to match, croniter
    either."""
    fields = text.split(" ")
    day, weekday = fields[2], fields[4]
    if "L" in text.upper() or "#" in text or has_one_value_range(text):
        return False
    if any("/" in item and item[0] != "*" for item in weekday.split(",")):
        return False
    day_restricted, weekday_restricted = day != "*", weekday != "*"
    return not (
        day_restricted
        and weekday_restricted
        and (day.startswith("*") or weekday.startswith("*"))
    )


@pytest.mark.parametrize("zone", ZONES)
def test_fires_agree_with_croniter_where_the_grammar_is_shared(zone: str) -> None:
    rng = random.Random(f"{SEED}-{zone}")
    tz = parse_timezone(zone)
    compared = 0
    while compared < EXPRESSIONS:
        spec = random_spec(rng)
        if spec.text.startswith("@") or not shared_grammar(spec.text):
            continue
        start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(
            minutes=rng.randrange(60 * 24 * 365 * 3)
        )
        local_start = start.astimezone(tz)

        ours = [fire.at_utc for fire in upcoming_fires(spec.text, tz, start, FIRES)]
        theirs = croniter_fires(spec.text, local_start, len(ours))

        assert ours == [fire.astimezone(UTC) for fire in theirs], (
            f"{spec.text!r} in {zone} after {start.isoformat()}"
        )
        compared += 1


# Where croniter departs from the rules, and what App Tasks does instead.

AFTER = datetime(2026, 3, 1, tzinfo=UTC)


def test_croniter_wraps_a_reversed_range_which_the_rules_refuse() -> None:
    minutes = croniter.expand("5-1 * * * *")[0][0]

    assert minutes == [0, 1, *range(5, 60)]
    with pytest.raises(BadInput, match="reversed"):
        validate_frequency("5-1 * * * *")


def test_croniter_reads_a_range_of_one_value_as_the_whole_field() -> None:
    hours = croniter.expand("0 11-11 * * *")[0][1]
    ours = upcoming_fires("0 11-11 * * *", UTC, AFTER, 2)

    assert hours == ["*"]
    assert [fire.at_utc.hour for fire in ours] == [11, 11]


def test_croniter_accepts_a_date_that_never_comes_which_the_rules_refuse() -> None:
    croniter.expand("0 0 31 2 *")

    with pytest.raises(BadInput, match="never"):
        validate_frequency("0 0 31 2 *")


def test_croniter_refuses_5L_for_the_last_friday_which_the_rules_accept() -> None:
    with pytest.raises(ValueError):
        croniter("0 9 * * 5L", AFTER)

    fires = upcoming_fires("0 9 * * 5L", UTC, AFTER, 2)

    assert [fire.at_utc.date().isoformat() for fire in fires] == [
        "2026-03-27",
        "2026-04-24",
    ]


def test_croniter_lets_either_day_field_match_after_a_star_step() -> None:
    """`0 0 */10 * 1`: ISC cron wants day 1, 11, 21 or 31 that is a Monday."""
    theirs = croniter_fires("0 0 */10 * 1", AFTER, 3)
    ours = [fire.at_utc for fire in upcoming_fires("0 0 */10 * 1", UTC, AFTER, 3)]

    assert all(fire.weekday() == 0 and fire.day in (1, 11, 21, 31) for fire in ours)
    assert not all(
        fire.weekday() == 0 and fire.day in (1, 11, 21, 31) for fire in theirs
    )


def test_croniter_fires_twice_in_a_repeated_hour_for_a_fixed_time() -> None:
    """Europe/London repeats 01:00-02:00 on 2026-10-25; ISC runs a 01:30 job once."""
    london = parse_timezone("Europe/London")
    after = datetime(2026, 10, 24, 12, tzinfo=UTC)

    theirs = croniter_fires("30 1 * * *", after.astimezone(london), 3)
    ours = [fire.at_utc for fire in upcoming_fires("30 1 * * *", london, after, 3)]

    assert [fire.astimezone(UTC).isoformat() for fire in ours] == [
        "2026-10-25T00:30:00+00:00",
        "2026-10-26T01:30:00+00:00",
        "2026-10-27T01:30:00+00:00",
    ]
    assert [fire.astimezone(UTC) for fire in theirs] != ours


def test_a_fixed_offset_never_shifts_in_either() -> None:
    plus = timezone(timedelta(hours=5, minutes=45))

    theirs = croniter_fires("0 9 * * *", AFTER.astimezone(plus), 2)
    ours = [fire.at_utc for fire in upcoming_fires("0 9 * * *", plus, AFTER, 2)]

    assert ours == [fire.astimezone(UTC) for fire in theirs]
