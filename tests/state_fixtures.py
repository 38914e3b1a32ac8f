"""Learner-state fixtures for the upgrade tests (tests/test_learner_state.py): what a release writes to its
changelogs, and what its learners do next.

    PYTHONPATH=. python tests/state_fixtures.py tests/data/learner-state-<name>.json

runs this checkout's core over 600 synthetic events (two partitions, bandit and drift handling on) and
writes the profile changelog record of the user with the most events, the partition-learners record of
the partition with the most ranker labels, and the answers of learners restored from those records to a
fixed probe (`probe`). A later release loads the same records and asks the same probe: its answers must
be equal, float for float. `learner-state-pickle.json` was written at 8c798f3, the last release that
pickled learner state, by this script as of the commit that added that file (it wrote `dumps()`, the
pickle); `learner-state-v1.json` by the release that made it versioned data (state v1).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stream_app.config import Settings
from stream_app.core.events import Event
from stream_app.core.learners import BehaviourStats, InterestDrift, PartitionLearners, read_partition_learners
from stream_app.core.ordering import rounds
from stream_app.core.profile import Profile, apply_event, event_digest
from stream_app.evaluate.models import StreamAppModel
from stream_app.partitioning import partition_of
from stream_app.tools.synth import SynthConfig, generate

SETTINGS = Settings(partitions=2, bandit=True, drift_handling=True, ranker_warm_up=50)


def run_core(events: int = 600) -> StreamAppModel:
    log, _ = generate(SynthConfig(events=events, seed=11))
    model = StreamAppModel(SETTINGS.replace(rec_policy="every"))
    for epoch, released in rounds(list(log), model.settings, partition_of):
        batch = [Event.from_dict(r.item) for r in released]
        model.begin_batch(batch, epoch)
        for event in batch:
            model.learn(event)
    return model


def probe_events(user_id: str, start_ts: int) -> list[Event]:
    """Sessions of two events: twenty on one category, then ten each on a category new to the user
    (behaviour and drift both have work to do)."""
    return [Event(f"probe{i}", user_id, f"p{i % 4}", ("browse", "click", "purchase")[i % 3], start_ts + i * 600_000,
                  session_id=f"ps{i // 2}", category="probe" if i < 40 else f"probe-{i // 2}", dwell_ms=1000 + 37 * i,
                  stage="cart" if i % 3 == 2 else None)
             for i in range(60)]


def probe(profile: Profile, learners: PartitionLearners) -> dict[str, Any]:
    """What restored learners say and do: their public state, then after learning fixed inputs, the
    ranker's scores of fixed rows and the bandit's choices. Uses only what every release has."""
    out: dict[str, Any] = {}
    behaviour = profile.learner(BehaviourStats.name, lambda: None)
    drift = profile.learner(InterestDrift.name, lambda: None)
    out["behaviour_before"] = behaviour.public()
    out["drift_before"] = drift.public()
    for event in probe_events(profile.user_id, (profile.last_seen or 0) + 3_600_000):
        behaviour.learn_one(profile, event)
        drift.learn_one(profile, event)
        apply_event(profile, event, event_digest(event.event_id), SETTINGS)
    out["behaviour_after"] = behaviour.public()
    out["repeat_propensity"] = behaviour.repeat_propensity
    out["drift_after"] = drift.public()
    out["interests"] = profile.interests
    ranker, bandit = learners.ranker, learners.bandit
    # the features the ranker was written with (a later release's process() adopts its own)
    rows = np.array([[((i * 7 + j * 3) % 11) / 10.0 for j in range(len(ranker.features))] for i in range(6)])
    out["ranker_before"] = [ranker.labels, ranker.positives, ranker.ranker_rr, ranker.prior_rr, ranker.ready]
    out["scores_before"] = ranker.score_many(rows).tolist()
    shown = [f"c{i}" for i in range(6)]
    for i in range(40):
        ranker.learn_feedback(shown, rows, shown[(i * 5) % 6] if i % 7 else "elsewhere", f"pe{i}", top_k=3)
    out["ranker_after"] = [ranker.labels, ranker.positives, ranker.ranker_rr, ranker.prior_rr, ranker.ready]
    out["scores_after"] = ranker.score_many(rows).tolist()
    pulls = []
    for i in range(60):
        segment = ("new", "returning")[i % 2]
        arm = bandit.pull(segment)
        bandit.update(segment, arm, 1.0 if (i * 13) % 5 < 2 else 0.0)
        pulls.append(arm)
    out["pulls"] = pulls
    out["pull_counts"] = bandit.pulls
    return out


def write(path: str, learners_record: bytes, profile_record: bytes, note: str) -> None:
    profile = Profile.from_json(profile_record)
    learners = read_partition_learners(learners_record, "fixture")
    fixture = {"written_by": note, "profile": orjson.loads(profile_record),
               "partition_learners": learners_record.decode(), "probe": probe(profile, learners)}
    Path(path).write_bytes(orjson.dumps(fixture, option=orjson.OPT_INDENT_2) + b"\n")


def main(path: str, note: str) -> None:
    model = run_core()
    user = max(model.profiles.values(), key=lambda p: (p.event_count, p.user_id))
    partition = max(model.partition_learners, key=lambda p: model.partition_learners[p].ranker.labels)
    learners = model.partition_learners[partition]
    record = orjson.dumps(learners.to_state())
    assert user.learner_state or user.learners and learners.bandit is not None
    write(path, record, user.to_json(), note)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
