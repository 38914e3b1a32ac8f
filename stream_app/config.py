"""Settings: read once from the environment (and the runtime file `stream-app up` writes), then passed down.

Every setting has an environment variable named in upper case after the field with the
`STREAM_APP_` prefix, e.g. `STREAM_APP_TOP_K=50`; the two service endpoints use the names
operators already know: `KAFKA_BOOTSTRAP_SERVERS` and `REDIS_URL`; the Kafka TLS/SASL settings are read
under the Kafka ecosystem's names (`KAFKA_SECURITY_PROTOCOL`, ...; kafka_security.py).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Mapping

from . import kafka_security
from .core.events import event_kind
from .errors import ConfigError
from .kafka_security import KafkaSecurity
from .state_files import read_runtime_file, up_running
from .topic_names import Topics
from .urls import check_bootstrap_servers, check_redis_url, redact_setting

EVENT_TYPES = ("browse", "click", "purchase")
REC_POLICIES = ("every", "purchase", "debounce")
LOG_FORMATS = ("text", "json")
ENV_PREFIX = "STREAM_APP_"
KAFKA_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
#: The URL schemes redis-py reads (REDIS_URL)
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
#: Settings read under their own names (the endpoints, the Kafka security settings) or in parts (weights)
FIELDS_READ_APART = ("kafka_bootstrap_servers", "redis_url", "kafka_security", "weights")


@dataclass(frozen=True)
class EventWeights:
    """How much one event of each kind counts in affinities, popularity and co-visitation."""

    browse: float = 0.5
    click: float = 1.0
    cart: float = 3.0
    order: float = 6.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # the decayed sums add weights as logs: 0, negative or NaN cannot count
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{ENV_PREFIX}WEIGHT_{f.name.upper()}={value!r} must be a number above 0: an event "
                                  "of that kind counts in proportion to it (a small one, such as 0.01, makes it count "
                                  "little; to leave the kind out, do not send it)")

    def of(self, event_type: str, stage: str | None) -> float:
        return getattr(self, event_kind(event_type, stage))



#: The float settings' ranges: (name, low, high, whether above low rather than at least). Weights of the
#: prior may be 0 (a source off), not negative (it would rank a source's best items last).
#: The longest fetch wait a worker takes: its Kafka clients' request timeout is 40 s
FETCH_WAIT_MAX_MS = 30_000

FLOAT_BOUNDS = (
    *((name, 0.0, math.inf, False) for name in ("popularity_weight", "repeat_weight", "covis_weight", "rules_weight",
                                                "trending_weight", "category_weight", "encoder_weight",
                                                "content_weight", "batch_within_s", "batch_work_s")),
    ("commit_interval_s", 0.0, math.inf, True), ("ranker_learning_rate", 0.0, math.inf, True),
    ("bandit_epsilon", 0.0, 1.0, False), ("drift_downweight", 1.0, math.inf, False),
)

@dataclass(frozen=True)
class Settings:
    kafka_bootstrap_servers: str | None = None
    # Kept out of repr: a URL may carry a password (redis://:pw@host); print it through redact_url.
    redis_url: str | None = field(default=None, repr=False)
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    app_id: str = "stream-app"
    # Prefixes every topic name and Redis key, so several deployments (or test runs) can share
    # one cluster and one Redis. Empty by default: the contract names as documented.
    namespace: str = ""
    partitions: int = 8
    replication_factor: int = 1  # of every topic the app creates, changelogs too: 3 on a cluster (README)
    # Input handling
    max_payload_bytes: int = 64 * 1024
    # The accepted event times around the record's Kafka timestamp (0: no bound); outside, a dead
    # letter `timestamp_out_of_range`. Five minutes ahead covers clock skew: an event accepted ahead moves its
    # partition's clock, and the item state waits for that epoch (a day ahead froze popularity, co-visitation
    # and trending for 23 hours); no age bound by default, since replays of recorded logs are old by design (set
    # one for live traffic only).
    max_future_ms: int = 5 * 60 * 1000
    max_age_ms: int = 0
    batch_max: int = 500
    batch_within_s: float = 0.02
    # A batch takes no further round of events once its work took this long: the event loop waits behind it
    # (heartbeats, commits, the broker probes, which time out at 2 s and read a held loop as a broker gone).
    batch_work_s: float = 1.0
    # Profiles a worker keeps as objects beside the record it last wrote for each (stream/profile_cache.py): a user's
    # next batch takes the object up instead of parsing the record; about 7 KB of memory each at bench's mix; 0: none.
    profile_cache_users: int = 5_000
    # How long a fetch may wait for data. Tansu answers a fetch only when this is over, so keep it
    # short there; on Apache Kafka (answers on arrival) 500 saves idle polls.
    fetch_max_wait_ms: int = 25
    commit_interval_s: float = 1.0  # how often consumed offsets are committed
    # Event-time order (ordering.py). A user's events are applied in timestamp order across the three
    # input topics: while one topic of a partition has nothing buffered, the others wait for it at
    # most this long (Kafka Streams' max.task.idle.ms). Longer: replays into a running worker stay
    # deterministic through longer producer stalls; shorter: less added latency on live traffic.
    max_idle_ms: int = 100
    # Item state (popularity, trending, co-visitation, category tops) is defined by event time: a
    # recommendation for an event of epoch k (event time // item_epoch_ms) sees the signals of every
    # event of epochs before k, from every partition, and none after. The same in every worker and in
    # `evaluate`, at any replay speed.
    item_epoch_ms: int = 60_000
    # Recommendations
    top_k: int = 20
    rec_policy: str = "every"
    rec_debounce_ms: int = 5_000
    popularity_weight: float = 0.1
    repeat_weight: float = 2.0  # the user's own items, by decayed affinity
    repeat_candidates: int = 10
    # Profile shape
    recent_max: int = 50
    affinity_max: int = 200
    seen_ids_max: int = 2048
    half_life_ms: int = 24 * 3600 * 1000  # the user's item and category affinities
    interest_half_life_ms: int = 14 * 24 * 3600 * 1000  # long-term interests (profile.interests)
    # Item side
    covis_window_ms: int = 24 * 3600 * 1000
    covis_prev_items: int = 5
    covis_gap_half_life_ms: int = 30 * 60 * 1000  # a co-visit counts half as much per this gap between the two events
    # Item popularity (the popular and per-category lists): every event counts one, decayed with this
    # half-life. A list predicts the next event, so the type weights, which measure one user's interest,
    # would rank items by how often they happened to be bought (on the synthetic log, whose purchases
    # are independent of the item, that cost 0.5 points of Recall@20); a day's half-life left the
    # within-category order to a day's few events.
    popularity_half_life_ms: int = 7 * 24 * 3600 * 1000
    # Co-visitation and sequential-rule pairs decay with this half-life
    pair_half_life_ms: int = 365 * 24 * 3600 * 1000
    rules_steps: int = 10  # sequential rules: "a is followed by b" for b up to this many events after a in a session
    session_gap_ms: int = 30 * 60 * 1000  # a new session after this much silence (or a new session_id)
    covis_neighbors_max: int = 100  # neighbours (and followers) kept per item
    covis_candidates_per_item: int = 40  # of those, how many each recent item contributes to a ranking
    popular_per_partition: int = 100
    trending_half_life_ms: int = 3 * 3600 * 1000  # "trending": popularity over roughly the last hours
    category_items: int = 30  # most popular items kept per category
    # Memory: an item with no event for this long (event time) leaves the item state, its entry and
    # its places in the popular, trending and category lists (0: never). Checked once an hour of event time.
    item_idle_ms: int = 0
    # Memory: a user with no event for this long (event time) leaves the profile table (a tombstone in
    # its changelog and on the profiles topic) and Redis; a later event starts a new profile (0: never).
    user_idle_ms: int = 0
    # Memory: a logged session (the events' session_id) silent this long is over in the item state: its user's
    # trail there is dropped and a later event of that session_id begins a new one (0: never; OTTO's sessions
    # span up to four weeks).
    session_idle_ms: int = 30 * 24 * 3600 * 1000
    # Abuse: a user's events beyond these counts in one event-time hour (all items; one item) still
    # update the user's profile but add nothing to the shared item state (popularity, trending,
    # co-visitation, sequential rules), so one bot cannot push an item up. 0: no cap. The real shop
    # log's busiest customer-hour has 543 lines, its busiest customer-item-hour 21.
    user_signals_per_hour: int = 1000
    user_item_signals_per_hour: int = 50
    # Erasure (`stream-app erase`): the workers keep a record of erased users, a keyed hash (HMAC-SHA256
    # with this key; the group id when empty, which anyone can recompute: set a secret) and the
    # erasure's time, and drop their events dated at or before it, so a replay of an old log does not
    # bring an erased profile back, unless replay_erased is on (a replay meant to restore them).
    erasure_key: str = field(default="", repr=False)  # a secret: out of every printed Settings
    # Keys erasures were recorded with before, comma-separated: still looked up (a key rotation)
    erasure_previous_keys: str = field(default="", repr=False)
    replay_erased: bool = False
    # The dead-letter topic's retention.ms when it is created: a dead letter of an erased user leaves
    # the topic only then (Kafka cannot delete one record), and an erasure's receipt says so. 7 days.
    dlq_retention_ms: int = 7 * 24 * 3600 * 1000
    # Candidate sources and their weights in the prior score (the ranking until the ranker is warm)
    covis_weight: float = 1.0
    rules_weight: float = 2.0  # sequential rules (items that came next after the session's recent items)
    rules_anchors: int = 3  # the session's most recent distinct items whose rules are candidates
    trending_weight: float = 0.1
    category_weight: float = 1.0
    category_top: int = 2  # the user's strongest categories, besides the current event's, as a source
    category_candidates: int = 10  # items each of those categories contributes
    # Online ranker (core/learners/ranker.py): one pairwise scorer (learners/pairwise_mlp.py) per input partition,
    # learning from the feedback of the shown lists; ranks by the prior until it has seen
    # ranker_warm_up labels.
    ranker: bool = True
    ranker_learning_rate: float = 0.005
    ranker_negatives: int = 4  # candidates not hit learned per judged list
    # Candidates kept per list for the ranker's feedback (the first top_k were shown): the item the
    # user goes to next is a positive even where the ranking left it out of the shown list.
    ranker_pool: int = 50
    ranker_warm_up: int = 1000
    ranker_seed: int = 7
    # Deep sequence encoder (encoder.py): the registry folder every worker can read; which version
    # serves is announced on the control topic (`stream-app models publish`).
    registry_dir: str = "models/registry"
    encoder_candidates: int = 10  # nearest items by embedding, as a candidate source
    encoder_weight: float = 1.0  # in the prior
    # Content (content.py): item text embedded by a pre-trained sentence encoder. Each profile keeps
    # a decayed interest vector in that space; items nearest to it and to the item just seen are
    # candidates, with their cosine as features.
    content_half_life_ms: int = 7 * 24 * 3600 * 1000
    content_candidates: int = 20  # nearest items to the interest vector, and to the item just seen
    content_weight: float = 1.0  # in the prior (cosine with the item just seen, above the floor)
    # Exploration (learners/strategy_bandit.py): per partition and user segment, an epsilon-greedy
    # River bandit picks the ranker or the prior for each list, rewarded by hits. Off by default.
    bandit: bool = False
    bandit_epsilon: float = 0.1
    # Per-user interest drift (learners/interest_drift.py): a Page-Hinkley test on how surprising
    # each session is to the long-term interests; on a change, divide them by drift_downweight.
    # Off by default: on the synthetic log it lifts drifting users' profile accuracy and costs
    # stable users a little (docs/evaluation.md); `evaluate` reports it on and off.
    drift_handling: bool = False
    drift_downweight: float = 8.0
    # Operations: `text` log lines for people, `json` (one object a line) for a log pipeline; how long
    # the read API waits for `?min_version=N` (read-your-writes) before answering 409.
    log_format: str = "text"
    read_wait_ms: int = 2000
    # The address the worker's HTTP port (/metrics, /healthz, /readyz) listens on: every interface, as a scraper
    # in another container needs; 127.0.0.1 keeps it to this machine.
    web_host: str = "0.0.0.0"
    weights: EventWeights = field(default_factory=EventWeights)

    def __post_init__(self) -> None:
        for name, value in (("namespace", self.namespace), ("app_id", self.app_id)):  # in every topic's name
            if (name == "app_id" and not value) or value.strip(KAFKA_NAME_CHARS) or len(value) > 200:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={value!r}: topic and group names take letters, "
                                  "digits, '.', '_' and '-' (up to 200)" + ("; the app id cannot be empty"
                                                                           if name == "app_id" else ""))
        if not self.web_host.strip() or any(c.isspace() or c in "/[]" for c in self.web_host):
            raise ConfigError(f"{ENV_PREFIX}WEB_HOST={self.web_host!r} is not an address to listen on: give one of "
                              "this machine's, e.g. 127.0.0.1, or 0.0.0.0 for all")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format={self.log_format!r} is not one of {', '.join(LOG_FORMATS)}: "
                              f"set {ENV_PREFIX}LOG_FORMAT to one of them")
        if self.rec_policy not in REC_POLICIES:
            raise ConfigError(
                f"rec_policy={self.rec_policy!r} is not one of {', '.join(REC_POLICIES)}: "
                f"set {ENV_PREFIX}REC_POLICY to one of them"
            )
        for name in ("partitions", "replication_factor", "max_payload_bytes", "batch_max", "fetch_max_wait_ms", "top_k", "recent_max",
                     "affinity_max", "seen_ids_max", "half_life_ms", "popularity_half_life_ms", "interest_half_life_ms",
                     "covis_neighbors_max", "covis_candidates_per_item", "repeat_candidates", "popular_per_partition",
                     "trending_half_life_ms", "category_items", "covis_gap_half_life_ms", "item_epoch_ms",
                     "pair_half_life_ms", "rules_steps", "session_gap_ms", "content_half_life_ms", "dlq_retention_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={getattr(self, name)} must be at least 1")
        for name in ("max_idle_ms", "max_future_ms", "max_age_ms", "item_idle_ms", "user_idle_ms", "session_idle_ms",
                     "read_wait_ms", "user_signals_per_hour", "user_item_signals_per_hour", "covis_prev_items", "ranker_seed",
                     "ranker_warm_up", "ranker_negatives", "ranker_pool", "rules_anchors", "category_top",
                     "category_candidates", "encoder_candidates", "content_candidates", "rec_debounce_ms",
                     "profile_cache_users"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{ENV_PREFIX}{name.upper()}={getattr(self, name)} must be 0 or more")
        if self.fetch_max_wait_ms > FETCH_WAIT_MAX_MS:  # past the clients' 40 s request timeout no fetch ends
            raise ConfigError(f"fetch_max_wait_ms={self.fetch_max_wait_ms} must be at most {FETCH_WAIT_MAX_MS:,} (a "
                              "fetch waiting as long as the Kafka clients' 40 s request timeout never ends; 500 suits "
                              f"Apache Kafka): set {ENV_PREFIX}FETCH_MAX_WAIT_MS")
        for name, value in vars(self).items():  # kept in learner state (a seed times 1,000,003): JSON holds 64 bits
            if type(value) is int and value > 2**42 and name != "dlq_retention_ms":  # a topic's, up to 2^63-1
                raise ConfigError(f"{name}={value} must be at most 2^42 = {2**42} (set {ENV_PREFIX}{name.upper()})")
        for name, low, high, above in FLOAT_BOUNDS:
            value = getattr(self, name)
            if not (math.isfinite(value) and (value > low if above else value >= low) and value <= high):
                wanted = f"{'above' if above else 'at least'} {low:g}" + \
                    (f" and at most {high:g}" if high < math.inf else "")
                raise ConfigError(f"{name}={value!r} must be a number {wanted} (set {ENV_PREFIX}{name.upper()})")

    @property
    def group_id(self) -> str:
        """The workers' consumer group and Faust app id (the prefix of its changelog topics): behind
        the namespace like every topic, so two deployments that differ only by namespace share nothing."""
        return f"{self.namespace}{self.app_id}"

    @property
    def topics(self) -> Topics:
        return Topics(prefix=self.namespace, app_id=self.app_id)

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise ConfigError(
                "No Kafka broker configured: run `stream-app up` to start the embedded one, "
                "or set KAFKA_BOOTSTRAP_SERVERS=host:port"
            )
        check_bootstrap_servers(self.kafka_bootstrap_servers)
        return self.kafka_bootstrap_servers

    def require_redis(self) -> str:
        if not self.redis_url:
            raise ConfigError(
                "No Redis configured: run `stream-app up` to start the embedded one, "
                "or set REDIS_URL=redis://host:port/0"
            )
        if not self.redis_url.startswith(REDIS_SCHEMES):
            raise ConfigError(f"REDIS_URL={redact_setting(self.redis_url)} is not a Redis URL: use redis://host:port/0 "
                              "(rediss:// with TLS, unix:///path/to/redis.sock for a socket)")
        check_redis_url(self.redis_url)
        return self.redis_url

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """Environment that makes a child process (a worker) read these same settings."""
        env: dict[str, str] = {}
        if self.kafka_bootstrap_servers:
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.kafka_bootstrap_servers
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        env.update(self.kafka_security.to_env())
        for f in dataclasses.fields(self):
            if f.name in FIELDS_READ_APART:
                continue
            env[ENV_PREFIX + f.name.upper()] = str(getattr(self, f.name))
        for f in dataclasses.fields(self.weights):
            env[f"{ENV_PREFIX}WEIGHT_{f.name.upper()}"] = str(getattr(self.weights, f.name))
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Settings":
        """Read every setting once. Endpoints: the environment first, else the runtime file of `up`."""
        _refuse_unknown(environ)
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            if f.name in FIELDS_READ_APART:
                continue
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, raw, type(getattr(cls(), f.name)))
        weights = {}
        for f in dataclasses.fields(EventWeights):
            raw = environ.get(f"{ENV_PREFIX}WEIGHT_{f.name.upper()}")
            if raw is not None:
                weights[f.name] = _parse(f"weight_{f.name}", raw, float)
        kafka = environ.get("KAFKA_BOOTSTRAP_SERVERS")
        redis_url = environ.get("REDIS_URL")
        embedded = read_runtime_file(environ) if not kafka or not redis_url else {}
        if up_running(embedded):  # a file no live process of `up` stands behind is left out
            if ((kafka and kafka != embedded.get("KAFKA_BOOTSTRAP_SERVERS"))  # another service
                    or (redis_url and redis_url != embedded.get("REDIS_URL"))):  # beside up's
                given, other = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL") if kafka else ("REDIS_URL",
                                                                                        "KAFKA_BOOTSTRAP_SERVERS")
                raise ConfigError(f"{given} is set and {other} is not, while `stream-app up` runs: the embedded "
                                  f"{'Redis' if kafka else 'broker'} would serve beside yours. Set {other} too, or "
                                  f"unset {given} to use both embedded services")
            kafka = kafka or embedded.get("KAFKA_BOOTSTRAP_SERVERS")
            redis_url = redis_url or embedded.get("REDIS_URL")
        return cls(kafka_bootstrap_servers=kafka, redis_url=redis_url,
                   kafka_security=KafkaSecurity.from_env(environ), weights=EventWeights(**weights), **values)


def known_variables() -> set[str]:
    """Every STREAM_APP_ variable a setting is read from."""
    names = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings) if f.name not in FIELDS_READ_APART}
    return names | {f"{ENV_PREFIX}WEIGHT_{f.name.upper()}" for f in dataclasses.fields(EventWeights)} | {
        f"{ENV_PREFIX}STATE_DIR"}


#: Settings of earlier releases, now without effect: ignored with a warning, not refused (a deployment
#: that still sets one keeps starting)
RETIRED_VARIABLES = {f"{ENV_PREFIX}EVENT_LOOP": "the worker always runs on asyncio's own loop"}
_retired_said: set[str] = set()  # a command reads its settings more than once: each warning once a process


def _refuse_unknown(environ: Mapping[str, str]) -> None:
    """A mistyped setting (STREAM_APP_TOPK) would be ignored without a word: refuse it, naming the nearest."""
    import difflib
    import logging

    known = known_variables()
    for name in sorted((RETIRED_VARIABLES.keys() & environ.keys()) - _retired_said):
        _retired_said.add(name)
        logging.getLogger("stream_app.config").warning("%s has no effect any more (%s): unset it", name,
                                                       RETIRED_VARIABLES[name])
    unknown = sorted(name for name, value in environ.items()
                     if name.startswith(ENV_PREFIX) and name not in known and name not in RETIRED_VARIABLES
                     and not _service_link(name, value))
    if unknown:
        suffix = unknown[0].removeprefix(ENV_PREFIX)  # the prefix all share would make any name look near
        unprefixed = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", *kafka_security.ENV.values())  # read as they are
        near = [suffix] if suffix in unprefixed else [ENV_PREFIX + name for name in (
            difflib.get_close_matches(suffix, [k.removeprefix(ENV_PREFIX) for k in known], n=1, cutoff=0.75))]
        raise ConfigError(f"{unknown[0]} is not a setting{f' (did you mean {near[0]}?)' if near else ''}: "
                          "unset it, or see the settings table in docs/configuration.md"
                          + (f"; also unknown: {', '.join(unknown[1:])}" if unknown[1:] else ""))


#: The variables Kubernetes sets in every pod for each Service of its namespace (service links): a Service named
#: stream-app or stream-app-workers gives STREAM_APP_SERVICE_HOST, STREAM_APP_PORT_8080_TCP_ADDR, ... with addresses,
#: ports and protocols as values. Refused as unknown settings, they stopped every worker and `serve` from starting.
_ADDRESS = r"[0-9A-Fa-f:.]+"  # an IPv4 or IPv6 address, as Kubernetes writes a Service's cluster IP
_NUMBER = r"[0-9]+"
_URL = r"(tcp|udp|sctp)://\[?[0-9A-Fa-f:.]+\]?:[0-9]+"
#: Each service-link name, with the shape of the value Kubernetes gives it: a mistyped setting such as
#: STREAM_APP_WEB_PORT=8080 matches a link's name, but a bare ..._PORT link holds a URL, never a number.
_SERVICE_LINKS = [(re.compile(name), re.compile(value)) for name, value in (
    (r"[A-Z0-9_]*_SERVICE_HOST", _ADDRESS),
    (r"[A-Z0-9_]*_SERVICE_PORT(_[A-Z0-9_]+)?", _NUMBER),
    (r"[A-Z0-9_]*_PORT(_[0-9]+_(TCP|UDP|SCTP))?", _URL),
    (r"[A-Z0-9_]*_PORT_[0-9]+_(TCP|UDP|SCTP)_PROTO", r"tcp|udp|sctp"),
    (r"[A-Z0-9_]*_PORT_[0-9]+_(TCP|UDP|SCTP)_PORT", _NUMBER),
    (r"[A-Z0-9_]*_PORT_[0-9]+_(TCP|UDP|SCTP)_ADDR", _ADDRESS))]


def _service_link(name: str, value: str) -> bool:
    """Whether a STREAM_APP_ variable is one of Kubernetes' service links (by its name and its value's shape)."""
    return any(name_shape.fullmatch(name) and value_shape.fullmatch(value.strip())
               for name_shape, value_shape in _SERVICE_LINKS)


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _parse(name: str, raw: str, kind: type) -> object:
    try:
        if kind is bool:
            word = raw.strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError as exc:
        wanted = {bool: f"true or false (one of {', '.join(TRUE_WORDS + FALSE_WORDS)})", int: "a whole number",
                  float: "a number"}.get(kind, f"a valid {kind.__name__}")
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not {wanted}") from exc
