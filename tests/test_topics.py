"""Topic creation against the real broker."""

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from stream_app.errors import ConfigError
from stream_app.stream.topics import ensure_topics


def test_input_topics_with_different_partition_counts_are_refused_with_what_to_do(make_settings):
    settings = make_settings(partitions=4)
    browse, click, purchase = settings.topics.inputs
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        admin.create_topics([NewTopic(browse, 4, 1), NewTopic(click, 2, 1)])
    finally:
        admin.close()
    with pytest.raises(ConfigError) as refused:
        ensure_topics(settings)
    assert "different partition counts" in str(refused.value) and "recreate them" in str(refused.value)
    assert f"'{click}': 2" in str(refused.value)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:  # refused before anything was made: the operator recreates the inputs on an untouched namespace
        assert purchase not in admin.list_topics() and settings.topics.recommendations not in admin.list_topics()
    finally:
        admin.close()


def test_missing_topics_are_created_with_the_partitioning_the_app_needs(make_settings):
    settings = make_settings(partitions=4)
    assert ensure_topics(settings) == 4
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        t = settings.topics
        described = {d["name"]: len(d["partitions"])
                     for d in admin.describe_topics([*t.inputs, t.model_control, t.items, t.erasures, t.erasure_receipts])}
    finally:
        admin.close()
    # erasure requests go to their user's partition, as events do
    assert described == {**{name: 4 for name in t.inputs}, t.model_control: 1, t.items: 1, t.erasures: 4,
                         t.erasure_receipts: 4}


def test_topics_made_beside_existing_inputs_take_their_partition_count_and_erasures_must_match(make_settings):
    settings = make_settings(partitions=8)  # the default, while the deployment's inputs have 4
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        admin.create_topics([NewTopic(name, 4, 1) for name in settings.topics.inputs])
        assert ensure_topics(settings) == 4
        erasures = admin.describe_topics([settings.topics.erasures])[0]
        assert len(erasures["partitions"]) == 4  # made as the inputs are: every user's requests reach its owner

        other = make_settings(partitions=4)
        admin.create_topics([NewTopic(other.topics.erasures, 8, 1)])
        with pytest.raises(ConfigError) as refused:
            ensure_topics(other)
        assert f"{other.topics.erasures} has 8 partitions, the input topics 4" in str(refused.value)
    finally:
        admin.close()
