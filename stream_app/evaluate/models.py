"""The models the prequential pass runs side by side, each publishing after every event the list its user
would see next: the stream-app core as the workers run it, its candidate sources alone, and simple
baselines (item just seen, popular, River matrix factorisation); the session-based ones are in `baselines`
and `session_knn`."""

from __future__ import annotations

import collections
from typing import Protocol

import numpy as np

from ..config import Settings
from ..core.content import ContentIndex
from ..core.events import Event
from ..core.item_feed import EvictionClock, ItemFeed
from ..core.items import InMemoryItemIndex
from ..core.learners import PartitionLearners
from ..core.process import expected_scans, new_partition_learners, new_profile, process
from ..core.profile import Profile
from ..core.recommend import Ranked, by_prior, recommend
from ..partitioning import partition_of
from ..serving.encoder import Encoder, UserEncoding, encode_batch
from .baselines import then_popular


class Model(Protocol):
    name: str

    def begin_batch(self, events: list[Event], epoch: int) -> None:
        """A round: events of one item epoch (ordering.py), in the order a worker applies them."""

    def learn(self, event: Event) -> list[str] | None:
        """Learn from one event; return the list to show its user next (None: the one shown before stays)."""

    def end_batch(self) -> None: ...


class BatchAgnostic:
    def begin_batch(self, events: list[Event], epoch: int) -> None:
        pass

    def end_batch(self) -> None:
        pass


class StreamAppModel:
    """The workers' own core: profiles, the item feed, the recommender, one online ranker per input
    partition (users routed as Kafka's default partitioner routes them) and, if given, the sequence
    encoder, run over each round in one call before its events are processed, as in a worker.
    `record` keeps every recommendation ((user id, trigger event id) -> (profile version, item ids)). `expects_scans`: tell
    the content index the round's catalogue scans ahead, as a worker does (one of the models sharing an index: the
    rows after it scan with the same vectors, event by event, and find them scanned). `variant`: a row of the pass
    that is the stream-app row with one setting changed or one model left out (an ablation, not a baseline)."""

    def __init__(self, settings: Settings, name: str = "stream-app", encoder: Encoder | None = None,
                 record: bool = False, content: ContentIndex | None = None, expects_scans: bool = False,
                 variant: bool = False):
        self.name = name
        self.variant = variant
        self.settings = settings
        self.encoder = encoder
        self.content = content
        self.index = InMemoryItemIndex(settings)
        self.feed = ItemFeed(settings, self.index)
        self.profiles: dict[str, Profile] = {}
        self.partition_learners: dict[int, PartitionLearners] = {}
        self.encodings: list[UserEncoding] = []
        self.last_encoding: UserEncoding | None = None
        self.last_ranked: Ranked | None = None  # the candidates of the list `learn` just returned
        self.epoch = 0
        self.user_eviction = EvictionClock()
        self.evicted_users = 0
        self.recorded: dict[tuple[str, str], tuple[int, list[str]]] | None = {} if record else None
        self.expects_scans = expects_scans
        # a version serves once trained: before its cutoff its outputs are in-sample fits, which the ranker would
        # learn to trust (a deployed model meets the ranker after its training span only)
        self.encoder_live_from = ((encoder.manifest.get("training") or {}).get("train_until_ts") or 0) if encoder else 0

    def begin_batch(self, events: list[Event], epoch: int) -> None:
        self.epoch = epoch
        self.feed.advance(epoch - 1)
        if self.settings.user_idle_ms:
            self.evict_idle_users(epoch * self.settings.item_epoch_ms)
        if self.content is not None and self.expects_scans:
            self.content.expect(expected_scans(events, self.profiles.get, self.content, self.settings))
        if self.encoder is None:
            return
        profiles = self.profiles
        self.encodings = encode_batch(
            self.encoder, events, profiles.get, self.settings.encoder_candidates)
        self.encodings.reverse()  # popped in event order

    def evict_idle_users(self, round_start_ms: int) -> None:
        """As a worker does before a round (STREAM_APP_USER_IDLE_MS): idle profiles leave at fixed event times."""
        boundary = self.user_eviction.due(round_start_ms)
        if boundary is None:
            return
        cutoff = boundary - self.settings.user_idle_ms
        for user_id in [u for u, p in self.profiles.items() if p.last_seen is not None and p.last_seen < cutoff]:
            del self.profiles[user_id]
            self.evicted_users += 1

    def learners_for(self, partition: int) -> PartitionLearners | None:
        if not self.settings.ranker:
            return None
        learners = self.partition_learners.get(partition)
        if learners is None:
            learners = self.partition_learners[partition] = new_partition_learners(self.settings, partition)
        return learners

    def learn(self, event: Event) -> list[str] | None:
        """The list shown after `event`; None for an event the profile had already (a duplicate id): a worker
        publishes nothing for it, so the user's list stays the one shown before."""
        profile = self.profiles.get(event.user_id)
        if profile is None:
            profile = self.profiles[event.user_id] = new_profile(event.user_id, self.settings)
        encoding = self.encodings.pop() if self.encoder is not None else None
        self.last_encoding = encoding if encoding is not None and event.ts >= self.encoder_live_from else None
        partition = partition_of(event.user_id, self.settings.partitions)
        self.last_ranked = None
        outcome = process(profile, event, self.index, self.settings, now_ms=0,
                          learners=self.learners_for(partition), encoding=self.last_encoding,
                          content=self.content)
        self.feed.add(event, partition, self.epoch)  # the feed sees every valid event, as in a worker
        if not outcome.applied:
            return None
        if outcome.recommendation is None:
            return []
        self.last_ranked = outcome.ranked
        items = [item["item_id"] for item in outcome.recommendation["items"]]
        if self.recorded is not None:
            self.recorded[(event.user_id, event.event_id)] = (outcome.recommendation["profile_version"], items)
        return items

    def end_batch(self) -> None:
        pass


