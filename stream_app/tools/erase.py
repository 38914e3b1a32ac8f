"""`stream-app erase` (and `reset-profile`): publish one erasure (or reset) request per user and wait for the workers'
receipts."""

from __future__ import annotations

import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import fastjsonschema
import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, KafkaTimeoutError

from ..config import Settings
from ..contracts import letter_payload, validator
from ..errors import ConfigError, ServiceTimeout, StreamAppError
from ..kafka_security import kafka_python_kwargs
from ..logs import plural, utc_ms
from ..stream.topics import ensure_topics


def request_for(user_id: str, requested_at: int, reset: bool = False) -> dict[str, Any]:
    return {"request_id": uuid.uuid4().hex, "user_id": user_id, "requested_at": requested_at,
            **({"reset": True} if reset else {}), "schema_version": 1}


def checked_requests(users: list[str], requested_at: int, reset: bool = False) -> list[dict[str, Any]]:
    """One request per distinct user, each valid by the topic's schema, or an error naming what is wrong
    before anything is sent (a worker would dead-letter an invalid request, with the user id in it)."""
    check = validator("erasure-request")
    requests = []
    for user in dict.fromkeys(users):
        request = request_for(user, requested_at, reset)
        try:
            user.encode("utf-8")
            check(request)
        except (UnicodeEncodeError, fastjsonschema.JsonSchemaValueException) as exc:
            reason = exc.message if isinstance(exc, fastjsonschema.JsonSchemaValueException) else "not UTF-8 text"
            raise ConfigError(f"cannot request the {'reset' if reset else 'erasure'} of {user[:60]!r}: {reason}; a "
                              "user id is 1 to 200 characters of text, as in the events. Nothing was sent") from None
        requests.append(request)
    return requests


def publish_erasures(settings: Settings, users: list[str], requested_at: int | None = None,
                     reset: bool = False) -> list[dict[str, Any]]:
    """One request per user, keyed by the user (the user's partition, as the input's), on the erasures topic."""
    at = int(time.time() * 1000) if requested_at is None else requested_at
    requests = checked_requests(users, at, reset)
    producer = KafkaProducer(bootstrap_servers=settings.require_kafka().split(","), acks="all",
                             **kafka_python_kwargs(settings.kafka_security))
    acknowledged: set[str] = set()
    errors: list[BaseException] = []
    try:
        for request in requests:
            user = request["user_id"]
            try:
                producer.send(settings.topics.erasures, key=user.encode(), value=orjson.dumps(request)).add_callback(
                    lambda _, user=user: acknowledged.add(user)).add_errback(errors.append)
            except KafkaError as exc:  # refused before it left (too large, no metadata): the others still go
                errors.append(exc)
        try:
            producer.flush(timeout=30)
        except KafkaTimeoutError as exc:
            errors.append(exc)
    finally:
        producer.close(timeout=5)
    unsent = [request["user_id"] for request in requests if request["user_id"] not in acknowledged]
    if unsent:  # kafka-python's flush only logs a record the broker refused: said here, not "requested"
        raise StreamAppError(
            f"the broker did not take the {'reset' if reset else 'erasure'} request of {len(unsent)} of {len(requests)} "
            f"users ({', '.join(repr(user[:60]) for user in unsent[:5])}{', ...' if len(unsent) > 5 else ''})"
            + (f": {errors[0]!r}" if errors else "") + f"; check the broker and this account's right to write "
            f"{settings.topics.erasures}, then run the command again for them (a request applied twice deletes "
            "nothing more)")
    return requests


