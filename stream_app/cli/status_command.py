"""`stream-app status`: the endpoints in use, whether they answer, and the live workers as their statuses in Redis
describe them, with warnings of workers that disagree."""

from __future__ import annotations

import argparse
import time

from ..config import Settings
from ..store.mirror_marker import marker_key, not_written_back
from ..urls import redact_setting
from .commands import redis_trouble

#: How long `status` waits for the brokers to answer before saying they do not.
KAFKA_CHECK_S = 3.0


def cmd_status(args: argparse.Namespace) -> int:
    import redis

    from ..store.redis_store import worker_statuses
    from ..stream.worker_status import STATUS_TTL_S, disagreements, unowned

    settings = Settings.from_env()
    print(f"KAFKA_BOOTSTRAP_SERVERS={redact_setting(settings.kafka_bootstrap_servers)}{kafka_answers(settings)}")
    print(f"REDIS_URL={redact_setting(settings.redis_url)}")
    print(f"Kafka security: {settings.kafka_security.describe()}")
    client = redis.Redis.from_url(settings.require_redis(), socket_connect_timeout=2)
    try:
        statuses = worker_statuses(client, settings.namespace, ttl_s=STATUS_TTL_S)
        try:  # the workers' statuses above say more; this line must not hide them
            marker = client.hgetall(marker_key(settings.namespace))
            mirror = mirror_said(marker)
        except redis.RedisError as exc:
            marker, mirror = {}, f"profiles in Redis: the workers' marker cannot be read ({exc})"
    except redis.RedisError as exc:
        raise redis_trouble(settings, exc) from exc
    finally:
        client.close()
    ours = [s for s in statuses if isinstance(s.get("counters"), dict) and {"ready", "input_partitions"} <= s.keys()]
    now_s = time.time()
    lines = [line for s in ours for line in describe_worker(s, settings.item_epoch_ms, now_s)]
    lines += [f"worker key of {s['worker_id']!r}: not a stream-app worker's status (another app's key under this "
              "namespace?), passed over" for s in statuses if s not in ours]
    # the workers' partition count as they wrote it (the topics', which may not be STREAM_APP_PARTITIONS)
    counted = not_written_back(marker)
    warnings = disagreements(ours) + unowned(ours, counted[0] if counted else None, now_s)
    print("\n".join(lines + [f"warning: {said}" for said in warnings]
                    or [f"no live workers under STREAM_APP_NAMESPACE={settings.namespace!r} (start one with "
                        "`stream-app worker`, or set the workers' namespace in this shell)"]))
    print(mirror)
    return 0


def mirror_said(marker: dict[bytes, bytes]) -> str:
    """Whether Redis holds every input partition's profiles, as the workers' marker says (store/mirror_marker.py)."""
    found = not_written_back(marker)
    if found is None:
        return ("profiles in Redis: no marker of the workers' yet (a worker writes it once its tables are restored, "
                "also after Redis was emptied); until then the read API answers 503 for users it does not hold")
    partitions, missing = found
    if missing:
        return (f"profiles in Redis: input partition{'s' if len(missing) > 1 else ''} "
                f"{', '.join(map(str, missing))} of {partitions} not written back yet (their owners write them at "
                "their next heartbeat); the read API answers 503 for their users it does not hold")
    return f"profiles in Redis: all {partitions} input partitions written back"


