"""JSON integers past 64 bits, named as their record writes them.

orjson reads an integer below -2**63 or from 2**64 on as a float: 1180000000000000000000 becomes 1.18e+21, its last
digits gone. A rejection naming that float names a value the producer cannot find in its record.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Where such an integer can be: 19 digits in a row (2**64 has 20, -2**63 19), in a string too (then read for nothing).
_LONG_DIGITS = re.compile(rb"\d{19}")


def as_written(payload: bytes, data: Any) -> Any:
    """`data`, orjson's reading of the JSON `payload`, with its integers past 64 bits as written (the stdlib's reader
    keeps them whole). For what a rejection says only: an accepted record stays orjson's reading, which orjson can
    write again (it writes no integer past 64 bits)."""
    if _LONG_DIGITS.search(payload) is None:
        return data
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):  # not JSON (a csv line), over 4300 digits, or nested deeper than it reads
        return data