class ReceiptReader:
    """Reads the receipts topic, and the dead-letter topic for requests a worker refused, from their ends as they were
    before the requests went out."""

    def __init__(self, settings: Settings):
        self.consumer = KafkaConsumer(bootstrap_servers=settings.require_kafka().split(","), group_id=None,
                                      enable_auto_commit=False, **kafka_python_kwargs(settings.kafka_security))
        self.receipts, self.erasures = settings.topics.erasure_receipts, settings.topics.erasures
        tps = [TopicPartition(topic, p) for topic in (self.receipts, settings.topics.dlq)
               for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        self.consumer.assign(tps)
        for tp, end in self.consumer.end_offsets(tps).items():
            # Tansu may report less than the end (its last batch's base offset): a few old records, skipped
            self.consumer.seek(tp, end)

    def wait(self, request_ids: set[str], timeout_s: float
             ) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[str, str]]]:
        """The receipts of `request_ids`, and the refusals of others (request id -> the dead letter's reason and
        detail), as many as came within `timeout_s`."""
        found: dict[str, dict[str, Any]] = {}
        refused: dict[str, tuple[str, str]] = {}
        deadline = time.monotonic() + timeout_s
        while len(found) + len(refused) < len(request_ids) and time.monotonic() < deadline:
            for tp, records in self.consumer.poll(timeout_ms=300).items():
                for record in records:
                    if tp.topic == self.receipts:
                        receipt = receipt_of(record.value)  # another producer's record: not one of ours
                        if receipt is not None and receipt["request_id"] in request_ids:
                            found[receipt["request_id"]] = receipt
                    else:
                        refused.update(self._refusal(record.value, request_ids - found.keys()))
        return found, {request_id: why for request_id, why in refused.items() if request_id not in found}

    def _refusal(self, value: bytes | None, pending: set[str]) -> dict[str, tuple[str, str]]:
        """The pending requests a dead letter of the erasures topic holds (its payload names the request id): request
        id -> (the letter's reason, its detail)."""
        try:
            letter = orjson.loads(value or b"")
            if letter["source"]["topic"] != self.erasures:
                return {}
            payload = (letter_payload(letter) or b"").decode("utf-8", "replace")
            why = (str(letter["reason"]), str(letter.get("detail") or ""))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return {}
        return {request_id: why for request_id in pending if request_id in payload}

    def close(self) -> None:
        self.consumer.close()


def erase_users(settings: Settings, users: list[str], wait_s: float | None, as_json: bool = False,
                reset: bool = False) -> int:
    """Publish the requests (`reset`: resets); unless `wait_s` is None, wait for every receipt and print them."""
    checked_requests(users, 0, reset)  # before any connection: an invalid id is said at once
    ensure_topics(settings)
    reader = ReceiptReader(settings) if wait_s is not None else None
    what = "reset" if reset else "erasure"
    try:
        requests = publish_erasures(settings, users, reset=reset)
        if reader is None:
            for request in requests:
                print(f"{what} of {request['user_id']!r} requested (request {request['request_id']}); its receipt "
                      f"will be on {settings.topics.erasure_receipts}: `stream-app erasure-receipts "
                      f"{request['user_id']}` shows it once a worker has applied the request (one a worker refuses goes "
                      f"to {settings.topics.dlq} instead: `stream-app dead-letters`)")
            return 0
        try:
            receipts, refused = reader.wait({r["request_id"] for r in requests}, wait_s)
        except KeyboardInterrupt:
            print(f"\ninterrupted while waiting: the {len(requests)} {what} requests were sent and are applied "
                  f"when a worker reads them; their receipts will be on {settings.topics.erasure_receipts}",
                  file=sys.stderr)
            raise
    finally:
        if reader is not None:
            reader.close()
    for request in requests:
        receipt = receipts.get(request["request_id"])
        if receipt is not None:
            print(orjson.dumps(receipt).decode() if as_json else describe(receipt))
    if reset:
        erasure_stands(settings, [r["user_id"] for r in requests if r["request_id"] in receipts])
    missing = [r["user_id"] for r in requests if r["request_id"] not in receipts and r["request_id"] not in refused]
    waited_out = (f"no receipt for {len(missing)} of {len(requests)} {what} requests ({', '.join(map(repr, missing[:5]))}) "
                  f"within {wait_s:.0f}s: is a worker running on this namespace? (`stream-app status`; start one with "
                  f"`stream-app worker`). A running worker waiting for Redis or the broker (its /readyz says which) "
                  f"applies them once that answers. The requests stay on {settings.topics.erasures} and are applied "
                  "when a worker reads them; wait longer with --timeout") if missing else ""
    if refused:
        said = [f"a worker refused the {what} of {r['user_id']!r} (request {r['request_id']}), to {settings.topics.dlq}: "
                f"{': '.join(filter(None, refused[r['request_id']]))}" for r in requests if r["request_id"] in refused]
        advice = {REFUSAL_ADVICE.get(reason, DEAD_LETTERS_ADVICE).format(reason=reason)
                  for reason, _ in refused.values()}
        raise StreamAppError("\n".join([*said, "nothing of those users was changed. " + " ".join(sorted(advice)),
                                         *filter(None, [waited_out])]))
    if missing:
        raise ServiceTimeout(waited_out)
    return 0


