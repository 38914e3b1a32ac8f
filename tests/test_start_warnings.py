"""The warnings a worker logs at start about defaults fit for a trial, not for a deployment (a security review)."""

from stream_app.config import Settings
from stream_app.stream.foreground import settings_warnings


def test_a_worker_without_an_erasure_key_says_its_record_of_erased_users_can_be_tested():
    """The record of erased users is an HMAC keyed, by default, with the group id, which starts its changelog topic's
    own name: a reader of that topic computed a receipt's hash from the user id alone, and no worker said so."""
    said = settings_warnings(Settings(user_idle_ms=1, item_idle_ms=1), "g-erased-changelog")
    assert len(said) == 1 and "STREAM_APP_ERASURE_KEY is not set" in said[0] and "g-erased-changelog" in said[0]
    assert settings_warnings(Settings(erasure_key="s3cret", user_idle_ms=1, item_idle_ms=1), "e") == []


def test_a_worker_that_never_evicts_says_its_memory_grows_with_every_new_id():
    """With the idle evictions off (the defaults), 20,000 made-up user ids took a worker from 99 to 202 MB."""
    both = settings_warnings(Settings(erasure_key="k"), "e")
    assert both == ["STREAM_APP_USER_IDLE_MS and STREAM_APP_ITEM_IDLE_MS are 0: no user or item ever leaves this "
                    "worker's memory, which grows with every new id (a flood of made-up ids too); set how long an idle "
                    "one stays, in ms"]
    users = settings_warnings(Settings(erasure_key="k", item_idle_ms=1), "e")
    assert len(users) == 1 and users[0].startswith("STREAM_APP_USER_IDLE_MS is 0: no user ever leaves")


def test_a_namespace_without_a_separator_is_said_with_the_names_it_gives():
    """`h142` gave topics like `h142events.browse` and keys like `h142profile:s5`, without a word (helper-142 #11)."""
    quiet = Settings(erasure_key="k", user_idle_ms=1, item_idle_ms=1)
    assert settings_warnings(quiet.replace(namespace="prod."), "e") == []
    (said,) = settings_warnings(quiet.replace(namespace="h142"), "e")
    assert said.startswith("STREAM_APP_NAMESPACE='h142' ends in no separator: the topics are named h142events.")
    assert said.endswith("(end it with one: h142.)")


def test_a_full_redis_is_said_as_full_not_as_down():
    """A Redis at its maxmemory was said as "is Redis up? else check REDIS_URL" (helper-142 #8)."""
    import time
    from types import SimpleNamespace

    from stream_app.stream.worker_status import redis_advice, redis_wait

    full = "OutOfMemoryError: OOM command not allowed when used memory > 'maxmemory'."
    assert redis_advice(full).startswith("Redis is full: raise its maxmemory")
    assert redis_advice("ConnectionError: Error 111 connecting") == "is Redis up? else check REDIS_URL"
    worker = SimpleNamespace(redis_refusal=None, status_failing_since=time.monotonic() - 20, status_failure=full)
    assert "Redis is full" in redis_wait(worker, 10)["redis"]
