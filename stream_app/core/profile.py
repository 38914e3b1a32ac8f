"""The user profile and how one event changes it. Pure: no Faust, Kafka or Redis."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..config import Settings
from . import decay
from .events import Event
from .feature_rows import encode_rows
from .learners.state import MAX_COUNT

_INTERNAL_FIELDS = frozenset({"seen_event_ids", "dedupe_floor", "learner_state", "shown", "shown_features",
                              "shown_strategy", "shadow_shown"})


DEFAULT_INTEREST_HALF_LIFE_MS = 14 * 24 * 3600 * 1000


def event_digest(event_id: str) -> str:
    """64-bit digest of an event_id: the idempotence key kept in the profile (16 chars, not 200)."""
    return hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).hexdigest()


# eq=False: a profile is compared as written (`to_dict`); its fields alone do not say it (the shown rows' text is
# filled in when written, the learners in use hold state the stored copy lags)
@dataclass(slots=True, eq=False)
class Profile:
    user_id: str
    version: int = 0
    event_count: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    stages: dict[str, int] = field(default_factory=dict)
    recent: list[list[Any]] = field(default_factory=list)  # [item_id, type, ts], most recent last
    item_affinity: dict[str, float] = field(default_factory=dict)  # log2 forward-decayed
    category_affinity: dict[str, float] = field(default_factory=dict)
    # Long-term interests: category affinity with interest_half_life_ms (weeks, not a day); what
    # the user is into, as opposed to what the session is about. Drift handling resets it.
    interests: dict[str, float] = field(default_factory=dict)
    first_seen: int | None = None
    # When this profile began (event time of its first event; never changes): a profile created anew
    # (its user evicted, or the table's changelog lost) is a later generation, which Redis's version
    # guard lets through although its version restarts at 1.
    generation: int | None = None
    last_seen: int | None = None
    # Idempotence: digests of applied event_ids (-> event ts), at most ~seen_ids_max, plus a floor:
    # an event older than the floor is never applied, so no event is ever counted twice.
    seen_event_ids: dict[str, int] = field(default_factory=dict)
    dedupe_floor: int | None = None
    last_rec_ts: int | None = None
    # The sequence encoder's embedding of the user's recent events, and the model version that made it.
    embedding: list[float] | None = None
    encoder_version: str | None = None
    # What the user likes by the items' text (content.py): the interest vector's state, and the
    # catalogue terms nearest it, in words.
    content_interest: dict[str, Any] | None = None
    likes: list[str] = field(default_factory=list)
    # the content index whose terms nearest `content_interest` become `likes` when the profile is written
    # (`to_dict`): named once per written profile, not at every event (a tenth of a content-aware core's time)
    likes_from: Any = field(default=None, repr=False)
    # Behaviour statistics (learners/behaviour.py), as the public profile shows them.
    stats: dict[str, Any] = field(default_factory=dict)
    # The last list shown and its candidate features (float16, base64): the user's next event
    # judges it, and the ranker learns from that (learners/ranker.py). `shown_rows`: the same rows as made
    # (float16), kept in memory so that the next event reads them without decoding; the text is written
    # from them when the profile is (`to_dict`).
    shown: list[str] = field(default_factory=list)
    shown_features: str | None = None
    shown_rows: Any = field(default=None, repr=False)
    shown_strategy: str | None = None  # "<segment>:<strategy>" the bandit chose, when exploration is on
    shadow_shown: list[str] = field(default_factory=list)  # what a shadow encoder would have shown (not published)
    half_life_ms: int = 24 * 3600 * 1000
    interest_half_life_ms: int = DEFAULT_INTEREST_HALF_LIFE_MS
    # Per-user learners (core/learners): their state as stored (versioned data, or a legacy pickle that
    # is migrated), and the learner objects in use this batch (read on first use; to_dict writes their
    # current state). A stored state that cannot be read is left out, its learner starts afresh, and
    # (learner name, stored state, why) goes to `rejected_state` for the caller to report.
    learner_state: dict[str, Any] = field(default_factory=dict)
    learners: dict[str, Any] = field(default_factory=dict, repr=False)
    rejected_state: list[tuple[str, Any, str]] = field(default_factory=list, repr=False)

    def learner(self, name: str, make: Any) -> Any:
        """The user's learner called `name`, restored from its state, or made new by `make()`."""
        found = self.learners.get(name)
        if found is None:
            stored = self.learner_state.get(name)
            if stored is not None:
                from .learners import StateError, read_profile_learner

                try:
                    found = read_profile_learner(stored, name, f"user {self.user_id!r}: learner {name}")
                except StateError as exc:  # forged, or of a release that did not write it: learn afresh, go on
                    self.rejected_state.append((name, stored, str(exc)))
            if found is None:
                found = make()
            self.learners[name] = found
        return found

    def admits(self, digest: str, ts: int) -> bool:
        """False for an event already applied, or too old to tell (older than the dedupe floor)."""
        return digest not in self.seen_event_ids and (self.dedupe_floor is None or ts >= self.dedupe_floor)

    def below_floor(self, event_id: str, ts: int) -> bool:
        """Was an event not admitted only for its age: not known as applied, older than the dedupe floor?"""
        return self.dedupe_floor is not None and ts < self.dedupe_floor \
            and event_digest(event_id) not in self.seen_event_ids

    def recent_items(self, limit: int, since_ts: int | None = None) -> list[str]:
        """Distinct recent items, most recent first, optionally only those seen at or after since_ts."""
        return list(self.recent_items_seen(limit, since_ts))

    def recent_items_seen(self, limit: int, since_ts: int | None = None) -> dict[str, int]:
        """Distinct recent items -> when last seen (ms), most recent first, at most `limit`."""
        out: dict[str, int] = {}
        if limit <= 0:
            return out
        for item_id, _type, ts in reversed(self.recent):
            if since_ts is not None and ts < since_ts:
                break
            if item_id not in out:
                out[item_id] = ts
                if len(out) == limit:
                    break
        return out

    def to_dict(self, internal: bool = True, name_likes: bool = True) -> dict[str, Any]:
        """The profile, read only; `internal=False` leaves out the worker's own state (idempotence
        digests, learner state): the public snapshot of the profiles topic and Redis. `name_likes=False`: the likes
        as last named (`undo_copy`)."""
        if self.likes_from is not None and name_likes:
            self.likes, self.likes_from = self.likes_from.likes_of(self.content_interest), None
        stats = dict(self.stats)
        for learner in self.learners.values():
            stats.update(learner.public())
        out = {  # user_id, version and generation first: `snapshot_order` reads them without parsing the rest
            "user_id": self.user_id, "version": self.version, "generation": self.generation,
            "event_count": self.event_count,
            "counts": self.counts, "stages": self.stages, "recent": self.recent,
            "item_affinity": self.item_affinity, "category_affinity": self.category_affinity,
            "interests": self.interests, "interest_half_life_ms": self.interest_half_life_ms,
            "first_seen": self.first_seen, "last_seen": self.last_seen,
            "last_rec_ts": self.last_rec_ts, "stats": stats, "embedding": self.embedding,
            "encoder_version": self.encoder_version, "content_interest": self.content_interest,
            "likes": self.likes, "half_life_ms": self.half_life_ms,
            "schema_version": 1,
        }
        if internal:
            out["seen_event_ids"] = self.seen_event_ids
            out["dedupe_floor"] = self.dedupe_floor
            out["shown"] = self.shown
            if self.shown_features is None and self.shown_rows is not None:
                self.shown_features = encode_rows(self.shown_rows)
            out["shown_features"] = self.shown_features
            out["shown_strategy"] = self.shown_strategy
            out["shadow_shown"] = self.shadow_shown
            out["learner_state"] = {**self.learner_state,
                                    **{name: learner.to_state() for name, learner in self.learners.items()}}
        return out

    def to_json(self, internal: bool = True) -> bytes:
        return orjson.dumps(self.to_dict(internal))

    def undo_copy(self) -> tuple[bytes, Any]:
        """The profile as it is, to put back if an event fails part-way (`from_undo`), its likes left to name: a
        worker takes one before each event of a user it already changed in the batch."""
        return orjson.dumps(self.to_dict(name_likes=False)), self.likes_from

    @classmethod
    def from_undo(cls, copy: tuple[bytes, Any]) -> "Profile":
        profile = cls.from_json(copy[0])
        profile.likes_from = copy[1]
        return profile

    def snapshots(self) -> tuple[bytes, bytes]:
        """(internal, public) JSON from one pass over the profile: the table's changelog record and
        the snapshot for the profiles topic and Redis."""
        internal = self.to_dict(internal=True)
        public = {k: v for k, v in internal.items() if k not in _INTERNAL_FIELDS}
        return orjson.dumps(internal), orjson.dumps(public)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Profile":
        """Raises ValueError for a record whose head (the fields the shell and Redis's guard compare) is not
        of its type: a forged or corrupt record must not reach them (a Redis write would fail for good)."""
        if not isinstance(data, dict) or not isinstance(data.get("user_id"), str):
            raise ValueError("not a profile: an object with a text user_id")
        for name, optional in _WHOLE_FIELDS:
            value, bound, said = data.get(name), MAX_COUNT, "2^62"
            if name in _GUARDED:  # Redis's guard compares them in Lua's doubles: exact to 2^53 only
                bound, said = MAX_EXACT, "2^53"
            if not (isinstance(value, int) and not isinstance(value, bool) and -bound <= value <= bound
                    or optional and value is None):
                raise ValueError(f"profile field {name!r} is {value!r:.40}, not a whole number within ±{said}")
        for name, kind in _CONTAINER_FIELDS:  # walked by receipts, the shell and the core: a forged one is unreadable
            if (name in data or name in _REQUIRED_CONTAINERS) and not isinstance(value := data.get(name), kind):
                raise ValueError(f"profile field {name!r} is {value!r:.40}, not {_KIND_SAID[kind]}")
        for name in ("counts", "stages"):  # counted on from: a forged count past 64 bits could not be written
            value = data.get(name)
            if not isinstance(value, dict) or not all(type(n) is int and 0 <= n <= MAX_COUNT for n in value.values()):
                raise ValueError(f"profile field {name!r} is {value!r:.40}, not names with whole numbers to 2^62")
        if not isinstance(data.get("stats", {}), dict):  # copied into every record written
            raise ValueError(f"profile field 'stats' is {data['stats']!r:.40}, not an object")
        learner_state, rejected = data.get("learner_state", {}), []
        if not isinstance(learner_state, dict):  # forged: every learner starts afresh
            learner_state, rejected = {}, [("learner_state", learner_state, "learner_state must be an object")]
        return cls(
            user_id=data["user_id"], version=data["version"], event_count=data["event_count"],
            counts=data["counts"], stages=data["stages"], recent=data["recent"],
            item_affinity=data["item_affinity"], category_affinity=data["category_affinity"],
            interests=data.get("interests", {}),
            interest_half_life_ms=data.get("interest_half_life_ms", DEFAULT_INTEREST_HALF_LIFE_MS),
            first_seen=data["first_seen"], last_seen=data["last_seen"], generation=data.get("generation"),
            seen_event_ids=data.get("seen_event_ids", {}), dedupe_floor=data.get("dedupe_floor"),
            last_rec_ts=data["last_rec_ts"], learner_state=learner_state, rejected_state=rejected,
            stats=data.get("stats", {}), embedding=data.get("embedding"), encoder_version=data.get("encoder_version"),
            shown=data.get("shown", []), shown_features=data.get("shown_features"),
            shown_strategy=data.get("shown_strategy"), shadow_shown=data.get("shadow_shown", []),
            content_interest=data.get("content_interest"), likes=data.get("likes", []),
            half_life_ms=data["half_life_ms"],
        )

    @classmethod
    def from_json(cls, raw: bytes) -> "Profile":
        return cls.from_dict(orjson.loads(raw))


