"""Vendor timestamps → epoch seconds.

The five APIs send ISO-8601 in every variant: `2024-01-28T08:00:00+0000`
(WhatsApp, no colon in the offset), `2020-08-18 13:36:41.348933+00:00` (k6
`calc_state`, space instead of `T`), `2020-08-13T18:28:45Z`, nanosecond
fractions, a bare date, or a zone-less `YYYY-MM-DD HH:MM:SS.mmm` (Pluto's
ClickHouse). Python 3.11's `fromisoformat` reads all of these except fractions
longer than microseconds; a missing zone is read as UTC because every one of
these vendors stores UTC, and a bare date as its UTC midnight.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime

_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_timestamp(value: str | int | float) -> float:
    """Epoch seconds; numbers are taken as epoch seconds (milliseconds when
    they are too large to be seconds). Raises ValueError on anything else."""
    if type(value) is str:
        return _parse_text(value)
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"not a timestamp: {value!r}")
        return number / 1000.0 if abs(number) > 1e11 else number
    return _parse_text(value)


# A poll reads the same few timestamps again and again (every k6 series and
# every WhatsApp metric shares one time grid), so parsed strings are cached:
# parsing was the largest single cost of the poll path (benchmarks/bench.py).
@functools.lru_cache(maxsize=16384)
def _parse_text(value: str) -> float:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(_LONG_FRACTION.sub(r"\1", value.strip()))
        except ValueError:
            raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
