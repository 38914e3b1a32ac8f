"""The pure core: (profile, event) -> (profile', recommendation). No Faust, Kafka or Redis.

Workers call `process` for every valid event of a batch; `evaluate` calls the same function, so the
numbers it reports are the numbers the workers produce.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..config import Settings
from .content import ContentIndex, interest_vector, update_interest
from .events import Event
from .feature_rows import FEATURES, shown_matrix
from .items import ItemIndex
from .learners import (
    BehaviourStats,
    InterestDrift,
    OnlineRanker,
    PartitionLearners,
    RecencyPositions,
    StrategyBandit,
    segment_of,
)
from .profile import Profile, apply_event, event_digest
from .recommend import MODEL_VERSIONS, Encoding, Ranked, recommend


@dataclass(slots=True)
class Outcome:
    applied: bool  # False: a duplicate event_id (or older than the dedupe floor), nothing changed
    recommendation: dict[str, Any] | None
    ranked: Ranked | None = None  # the candidates behind the recommendation (evaluation rows rank them otherwise)


def new_profile(user_id: str, settings: Settings) -> Profile:
    return Profile(user_id=user_id, half_life_ms=settings.half_life_ms,
                   interest_half_life_ms=settings.interest_half_life_ms)


def new_ranker(settings: Settings) -> OnlineRanker:
    return OnlineRanker(FEATURES, learning_rate=settings.ranker_learning_rate, negatives=settings.ranker_negatives,
                        warm_up=settings.ranker_warm_up, seed=settings.ranker_seed)


def with_current_settings(learners: PartitionLearners, settings: Settings, partition: int) -> PartitionLearners:
    """Restored learners work with today's features and settings, keeping what they learned: a ranker an
    earlier release wrote with other features adopts today's (by name), instead of failing every event on
    a shape error; its warm-up, negatives and learning rate, and whether a bandit explores (and how often),
    are the settings', not those the state was first written with; a bandit written with the one seed every
    partition had before 2026-11-30 explores on its partition's sequence (bandit_seed) from then on."""
    ranker = learners.ranker
    if ranker.features != FEATURES:
        ranker.adopt(FEATURES)
    ranker.warm_up, ranker.negatives = settings.ranker_warm_up, settings.ranker_negatives
    ranker.learning_rate = ranker.model.learning_rate = settings.ranker_learning_rate
    if learners.positions.size != settings.covis_prev_items:
        learners.positions.resize(settings.covis_prev_items)
    if not settings.bandit:
        learners.bandit = None
    elif learners.bandit is None:
        learners.bandit = StrategyBandit(settings.bandit_epsilon, bandit_seed(settings, partition))
    else:
        learners.bandit.epsilon = settings.bandit_epsilon
        for policy in learners.bandit.policies.values():
            policy.epsilon = settings.bandit_epsilon
        seed = bandit_seed(settings, partition)
        if learners.bandit.seed == settings.ranker_seed != seed:
            # written before 2026-11-30 with the one seed of every partition: it would go on exploring at the
            # same lists as every other partition's (its segments' sequences restored, new segments seeded alike)
            learners.bandit.reseed(seed)
    return learners


def bandit_seed(settings: Settings, partition: int) -> int:
    """A partition's exploration seed: one seed for all would make every partition explore at the same
    lists (the k-th of each), its choices correlated across the whole stream."""
    return settings.ranker_seed * 1_000_003 + partition


def new_partition_learners(settings: Settings, partition: int) -> PartitionLearners:
    bandit = StrategyBandit(settings.bandit_epsilon, bandit_seed(settings, partition)) if settings.bandit else None
    return PartitionLearners(new_ranker(settings), bandit, positions=RecencyPositions(settings.covis_prev_items))


def learn_feedback(profile: Profile, event: Event, learners: PartitionLearners, top_k: int) -> int:
    """The user's previous candidates, judged by this event, teach the ranker (and the shown list, the
    first top_k, rewards the strategy that chose it); then they are forgotten. Returns the number of
    ranker labels learned."""
    learned = 0
    if profile.shown:
        matrix = shown_matrix(profile.shown_rows, profile.shown_features, len(profile.shown))
        if matrix is not None:
            learned = learners.ranker.learn_feedback(profile.shown, matrix, event.item_id, event.event_id, top_k)
        if learners.bandit is not None and profile.shown_strategy:
            segment, strategy = profile.shown_strategy.split(":", 1)
            learners.bandit.update(segment, strategy, 1.0 if event.item_id in profile.shown[:top_k] else 0.0)
    forget_shown(profile)
    return learned


