"""Fires across clock changes follow ISC cron: moved once, or run in both passes."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from apptasks.cron import (
    MAX_UPCOMING,
    DstChange,
    next_fire_after,
    parse_timezone,
    upcoming_fires,
)
from apptasks.errors import BadInput

MOVED, DOUBLED, ONCE = (
    DstChange.MOVED,
    DstChange.DOUBLED,
    DstChange.FIRST_PASS_ONLY,
)

# Each row: expression, zone, start (local ISO), then each fire's local ISO
# time and the DST change that shaped it.
CASES = [
    pytest.param(
        "0,30 2 * * *",
        "America/New_York",
        "2025-03-08T12:00:00-05:00",
        [("2025-03-09T03:00:00-04:00", MOVED), ("2025-03-10T02:00:00-04:00", None)],
        id="ny-spring-two-skipped-times-run-once-after-the-gap",
    ),
    pytest.param(
        "0 2,3 * * *",
        "America/New_York",
        "2025-03-08T12:00:00-05:00",
        [("2025-03-09T03:00:00-04:00", MOVED), ("2025-03-10T02:00:00-04:00", None)],
        id="ny-spring-skipped-time-and-the-time-after-the-gap-are-one-run",
    ),
    pytest.param(
        "*/20 2 * * *",
        "America/New_York",
        "2025-03-08T12:00:00-05:00",
        [("2025-03-10T02:00:00-04:00", None), ("2025-03-10T02:20:00-04:00", None)],
        id="ny-spring-wildcard-minute-skips-the-missing-hour",
    ),
    pytest.param(
        "30 1 * * *",
        "America/New_York",
        "2025-11-01T12:00:00-04:00",
        [("2025-11-02T01:30:00-04:00", ONCE), ("2025-11-03T01:30:00-05:00", None)],
        id="ny-fall-fixed-time-runs-in-the-first-pass-only",
    ),
    pytest.param(
        "0 0-23 * * *",
        "America/New_York",
        "2025-11-02T00:30:00-04:00",
        [("2025-11-02T01:00:00-04:00", ONCE), ("2025-11-02T02:00:00-05:00", None)],
        id="ny-fall-an-hour-range-is-a-fixed-time",
    ),
    pytest.param(
        "*/30 1 * * *",
        "America/New_York",
        "2025-11-02T00:00:00-04:00",
        [
            ("2025-11-02T01:00:00-04:00", DOUBLED),
            ("2025-11-02T01:30:00-04:00", DOUBLED),
            ("2025-11-02T01:00:00-05:00", DOUBLED),
            ("2025-11-02T01:30:00-05:00", DOUBLED),
            ("2025-11-03T01:00:00-05:00", None),
        ],
        id="ny-fall-wildcard-minute-runs-in-both-passes",
    ),
    pytest.param(
        "0 * * * *",
        "America/New_York",
        "2025-11-02T01:30:00-04:00",
        [("2025-11-02T01:00:00-05:00", DOUBLED), ("2025-11-02T02:00:00-05:00", None)],
        id="ny-fall-start-in-the-first-pass-finds-the-second",
    ),
    pytest.param(
        "45 1 * * *",
        "America/New_York",
        "2025-11-02T01:10:00-05:00",
        [("2025-11-03T01:45:00-05:00", None)],
        id="ny-fall-start-in-the-second-pass-does-not-repeat-a-fixed-time",
    ),
    pytest.param(
        "30 1 * * *",
        "Europe/London",
        "2025-03-29T12:00:00+00:00",
        [("2025-03-30T02:00:00+01:00", MOVED), ("2025-03-31T01:30:00+01:00", None)],
        id="london-spring-fixed-time",
    ),
    pytest.param(
        "@hourly",
        "Europe/London",
        "2025-10-26T00:30:00+01:00",
        [
            ("2025-10-26T01:00:00+01:00", DOUBLED),
            ("2025-10-26T01:00:00+00:00", DOUBLED),
            ("2025-10-26T02:00:00+00:00", None),
        ],
        id="london-fall-hourly-macro-is-a-wildcard-hour",
    ),
    pytest.param(
        "@daily",
        "America/Sao_Paulo",
        "2018-11-03T12:00:00-03:00",
        [("2018-11-04T01:00:00-02:00", MOVED), ("2018-11-05T00:00:00-02:00", None)],
        id="sao-paulo-midnight-gap-moves-a-daily-job",
    ),
    pytest.param(
        "15 2 * * *",
        "Australia/Lord_Howe",
        "2025-10-04T12:00:00+10:30",
        [("2025-10-05T02:30:00+11:00", MOVED), ("2025-10-06T02:15:00+11:00", None)],
        id="lord-howe-spring-half-hour-gap",
    ),
    pytest.param(
        "*/30 * * * *",
        "Australia/Lord_Howe",
        "2025-04-06T01:10:00+11:00",
        [
            ("2025-04-06T01:30:00+11:00", DOUBLED),
            ("2025-04-06T01:30:00+10:30", DOUBLED),
            ("2025-04-06T02:00:00+10:30", None),
        ],
        id="lord-howe-fall-half-hour-repeat",
    ),
    pytest.param(
        "50 1 * * *",
        "Australia/Lord_Howe",
        "2025-04-05T12:00:00+11:00",
        [("2025-04-06T01:50:00+11:00", ONCE), ("2025-04-07T01:50:00+10:30", None)],
        id="lord-howe-fall-fixed-time-once",
    ),
    pytest.param(
        "0 3 * * *",
        "Pacific/Chatham",
        "2025-09-27T12:00:00+12:45",
        [("2025-09-28T03:45:00+13:45", MOVED), ("2025-09-29T03:00:00+13:45", None)],
        id="chatham-spring-gap-at-quarter-to",
    ),
    pytest.param(
        "0 12 * * *",
        "Pacific/Apia",
        "2011-12-29T13:00:00-10:00",
        [("2011-12-31T00:00:00+14:00", MOVED), ("2011-12-31T12:00:00+14:00", None)],
        id="apia-skipped-day-moves-a-fixed-time",
    ),
    pytest.param(
        "30 2 * * *",
        "-05:00",
        "2025-03-08T12:00:00-05:00",
        [("2025-03-09T02:30:00-05:00", None), ("2025-03-10T02:30:00-05:00", None)],
        id="fixed-offset-never-shifts",
    ),
    pytest.param(
        "0 9 * * *",
        "Asia/Kolkata",
        "2025-03-30T00:00:00+00:00",
        [("2025-03-30T09:00:00+05:30", None), ("2025-03-31T09:00:00+05:30", None)],
        id="kolkata-has-no-dst",
    ),
]


@pytest.mark.parametrize(("expr", "zone", "start", "fires"), CASES)
def test_fires_across_a_clock_change(
    expr: str,
    zone: str,
    start: str,
    fires: list[tuple[str, DstChange | None]],
) -> None:
    tz = parse_timezone(zone)

    found = upcoming_fires(expr, tz, datetime.fromisoformat(start), len(fires))

    assert [(f.local.isoformat(), f.dst_change) for f in found] == fires
    assert [f.dst_note is None for f in found] == [c is None for _, c in fires]
    # `==` across zones is never true for a repeated time (PEP 495), so convert.
    assert all(f.local.astimezone(UTC) == f.at_utc for f in found)
    assert all(f.at_utc.tzinfo is UTC for f in found)


def test_notes_say_what_the_clock_did_and_what_the_job_does() -> None:
    tz = parse_timezone("America/New_York")
    spring = datetime(2025, 3, 9, 5, tzinfo=UTC)
    fall = datetime(2025, 11, 2, 4, tzinfo=UTC)

    [moved] = upcoming_fires("30 2 * * *", tz, spring, 1)
    [once] = upcoming_fires("30 1 * * *", tz, fall, 1)
    first, second = upcoming_fires("30 * * * *", tz, fall, 3)[1:]

    assert moved.dst_note == (
        "02:30 does not exist on 2025-03-09 as clocks go forward; "
        "runs at 03:00 EDT instead"
    )
    assert once.dst_note == (
        "01:30 happens twice on 2025-11-02 (EDT, then EST) as clocks go back; "
        "runs in the first pass only"
    )
    assert first.dst_note is not None and first.dst_note.endswith("this is the first")
    assert second.dst_note is not None and second.dst_note.endswith("the second")


def test_a_job_every_time_of_which_the_zone_skips_is_refused() -> None:
    # The second Sunday of March at 02:xx never exists in New York (since 2007).
    tz = parse_timezone("America/New_York")

    with pytest.raises(BadInput) as refused:
        next_fire_after("*/5 2 * 3 0#2", tz, datetime(2025, 1, 1, tzinfo=UTC))

    assert "'*/5 2 * 3 0#2': it never fires in time zone America/New_York" in str(
        refused.value
    )
    fixed = next_fire_after("5 2 * 3 0#2", tz, datetime(2025, 1, 1, tzinfo=UTC))
    assert fixed == datetime(2025, 3, 9, 7, tzinfo=UTC), "a fixed time is moved"


def test_upcoming_fires_takes_zero_to_a_hundred() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)

    assert upcoming_fires("* * * * *", UTC, start, 0) == []
    assert len(upcoming_fires("* * * * *", UTC, start, MAX_UPCOMING)) == MAX_UPCOMING
    with pytest.raises(BadInput, match="count 101: ask for 0 to 100 fires"):
        upcoming_fires("* * * * *", UTC, start, MAX_UPCOMING + 1)


def test_a_sparse_expression_is_found_by_field_not_minute_by_minute() -> None:
    # Minute by minute, 39 years would be 20 million steps.
    start = datetime(2089, 3, 1, tzinfo=UTC)
    began = time.perf_counter()

    fire = next_fire_after("0 0 29 2 */7", parse_timezone("Europe/London"), start)

    assert fire == datetime(2128, 2, 29, tzinfo=UTC)
    assert time.perf_counter() - began < 0.05