#: Fields that must hold a whole number (True: or null), the others being read as they come; within ±MAX_COUNT, so
#: that counting on from a forged one still writes JSON (orjson writes 64-bit integers only).
_WHOLE_FIELDS = (("version", False), ("event_count", False), ("generation", True), ("first_seen", True),
                 ("last_seen", True), ("last_rec_ts", True), ("half_life_ms", False), ("dedupe_floor", True))

#: Head fields Redis's version guard compares (its Lua numbers are doubles, exact to 2^53)
_GUARDED = frozenset({"version", "generation"})
MAX_EXACT = 2**53
#: Fields read as containers (those a record may leave out: their default), and those it must hold
_CONTAINER_FIELDS = (("recent", list), ("item_affinity", dict), ("category_affinity", dict), ("interests", dict),
                     ("seen_event_ids", dict), ("shown", list), ("shadow_shown", list), ("likes", list))
_REQUIRED_CONTAINERS = frozenset({"recent", "item_affinity", "category_affinity"})
_KIND_SAID = {list: "a list", dict: "an object"}

#: The head `Profile.to_dict` writes: user_id, version, generation.
_SNAPSHOT_HEAD = re.compile(rb'\{"user_id":"(?:[^"\\]|\\.)*","version":(\d+),"generation":(\d+|null)[,}]')


