"""Figures of an evaluation as the text tables and the HTML report write them (the results file keeps the numbers)."""

from __future__ import annotations

import datetime as dt
import math


def rate_said(per_s: float | None) -> str:
    """Events/s in two significant digits below 10 (a tiny log's 0.49 is not 0), whole with thousands separators
    above; "-" for none."""
    if per_s is None:
        return "-"
    rounded = float(f"{per_s:.2g}")
    if rounded >= 10 or rounded == 0:
        return f"{per_s:,.0f}"
    return f"{rounded:.{max(0, 1 - math.floor(math.log10(rounded)))}f}"


def utc_said(ts_ms: int) -> str:
    """An epoch-ms time as a UTC date and time, to the minute, its seconds and milliseconds only if it has any (a
    judging cutoff is exact)."""
    seconds, ms = divmod(int(ts_ms), 1000)
    when = dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    if ms:
        return f"{when:%Y-%m-%d %H:%M:%S}.{ms:03d} UTC"
    return f"{when:%Y-%m-%d %H:%M:%S} UTC" if when.second else f"{when:%Y-%m-%d %H:%M} UTC"
