"""`stream-app recommendations`, `dead-letters`, `redrive` and `erasure-receipts`: the records of the output
topics, for a person to read (a downstream service reads the topics themselves), and dead letters sent again."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

import orjson

from ..config import Settings
from ..errors import StreamAppError
from ..logs import utc_ms


def _when(ms: Any) -> str:
    """A letter's time for people; what is no time (a record another producer wrote) as it is."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))
    except (TypeError, ValueError, OverflowError, OSError):
        return str(ms)


def _recommendation(value: bytes | None) -> dict[str, Any] | None:
    """A record's list as `recommendations` prints it, or None: not one (another producer's bytes, a tombstone, fields
    of other types), passed over and counted rather than a crash of the tool that should show what is there."""
    try:
        rec = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("rec_id"), (str, type(None))):
        return None
    items, model = rec.get("items"), rec.get("model", {})
    if not isinstance(items, list) or not isinstance(model, dict) or not all(
            isinstance(item, dict) and isinstance(item.get("item_id"), str)
            and isinstance(item.get("score"), (int, float)) and isinstance(item.get("reasons", []), list)
            and all(isinstance(reason, str) for reason in item.get("reasons", [])) for item in items):
        return None
    return rec


def _distinct_lists(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The lists read (each as `_recommendation` read it), each once (at-least-once: a batch redone after a worker's
    crash publishes its lists again, same rec_id); stderr says how many were left out."""
    lists, rec_ids = [], set()
    for rec in found:
        rec_id = rec.get("rec_id")
        if rec_id is None or rec_id not in rec_ids:
            rec_ids.add(rec_id)
            lists.append(rec)
    if len(lists) < len(found):
        print(f"note: {len(found) - len(lists)} of the lists read were published again (same rec_id: a batch "
              "redone after a worker stopped) and are shown once", file=sys.stderr)
    return lists


def _say_passed_over(records: list[Any]) -> None:
    """Names on stderr the records of the user's key read that are no list (another producer's), passed over."""
    if records:
        named = [f"{record.partition}@{record.offset}" for record in sorted(records, key=lambda r: (r.partition,
                                                                                                    r.offset))]
        print(f"note: {len(named)} of the records read are not lists a worker writes (not JSON, or fields of other "
              f"types than schemas/v1/recommendation.schema.json's; partition@offset: {', '.join(named[:5])}"
              f"{' ...' if len(named) > 5 else ''}): another producer's, passed over", file=sys.stderr)


def cmd_recommendations(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer

    from ..kafka_security import kafka_python_kwargs
    from ..partitioning import partition_of
    from ..tools.consume import latest_records
    from ..tools.demo import item_named

    settings = Settings.from_env()
    topic, key = settings.topics.recommendations, args.user_id.encode()
    consumer = KafkaConsumer(bootstrap_servers=settings.require_kafka().split(","),
                             **kafka_python_kwargs(settings.kafka_security))
    try:
        partitions = consumer.partitions_for_topic(topic)
    finally:
        consumer.close()
    if not partitions:
        raise StreamAppError(f"the topic {topic} does not exist: start a worker (`stream-app worker`) and replay "
                             "events (`stream-app replay`)")
    from ..tools.redrive import ErasureCheck

    # an erased user's lists of before the erasure stay on the topic until its retention: not shown (the erasure
    # was asked for them too); those of the user's events after it are
    erased_at, hidden, passed_over = ErasureCheck.read(settings).erased_time(args.user_id), [], []
    read: dict[tuple[int, int], dict[str, Any]] = {}  # (partition, offset) -> the list, parsed once

    def shown(record: Any) -> bool:
        if record.key != key:
            return False
        if (rec := _recommendation(record.value)) is None:  # named below; not one of the last lists, nor an erased one
            passed_over.append(record)
            return False
        event_ts = rec.get("event_ts", 0)
        if erased_at is not None and (record.timestamp <= erased_at
                                      or (isinstance(event_ts, int) and event_ts <= erased_at)):
            hidden.append(record.offset)
            return False
        read[record.partition, record.offset] = rec
        return True

    found = latest_records(settings, topic, args.last, partition_of(args.user_id, len(partitions)), shown)
    _say_passed_over(passed_over)
    if not found and hidden:
        raise StreamAppError(f"user {args.user_id!r} was erased (time {utc_ms(erased_at)}): its {len(hidden)} lists on "
                             f"{topic} of before the erasure are not shown (they leave with the topic's retention.ms)")
    if not found:
        raise StreamAppError(f"no recommendation for user {args.user_id!r} on {topic} (namespace "
                             f"{settings.namespace!r}): has a worker applied an event of that user?")
    from ..tools.erase import reset_time

    reset_at = reset_time(settings, args.user_id)
    before = sum(record.timestamp < reset_at for record in found) if reset_at is not None else 0
    if before:  # ranked for the profile the reset deleted: said, as the lists do not show it
        which = ("the list shown predates" if len(found) == 1 else "the lists shown predate" if before == len(found)
                 else f"the oldest {before} of the {len(found)} lists shown predate{'s' if before == 1 else ''}")
        then = "; the user's next event brings a list of the new one" if before == len(found) else ""
        print(f"note: {which} the reset of the profile of {args.user_id!r} at {utc_ms(reset_at)} (`stream-app "
              f"reset-profile`): ranked for the profile deleted{then}", file=sys.stderr)
    lists = _distinct_lists([read[record.partition, record.offset] for record in found])
    titles = {}
    if args.titles and not args.json:
        from ..tools.catalogue import titles_on_topic

        titles = titles_on_topic(settings, {item["item_id"] for rec in lists for item in rec["items"]})
    for rec in lists:
        if args.json:
            print(orjson.dumps(rec).decode())
            continue
        print(f"user {rec.get('user_id')} after {rec.get('trigger_event_id')} (event time {_when(rec.get('event_ts'))}, "
              f"profile version {rec.get('profile_version')}, ranked by {rec.get('model', {}).get('ranking', '?')}):")
        for rank, item in enumerate(rec["items"], 1):
            reasons = ", ".join(item.get("reasons", []))
            print(f"  {rank:>2}. {item_named(item['item_id'], titles)}  {item['score']:.4f}  {reasons}")
    return 0


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from ..contracts import SCHEMA_VERSION, version_not_read
    from ..tools.consume import latest_records

    settings = Settings.from_env()
    # a replay's letters of one millisecond spread over the partitions (keyed by user): the last are its last lines
    found = latest_records(settings, settings.topics.dlq, args.last, order=lambda record: (
        record.timestamp, _line_of(_letter(record.value)), record.partition, record.offset))
    if not found:
        print(f"no dead letters on {settings.topics.dlq}")
        return 0
    for record in found:
        letter = _letter(record.value)
        if args.json and letter is not None:  # what the topic holds, whatever its shape
            print(orjson.dumps(letter).decode())
            continue
        if isinstance(letter, dict) and version_not_read(letter) is not None:  # a later release's: its fields unknown
            said = repr(letter["schema_version"])
            print(f"{settings.topics.dlq}[{record.partition}]@{record.offset}: a dead letter of schema version "
                  f"{said if len(said) <= 40 else said[:40] + '...'}, which this release does not read (it reads "
                  f"{SCHEMA_VERSION}): read it with the release that wrote it, or as the topic holds it with --json")
            continue
        if not isinstance(letter, dict) or not {"source", "detail", "rejected_at", "reason"} <= letter.keys() \
                or not isinstance(letter["source"], dict):
            print(f"{settings.topics.dlq}[{record.partition}]@{record.offset}: not a dead letter of stream-app "
                  f"(another producer wrote it): {(record.value or b'')[:200]!r}", file=sys.stderr)
            continue
        source = letter["source"]
        where = (f"line {source['line']} of {source.get('topic')}" if source.get("line") is not None
                 else f"{source.get('topic')}[{source.get('partition')}]@{source.get('offset')}"
                 if source.get("partition") is not None else str(source.get("topic")))  # a file's event: its id says
        detail = str(letter["detail"])
        if source.get("line") is not None:  # a file's reader starts its detail with the line, said here already
            detail = detail.removeprefix(f"line {source['line']}: ")
        print(f"{_when(letter['rejected_at'])}  {letter['reason']:<24} {where}: {detail[:200]}")
    return 0


def _letter(value: bytes | None) -> Any:
    """A dead-letter record's value read (None: one that is not JSON, written by another tool)."""
    try:
        return orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None


