"""What the benchmark scripts share: the percentile they report beside the median.

The scripts run as `python bench/<script>.py`, so this module is imported by
its bare name from the scripts' own folder.
"""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank value at `fraction` (0.99 for p99) of the values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
