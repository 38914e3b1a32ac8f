"""Figures of an evaluation as the text tables and the HTML report write them (the results file keeps the numbers)."""

from __future__ import annotations

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

