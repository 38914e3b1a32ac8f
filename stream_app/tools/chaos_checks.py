"""The checks of `stream-app chaos` (chaos.py) once every input is taken, and its report."""

from __future__ import annotations

import collections
import itertools
import math
import time
from typing import Any, Protocol

import orjson
import redis

from ..config import Settings
from ..core.events import Event
from ..core.item_feed import ItemFeed
from ..core.items import InMemoryItemIndex
from ..core.ordering import rounds
from ..core.profile import Profile
from ..partitioning import partition_of
from ..store.redis_store import read_profile, worker_statuses
from .consume import read_to_end
from .repair import latest_snapshots


class LivePids(Protocol):
    def live_pids(self) -> set[int]: ...


def verify(settings: Settings, events: list[dict[str, Any]], poison: dict[str, str], crew: LivePids,
           item_wait_s: float = 60.0) -> dict[str, Any]:
    """Every check of the run against what was sent: the valid `events`, and the `poison` inputs'
    keys with the dead-letter reason each must have."""
    expected = collections.Counter(e["user_id"] for e in events)
    report: dict[str, Any] = {"users": len(expected)}
    client = redis.Redis.from_url(settings.require_redis())
    try:
        stored = {u: read_profile(client, u, settings.namespace) for u in expected}
        report["item_state"] = item_state_check(settings, events, client, crew, item_wait_s)
    finally:
        client.close()
    in_redis = {u: found.get("event_count", 0) for u, found in stored.items()}
    report["redis_count_mismatches"] = sum(in_redis[u] != n for u, n in expected.items())
    changelog, _, _ = latest_snapshots(settings, topic=f"{settings.group_id}-profiles-changelog")
    table = {u: Profile.from_json(raw) for u, raw in changelog.items() if raw}
    in_table = {u: profile.event_count for u, profile in table.items()}
    report["table_count_mismatches"] = sum(in_table.get(u, 0) != n for u, n in expected.items())
    # the same profile in both, not only the same count: a version apart is a write one of them missed
    report["version_mismatches"] = sum(stored[u].get("profile_version") != (table[u].version if u in table else None)
                                       for u in expected)
    differing = ((u, n) for u, n in sorted(expected.items()) if in_redis[u] != n or in_table.get(u, 0) != n)
    report["count_differences"] = {u: {"sent": n, "redis": in_redis[u], "table": in_table.get(u, 0)}
                                   for u, n in itertools.islice(differing, 20)}  # the first ones, to trace
    report["recommendations"] = recommendation_check(settings, events)
    report["dead_letters"] = dead_letter_check(settings, poison)
    report["passed"] = (report["redis_count_mismatches"] == 0 and report["table_count_mismatches"] == 0
                        and report["version_mismatches"] == 0 and report["item_state"]["equal"]
                        and report["recommendations"]["exact"] and report["dead_letters"]["missing"] == 0)
    return report