def forget_shown(profile: Profile) -> None:
    """The last list and what it was made of, once judged: the next list replaces them."""
    profile.shown, profile.shown_features, profile.shown_rows, profile.shown_strategy = [], None, None, None


def shown_hits(profile: Profile, event: Event, top_k: int) -> tuple[bool | None, bool | None]:
    """Did this event hit the list shown after the user's previous event, and the list a shadow
    encoder would have shown? None where there was no such list. Call before `process`."""
    live = event.item_id in profile.shown[:top_k] if profile.shown else None
    shadow = event.item_id in profile.shadow_shown if profile.shadow_shown else None
    return live, shadow


def shadow_recommendation(profile: Profile, event: Event, index: ItemIndex, settings: Settings,
                          learners: PartitionLearners | None, encoding: Encoding,
                          content: ContentIndex | None = None) -> None:
    """The list a shadow encoder would show after `event` (already processed with the live one, which showed a list):
    same profile, item state and ranker, the shadow's embedding. Kept in the profile to be judged by the next event;
    never published."""
    ranker = learners.ranker if learners is not None and learners.ranker.ready else None
    behaviour = behaviour_of(profile, settings)
    ranked = recommend(profile, event, index, settings, ranker, behaviour.repeat_propensity, encoding, content,
                       learners.positions.shares() if learners is not None else None)
    profile.shadow_shown = [item["item_id"] for item in ranked.items]


def behaviour_of(profile: Profile, settings: Settings) -> BehaviourStats:
    """The user's behaviour learner, with the current session gap (a restored one keeps the one it was made with)."""
    behaviour = profile.learner(BehaviourStats.name, BehaviourStats)
    behaviour.session_gap_ms = settings.session_gap_ms
    return behaviour


def should_emit(profile: Profile, event: Event, settings: Settings) -> bool:
    return emits(profile.last_rec_ts, event, settings)


def emits(last_rec_ts: int | None, event: Event, settings: Settings) -> bool:
    """Does the event get a recommendation, its user's last one made at `last_rec_ts`?"""
    if settings.rec_policy == "every":
        return True
    if settings.rec_policy == "purchase":
        return event.type == "purchase"
    # debounce: at most one recommendation per user per rec_debounce_ms of event time
    return last_rec_ts is None or event.ts - last_rec_ts >= settings.rec_debounce_ms


def rec_id_for(event_id: str) -> str:
    """Deterministic, so a redelivered recommendation can be deduplicated downstream."""
    return "rec-" + hashlib.blake2b(event_id.encode("utf-8"), digest_size=12).hexdigest()


def learn_content(profile: Profile, event: Event, content: ContentIndex, settings: Settings) -> None:
    """Fold the event's item text into the user's interest vector (what it is near is named when the profile is
    written)."""
    vector = content.vector(event.item_id)
    if vector is None:
        return
    profile.content_interest = interest_after(profile.content_interest, event, vector, content, settings)
    profile.likes_from = content  # named when written (`to_dict`: ContentIndex.likes_of)


def interest_after(state: dict[str, Any] | None, event: Event, item_vector: np.ndarray, content: ContentIndex,
                   settings: Settings) -> dict[str, Any]:
    """The interest state after an event on an item with a vector (`learn_content`, and `expected_scans`' guess)."""
    return update_interest(state, item_vector, settings.weights.of(event.type, event.stage), event.ts,
                           settings.content_half_life_ms, content.version)


