"""What an expression means, and how a wrong one is refused (no clock changes)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apptasks.cron import upcoming_fires, validate_frequency
from apptasks.errors import BadInput

REFUSED = [
    ("61 * * * *", "minute must be 0-59, got 61"),
    ("* 24 * * *", "hour must be 0-23, got 24"),
    ("0 0 0 * *", "day of month must be 1-31 or L, got 0"),
    ("0 0 32 * *", "day of month must be 1-31 or L, got 32"),
    ("0 0 * 13 *", "month must be 1-12 or jan-dec, got 13"),
    ("0 0 * 0 *", "month must be 1-12 or jan-dec, got 0"),
    ("0 0 * * 8", "day of week must be 0-7 (0 and 7 are Sunday) or sun-sat, got 8"),
    ("-1 * * * *", "minute must be 0-59, got ''"),
    ("x * * * *", "minute must be 0-59, got 'x'"),
    ("\u0665 * * * *", "minute must be 0-59, got '\u0665'"),
    ("*/0 * * * *", "minute step must be 1-59, got 0 in '*/0'"),
    ("0 */24 * * *", "hour step must be 1-23, got 24 in '*/24'"),
    ("0 0 1/0 * *", "day of month step must be 1-31, got 0 in '1/0'"),
    ("*/ * * * *", "minute step must be 1-59, got '' in '*/'"),
    ("5-1 * * * *", "minute range '5-1' is reversed"),
    ("0 0 * * fri-mon", "day of week range 'fri-mon' is reversed"),
    ("1,,2 * * * *", "minute has an empty item in '1,,2'"),
    ("0 0 1, * *", "day of month has an empty item in '1,'"),
    ("1,*/5 * * * *", "minute: '*' may only start a field, got '1,*/5'"),
    (
        "* * * *",
        "expected 5 fields (minute hour day-of-month month day-of-week), got 4",
    ),
    ("0 * * * * *", "got 6; seconds and years are not supported"),
    ("", "blank; give a cron expression"),
    ("  \t ", "blank; give a cron expression"),
    ("  0   0 * *  ", "expected 5 fields"),
    ("0 0 * foo *", "month: unknown name 'foo', use 1-12 or jan-dec"),
    ("0 0 * * monday", "day of week: unknown name 'monday'"),
    ("0 0 * jan-foo *", "month: unknown name 'foo'"),
    ("0 0 * * 1#6", "day of week: the week in '1#6' must be #1-#5, got #6"),
    ("0 0 * * 1#0", "day of week: the week in '1#0' must be #1-#5, got #0"),
    ("0 0 * * 8#1", "day of week must be 0-7 (0 and 7 are Sunday) or sun-sat, got 8"),
    ("0 0 * * L", "day of week: 'L' needs a weekday before it"),
    ("0 0 1-L * *", "day of month: 'L' (the last day) stands alone, got '1-L'"),
    ("0 0 LW * *", "day of month: 'L' (the last day) stands alone, got 'LW'"),
    ("0 0 15W * *", "day of month must be 1-31 or L, got '15W'"),
    ("0 0 * * 1-5L", "day of week: '1-5L' must be one weekday then L or #k"),
    ("0 0 * * 1#2L", "day of week: '1#2L' must be one weekday then L or #k"),
    ("0 0 * * 1#", "day of week: the week in '1#' must be #1-#5, got #"),
    ("0 0 * * 1-2#2", "day of week: '1-2#2' must be one weekday then L or #k"),
    ("@reboot", "unknown macro '@reboot', use one of @annually, @daily"),
    ("@daily 5", "unknown macro '@daily 5'"),
    ("0 0 31 2 *", "it can never fire"),
    ("0 0 30 2 *", "it can never fire"),
    ("0 0 31 4,6,9,11 *", "it can never fire"),
    ("0 0 30,31 feb *", "it can never fire"),
    ("0 0 30-31/2 2 *", "it can never fire"),
    ("0 0 * * * 2025", "seconds and years are not supported"),
]


@pytest.mark.parametrize(("expr", "message"), REFUSED)
def test_a_wrong_frequency_is_refused_naming_field_and_value(
    expr: str, message: str
) -> None:
    with pytest.raises(BadInput) as refused:
        validate_frequency(expr)

    assert refused.value.message.startswith(f"frequency {expr!r}: ")
    assert message in refused.value.message


def test_a_too_long_frequency_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(BadInput, match="limit of 200"):
        validate_frequency("0 " + "1," * 100 + "2 * * *")


NORMALISED = [
    ("  0   9 *\t* 1-5 ", "0 9 * * 1-5"),
    ("0 12 * JAN,Jul MON-fri", "0 12 * JAN,Jul MON-fri"),
    ("@Daily", "@daily"),
    ("0 0 29 2 *", "0 0 29 2 *"),
    ("0 0 31 1-3 *", "0 0 31 1-3 *"),
    ("0 0 L 2 *", "0 0 L 2 *"),
    ("0 0 30 2 5", "0 0 30 2 5"),
]


@pytest.mark.parametrize(("expr", "normalised"), NORMALISED)
def test_a_valid_frequency_comes_back_normalised(expr: str, normalised: str) -> None:
    assert validate_frequency(expr) == normalised


# Each row: the expression, a start in UTC, and the next fires in UTC.
FIRES = [
    ("5/15 * * * *", "2025-01-01T00:00", ["00:05", "00:20", "00:35", "00:50", "01:05"]),
    ("50/15 * * * *", "2025-01-01T00:00", ["00:50", "01:50"]),
    ("10-40/15 * * * *", "2025-01-01T00:00", ["00:10", "00:25", "00:40", "01:10"]),
    ("0 22/1 * * *", "2025-01-01T00:00", ["22:00", "23:00", "2025-01-02T22:00"]),
    ("0,30 */12 * * *", "2025-01-01T00:00", ["00:30", "12:00", "12:30"]),
    ("0 0 L * *", "2024-01-31T00:00", ["02-29", "03-31", "04-30", "05-31"]),
    ("0 0 L,15 2 *", "2025-01-01T00:00", ["02-15", "02-28", "2026-02-15"]),
    ("0 0 * * 5L", "2025-01-01T00:00", ["01-31", "02-28", "03-28", "04-25"]),
    ("0 0 * * friL", "2025-01-01T00:00", ["01-31", "02-28"]),
    ("0 0 * * 0L", "2025-01-01T00:00", ["01-26", "02-23", "03-30"]),
    ("0 0 * * 7L", "2025-01-01T00:00", ["01-26", "02-23", "03-30"]),
    ("0 0 * * 1#2", "2025-01-01T00:00", ["01-13", "02-10", "03-10"]),
    ("0 0 * * Mon#2", "2025-01-01T00:00", ["01-13", "02-10", "03-10"]),
    ("0 0 * * 7#1", "2025-01-01T00:00", ["01-05", "02-02", "03-02"]),
    ("0 0 * * 4#5", "2025-01-01T00:00", ["01-30", "05-29", "07-31"]),
    ("0 0 * * 1#1,5L", "2025-01-01T00:00", ["01-06", "01-31", "02-03", "02-28"]),
    ("0 0 1 * 1#1", "2025-01-01T00:00", ["01-06", "02-01", "02-03", "03-01"]),
    ("0 0 L * 5", "2025-01-25T00:00", ["01-31", "02-07", "02-14", "02-21", "02-28"]),
    ("0 0 */2 * 1", "2025-01-01T00:00", ["01-13", "01-27", "02-03"]),
    ("0 0 1-31/2 * 1", "2025-01-01T00:00", ["01-03", "01-05", "01-06", "01-07"]),
    ("0 0 13 * */7", "2025-01-01T00:00", ["04-13", "07-13", "2026-09-13"]),
    ("0 0 13 * 5", "2025-06-01T00:00", ["06-06", "06-13", "06-20", "06-27"]),
    ("0 0 * * 5-7", "2025-01-01T00:00", ["01-03", "01-04", "01-05", "01-10"]),
    ("0 0 * * sat,SUN", "2025-01-01T00:00", ["01-04", "01-05", "01-11"]),
    ("0 0 1 jan-mar/2 *", "2025-01-01T00:00", ["03-01", "2026-01-01"]),
    ("0 0 29 2 *", "2097-01-01T00:00", ["2104-02-29", "2108-02-29"]),
    ("0 0 29 2 */7", "2089-01-01T00:00", ["2128-02-29", "2156-02-29"]),
    ("@hourly", "2025-01-01T00:00", ["01:00", "02:00"]),
    ("@midnight", "2025-01-01T00:00", ["2025-01-02T00:00"]),
    ("@weekly", "2025-01-01T00:00", ["01-05", "01-12"]),
    ("@monthly", "2025-01-01T00:00", ["02-01", "03-01"]),
    ("@ANNUALLY", "2025-01-01T00:00", ["2026-01-01", "2027-01-01"]),
    ("* * * * *", "2025-12-31T23:59:30", ["2026-01-01T00:00", "00:01"]),
    ("59 23 31 12 *", "2025-12-31T23:59", ["2026-12-31T23:59"]),
]


def _expected(start: datetime, short: str, previous: datetime) -> datetime:
    """An instant written as HH:MM (that day), MM-DD (that year) or in full."""
    if len(short) == 5 and short[2] == ":":
        return datetime.fromisoformat(f"{previous:%Y-%m-%d}T{short}+00:00")
    if len(short) == 5:
        return datetime.fromisoformat(f"{start:%Y}-{short}T00:00+00:00")
    if "T" in short:
        return datetime.fromisoformat(f"{short}+00:00")
    return datetime.fromisoformat(f"{short}T00:00+00:00")


@pytest.mark.parametrize(("expr", "start_text", "shorts"), FIRES)
def test_fires_follow_the_fields(expr: str, start_text: str, shorts: list[str]) -> None:
    start = datetime.fromisoformat(start_text).replace(tzinfo=UTC)
    expected: list[datetime] = []
    for short in shorts:
        expected.append(_expected(start, short, expected[-1] if expected else start))

    fires = upcoming_fires(validate_frequency(expr), UTC, start, len(shorts))

    assert [fire.at_utc for fire in fires] == expected
    assert all(fire.dst_note is None and fire.dst_change is None for fire in fires)