#: What to do about a request a worker dead-lettered, by the letter's reason: the command writes valid requests, so a
#: schema violation is a worker that does not know a field of this release's.
REFUSAL_ADVICE = {
    "schema_violation": "A worker of an older release than this command refuses fields it does not know (a reset's "
                        "`reset`): upgrade the workers, then send the request again.",
    "payload_too_large": "The workers' STREAM_APP_MAX_PAYLOAD_BYTES is below the request's size: raise it, then send "
                         "the request again.",
    "timestamp_out_of_range": "This machine's clock is ahead of the broker's by more than the workers' "
                              "STREAM_APP_MAX_FUTURE_MS: set the clocks right, then send the request again.",
}
DEAD_LETTERS_ADVICE = ("`stream-app dead-letters` shows the letter ({reason}); send the request again once what it "
                       "says is mended.")


def print_receipts(settings: Settings, users: list[str], as_json: bool = False) -> int:
    """Every receipt the receipts topic still holds (of `users`, when given), oldest first."""
    from .consume import read_to_end

    wanted, receipts, passed_over = set(users), [], []
    for record in read_to_end(settings, settings.topics.erasure_receipts):
        receipt = receipt_of(record.value)
        if receipt is not None:
            receipts.append(receipt)
        elif record.value is not None:
            passed_over.append(f"{record.partition}@{record.offset}")
    if passed_over:
        print(f"note: {len(passed_over)} of the records of {settings.topics.erasure_receipts} are not receipts a worker "
              "writes (not JSON, or not as schemas/v1/erasure-receipt.schema.json describes; partition@offset: "
              f"{', '.join(passed_over[:5])}{' ...' if len(passed_over) > 5 else ''}): another producer's, passed over",
              file=sys.stderr)
    receipts = sorted((r for r in receipts if not wanted or r["user_id"] in wanted), key=lambda r: r["applied_at"])
    for receipt in receipts:
        print(orjson.dumps(receipt).decode() if as_json else describe(receipt))
    if not receipts:
        whose = f" of {', '.join(map(repr, users[:5]))}" if users else ""
        print(f"no erasure receipt{whose} on {settings.topics.erasure_receipts} (namespace {settings.namespace!r}): "
              "a request is applied once a worker runs (`stream-app status`), and one a worker refused is on the "
              "dead-letter topic instead (`stream-app dead-letters`); receipts leave the topic after 30 days",
              file=sys.stderr)
        return 1
    return 0


def receipt_of(value: bytes | None) -> dict[str, Any] | None:
    """A record of the receipts topic as the receipt a worker wrote, or None: a tombstone, or another producer's
    record (not JSON, or not as the schema describes), which stopped `erasure-receipts` and `erase` with a traceback
    (helper-152)."""
    try:
        receipt = orjson.loads(value) if value is not None else None
        validator("erasure-receipt")(receipt)
    except (orjson.JSONDecodeError, fastjsonschema.JsonSchemaException):
        return None
    return receipt


def reset_time(settings: Settings, user_id: str) -> int | None:
    """When a worker last reset the user's profile (`reset-profile`: the applied_at of its latest receipt that deleted
    one, while the receipts topic keeps it); None if none, or if Kafka cannot say."""
    from kafka.errors import KafkaError

    from .consume import latest_records

    key = user_id.encode()

    def deleted_a_profile(record: Any) -> bool:
        try:
            receipt = orjson.loads(record.value) if record.key == key else {}
            deleted = receipt["deleted"] if receipt.get("reset") is True else {}
            return bool(deleted and (deleted["profile_table"]["found"] or deleted["redis"]["existed"]))
        except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):  # not a receipt this project wrote
            return False

    if not settings.kafka_bootstrap_servers:
        return None
    try:
        # receipts are keyed by user (murmur2, as the workers' producer sends them): one partition to read back
        found = latest_records(settings, settings.topics.erasure_receipts, 1, match=deleted_a_profile, key=user_id)
    except (KafkaError, OSError, StreamAppError):
        return None
    applied_at = orjson.loads(found[0].value).get("applied_at") if found else None
    return applied_at if type(applied_at) is int else None


def redis_marker(seconds: int) -> str:
    return (f"; for {seconds // 3600} h it holds the erasure time only, refusing late writes of the erased profile"
            if seconds else "")


