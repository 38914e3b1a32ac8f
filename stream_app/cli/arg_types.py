"""The command line's argument types: each turns a word into a value or says what it takes (argparse prints it)."""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable

#: The slowest --rate: one event every 1,000 s. Slower paces wait for days between events, and one whose
#: wait overflows the clock (1e-300) ended `replay` in a traceback after its first event.
MIN_RATE = 0.001


def rate(text: str) -> float | None:
    if text == "max":
        return None
    return events_per_second(text, "events per second or 'max'")


def events_per_second(text: str, takes: str = "events per second") -> float:
    """An argparse type: a pace from MIN_RATE up, finite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes {takes}, not {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of {MIN_RATE:g} or more ({takes})")
    if value < MIN_RATE:
        raise argparse.ArgumentTypeError(f"{text} is under {MIN_RATE:g} events per second (one every "
                                         f"{1 / MIN_RATE:,.0f} s): give {MIN_RATE:g} or more")
    return value


def seed(text: str) -> int:
    """An argparse type: a random seed numpy and torch both take (0 to 2**63 - 1)."""
    value = at_least(0)(text)
    if value >= 2 ** 63:
        raise argparse.ArgumentTypeError(f"a seed is 0 to {2 ** 63 - 1}, not {text}")
    return value


def at_least(minimum: int, kind: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse type: a number (`kind`) of `minimum` or more, else a message saying so."""
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, not {text!r}") \
                from None
        if not value >= minimum or not math.isfinite(value):  # nan and inf too
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {text}")
        return value
    return convert


def fraction(text: str, of: str = "a share of the log's time span") -> float:
    """An argparse type: a number strictly between 0 and 1 (`of`: what it is a share of, for the message)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, not {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 ({of}), not {text}")
    return value


def events_share(text: str) -> float:
    """An argparse type: a share of the log's events, strictly between 0 and 1."""
    return fraction(text, "a share of the log's events")


count = at_least(1)  # events, users, items, epochs, sizes: one or more


def synth_days(text: str) -> int:
    """An argparse type: the days a synthetic log spans, as many as keep its event times within the input schema's
    (before the year 3000) from its start."""
    from ..contracts import load_schema
    from ..tools.synth import DAY_MS, SynthConfig

    value = count(text)
    most = (load_schema("input-event")["properties"]["ts"]["maximum"] - SynthConfig.start_ms) // DAY_MS
    if value > most:
        raise argparse.ArgumentTypeError(f"at most {most:,} days (the log starts in November 2023 and event times end "
                                         f"in the year 3000), not {text}")
    return value


def user_id(text: str) -> str:
    """An argparse type: a user id as the events' schema has them (a lookup of any other finds nothing)."""
    from ..contracts import load_schema

    limits = load_schema("input-event")["properties"]["user_id"]
    if not limits["minLength"] <= len(text) <= limits["maxLength"]:
        raise argparse.ArgumentTypeError(f"a user id is {limits['minLength']} to {limits['maxLength']} characters of "
                                         f"text, as in the events, not {text[:40]!r}{'...' if len(text) > 40 else ''}")
    return text


def port(text: str) -> int:
    value = at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {text}")
    return value


def worker_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give worker counts of 1 or more, comma-separated (e.g. 1,2,4)")
    return counts


def wait_seconds(text: str) -> float:
    """An argparse type: seconds to wait for something, more than 0 (0 could never see it happen)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value