def snapshot_order(raw: bytes) -> tuple[int, int] | None:
    """(generation, version) of a stored profile, None if it cannot be read: of two snapshots of one
    user, the later generation, or within one the higher version, is the newer (Redis's guard too).
    Read from the snapshot's head as `to_dict` lays it out (a restore reads every changelog record),
    else from the whole JSON."""
    head = _SNAPSHOT_HEAD.match(raw)
    if head is not None:
        generation, version = head.group(2), head.group(1)
        return int(generation) if generation != b"null" else 0, int(version)
    try:
        data = orjson.loads(raw)
        return int(data.get("generation") or 0), int(data["version"])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None


def supersedes(new: bytes, held: bytes | None) -> bool:
    """Does the snapshot `new` of a user take the place of `held` (None: none held)? Yes unless `held`
    is the newer: a later record that is older is a late write of an earlier owner. Unreadable ones
    take the place, so that reading them reports them as before."""
    if held is None:
        return True
    new_order, held_order = snapshot_order(new), snapshot_order(held)
    return new_order is None or held_order is None or new_order >= held_order


def add_step(recent: list[Any], step: Any, limit: int) -> None:
    """Append an [item_id, type, ts] step keeping the sequence in time order (a late event is
    inserted where it belongs), then keep the last `limit`. Also builds the encoder's batch sequences."""
    ts = step[2]
    if not recent or ts >= recent[-1][2]:
        recent.append(step)
    else:
        at = len(recent)
        while at > 0 and recent[at - 1][2] > ts:
            at -= 1
        recent.insert(at, step)
    if len(recent) > limit:
        del recent[: len(recent) - limit]