def expected_scans(events: Sequence[Event], profile_of: Callable[[str], Profile | None], content: ContentIndex,
                   settings: Settings) -> list[np.ndarray]:
    """The vectors a round's recommendations will scan the catalogue with, in order, for `ContentIndex.expect`:
    each event's interest vector as `learn_content` will leave it, and its item's vector (unless its similar items
    are known), for the events that get a recommendation (rec_policy: a vector nobody asks for would only make
    its chunk's product dearer than the scans it saves). Duplicates are passed over as `process` passes them; a
    guess that misses all the same (a profile changed meanwhile) costs a scan alone, never a different list."""
    vectors: list[np.ndarray] = []
    states: dict[str, Any] = {}
    last_rec: dict[str, int | None] = {}
    profiles: dict[str, Profile | None] = {}
    applied: set[str] = set()
    for event in events:
        if event.user_id not in states:
            profile = profiles[event.user_id] = profile_of(event.user_id)
            states[event.user_id] = profile.content_interest if profile is not None else None
            last_rec[event.user_id] = profile.last_rec_ts if profile is not None else None
        digest = event_digest(event.event_id)
        profile = profiles[event.user_id]
        if digest in applied or (profile is not None and not profile.admits(digest, event.ts)):
            continue  # a duplicate: `process` applies nothing
        applied.add(digest)
        item_vector = content.vector(event.item_id)
        if item_vector is not None:
            states[event.user_id] = interest_after(states[event.user_id], event, item_vector, content, settings)
        if not emits(last_rec[event.user_id], event, settings):
            continue
        last_rec[event.user_id] = event.ts
        if item_vector is not None and not content.has_similar(event.item_id, settings.content_candidates, event.ts):
            vectors.append(item_vector)
        interest = interest_vector(states[event.user_id], content.version)
        if interest is not None:
            vectors.append(interest)
    return vectors


def process(profile: Profile, event: Event, index: ItemIndex, settings: Settings, now_ms: int,
            learners: PartitionLearners | None = None, encoding: Encoding | None = None,
            content: ContentIndex | None = None) -> Outcome:
    """Apply one event to its user's profile (in place), maybe recommend. Its item signals are the
    item feed's (item_feed.ItemFeed), which every worker runs over the whole input.
    `learners`: the ranker, recency positions (and bandit) of the event's partition; None: rank by the prior
    with a fixed recency order, learn nothing.
    `encoding`: the user's sequence-encoder embedding including this event (encoded with the rest of
    the batch in one onnxruntime call), or None when no encoder is live.
    `content`: the catalogue's text vectors under the live content model, or None."""
    digest = event_digest(event.event_id)
    if not profile.admits(digest, event.ts):
        return Outcome(False, None)
    if learners is not None:
        learn_feedback(profile, event, learners, settings.top_k)
        learners.positions.learn_one(profile.recent_items(learners.positions.size), event.item_id)
    else:  # nothing learns from the last list (judged by `shown_hits` before this call): it goes as with learners
        forget_shown(profile)
    profile.shadow_shown = []  # judged (shown_hits) before this call; a live shadow shows a new one after it
    behaviour = behaviour_of(profile, settings)
    behaviour.learn_one(profile, event)
    if settings.drift_handling:
        drift = profile.learner(InterestDrift.name, InterestDrift)
        drift.session_gap_ms, drift.downweight = settings.session_gap_ms, settings.drift_downweight
        drift.learn_one(profile, event)
    apply_event(profile, event, digest, settings)
    if content is not None:
        learn_content(profile, event, content, settings)
    if encoding is not None:
        profile.embedding = np.round(encoding.vector.astype(np.float64), 5).tolist()
        profile.encoder_version = encoding.version
    if not should_emit(profile, event, settings):
        return Outcome(True, None)
    profile.last_rec_ts = event.ts
    ranker, strategy = None, "prior"
    if learners is not None:
        segment = segment_of(profile.event_count)
        wanted = learners.bandit.pull(segment) if learners.bandit is not None else "ranker"
        if wanted == "ranker" and learners.ranker.ready:
            ranker, strategy = learners.ranker, "ranker"
        if learners.bandit is not None:  # the reward goes to what was shown, a cold ranker's list is the prior's
            profile.shown_strategy = f"{segment}:{strategy}"
    ranked = recommend(profile, event, index, settings, ranker, behaviour.repeat_propensity, encoding, content,
                       learners.positions.shares() if learners is not None else None)
    # judged by the next event (the K shown); learners learn from the pool, with its rows
    profile.shown = ranked.pool if learners is not None else ranked.pool[: settings.top_k]
    if learners is not None:
        profile.shown_rows, profile.shown_features = ranked.stored_rows(), None  # the text when it is written
    return Outcome(True, {
        "rec_id": rec_id_for(event.event_id),
        "user_id": profile.user_id,
        "items": ranked.items,
        "trigger_event_id": event.event_id,
        "event_ts": event.ts,
        "generated_at": now_ms,
        "profile_version": profile.version,
        "generation": profile.generation or 0,
        "model": {**MODEL_VERSIONS, "ranking": strategy,
                  **({"encoder": encoding.version} if encoding is not None else {}),
                  **({"content": content.version} if content is not None else {})},
        "schema_version": 1,
    }, ranked)