class ItemStateOf:
    """The hybrid's item state alone (its feed and item index: the popular items the baselines' lists are filled
    with), no profiles and no list: for a pass that runs baseline rows without the stream-app row (the tuning pass,
    and the processes of a split pass but the first). The pass gives it the repeated event ids too, as it gives the
    hybrid, whose feed sees them."""

    NAME = "the stream-app row's item state (no list)"

    def __init__(self, hybrid: StreamAppModel):
        self.name = self.NAME
        self.hybrid = hybrid

    def begin_batch(self, events: list[Event], epoch: int) -> None:
        self.hybrid.epoch = epoch
        self.hybrid.feed.advance(epoch - 1)

    def learn(self, event: Event) -> None:
        hybrid = self.hybrid
        hybrid.feed.add(event, partition_of(event.user_id, hybrid.settings.partitions), hybrid.epoch)
        return None

    def end_batch(self) -> None:
        pass


#: The prior's weight settings; a single-source baseline keeps one of them and zeroes the others.
SOURCE_WEIGHTS = {"co-visitation": "covis_weight", "sequential rules": "rules_weight",
                  "viewed before": "repeat_weight",
                  "category": "category_weight", "trending": "trending_weight", "encoder": "encoder_weight",
                  "content": "content_weight"}


class SingleSource(BatchAgnostic):
    """Baseline: one candidate source of the stream-app model alone, ranked by its own score, on the
    same profiles and item state (no ranker). It ranks the candidates the base model's list came from (the
    same as `recommend` would gather: they do not depend on the weights), but for "viewed before": its score
    reads the recent-rank column, which the base fills with its partition's learned weights. `then_popular`:
    a list shorter than k goes on with the item state's popular items (those the hybrid reads), as the
    hybrid's own list is filled."""

    def __init__(self, base: StreamAppModel, source: str, then_popular: bool = False):
        self.name = f"{source} only" + (", then popular" if then_popular else "")
        self.source = source
        self.then_popular = then_popular
        self.proposed = 0  # lists in which the source itself had an item
        self.base = base
        self.settings = base.settings.replace(
            popularity_weight=0.0, **{weight: (getattr(base.settings, weight) if name == source else 0.0)
                                      for name, weight in SOURCE_WEIGHTS.items()})
        self.reuses_candidates = self.settings.repeat_weight == 0

    def learn(self, event: Event) -> list[str]:  # runs after the base model learned the event
        listed = self.source_list(event)
        self.proposed += bool(listed)
        if not self.then_popular or len(listed) >= self.settings.top_k:
            return listed
        return then_popular(listed, self.base.index.popular(), self.settings.top_k, self.base.index.withdrawn)

    def source_list(self, event: Event) -> list[str]:
        if self.reuses_candidates and self.base.last_ranked is not None:  # None: the base showed nothing new
            return by_prior(self.base.last_ranked, self.settings, self.base.index.withdrawn)
        profile = self.base.profiles[event.user_id]
        return [r["item_id"] for r in recommend(profile, event, self.base.index, self.settings,
                                                encoding=self.base.last_encoding,
                                                content=self.base.content).items if r["score"] > 0]