def apply_event(profile: Profile, event: Event, digest: str, settings: Settings) -> None:
    """Fold one new (not yet seen) event into the profile, in place, keeping every part bounded."""
    hl = profile.half_life_ms
    weight = settings.weights.of(event.type, event.stage)
    stored = decay.log_weight(weight, event.ts, hl)

    profile.version += 1
    profile.event_count += 1
    profile.counts[event.type] = profile.counts.get(event.type, 0) + 1
    if event.stage is not None:
        profile.stages[event.stage] = profile.stages.get(event.stage, 0) + 1

    add_step(profile.recent, [event.item_id, event.type, event.ts], settings.recent_max)

    decay.add(profile.item_affinity, event.item_id, stored)
    profile.item_affinity = decay.prune(profile.item_affinity, settings.affinity_max)
    if event.category is not None:
        decay.add(profile.category_affinity, event.category, stored)
        profile.category_affinity = decay.prune(profile.category_affinity, settings.affinity_max)
        decay.add(profile.interests, event.category, decay.log_weight(weight, event.ts, profile.interest_half_life_ms))
        profile.interests = decay.prune(profile.interests, settings.affinity_max)

    if profile.generation is None and profile.first_seen is None:  # a new profile's first event
        profile.generation = event.ts
    profile.first_seen = event.ts if profile.first_seen is None else min(profile.first_seen, event.ts)
    profile.last_seen = event.ts if profile.last_seen is None else max(profile.last_seen, event.ts)

    _remember(profile, digest, event.ts, settings)


def _remember(profile: Profile, digest: str, ts: int, settings: Settings) -> None:
    """Keep the digest. Over the cap, forget the oldest events (by event time, a quarter at once so
    the sort is amortised) and raise the floor past them: what is forgotten can never be re-applied. No
    time is cut in two: its digests are all kept, so a new event of that time is still admitted (a basket
    of thousands of lines under one timestamp lost its later lines to a floor just past it); past four
    times the cap at one time (looked at every quarter cap), the floor goes past it."""
    seen = profile.seen_event_ids
    seen[digest] = ts
    cap = settings.seen_ids_max
    over = len(seen) - (cap + cap // 4)
    # looked at once a quarter cap past the mark: while no time can be cut, each digest would sort them all again
    if over <= 0 or (over - 1) % max(1, cap // 4):
        return
    ordered = sorted(seen.items(), key=lambda kv: kv[1])
    oldest_kept = ordered[len(ordered) - cap][1]
    cut = next(i for i, (_, at) in enumerate(ordered) if at >= oldest_kept)  # no time both kept and forgotten
    if not cut:
        if len(ordered) <= 4 * cap:
            return
        cut = len(ordered) - cap
    forgotten, kept = ordered[:cut], ordered[cut:]
    floor = forgotten[-1][1] + 1
    if not -MAX_COUNT <= floor <= MAX_COUNT:  # a forged time: the event fails (dead-lettered), not the batch's write
        raise ValueError(f"a stored event time {floor - 1!r:.40} is past 2^62")
    profile.dedupe_floor = floor if profile.dedupe_floor is None else max(profile.dedupe_floor, floor)
    profile.seen_event_ids = dict(kept)
