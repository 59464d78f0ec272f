"""The shared cron cases: the next three fires from a start, or an error."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from apptasks.cron import (
    next_fire_after,
    parse_timezone,
    upcoming_fires,
    validate_frequency,
)
from apptasks.errors import BadInput
from tests.support.paths import shared_dir

CASES: list[dict[str, Any]] = json.loads(
    (shared_dir() / "cases" / "cron-sample.json").read_text(encoding="utf-8")
)


def test_the_shared_file_has_all_eighteen_cases() -> None:
    assert len(CASES) == 18


@pytest.mark.parametrize(
    "case", [c for c in CASES if not c["expect_error"]], ids=lambda c: c["id"]
)
def test_sample_fires_at_the_expected_wall_times(case: dict[str, Any]) -> None:
    tz = parse_timezone(case["tz"])
    start = datetime.fromisoformat(case["start"])

    fires = upcoming_fires(validate_frequency(case["expr"]), tz, start, 3)

    assert [fire.local.isoformat() for fire in fires] == case["expect_next"]
    expected = [datetime.fromisoformat(text) for text in case["expect_next"]]
    assert [fire.at_utc for fire in fires] == expected
    assert all(fire.at_utc.tzinfo is UTC for fire in fires)
    chained = [next_fire_after(case["expr"], tz, start)]
    for _ in range(2):
        chained.append(next_fire_after(case["expr"], tz, chained[-1]))
    assert chained == expected


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["expect_error"]], ids=lambda c: c["id"]
)
def test_sample_is_refused_naming_the_value(case: dict[str, Any]) -> None:
    with pytest.raises(BadInput) as refused:
        validate_frequency(case["expr"])
        parse_timezone(case["tz"])

    message = refused.value.message
    assert repr(case["expr"]) in message or repr(case["tz"]) in message