class ItemJustSeen(BatchAgnostic):
    """Baseline: the one item the user just had. What a log where the next event is mostly on the
    same item (a funnel: browse, click, cart, order) makes easy; the synthetic generator is one."""

    name = "item just seen"

    def learn(self, event: Event) -> list[str]:
        return [event.item_id]


class MostPopular(BatchAgnostic):
    """Baseline: the most interacted-with items so far (refreshed per batch, like the workers)."""

    def __init__(self, k: int, window_events: int | None = None):
        self.name = "popular" if window_events is None else f"popular, last {window_events:,} events"
        self.k = k
        self.window = collections.deque() if window_events else None
        self.window_events = window_events
        self.counts: collections.Counter[str] = collections.Counter()
        self.top: list[str] = []

    def learn(self, event: Event) -> list[str]:
        self.counts[event.item_id] += 1
        if self.window is not None:
            self.window.append(event.item_id)
            if len(self.window) > self.window_events:
                old = self.window.popleft()
                self.counts[old] -= 1
                if not self.counts[old]:
                    del self.counts[old]
        return self.top

    def end_batch(self) -> None:
        self.top = [item for item, _ in self.counts.most_common(self.k)]


class RiverMF(BatchAgnostic):
    """Baseline: River matrix factorisation (FunkMF or BiasedMF) on implicit feedback. Each event is a
    positive (user, item, 1); `negatives` items drawn from the popular candidates are negatives (0).
    The list: the `candidates` most popular items, ranked by the user's factors (refreshed per batch)."""

    def __init__(self, kind: str, k: int, candidates: int = 200, negatives: int = 2, n_factors: int = 16,
                 seed: int = 7):
        from river import optim, reco

        self.name = f"River {kind} only"
        self.k = k
        self.candidates = candidates
        self.negatives = negatives
        self.biased = kind == "BiasedMF"
        if self.biased:
            self.model = reco.BiasedMF(n_factors=n_factors, bias_optimizer=optim.SGD(0.05),
                                       latent_optimizer=optim.SGD(0.05), seed=seed)
        else:
            self.model = reco.FunkMF(n_factors=n_factors, optimizer=optim.SGD(0.05), seed=seed)
        self.rng = np.random.default_rng(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self.pool: list[str] = []
        self.matrix = np.zeros((0, n_factors))
        self.bias = np.zeros(0)

    def learn(self, event: Event) -> list[str]:
        self.counts[event.item_id] += 1
        self.model.learn_one(event.user_id, event.item_id, 1.0)
        if self.pool:
            for j in self.rng.integers(0, len(self.pool), size=self.negatives):
                if self.pool[j] != event.item_id:
                    self.model.learn_one(event.user_id, self.pool[j], 0.0)
        if not self.pool:
            return []
        scores = self.matrix @ self.model.u_latents[event.user_id] + self.bias
        best = np.argsort(-scores, kind="stable")[: self.k]
        return [self.pool[i] for i in best]

    def end_batch(self) -> None:
        self.pool = [item for item, _ in self.counts.most_common(self.candidates)]
        self.matrix = np.array([self.model.i_latents[item] for item in self.pool])
        self.bias = (np.array([self.model.i_biases[item] for item in self.pool]) if self.biased
                     else np.zeros(len(self.pool)))