def recommendation_check(settings: Settings, events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every valid event's recommendation, and a repeat (an event applied again after a crash) the same list for the
    same profile version as the first: its id comes from the event's alone, so the ids could not tell them apart."""
    records = read_to_end(settings, settings.topics.recommendations)
    shown: dict[str, set[tuple[Any, ...]]] = collections.defaultdict(set)
    for record in records:
        rec = orjson.loads(record.value)
        shown[rec["trigger_event_id"]].add((rec["rec_id"], rec.get("profile_version"),
                                            tuple(item["item_id"] for item in rec["items"])))
    valid = {e["event_id"] for e in events}
    missing = sum(1 for event_id in valid if event_id not in shown)
    differing = sum(1 for found in shown.values() if len(found) > 1)
    unknown = sum(1 for event_id in shown if event_id not in valid)
    return {"published": len(records), "repeats": len(records) - len(shown), "missing": missing,
            "differing_repeats": differing, "unknown_triggers": unknown,
            "exact": missing == 0 and differing == 0 and unknown == 0}


def dead_letter_check(settings: Settings, poison: dict[str, str]) -> dict[str, Any]:
    records = read_to_end(settings, settings.topics.dlq)
    found: dict[str, set[str]] = collections.defaultdict(set)
    for record in records:
        letter = orjson.loads(record.value)
        found[letter.get("key_text") or ""].add(letter["reason"])
    missing = [f"{key} ({reason})" for key, reason in sorted(poison.items()) if reason not in found.get(key, ())]
    return {"expected": len(poison), "records": len(records), "missing": len(missing),
            "missing_examples": missing[:5], "by_reason": dict(sorted(collections.Counter(poison.values()).items()))}


def item_state_check(settings: Settings, events: list[dict[str, Any]], client: redis.Redis,
                     crew: LivePids, timeout_s: float = 60.0) -> dict[str, Any]:
    """Each live worker's item state (from its status) against the in-process item feed over the same
    events, compared at the epoch the worker last applied."""
    pids = crew.live_pids()
    if not pids:  # none to compare: not "equal"
        return {"equal": False, "workers": 0, "detail": "no worker was live to compare"}
    deadline = time.monotonic() + timeout_s
    while True:  # their statuses, once each worker's item state holds every event (a heartbeat is 5 s)
        states = {s["pid"]: s["ordering"]["item_state"] for s in worker_statuses(client, settings.namespace)
                  if s["pid"] in pids and "item_state" in s.get("ordering", {})}
        if len(states) == len(pids) and all(s["events"] == len(events) for s in states.values()):
            break
        if time.monotonic() > deadline:
            return {"equal": False, "workers": {pid: s["events"] for pid, s in states.items()},
                    "detail": f"workers' item states hold {sorted(s['events'] for s in states.values())} "
                              f"of {len(events)} events after {timeout_s:.0f} s"}
        time.sleep(0.5)
    feed = ItemFeed(settings, InMemoryItemIndex(settings))
    for epoch, released in rounds(events, settings, partition_of):
        for entry in released:
            feed.add(Event.from_dict(entry.item), partition_of(entry.item["user_id"], settings.partitions), epoch)
    differing = []
    for pid, state in sorted(states.items(), key=lambda kv: kv[1]["applied_through"] or 0):
        if state["applied_through"] is not None:
            feed.advance(state["applied_through"])
        mine = feed.summary()  # the length the workers' statuses give: a shorter list of theirs is a difference
        same_items = [i for i, _ in mine["popular"]] == [i for i, _ in state["popular"]]
        close = all(math.isclose(a, b, rel_tol=1e-9) for (_, a), (_, b) in zip(mine["popular"], state["popular"]))
        if not (same_items and close):
            differing.append(pid)
    return {"equal": not differing, "workers": len(states), "differing": differing,
            "late": sum(s["late"] for s in states.values()),
            "duplicates_dropped": sum(s["duplicates"] for s in states.values())}


def print_report(report: dict[str, Any]) -> None:
    recs, letters, items = report["recommendations"], report["dead_letters"], report["item_state"]
    faults = report["faults"]
    print(f"chaos: {report['events_sent']:,} events of {report['users']:,} users and {report['poison_sent']} poison "
          f"inputs in {report['seconds']:.0f} s ({report['events_per_s']:,.0f} events/s end to end)")
    print(f"  faults: {report['kills']} workers SIGKILLed, {report['joins']} joined, {report['leaves']} left, "
          f"Redis restarted {faults.get('restart_redis', 0)}x, broker paused {faults.get('pause_broker', 0)}x; "
          f"retries the workers logged: {report['retries_logged']}")
    print(f"  event_count differing from the events sent: Redis {report['redis_count_mismatches']} users, "
          f"profile table {report['table_count_mismatches']} users; profile versions differing between Redis and "
          f"the table: {report['version_mismatches']} users")
    print(f"  recommendations: {recs['published']:,} published, {recs['missing']} inputs without one, "
          f"{recs['repeats']} repeats (an event applied again after a crash), {recs['differing_repeats']} of them "
          "with another list or profile version than the first")
    print(f"  item state equal to the in-process feed: {items['equal']} ({items.get('workers')} workers, "
          f"{items.get('late', 0)} late events, {items.get('duplicates_dropped', 0)} duplicate inputs dropped)")
    print(f"  dead letters: {letters['expected'] - letters['missing']} of {letters['expected']} poison inputs with "
          f"their reason ({letters['records']} records)")
    for line in report["unexpected_exits"]:
        print(f"  a worker exited by itself: {line}")
    if report["producer_failures"]:
        print(f"  the producer failed to send {report['producer_failures']} records")
    print(f"  {'PASSED' if report['passed'] else 'FAILED'}; logs in {report['log_dir']}")
