"""`stream-app erase` end to end on the real broker and Redis with real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import jsonschema
import orjson
import pytest
from conftest import wait_until
from kafka import KafkaProducer, TopicPartition

from stream_app.config import Settings
from stream_app.contracts import load_schema
from stream_app.logs import utc_ms
from stream_app.store.redis_store import profile_key, read_profile, worker_statuses
from stream_app.tools.consume import committed_offsets, read_to_end
from stream_app.tools.erase import erase_users, publish_erasures
from stream_app.tools.replay import produce_events

MINUTE = 60_000


def events_of(user: str, start_ms: int, count: int, tag: str = "") -> list[dict]:
    return [{"event_id": f"{user}-{tag}{i}", "user_id": user, "item_id": f"item-{i % 3}", "type": "click",
             "ts": start_ms + i * MINUTE, "schema_version": 1} for i in range(count)]


def cli(settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_app.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **settings.to_env()}, timeout=timeout)


def wait_all_committed(settings, count: int, timeout: float = 90) -> None:
    inputs = [TopicPartition(t, p) for t in settings.topics.inputs for p in range(settings.partitions)]
    wait_until(lambda: sum(committed_offsets(settings, inputs).values()) == count, timeout,
               f"the worker to commit {count} inputs")


def last_by_key(records) -> dict[bytes, bytes | None]:
    return {record.key: record.value for record in records}


def test_erase_deletes_everywhere_gives_a_receipt_and_neither_a_restart_nor_an_old_log_brings_it_back(
        make_settings, start_worker, redis_client):
    settings = make_settings()
    worker = start_worker(settings)
    now = int(time.time() * 1000)
    log = events_of("alice", now - 3_600_000, 6) + events_of("bob", now - 3_600_000, 4)
    produce_events(settings, log)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    producer.send(settings.topics.click, key=b"alice", value=b"{not json")  # a dead letter keyed by alice
    producer.flush()
    producer.close()
    wait_until(lambda: read_profile(redis_client, "alice", settings.namespace).get("event_count") == 6
               and read_profile(redis_client, "bob", settings.namespace).get("event_count") == 4, 60,
               "both users' profiles in Redis")
    wait_until(lambda: len(read_to_end(settings, settings.topics.dlq)) == 1, 30, "the dead letter")

    done = cli(settings, "erase", "alice", "--json")
    assert done.returncode == 0, done.stderr
    receipt = orjson.loads(done.stdout.strip().splitlines()[-1])
    jsonschema.validate(receipt, load_schema("erasure-receipt"))
    deleted = receipt["deleted"]
    assert receipt["user_id"] == "alice" and receipt["worker_id"].startswith(settings.app_id)
    assert deleted["profile_table"] == {"found": True, "version": 6, "event_count": 6}
    assert deleted["redis"]["existed"] is True and deleted["digests"] == 6 and deleted["learner_state"]
    (dead,) = read_to_end(settings, settings.topics.dlq)
    assert receipt["dead_letters"]["records"] == [{"partition": dead.partition, "offset": dead.offset}]
    assert receipt["dead_letters"]["listed"] == "complete"
    assert receipt["dead_letters"]["retention_ms"] == settings.dlq_retention_ms  # Tansu reports no configs
    (published,) = read_to_end(settings, settings.topics.erasure_receipts)
    assert published.key == b"alice" and orjson.loads(published.value) == receipt
    read_back = cli(settings, "erasure-receipts", "alice", "--json")  # later, as after `erase --no-wait`
    assert read_back.returncode == 0 and orjson.loads(read_back.stdout) == receipt
    none = cli(settings, "erasure-receipts", "bob")
    assert none.returncode == 1 and "no erasure receipt of 'bob'" in none.stderr

    assert read_profile(redis_client, "alice", settings.namespace) == {}
    assert read_profile(redis_client, "bob", settings.namespace)["event_count"] == 4
    shown = cli(settings, "profile", "alice")  # says why there is none, not how to rebuild a flushed Redis
    assert shown.returncode == 2 and "user 'alice' was erased" in shown.stderr
    redis_client.delete(profile_key("alice", settings.namespace))  # a flushed Redis: its mark of the erasure is gone
    shown = cli(settings, "profile", "alice")  # the erased-users record still knows
    assert shown.returncode == 2 and "user 'alice' was erased" in shown.stderr, shown.stderr
    changelog = f"{settings.group_id}-profiles-changelog"
    for topic in (settings.topics.profiles, changelog):
        latest = last_by_key(read_to_end(settings, topic))
        assert latest[b"alice"] is None and latest[b"bob"] is not None, topic  # tombstone, compacted away later

    wait_all_committed(settings, len(log) + 1)
    worker.kill()  # no shutdown: the next worker recovers the tables from their changelogs
    # A batch of an earlier owner that outlived its partitions' revoke lands alice's profile after the tombstones
    changelog_records = read_to_end(settings, changelog)
    (late,) = [r for r in changelog_records if r.key == b"alice" and r.value is not None][-1:]
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    for topic in (changelog, settings.topics.profiles):
        producer.send(topic, key=b"alice", value=late.value, partition=late.partition)
    producer.flush()
    producer.close()
    restarted = start_worker(settings)
    produce_events(settings, log)  # the old log, replayed
    wait_all_committed(settings, 2 * len(log) + 1)
    committed_at = int(time.time() * 1000)

    def status() -> dict:
        (found,) = [s for s in worker_statuses(redis_client, settings.namespace) if s["pid"] == restarted.pid]
        return found

    wait_until(lambda: status()["updated_at"] > committed_at, 30, "the restarted worker's status")
    # the replayed 6, no more: the restarted worker starts at the commit, not at the partitions' beginning
    assert status()["counters"]["erased_events_dropped"] == 6
    assert status()["counters"]["erased_profiles_restored"] == 1  # the late record, restored, erased again
    assert read_profile(redis_client, "alice", settings.namespace) == {}
    assert read_profile(redis_client, "bob", settings.namespace)["event_count"] == 4  # duplicates, not re-applied
    assert last_by_key(read_to_end(settings, changelog))[b"alice"] is None
    assert last_by_key(read_to_end(settings, settings.topics.profiles))[b"alice"] is None


def test_an_erasure_during_a_replay_drops_the_older_events_and_later_ones_start_a_new_profile(
        make_settings, start_worker, redis_client, capsys):
    settings = make_settings()
    start_worker(settings)
    now = int(time.time() * 1000)
    before = events_of("carol", now - 2 * 3_600_000, 5)
    after = events_of("carol", now + 60_000, 3, tag="later-")  # after the erasure, within MAX_FUTURE_MS
    control = events_of("dave", now - 2 * 3_600_000, 4)
    produce_events(settings, before + control)
    # while the worker takes them: applied before the erasure or after it, they end up erased either way
    assert erase_users(settings, ["carol"], 60) == 0
    assert "erased 'carol'" in capsys.readouterr().out
    produce_events(settings, before + after)  # the old log again, and events after the erasure
    wait_all_committed(settings, 2 * len(before) + len(control) + len(after))

    stored = read_profile(redis_client, "carol", settings.namespace)
    assert (stored["event_count"], stored["profile_version"]) == (3, 3)
    assert stored["profile"]["first_seen"] == after[0]["ts"]
    recs = [orjson.loads(r.value) for r in read_to_end(settings, settings.topics.recommendations)]
    later = {r["trigger_event_id"]: r["profile_version"] for r in recs if r["trigger_event_id"].startswith("carol-later")}
    assert later == {"carol-later-0": 1, "carol-later-1": 2, "carol-later-2": 3}
    assert read_profile(redis_client, "dave", settings.namespace)["event_count"] == 4


def test_erase_without_a_running_worker_times_out_with_what_to_do(make_settings):
    settings = make_settings()
    waited = cli(settings, "erase", "nobody", "--timeout", "3")
    assert waited.returncode == 2
    assert "no receipt for 1 of 1 erasure requests" in waited.stderr and "stream-app worker" in waited.stderr
    requested = cli(settings, "erase", "nobody", "--no-wait")
    assert requested.returncode == 0 and "`stream-app erasure-receipts nobody` shows it" in requested.stdout
    (first, second) = [orjson.loads(r.value) for r in read_to_end(settings, settings.topics.erasures)]
    for request in (first, second):
        jsonschema.validate(request, load_schema("erasure-request"))
    assert first["user_id"] == second["user_id"] == "nobody" and first["request_id"] != second["request_id"]
    # keyed by the user: the user's partition, as its events
    assert {r.key for r in read_to_end(settings, settings.topics.erasures)} == {b"nobody"}
    assert [r["user_id"] for r in publish_erasures(settings, ["x", "x"])] == ["x"]  # one request per user named


def test_a_request_a_worker_refuses_is_said_at_once_with_the_reason_not_waited_out(make_settings, start_worker):
    """A worker that dead-letters a request (an older release refuses a reset's `reset` field; here one whose payload
    limit the request passes) sends no receipt: the command waited its whole timeout and then asked whether a worker
    was running."""
    settings = make_settings(max_payload_bytes=60)
    start_worker(settings)
    started = time.monotonic()
    refused = cli(settings, "reset-profile", "u1", "--timeout", "90")
    assert refused.returncode == 2 and time.monotonic() - started < 60, refused.stderr
    assert "a worker refused the reset of 'u1' (request " in refused.stderr
    assert "payload_too_large: " in refused.stderr and "raise it, then send the request again" in refused.stderr
    assert "upgrade the workers" not in refused.stderr  # that is a schema violation's cause, not a size's
    assert "no receipt" not in refused.stderr


def test_a_reset_deletes_the_profile_everywhere_and_the_same_events_sent_again_make_it_anew(
        make_settings, start_worker, redis_client):
    """`stream-app reset-profile`: the profile goes as for an erasure, but nothing of the user is held back after it
    (an erasure drops the user's events dated before it, for good): the parked events of a profile a worker could not
    read are applied once re-driven."""
    settings = make_settings()
    start_worker(settings)
    now = int(time.time() * 1000)
    log = events_of("erin", now - 3_600_000, 4)
    produce_events(settings, log)
    wait_until(lambda: read_profile(redis_client, "erin", settings.namespace).get("event_count") == 4, 60,
               "erin's profile in Redis")

    done = cli(settings, "reset-profile", "erin", "--json")
    assert done.returncode == 0, done.stderr
    receipt = orjson.loads(done.stdout.strip().splitlines()[-1])
    jsonschema.validate(receipt, load_schema("erasure-receipt"))
    assert receipt["reset"] is True and receipt["deleted"]["profile_table"]["event_count"] == 4
    assert receipt["deleted"]["redis"]["existed"] is True
    assert read_profile(redis_client, "erin", settings.namespace) == {}
    latest = last_by_key(read_to_end(settings, f"{settings.group_id}-profiles-changelog"))
    assert latest[b"erin"] is None
    said = cli(settings, "reset-profile", "erin")  # again, as a person reads it: nothing left to reset
    assert said.returncode == 0 and "reset 'erin'" in said.stdout and "nothing to reset" in said.stdout

    produce_events(settings, log)  # the same events again: no longer duplicates of a profile, nor held back
    wait_until(lambda: read_profile(redis_client, "erin", settings.namespace).get("event_count") == 4, 60,
               "erin's new profile in Redis")
    assert cli(settings, "profile", "erin").returncode == 0
    assert cli(settings, "erasure-receipts", "erin").stdout.count("reset 'erin'") == 2
    # an id with no profile is said to have none (it was "deleted: no profile ..."), and an erasure stands
    nobody = cli(settings, "reset-profile", "nobody")
    assert nobody.returncode == 0 and "found no profile of 'nobody' in the worker's table nor in Redis" in nobody.stdout
    assert cli(settings, "erase", "erin").returncode == 0
    after = cli(settings, "reset-profile", "erin")
    assert after.returncode == 0 and "note: 'erin' was erased" in after.stderr and "erasure stands" in after.stderr


def test_profile_and_recommendations_after_a_reset_say_it_with_its_time_not_that_redis_lost_the_profile(
        make_settings, start_worker, redis_client):
    """A walkthrough: after `reset-profile`, `profile` named no reset (Redis's marker said "evicted as idle or reset")
    and, the marker gone after its day, advised `repair-redis` as if Redis had lost the profile; `recommendations`
    showed the list of before the reset with no word."""
    settings = make_settings()
    start_worker(settings)
    now = int(time.time() * 1000)
    produce_events(settings, events_of("gil", now - 3_600_000, 3))
    wait_until(lambda: read_profile(redis_client, "gil", settings.namespace).get("event_count") == 3, 60,
               "gil's profile in Redis")
    done = cli(settings, "reset-profile", "gil", "--json")
    assert done.returncode == 0, done.stderr
    reset_at = utc_ms(orjson.loads(done.stdout.strip().splitlines()[-1])["applied_at"])
    said = f"the profile of user 'gil' was reset (`stream-app reset-profile`) at {reset_at}: it fills again from the " \
           "user's next events"
    for marker in ("kept", "gone"):  # Redis's marker of the removal, then after its day
        shown = cli(settings, "profile", "gil")
        assert shown.returncode == 2 and said in shown.stderr and "evicted as idle" not in shown.stderr, marker
        assert ("repair-redis" in shown.stderr) is (marker == "gone"), shown.stderr  # only if events came since
        redis_client.delete(profile_key("gil", settings.namespace))
    listed = cli(settings, "recommendations", "gil")
    assert listed.returncode == 0 and "user gil after gil-2" in listed.stdout, listed.stderr
    assert f"note: the list shown predates the reset of the profile of 'gil' at {reset_at}" in listed.stderr

    produce_events(settings, events_of("gil", now, 1, tag="after-"))  # the first list of the new profile
    wait_until(lambda: read_profile(redis_client, "gil", settings.namespace).get("event_count") == 1, 60,
               "gil's new profile in Redis")
    wait_until(lambda: "gil-after-0" in cli(settings, "recommendations", "gil").stdout, 60, "gil's new list")
    listed = cli(settings, "recommendations", "gil", "--last", "2")
    assert "user gil after gil-2" in listed.stdout and "user gil after gil-after-0" in listed.stdout
    assert f"note: the oldest 1 of the 2 lists shown predates the reset of the profile of 'gil' at {reset_at}" \
           in listed.stderr
    assert cli(settings, "profile", "gil").returncode == 0


def test_a_profile_a_worker_cannot_read_is_reset_and_its_parked_events_re_driven_make_a_new_one(
        make_settings, start_worker, redis_client):
    """The recovery docs/delivery.md gives for a stored profile that cannot be read: every event of its user is parked
    (processing_error) until `reset-profile`, then `redrive --reason processing_error` applies them."""
    settings = make_settings()
    worker = start_worker(settings)
    now = int(time.time() * 1000)
    first = events_of("fay", now - 3_600_000, 2)
    produce_events(settings, first)
    wait_all_committed(settings, len(first))
    worker.kill()
    changelog = f"{settings.group_id}-profiles-changelog"
    (stored,) = [r for r in read_to_end(settings, changelog) if r.key == b"fay"][-1:]
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)  # a record cut short
    producer.send(changelog, key=b"fay", value=stored.value[:40], partition=stored.partition)
    producer.flush()
    producer.close()
    start_worker(settings)
    parked = events_of("fay", now - 1_800_000, 3, tag="parked-")
    produce_events(settings, parked)
    wait_until(lambda: len([r for r in read_to_end(settings, settings.topics.dlq)
                            if b"processing_error" in r.value]) == 3, 60, "fay's events parked")

    done = cli(settings, "reset-profile", "fay")
    assert done.returncode == 0 and "reset 'fay'" in done.stdout, done.stderr
    assert "no erasure recorded: the user's next event starts a new profile" in done.stdout
    assert "3 dead letters of the user" in done.stdout
    # Redis held the profile written before the record was spoilt: taken too, whatever its generation (it stayed,
    # the receipt saying "was not there", and the read API served the reset profile: helper-142 #2)
    assert "was not there" not in done.stdout and f"Redis key {settings.namespace}profile:fay" in done.stdout
    assert read_profile(redis_client, "fay", settings.namespace).get("event_count") is None
    sent = cli(settings, "redrive", "--reason", "processing_error")
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: read_profile(redis_client, "fay", settings.namespace).get("event_count") == 3, 60,
               "fay's new profile of the parked events")


def test_a_refusal_is_advised_by_its_reason_and_users_with_no_answer_are_still_named(monkeypatch, capsys):
    """Every refusal said "upgrade the workers", the cause of a schema violation only; and with one request refused and
    another unanswered, the unanswered one was never named."""
    from stream_app.errors import StreamAppError
    from stream_app.tools import erase

    class Reader:
        def __init__(self, settings):
            pass

        def wait(self, request_ids, timeout_s):
            by_user = {request["user_id"]: request["request_id"] for request in sent}
            return {}, {by_user["u1"]: ("schema_violation", "data must not contain {'reset'} properties"),
                        by_user["u2"]: ("timestamp_out_of_range", "ts is 2 days ahead")}

        def close(self):
            pass

    sent: list = []
    monkeypatch.setattr(erase, "ensure_topics", lambda settings: None)
    monkeypatch.setattr(erase, "ReceiptReader", Reader)
    monkeypatch.setattr(erase, "publish_erasures",
                        lambda settings, users, reset: sent.extend(erase.checked_requests(users, 0, reset)) or sent)
    with pytest.raises(StreamAppError) as raised:
        erase.erase_users(Settings(kafka_bootstrap_servers="localhost:1"), ["u1", "u2", "u3"], 0.1, reset=True)
    said = str(raised.value)
    assert "a worker refused the reset of 'u1'" in said and "schema_violation: data must not contain" in said
    assert "upgrade the workers" in said and "set the clocks right" in said
    assert "no receipt for 1 of 3 reset requests ('u3')" in said


def test_a_removal_marker_newer_than_the_last_reset_is_an_idle_eviction_and_receipts_of_others_are_not_read(monkeypatch):
    """`profile`'s answer without a profile: a reset's time only where the reset is the last removal, and only from a
    reset receipt of the user that deleted a profile."""
    from types import SimpleNamespace

    from stream_app.cli import profile_command
    from stream_app.tools import consume, erase

    def receipt(user: str, applied_at: int, found: bool = True, reset: bool = True):
        value = {"user_id": user, "applied_at": applied_at, "reset": reset,
                 "deleted": {"profile_table": {"found": found}, "redis": {"existed": False}}}
        return SimpleNamespace(key=user.encode(), value=orjson.dumps(value), timestamp=applied_at)

    topic = [receipt("u1", 1_000), receipt("u1", 5_000, found=False), receipt("u1", 6_000, reset=False),
             receipt("u2", 9_000), SimpleNamespace(key=b"u1", value=b"{not a receipt", timestamp=7_000)]
    def latest_records(settings, topic_name, want, match, key):  # the key's partition only: here its records
        return [r for r in topic if r.key == key.encode() and match(r)][-want:]

    monkeypatch.setattr(consume, "latest_records", latest_records)
    monkeypatch.setattr(profile_command, "erased_time", lambda settings, user: None)
    settings = Settings(kafka_bootstrap_servers="localhost:1")
    assert erase.reset_time(settings, "u1") == 1_000 and erase.reset_time(settings, "u3") is None
    assert erase.reset_time(Settings(), "u1") is None  # no broker named: not known
    reset = profile_command.no_profile(settings, "u1", {b"evicted_generation": b"1", b"evicted_at": b"1000"})
    assert "the profile of user 'u1' was reset (`stream-app reset-profile`) at 1970-01-01 00:00:01 UTC (1000)" in reset
    assert "repair-redis" not in reset  # the marker says Redis lost nothing
    evicted = profile_command.no_profile(settings, "u1", {b"evicted_generation": b"1", b"evicted_at": b"2000"})
    assert "evicted as idle" in evicted and "was reset" not in evicted


def test_a_worker_that_takes_up_a_partition_applies_the_erasures_it_read_before_and_not_again_those_applied(
        make_settings, start_worker, redis_client):
    """A worker holds only its own partitions' requests (before, every worker held every request of every partition
    for the topic's 30 days): one it takes up later is read again from where the erased-users table says it was
    applied. The second request comes while its partition's owner is dead and the other worker does not hold it."""
    from stream_app.partitioning import partition_of

    settings = make_settings()
    first, second = start_worker(settings), start_worker(settings, wait_ready=False)

    def owned(worker) -> set[int]:
        found = [s for s in worker_statuses(redis_client, settings.namespace) if s["pid"] == worker.pid]
        return set(found[0].get("input_partitions") or ()) if found else set()

    wait_until(lambda: owned(first) and owned(second) and not owned(first) & owned(second), 90,
               "the two workers to share the partitions")
    user = next(u for u in (f"user-{i}" for i in range(200)) if partition_of(u, settings.partitions) in owned(second))
    produce_events(settings, events_of(user, int(time.time() * 1000) - 3_600_000, 3))
    wait_until(lambda: read_profile(redis_client, user, settings.namespace).get("event_count") == 3, 60,
               "the user's profile")
    done = cli(settings, "erase", user, "--json")
    assert done.returncode == 0, done.stderr
    applied = orjson.loads(done.stdout.strip().splitlines()[-1])
    assert applied["worker_id"].endswith(f":{second.pid}")
    second.kill()
    (pending,) = [r["request_id"] for r in publish_erasures(settings, [user])]  # read by the first worker while the partition is not its own

    def receipts() -> list[tuple[str, str]]:
        return sorted((r["request_id"], r["worker_id"].rsplit(":", 1)[1]) for r in
                      (orjson.loads(record.value) for record in read_to_end(settings, settings.topics.erasure_receipts)))

    wait_until(lambda: len(receipts()) >= 2, 120, "the first worker to take up the partition and apply the request")
    time.sleep(2)  # a request applied again would show by now
    assert receipts() == sorted([(applied["request_id"], str(second.pid)), (pending, str(first.pid))])
    assert owned(first) == set(range(settings.partitions))


def test_a_request_the_broker_does_not_take_is_said_not_printed_as_requested(monkeypatch, capsys):
    """kafka-python's flush only logs a record the broker refused (no right to write the topic): `erase` printed
    "requested" and exited 0 (a review's finding). The users whose requests went are not named as unsent."""
    from kafka.errors import TopicAuthorizationFailedError

    from stream_app.errors import StreamAppError
    from stream_app.tools import erase

    class Sent:
        def __init__(self, error):
            self.error = error

        def add_callback(self, fn):
            if self.error is None:
                fn(object())
            return self

        def add_errback(self, fn):
            if self.error is not None:
                fn(self.error)
            return self

    class Producer:
        def __init__(self, **kwargs):
            self.sent = []

        def send(self, topic, key, value):
            return Sent(TopicAuthorizationFailedError(topic) if key in (b"alice", b"carol") else None)

        def flush(self, timeout=None):
            pass

        def close(self, timeout=None):
            pass

    monkeypatch.setattr(erase, "KafkaProducer", Producer)
    monkeypatch.setattr(erase, "ensure_topics", lambda settings: None)
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1")
    with pytest.raises(StreamAppError, match=r"of 2 of 3 users \('alice', 'carol'\): TopicAuthorizationFailedError"):
        erase_users(settings, ["alice", "bob", "carol"], None)
    assert "requested" not in capsys.readouterr().out
    assert len(publish_erasures(settings, ["bob"])) == 1  # all taken: the requests


def _receipt_of(user: str, request_id: str) -> dict:
    """A receipt as a worker writes it (one found no profile to erase)."""
    return {"request_id": request_id, "user_id": user, "requested_at": 1_000, "erased_through": 1_000,
            "applied_at": 2_000, "worker_id": "w", "partition": 1,
            "deleted": {"profile_table": {"found": False, "version": None, "event_count": None},
                        "changelog": {"topic": "p-changelog", "partition": 1, "tombstone": True},
                        "profiles_topic": {"topic": "profiles", "tombstone": True},
                        "redis": {"key": f"profile:{user}", "existed": False, "marker_s": 86400}, "learner_state": [],
                        "digests": 0, "pending_lists": {}, "worker_state": [],
                        "erased_record": {"table": "erased-changelog", "user_hash": "ab" * 32}},
            "dead_letters": {"topic": "events.dlq", "records": [], "retention_ms": 1, "retention_source": "setting",
                             "note": "n", "listed": "complete"}, "not_erased": ["item state"], "schema_version": 1}


def test_a_receipt_names_what_went_with_the_profile_in_words_not_as_python_reprs():
    """A new user's walkthrough: `erase` printed "learner state ['behaviour']" and "pending lists {'shown': 12, ...}"."""
    from stream_app.tools.erase import describe

    receipt = _receipt_of("u1", "r1")
    receipt["deleted"].update(learner_state=["behaviour", "drift"], pending_lists={"shown": 12, "shown_features": 1})
    said = describe(receipt)
    assert "with it: learner state behaviour, drift, 0 event digests, pending lists shown 12, shown_features 1; " \
           "worker state: none" in said
    assert "with it: learner state none, 0 event digests, pending lists none;" in describe(_receipt_of("u2", "r2"))


def test_records_of_the_receipts_topic_that_are_no_receipts_are_passed_over_and_named_not_a_traceback(
        monkeypatch, capsys):
    """Another producer's records on erasures.receipts (bytes that are not UTF-8, not JSON, JSON of another shape)
    stopped `erasure-receipts` with a traceback, and `erase` waiting for its receipts too (helper-152)."""
    from types import SimpleNamespace

    from stream_app.tools import consume, erase

    foreign = [b"\xff\xfe", b"junk", b"[1]", orjson.dumps({"user_id": "u1", "request_id": 5}),
               orjson.dumps({"user_id": "u1", "applied_at": "yesterday"})]
    records = [SimpleNamespace(partition=0, offset=offset, key=b"u1", value=value)
               for offset, value in enumerate([*foreign, None, orjson.dumps(_receipt_of("u1", "r1"))])]
    monkeypatch.setattr(consume, "read_to_end", lambda settings, topic: records)
    assert erase.print_receipts(Settings(), ["u1"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("erased 'u1' (request r1)") and out.count("erased '") == 1
    assert "5 of the records of erasures.receipts are not receipts a worker writes" in err
    assert "partition@offset: 0@0, 0@1, 0@2, 0@3, 0@4)" in err  # the tombstone (0@5) is no record to name
    reader = object.__new__(erase.ReceiptReader)
    tp = TopicPartition("erasures.receipts", 0)
    reader.receipts, reader.erasures = tp.topic, "erasures"
    reader.consumer = SimpleNamespace(poll=lambda timeout_ms: {tp: records})
    found, refused = reader.wait({"r1"}, 5)
    assert list(found) == ["r1"] and refused == {}
