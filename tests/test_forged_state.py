"""A forged learner state on the table changelogs, through real workers: a worker that recovers it runs
nothing, dead-letters it (bad_state), starts that learner afresh and goes on with every event."""

from __future__ import annotations

import base64
import pickle

import jsonschema
import orjson
from kafka import KafkaProducer

from stream_app.contracts import load_schema
from stream_app.core.events import Event
from stream_app.core.learners import BehaviourStats
from stream_app.core.process import new_profile
from stream_app.partitioning import partition_of
from stream_app.store.redis_store import read_profile
from stream_app.tools.bench import synthetic_events
from stream_app.tools.consume import read_to_end, wait_committed
from stream_app.tools.replay import produce_events


class Forged:
    """A pickle that, loaded by pickle, runs a command that writes a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.path}",)


def test_a_forged_changelog_record_runs_nothing_is_dead_lettered_and_the_worker_goes_on(
        make_settings, start_worker, redis_client, tmp_path):
    settings = make_settings(ranker_warm_up=20, commit_interval_s=0.5)
    # two sessions of every user: a day apart
    first = synthetic_events(300, users=12, items=60, prefix="forge")
    second = synthetic_events(300, users=12, items=60, seed=8, start_ms=first[-1]["ts"] + 86_400_000, prefix="later")
    events = first + second
    worker = start_worker(settings)
    wait_committed(settings, produce_events(settings, first).marks, timeout=120)
    user = max({e["user_id"] for e in first}, key=lambda u: sum(e["user_id"] == u for e in events))
    partition = partition_of(user, settings.partitions)
    profiles_changelog = f"{settings.group_id}-profiles-changelog"
    learners_changelog = f"{settings.group_id}-partition-learners-changelog"
    stored = [r for r in read_to_end(settings, profiles_changelog) if r.key == user.encode()][-1]
    assert orjson.loads(stored.value)["learner_state"][BehaviourStats.name]["kind"] == BehaviourStats.kind

    # Someone who can write to the changelogs: the user's profile with a forged behaviour state, and
    # the partition's learners replaced by the same payload. The running worker never reads them back;
    # a worker that recovers the partition does.
    witness = tmp_path / "pwned"
    payload = base64.b64encode(pickle.dumps(Forged(witness))).decode("ascii")
    profile = orjson.loads(stored.value)
    profile["learner_state"][BehaviourStats.name] = payload
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    profile_sent = producer.send(profiles_changelog, key=user.encode(), value=orjson.dumps(profile),
                                 partition=partition)
    learners_sent = producer.send(learners_changelog, key=str(partition).encode(), value=payload.encode(),
                                  partition=partition)
    producer.flush()
    offsets = {profiles_changelog: profile_sent.get(timeout=30).offset,
               learners_changelog: learners_sent.get(timeout=30).offset}
    producer.close()
    worker.kill()

    restarted = start_worker(settings)
    wait_committed(settings, produce_events(settings, second).marks, timeout=120)
    assert not witness.exists()
    assert restarted.alive()
    dead = [orjson.loads(r.value) for r in read_to_end(settings, settings.topics.dlq)]
    validate = jsonschema.Draft7Validator(load_schema("dead-letter")).validate
    for record in dead:
        validate(record)
    assert sorted((r["reason"], r["source"]["topic"], r["source"]["partition"], r["key_text"]) for r in dead) == [
        ("bad_state", learners_changelog, partition, str(partition)),
        ("bad_state", profiles_changelog, partition, user)]
    assert all("may not name posix.system" in r["detail"] and r["payload_text"] == payload for r in dead)
    # each names the changelog record it was restored from
    assert {r["source"]["topic"]: r["source"]["offset"] for r in dead} == offsets
    # nothing lost: every event of every user applied, the forged user's included
    for user_id in {e["user_id"] for e in events}:
        applied = read_profile(redis_client, user_id, settings.namespace)
        assert applied["event_count"] == sum(e["user_id"] == user_id for e in events), user_id
    # the forged user's behaviour started afresh at the restart: it counts the second half's sessions only
    def sessions(log) -> int:
        learner, blank = BehaviourStats(), new_profile(user, settings)
        for event in log:
            if event["user_id"] == user:
                learner.learn_one(blank, Event.from_dict(event))
        return learner.sessions

    assert sessions(second) != sessions(events)
    assert read_profile(redis_client, user, settings.namespace)["profile"]["stats"]["sessions"] == sessions(second)