def describe(receipt: dict[str, Any]) -> str:
    """A receipt for a person to read."""
    deleted = receipt["deleted"]
    table = deleted["profile_table"]
    when = datetime.fromtimestamp(receipt["applied_at"] / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    profile = (f"profile v{table['version']} ({table['event_count']} events)" if table["found"] and table["version"]
               else "a profile" if table["found"] else "no profile")
    if receipt.get("reset"):
        return describe_reset(receipt, profile, when)
    removed = (f"  deleted: {profile} from the profile table, tombstones on {deleted['changelog']['topic']}"
               f"[{deleted['changelog']['partition']}] and {deleted['profiles_topic']['topic']}, Redis key "
               f"{deleted['redis']['key']} ({'deleted' if deleted['redis']['existed'] else 'was not there'}"
               f"{redis_marker(deleted['redis'].get('marker_s', 0))})") if "changelog" in deleted else (
        "  deleted: nothing; the erasure was applied before, and the profile the worker holds began after it, of "
        "the user's later events only: the erasure left it in the table and in Redis (an idle eviction may remove "
        "it as any other)")
    lines = [
        f"erased {receipt['user_id']!r} (request {receipt['request_id']}) at {when} by {receipt['worker_id']}",
        removed,
        f"  with it: learner state {', '.join(deleted['learner_state']) or 'none'}, {deleted['digests']} event digests, "
        f"pending lists {', '.join(f'{name} {n}' for name, n in deleted['pending_lists'].items()) or 'none'}; worker "
        f"state: {', '.join(deleted['worker_state']) or 'none'}",
        f"  events of the user dated at or before {utc_ms(receipt.get('erased_through', receipt['requested_at']))} are "
        "dropped from now on "
        f"(record: {deleted['erased_record']['table']}, keyed hash {deleted['erased_record']['user_hash'][:16]}...)",
    ]
    dead = receipt["dead_letters"]
    if dead["records"]:
        where = ", ".join(f"{r['partition']}@{r['offset']}" for r in dead["records"][:10])
        lines.append(f"  left: {plural(len(dead['records']), 'dead letter')} on {dead['topic']} (partition@offset: "
                     f"{where}"
                     f"{', ...' if len(dead['records']) > 10 else ''}); they leave when retention.ms "
                     f"{dead['retention_ms']} ({dead['retention_source']}) has passed since they were written")
    elif dead.get("listed", "complete") == "complete":
        lines.append(f"  left: no dead letters of the user on {dead['topic']}")
    if dead.get("listed", "complete") != "complete":
        lines.append(f"  NOT ALL LISTED ({dead['listed']}): {dead['note'].split('NOT LISTED: ', 1)[-1]}")
    lines.append("  not erased: " + "; ".join(receipt["not_erased"]))
    return "\n".join(lines)


def erasure_stands(settings: Settings, users: list[str]) -> None:
    """Say of each reset user who was erased that the erasure stands: a reset removes the profile, not the erasure."""
    from .redrive import ErasureCheck

    if not users:  # none applied: nothing to read the erased-users topic for
        return
    check = ErasureCheck.read(settings)
    for user in users:
        erased_at = check.erased_time(user)
        if erased_at is not None:
            print(f"note: {user!r} was erased (time {utc_ms(erased_at)}) and the erasure stands (a reset removes "
                  "none): events of the user dated at or before then are still dropped", file=sys.stderr)


def describe_reset(receipt: dict[str, Any], profile: str, when: str) -> str:
    """A reset's receipt for a person to read."""
    deleted, dead = receipt["deleted"], receipt["dead_letters"]
    user = receipt["user_id"]
    lines = [f"reset {user!r} (request {receipt['request_id']}) at {when} by {receipt['worker_id']}",
             f"  deleted: {profile} from the profile table (tombstones on {deleted['changelog']['topic']}"
             f"[{deleted['changelog']['partition']}] and {deleted['profiles_topic']['topic']}), Redis key "
             f"{deleted['redis']['key']} ({'deleted' if deleted['redis']['existed'] else 'was not there'}), with its "
             "learner state, digests and pending lists",
             "  no erasure recorded: the user's next event starts a new profile"]
    if not deleted["profile_table"]["found"]:
        redis_too = "" if deleted["redis"]["existed"] else " nor in Redis"
        lines[1:] = [f"  found no profile of {user!r} in the worker's table{redis_too}: nothing to reset (is the id "
                     "right? `stream-app profile USER` shows a user's profile)"]
    if dead["records"]:
        lines.append(f"  {plural(len(dead['records']), 'dead letter')} of the user on {dead['topic']}: events "
                     "parked while the profile could not be read are applied once sent again (`stream-app redrive "
                     "--reason processing_error`; `stream-app dead-letters` lists them)")
    return "\n".join(lines)