def _line_of(letter: Any) -> int:
    """The file line a dead letter names (a replay's), 0 for any other (a worker's, or a record not of the schema)."""
    source = letter.get("source") if isinstance(letter, dict) else None
    line = source.get("line") if isinstance(source, dict) else None
    return line if isinstance(line, int) and not isinstance(line, bool) else 0


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def cmd_redrive(args: argparse.Namespace) -> int:
    from ..tools.redrive import NEVER_PASS, REASONS, REDRIVABLE, check_reasons, redrive

    reasons = check_reasons(args.reason or [])
    settings = Settings.from_env()
    summary = redrive(settings, reasons, from_start=args.from_start, dry_run=args.dry_run)
    if args.json:
        print(orjson.dumps(summary.as_dict()).decode())
        return 0
    ranges = ", ".join(f"partition {p} offsets {start} to {end - 1}" for p, (start, end) in summary.ranges.items()
                       if end > start) or "nothing new"
    print(f"read {summary.read} dead letters of {settings.topics.dlq} ({ranges}), "
          f"{'from its start' if args.from_start else 'from where earlier redrives of these reasons stopped'}")
    sent = ", ".join(f"{topic}={n}" for topic, n in sorted(summary.sent.items())) or "none"
    why = ", ".join(f"{reason} {n}" for reason, n in summary.by_reason.most_common())
    print(f"{'would send' if summary.dry_run else 'sent'} {sum(summary.sent.values())} again: {sent}"
          + (f" ({why})" if why else ""))
    for reason, n in summary.left.most_common():
        print(f"  left {n}: {reason}")
    if summary.restarted:
        print(f"  partitions {sorted(summary.restarted)} read from their start: the positions of earlier redrives are "
              f"past their end (was {settings.topics.dlq} recreated?)")
    if summary.headers_left_out:
        print(f"  {summary.headers_left_out} sent without some of their input's headers: their letters kept "
              "16 KiB of headers")
    if summary.sent_before:
        print(f"  {summary.sent_before} sent by an earlier redrive of their reason (`--from-start` sends them again)")
    never = {reason: n for reason, n in summary.other_reasons.items() if reason in NEVER_PASS}
    unknown = {reason: n for reason, n in summary.other_reasons.items() if reason not in REASONS}
    unsendable = Counter()
    for (reason, _), n in summary.other_unsendable.items():
        unsendable[reason] += n
    others = {reason: n - unsendable[reason] for reason, n in summary.other_reasons.items()
              if reason in REDRIVABLE and n > unsendable[reason]}
    if "all" in args.reason:  # every reason a fix can make pass: the others are never sent
        if never:
            print(f"  never sent (no fix makes them pass; `dead-letters` shows them): {_counted(never)}")
    elif others or never or unsendable:  # the filter left them alone: "never sent" read as refusing a reason not asked
        print("  not asked for (--reason), left alone: " + "; ".join(filter(None, [
            others and f"{_counted(others)} (a redrive that names them sends them)",
            *(f"{reason} {n} (no redrive sends these: {why})"
              for (reason, why), n in sorted(summary.other_unsendable.items(), key=lambda kv: -kv[1])),
            never and f"{_counted(never)} (no redrive sends these: no fix makes them pass)"])))
    if unknown:  # a newer worker's or another producer's: no redrive of this release names them
        print(f"  reasons this release does not know, left alone (`dead-letters` shows them): {_counted(unknown)}")
    if summary.dry_run:
        print("nothing sent and nothing marked read (--dry-run)")
    elif summary.sent:
        print("what the workers still refuse comes back as a new dead letter (`stream-app dead-letters`); an event "
              "they applied is skipped by its event id, and so is one older than its user's last "
              f"{settings.seen_ids_max:,} events (STREAM_APP_SEEN_IDS_MAX), counted with the duplicates")
    return 0


def cmd_erasure_receipts(args: argparse.Namespace) -> int:
    from ..tools.erase import print_receipts

    return print_receipts(Settings.from_env(), args.users, args.json)