def describe_worker(s: dict, item_epoch_ms: int, now_s: float | None = None) -> list[str]:
    """A worker's status from Redis, for a person: its counters, models and event-time progress.
    `item_epoch_ms`: the epoch length to read epochs with when the worker's status does not give its own; `now_s`:
    the time the warnings judge ages by (one reading for both)."""
    from ..stream.worker_status import STATUS_STALE_S, heard_ago

    c = s["counters"]
    # dropped events of erased users are in `events` as applied, duplicate and rejected ones are
    erased = f", erased users' events dropped {c['erased_events_dropped']}" if c.get("erased_events_dropped") else ""
    # the dead letters count those of the items and erasures topics and of learner state too: the events' own
    # rejections are what is left of them
    rejected = c["events"] - c["applied"] - c["duplicates"] - c.get("erased_events_dropped", 0)
    others = f", dead letters of other topics and state {c['rejected'] - rejected}" if c["rejected"] > rejected else ""
    floor = f" ({c['below_dedupe_floor']} of them older than the user's dedupe floor, not known as applied)" \
        if c.get("below_dedupe_floor") else ""
    heard_s = heard_ago(s, time.time() if now_s is None else now_s)
    state = "ready" if s["ready"] else "not ready"  # starting, or an outage: the next line says what it waits for
    if heard_s >= STATUS_STALE_S:  # a refresh missed: its partitions count as unowned below
        state += f" as of {heard_s:.0f}s ago (gone or stuck?)"
    line = (f"worker {s['worker_id']}: {state}, HTTP port {s.get('web_port', '-')}, "
            f"partitions {s['input_partitions']}, events {c['events']} (applied {c['applied']}, duplicates "
            f"{c['duplicates']}{floor}, rejected {rejected}{erased}), recommendations {c['recommendations']}{others}")
    if c.get("evicted_users"):
        line += f", idle users evicted {c['evicted_users']}"
    if c.get("encoder_failures"):
        line += f", rounds ranked without the encoder (it raised) {c['encoder_failures']}"
    if c.get("encoder_not_finite"):
        line += f", events ranked without the encoder (its outputs not finite) {c['encoder_not_finite']}"
    lines = [line]
    if not s["ready"] and s.get("missing"):  # what it waits for, as its /readyz says
        lines.append("  waiting for: " + "; ".join(f"{what} ({why})" for what, why in s["missing"].items()))
    models = s.get("models") or {}
    # counted since the version serving began serving here (a worker of before 2026-12-06: since it started)
    since = c.get("since_serving") or {}
    live = since.get("live") or {"judged": c.get("live_judged", 0), "hits": c.get("live_hits", 0)}
    hits = f"next event in the shown list {live['hits'] / live['judged']:.1%} of {live['judged']}" \
        if live["judged"] else ""
    line = (f"  encoder live {models['live']}" + (f" ({hits} since it began serving here)" if hits else "")
            if models.get("live") else "  no sequence encoder live" + (f"; {hits}" if hits else ""))
    if models.get("shadow"):
        shadow = since.get("shadow") or {}
        judged = shadow.get("judged", 0)
        rate = (f"{shadow['hits'] / judged:.1%} of {judged}, the lists shown {shadow['live_hits'] / judged:.1%} of "
                "the same" if judged else "n/a: no list judged since it began serving here")
        line += f", shadow {models['shadow']} (would have hit {rate}, not published)"
    line += f", content model {models['content']} (item text)" if models.get("content") else ", no content model"
    for role, error in (models.get("errors") or {}).items():
        line += f"; {role} error: {error}"
    lines.append(line)
    o = s.get("ordering")
    if o:
        epoch = o["item_epoch_applied"]
        if epoch is None:
            item_state = "no item epoch applied yet"
        else:
            through = (epoch + 1) * o.get("item_epoch_ms", item_epoch_ms)  # epoch N: event times [N, N+1) epochs
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(through / 1000))
            item_state = f"item state through epoch {epoch} (events before {when} UTC)"
        lines.append(f"  event time: read {o['read']} inputs (all partitions), {o['buffered']} waiting for their turn, "
                     f"{o['owned_pending']} of its own scheduled; {item_state}; late: {c.get('late', 0)} older than "
                     f"their user's last event, {o['late_in_partition']} older than their partition's clock, "
                     f"{o['late_for_item_state']} after their item epoch was applied"
                     + (f"; {o['stale_item_state']} ranked with an item state already past their epoch (their lists "
                        "saw later events)" if o.get("stale_item_state") else ""))
    return lines


def kafka_answers(settings: Settings) -> str:
    """Whether a broker of the list takes a connection (a status that never asked listed a ready worker with the
    brokers gone). A TCP connect, not a Kafka request: the Kafka clients take 30 s to give up on a list."""
    import socket

    from ..errors import ConfigError
    from ..urls import bootstrap_hosts, check_bootstrap_servers

    if not settings.kafka_bootstrap_servers:
        return ""
    try:  # a URL, an empty entry or a port that is not one: said as every other command says it, not "start it"
        check_bootstrap_servers(settings.kafka_bootstrap_servers)
    except ConfigError as exc:
        return f" ({str(exc).split(': ', 1)[1]})"
    last: OSError | None = None
    for host, port in bootstrap_hosts(settings.kafka_bootstrap_servers):
        try:
            socket.create_connection((host, port), timeout=KAFKA_CHECK_S).close()
            return " (takes connections)"
        except OSError as exc:
            last = exc
    # the address is this shell's: the workers have their own, and may reach theirs (their lines say if ready)
    return (f" (no broker takes a connection from this shell at {redact_setting(settings.kafka_bootstrap_servers)} "
            f"({last}): start the broker, or set KAFKA_BOOTSTRAP_SERVERS in this shell to the one the workers use "
            "(`stream-app up` prints the embedded broker's))" if last is not None else "")
