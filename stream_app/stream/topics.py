"""Topic creation and checks, with the Kafka admin API (works on Apache Kafka and Tansu alike)."""

from __future__ import annotations

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from ..config import Settings
from ..errors import ConfigError
from ..kafka_security import kafka_python_kwargs


def topic_specs(settings: Settings) -> dict[str, dict[str, str]]:
    """Every topic the app reads or writes (but Faust's own changelogs) with its configs."""
    t = settings.topics
    specs: dict[str, dict[str, str]] = {name: {} for name in t.inputs}
    specs[t.recommendations] = {}
    specs[t.dlq] = {"retention.ms": str(settings.dlq_retention_ms)}
    specs[t.profiles] = {"cleanup.policy": "compact"}
    specs[t.model_control] = {"cleanup.policy": "compact"}
    specs[t.items] = {"cleanup.policy": "compact"}
    specs[t.model_status] = {}
    # Requests and receipts name the user: they leave after ERASURE_RETENTION_MS, like any record
    specs[t.erasures] = {"retention.ms": str(ERASURE_RETENTION_MS)}
    specs[t.erasure_receipts] = {"retention.ms": str(ERASURE_RETENTION_MS)}
    specs[t.redrive_positions] = {"cleanup.policy": "compact"}
    return specs


#: How long erasure requests and receipts stay on their topics (30 days): a request not applied by
#: then (no worker ran) is lost, and a receipt should be archived by whoever asked for it.
ERASURE_RETENTION_MS = 30 * 24 * 3600 * 1000


#: Topics with one partition whatever the input partitioning: every worker reads all of it.
SINGLE_PARTITION = ("model_control", "model_status", "items", "redrive_positions")


def ensure_topics(settings: Settings, extra: tuple[str, ...] = ()) -> int:
    """Create missing topics (and `extra` ones, partitioned as the inputs); refuse input topics whose partition counts differ (profiles are
    partitioned by user, so a user's events must land in the same partition number on all three).
    Returns the input topics' partition count, which the tables must share."""
    admin = KafkaAdminClient(bootstrap_servers=settings.require_kafka(), request_timeout_ms=10_000,
                             **kafka_python_kwargs(settings.kafka_security))
    try:
        existing = set(admin.list_topics())
        specs = topic_specs(settings) | {name: {} for name in extra}
        single = {getattr(settings.topics, attr) for attr in SINGLE_PARTITION}
        # partitioned topics are made as the inputs are where they exist (a deployment's own count)
        present_inputs = [name for name in settings.topics.inputs if name in existing]
        present = {d["name"]: len(d["partitions"]) for d in admin.describe_topics(present_inputs)} if present_inputs else {}
        _check_inputs_agree(present)  # before anything is created: a refusal leaves the broker as it found it
        partitions = next(iter(present.values())) if present else settings.partitions
        missing = [NewTopic(name, 1 if name in single else partitions, settings.replication_factor,
                            topic_configs=configs or {})
                   for name, configs in specs.items() if name not in existing]
        for new in missing:
            try:
                admin.create_topics([new])
            except TopicAlreadyExistsError:
                pass  # another process created it meanwhile
        # erasure requests are keyed and routed by user like the events: the worker that owns the user's
        # input partition applies them, so their partition numbers must be the inputs'
        by_user = [*settings.topics.inputs, settings.topics.erasures]
        counts = {d["name"]: len(d["partitions"]) for d in admin.describe_topics(by_user)}
        inputs = {name: counts.pop(name) for name in settings.topics.inputs}
        _check_inputs_agree(inputs)  # another process may have made one meanwhile
        partitions = next(iter(inputs.values()))
        if counts[settings.topics.erasures] != partitions:
            raise ConfigError(
                f"the erasures topic {settings.topics.erasures} has {counts[settings.topics.erasures]} partitions, the "
                f"input topics {partitions}: a request reaches its user's worker by the input partition number, so some "
                f"would never be applied. Delete it while no request was sent to it (a worker makes it again with "
                f"{partitions}); one already used cannot be recreated under this namespace without losing requests "
                "(the workers remember how far they applied each of its partitions, by offset)")
        return partitions
    finally:
        admin.close()


def _check_inputs_agree(counts: dict[str, int]) -> None:
    if len(set(counts.values())) > 1:
        raise ConfigError(f"input topics have different partition counts {counts}: "
                          "recreate them with the same count (profiles are partitioned by user)")


def topic_retention_ms(settings: Settings, topic: str) -> int | None:
    """The topic's retention.ms as the broker reports it, None when it does not (Tansu reports no configs)."""
    admin = KafkaAdminClient(bootstrap_servers=settings.require_kafka(), request_timeout_ms=10_000,
                             **kafka_python_kwargs(settings.kafka_security))
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        admin.close()
    configs = described.get("topic", {}).get(topic) or {}  # {resource type: {name: {key: {"value": ...}}}}
    value = (configs.get("retention.ms") or {}).get("value")
    return int(value) if value is not None else None
