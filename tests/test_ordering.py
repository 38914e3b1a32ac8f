"""Event-time order across the input topics and item state by event time (pure parts)."""

import random

import pytest

from stream_app.config import Settings
from stream_app.core.events import Event
from stream_app.core.item_feed import ItemFeed
from stream_app.core.items import InMemoryItemIndex
from stream_app.core.ordering import AFTER_ALL, EMPTY, LANE_OF, WAIT, Sequencer, always, rounds
from stream_app.partitioning import partition_of

T0 = 1_700_000_040_000  # on a minute boundary
MINUTE = 60_000
BROWSE, CLICK, PURCHASE = 0, 1, 2


def never(_group, _lane):
    return False


def test_a_group_releases_the_smallest_head_and_waits_for_an_empty_lane():
    seq = Sequencer(MINUTE, never)
    seq.push(0, CLICK, T0 + 5, "c5")
    seq.push(0, BROWSE, T0 + 7, "b7")
    assert seq.groups[0].next_lane(never) == WAIT  # purchase may still bring something earlier
    seq.push(0, PURCHASE, T0 + 6, "p6")
    epoch, out = seq.take(10)
    assert epoch == T0 // MINUTE
    # c5 goes, then the click lane is empty again: the group waits for it
    assert [r.item for r in out] == ["c5"]
    seq.push(0, CLICK, T0 + 9, "c9")
    _, out = seq.take(10)
    assert [r.item for r in out] == ["p6"]  # and the purchase lane is empty: wait again
    seq.push(0, PURCHASE, T0 + 8, "p8")
    _, out = seq.take(10)
    assert [r.item for r in out] == ["b7"]  # browse is empty now: p8 and c9 wait for it


def test_equal_timestamps_go_browse_click_purchase_and_lane_order_is_kept():
    seq = Sequencer(MINUTE, always)
    seq.push(0, PURCHASE, T0, "p")
    seq.push(0, CLICK, T0, "c1")
    seq.push(0, CLICK, T0, "c2")
    seq.push(0, BROWSE, T0, "b")
    _, out = seq.take(10)
    assert [r.item for r in out] == ["b", "c1", "c2", "p"]


def test_a_late_event_joins_the_current_epoch_and_is_counted():
    seq = Sequencer(MINUTE, always)
    seq.push(0, CLICK, T0 + 2 * MINUTE, "new")
    seq.push(0, CLICK, T0, "old")  # behind a later one in its own lane: late
    first = seq.take(10)
    assert first[0] == T0 // MINUTE + 2 and [(r.item, r.late) for r in first[1]] == [("new", False), ("old", True)]
    assert [r.epoch for r in first[1]] == [T0 // MINUTE + 2] * 2
    assert seq.late == 1


def test_rounds_hold_one_epoch_and_wait_for_every_group():
    seq = Sequencer(MINUTE, never)
    for lane in range(3):
        seq.push(0, lane, T0 + MINUTE + lane, f"g0-{lane}")
    for lane in range(3):
        seq.push(1, lane, T0 + lane, f"g1-{lane}")
    epoch, out = seq.take(100)
    # group 1 is in the earlier epoch: only its events until its lanes are empty (then it waits)
    assert epoch == T0 // MINUTE and [r.item for r in out] == ["g1-0"]
    assert seq.groups[1].bound(never) == T0 // MINUTE
    assert seq.groups[0].bound(never) == T0 // MINUTE + 1
    seq.drop([1])
    epoch, out = seq.take(100)
    assert epoch == T0 // MINUTE + 1 and [r.item for r in out] == ["g0-0"]


def test_an_input_without_a_timestamp_goes_first_and_moves_no_clock():
    seq = Sequencer(MINUTE, always)
    seq.push(0, CLICK, T0 + 5, "ok")
    seq.push(0, BROWSE, None, "broken")
    _, out = seq.take(10)
    assert [r.item for r in out] == ["broken"]
    assert seq.groups[0].clock is None
    _, out = seq.take(10)
    assert [r.item for r in out] == ["ok"] and seq.groups[0].clock == T0 + 5
    assert seq.groups[0].next_lane(always) == EMPTY and seq.bound() == AFTER_ALL


def synthetic_log(n=600, users=12, items=30, seed=3):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.choice(["browse", "browse", "click", "purchase"])
        out.append({"event_id": f"e{i}", "user_id": f"u{rng.randrange(users)}", "item_id": f"i{rng.randrange(items)}",
                    "type": kind, "ts": T0 + rng.randrange(0, 30 * MINUTE, 7_000), "schema_version": 1})
    out.sort(key=lambda e: e["ts"])
    return out


def test_events_arriving_topic_by_topic_are_released_as_from_the_whole_log():
    """Skew, as a worker meets it: every browse event arrives first, then the clicks, then the
    purchases, and the sequencer is asked after each arrival, holding back what an empty topic
    might still precede. Each group releases the same events in the same order and epochs as from
    the whole log at once."""
    settings = Settings(partitions=4, batch_max=50)
    log = synthetic_log()
    by_topic = sorted(log, key=lambda e: ["browse", "click", "purchase"].index(e["type"]))  # stable
    whole = {}
    for epoch, out in rounds(log, settings, partition_of):
        for r in out:
            whole.setdefault(r.group, []).append((r.item["event_id"], r.epoch))
    ended = {"log": False}
    seq = Sequencer(MINUTE, lambda _group, _lane: ended["log"])  # an empty topic may be skipped at the end only
    arriving = {}

    def drain():
        while True:
            epoch, out = seq.take(50)
            if epoch is None:
                return
            for r in out:
                arriving.setdefault(r.group, []).append((r.item["event_id"], r.epoch))

    for event in by_topic:
        seq.push(partition_of(event["user_id"], 4), LANE_OF[event["type"]], event["ts"], event)
        drain()
    held_back = seq.buffered()
    ended["log"] = True
    drain()
    assert held_back > 0  # the clicks and purchases were still coming: browse events had to wait
    assert arriving == whole


def test_item_state_is_the_same_however_the_epochs_are_applied():
    settings = Settings()
    log = [Event.from_dict(e) for e in synthetic_log()]
    one, stepwise = ItemFeed(settings, InMemoryItemIndex(settings)), ItemFeed(settings, InMemoryItemIndex(settings))
    for feed in (one, stepwise):
        for event in log:
            feed.add(event, partition_of(event.user_id, 8), event.ts // MINUTE)
    last = log[-1].ts // MINUTE
    one.advance(last)
    for epoch in range(log[0].ts // MINUTE, last + 1, 3):
        stepwise.advance(epoch)
    stepwise.advance(last)
    assert one.index.store == stepwise.index.store
    assert one.late == stepwise.late == 0
    items = {event.item_id for event in log}
    assert {key for key in one.index.store if key.startswith("i:")} == {f"i:{item}" for item in items}  # all applied


def test_an_epoch_applied_before_an_event_arrives_takes_it_into_the_next_one():
    settings = Settings()
    feed = ItemFeed(settings, InMemoryItemIndex(settings))
    feed.advance(T0 // MINUTE + 5)
    feed.add(Event("late", "u", "i", "click", T0), 0, T0 // MINUTE)
    assert feed.late == 1 and list(feed.pending) == [T0 // MINUTE + 6]


def test_a_redelivered_input_counts_once_in_the_item_state():
    settings = Settings()
    once, twice = ItemFeed(settings, InMemoryItemIndex(settings)), ItemFeed(settings, InMemoryItemIndex(settings))
    events = [Event("a", "u", "x", "click", T0), Event("b", "u", "y", "click", T0 + 1000)]
    for event in events:
        once.add(event, 0, 1)
        twice.add(event, 0, 1)
        twice.add(event, 0, 1)
    once.advance(1)
    twice.advance(1)
    assert once.index.store == twice.index.store and twice.duplicates == 2
    assert once.index.store["i:x"]["neighbors"] == {"y": pytest.approx(once.index.store["i:y"]["neighbors"]["x"])}
    assert once.index.store["i:x"]["pop"] == pytest.approx(once.index.store["i:y"]["pop"])  # each counted, once


def test_the_feed_remembers_each_users_last_event_ids_and_only_those():
    settings = Settings()
    feed = ItemFeed(settings, InMemoryItemIndex(settings))
    remembered = ItemFeed.DIGESTS_PER_USER
    for n in range(remembered + 1):
        feed.add(Event(f"e{n}", "u", f"i{n}", "click", T0 + n), 0, 1)
    feed.add(Event("e1", "u", "i1", "click", T0 + 1), 0, 1)  # among the last `remembered`: dropped
    feed.add(Event("e0", "v", "i0", "click", T0), 0, 1)  # another user's: kept
    assert feed.duplicates == 1
    feed.add(Event("e0", "u", "i0", "click", T0), 0, 1)  # pushed out by the later ones: counted again
    assert feed.duplicates == 1 and feed.events == remembered + 3
    assert len(feed.users["u"].digests) == remembered * 8 and len(feed.users["u"].tail) == settings.rules_steps


def test_sequential_rules_weigh_each_follower_by_its_distance_within_a_session():
    settings = Settings(rules_steps=2, session_gap_ms=30 * MINUTE)
    feed = ItemFeed(settings, InMemoryItemIndex(settings))
    session = ["a", "b", "c", "a"]
    for i, item in enumerate(session):
        feed.add(Event(f"s{i}", "u", item, "click", T0 + i * 1000), 0, 1)
    # a new session (a gap of the session gap) follows nothing of the last one
    feed.add(Event("n", "u", "z", "click", T0 + 3000 + 30 * MINUTE), 0, 1)
    feed.advance(1)
    # shares of the best: 1/1 and 1/2 (and a 30-day decay over the seconds between them: rel 1e-5)
    assert feed.index.followers("a") == pytest.approx({"b": 1.0, "c": 0.5}, rel=1e-5)
    assert feed.index.followers("b") == pytest.approx({"c": 1.0, "a": 0.5}, rel=1e-5)
    assert feed.index.followers("c") == {"a": 1.0}
    assert feed.index.followers("z") == {}
    assert "z" not in feed.index.followers("a") and "z" not in feed.index.followers("c")


HOUR = 60 * MINUTE
DAY = 24 * HOUR


def days_log(days=5, per_day=120, seed=5):
    """Events over several days: items of day d are i{d}-*, plus a few bought every day; users of day d
    are d{d}-*, plus five who come every day."""
    rng = random.Random(seed)
    out = []
    for day in range(days):
        for n in range(per_day):
            item = f"every-{rng.randrange(3)}" if n % 4 == 0 else f"i{day}-{rng.randrange(10)}"
            user = f"u{rng.randrange(5)}" if n % 2 else f"d{day}-{rng.randrange(8)}"
            out.append(Event(f"e{day}-{n}", user, item, rng.choice(["browse", "purchase"]),
                             T0 + day * DAY + rng.randrange(0, 6 * HOUR)))
    # an item back after two quiet days: evicted meanwhile, it starts afresh
    out += [Event("back-1", "u0", "back", "purchase", T0 + HOUR), Event("back-2", "u1", "back", "purchase", T0 + 2 * DAY)]
    return sorted(out, key=lambda e: e.ts)


def fed(settings, log, step=1):
    """The item feed as `evaluate` drives it: each epoch's events added once the epochs before it are
    applied (here only every `step` epochs, as a worker may group them)."""
    feed = ItemFeed(settings, InMemoryItemIndex(settings))
    for event in log:
        epoch = event.ts // MINUTE
        if epoch % step == 0:
            feed.advance(epoch - 1)
        feed.add(event, partition_of(event.user_id, 8), epoch)
    feed.advance(log[-1].ts // MINUTE)
    return feed


def test_items_idle_longer_than_item_idle_ms_leave_the_item_state_and_its_lists():
    log = days_log()
    kept = fed(Settings(), log)
    bounded = fed(Settings(item_idle_ms=DAY), log)
    assert kept.index.item_count() == 3 + 5 * 10 + 1
    # what is left: the items of the last day and the ones bought every day, nothing older than a day
    assert bounded.index.item_count() <= 3 + 2 * 10 and bounded.evicted_items >= 3 * 10
    assert all(key[2:].startswith(("i3-", "i4-", "every-")) for key in bounded.index.store if key.startswith("i:"))
    for key, ranked in bounded.index.store.items():
        if key[:2] in ("p:", "t:", "c:"):
            assert all(item.startswith(("i3-", "i4-", "every-")) for item, _ in ranked), key
    assert set(bounded.index.popular()) <= {key[2:] for key in bounded.index.store if key.startswith("i:")}
    assert bounded.summary()["evicted_items"] == bounded.evicted_items


def test_eviction_passes_give_the_same_item_state_however_the_epochs_are_applied():
    log = days_log()
    settings = Settings(item_idle_ms=DAY)
    at_once, stepwise = fed(settings, log), fed(settings, log, step=3 * 24 * 60)  # three days at once
    assert at_once.index.store == stepwise.index.store and at_once.evicted_items == stepwise.evicted_items > 0


def test_quiet_users_trails_are_dropped_without_changing_any_signal(monkeypatch):
    log = days_log()
    settings = Settings()
    dropped = fed(settings, log, step=11)
    monkeypatch.setattr(ItemFeed, "EVICT_EVERY_MS", 10**15)  # no pass
    kept = fed(settings, log, step=11)
    assert kept.index.store == dropped.index.store
    assert len(dropped.users) < len(kept.users) == 5 + 5 * 8 and dropped.evicted_trails > 0


def bot_log(events=10_000, items=1, seed=9):
    """Honest users over an hour, and one bot buying `items` item(s) 10,000 times in the same hour."""
    rng = random.Random(seed)
    start = (T0 // HOUR + 1) * HOUR  # the caps count per event-time hour
    honest = [Event(f"h{n}", f"u{rng.randrange(40)}", f"i{rng.randrange(30)}", "purchase", start + rng.randrange(HOUR))
              for n in range(400)]
    bot = [Event(f"b{n}", "bot", f"pushed-{n % items}", "purchase", start + n * HOUR // events) for n in range(events)]
    return honest, bot


def popularity(settings, log):
    feed = fed(settings, sorted(log, key=lambda e: e.ts))
    return feed, {item: feed.index.entry(item)["pop"] for item in feed.index.popular()}


def test_a_bot_moves_popularity_no_more_than_the_per_user_caps():
    honest, bot = bot_log()
    capped = Settings(user_item_signals_per_hour=50)
    feed, pops = popularity(capped, honest + bot)
    _, within_cap = popularity(capped, honest + bot[:50])  # what the bot may add: its first 50 events
    assert pops["pushed-0"] == within_cap["pushed-0"] and feed.summary()["capped"] == len(bot) - 50
    assert {k: v for k, v in pops.items() if k != "pushed-0"} == {k: v for k, v in within_cap.items() if k != "pushed-0"}
    _, uncapped = popularity(Settings(user_item_signals_per_hour=0, user_signals_per_hour=0), honest + bot)
    assert uncapped["pushed-0"] > within_cap["pushed-0"] + 6  # log2 scores: 10,000 events are 200x the 50
    # spread over many items, the bot's events count up to the cap on all items in the hour
    honest, bot = bot_log(items=5_000)
    feed, pops = popularity(Settings(user_signals_per_hour=1000), honest + bot)
    assert sum(item.startswith("pushed-") for item in feed.index.popular()) <= 1000
    assert feed.summary()["capped"] == len(bot) - 1000
    # the real shop's busiest customer-hour (543 lines) is far under the default caps
    assert Settings().user_signals_per_hour >= 543 * 1.5 and Settings().user_item_signals_per_hour >= 21 * 2


def test_category_steps_count_moves_between_items_within_a_session_only():
    """Which category comes next after which (category-level sequential rules): counted when a session
    moves on to another item, not for a funnel on one item, and never across sessions."""
    settings = Settings(session_gap_ms=30 * MINUTE)
    feed = ItemFeed(settings, InMemoryItemIndex(settings))
    steps = [("a1", "A"), ("a1", "A"), ("b1", "B"), ("a2", "A"), ("b2", "B"), ("c1", "C")]
    for i, (item, category) in enumerate(steps):
        feed.add(Event(f"s{i}", "u", item, "click", T0 + i * 1000, category=category), 0, 1)
    # a new session: its first item follows nothing of the last one
    feed.add(Event("n", "u", "z1", "click", T0 + 6000 + 30 * MINUTE, category="Z"), 0, 1)
    feed.add(Event("other", "v", "a3", "click", T0, category="A"), 0, 1)  # another user's session of one item
    feed.advance(1)
    index = feed.index
    index.begin_batch()
    # A -> B twice; B -> A once and B -> C once (equal shares); nothing leads to Z or from Z
    assert index.next_categories("A") == pytest.approx({"B": 1.0}, rel=1e-5)
    assert index.next_categories("B") == pytest.approx({"A": 1.0, "C": 1.0}, rel=1e-5)
    assert index.next_categories("C") == {} and index.next_categories("Z") == {}
    assert "Z" not in index.next_categories("B")


def test_the_category_model_ranks_the_likely_next_category_s_popular_items_first():
    """After a session on A, whose sessions go on to B, B's most popular item scores highest on the
    category-model features, then the popular items of A; their values are log-scaled shares."""
    from stream_app.core.process import new_profile, process
    from stream_app.core.recommend import FEATURES, recommend

    settings = Settings(ranker=False)
    feed = ItemFeed(settings, InMemoryItemIndex(settings))
    rng = random.Random(4)
    log = []
    for session in range(60):  # A then B, mostly B's first items
        start = T0 + session * HOUR
        log.append(Event(f"x{session}a", f"w{session}", f"a{rng.choice([0, 0, 1])}", "click", start, category="A"))
        log.append(Event(f"x{session}b", f"w{session}", f"b{rng.choice([0, 0, 0, 1, 2])}", "click", start + 1000,
                         category="B"))
    for event in log:
        feed.add(event, 0, event.ts // MINUTE)
    feed.advance(log[-1].ts // MINUTE)
    feed.index.begin_batch()
    profile = new_profile("me", settings)
    event = Event("mine", "me", "a1", "click", log[-1].ts + HOUR, category="A")
    process(profile, event, feed.index, settings, 0)
    result = recommend(profile, event, feed.index, settings)
    column = {item: row[FEATURES.index("category_model")] for item, row in zip(result.pool, result.features)}
    assert max(column, key=column.get) == "b0" and column["b0"] == 1.0
    assert column["b0"] > column["b1"] > column["b2"] > 0 and all(0.0 <= v <= 1.0 for v in column.values())
    assert "b0" in [item["item_id"] for item in result.items]


def test_a_late_event_meets_the_same_trail_whether_the_feed_advanced_before_or_after_it_was_added():
    """A worker's reader adds what it releases before its rounds advance the feed (and run the hourly trail
    eviction); `evaluate` advances first. A late event of a user quiet for a day must meet the same trail."""
    hour = 3_600_000
    t0 = 1_700_000_000_000 // hour * hour
    found: dict[int, list[str]] = {}
    for i in range(1000):
        found.setdefault(partition_of(f"user{i}", 8), []).append(f"user{i}")
    u, w = next(users for users in found.values() if len(users) >= 2)[:2]
    log = [{"event_id": event_id, "user_id": user, "item_id": item, "type": "browse", "ts": ts, "schema_version": 1}
           for event_id, user, item, ts in [("u1", u, "A", t0), ("w1", w, "Z", t0 + 26 * hour),
                                            ("u2", u, "B", t0 + 600_000)]]
    settings = Settings()
    released = [(epoch, r) for epoch, batch in rounds(log, settings, partition_of) for r in batch]

    advanced_first = ItemFeed(settings, InMemoryItemIndex(settings))  # as evaluate
    for epoch, r in released:
        advanced_first.advance(epoch - 1)
        advanced_first.add(Event.from_dict(r.item), r.group, epoch)
    added_first = ItemFeed(settings, InMemoryItemIndex(settings))  # as a worker's reader at full speed
    for epoch, r in released:
        added_first.add(Event.from_dict(r.item), r.group, r.epoch)
    for epoch, _ in released:
        added_first.advance(epoch - 1)
    for feed in (advanced_first, added_first):
        feed.advance(10**12)
    assert advanced_first.index.store["i:B"]["neighbors"] == added_first.index.store["i:B"]["neighbors"] == {}
    assert advanced_first.evicted_trails == added_first.evicted_trails


def test_a_late_event_of_an_earlier_hour_counts_against_the_current_hours_cap():
    """_UserTrail.within_caps: "A late event of an earlier hour counts in the current one"."""
    from stream_app.core.item_feed import ItemFeed

    hour = 3_600_000
    h = 1_700_000_000_000 // hour * hour + 5 * hour
    settings = Settings(user_item_signals_per_hour=2)
    feed = ItemFeed(settings, InMemoryItemIndex(settings))
    for n, ts in enumerate([h + 1, h + 2, h - 10, h + 3, h - 20, h + 4]):  # a bot interleaving old timestamps
        feed.add(Event(f"b{n}", "bot", "x", "click", ts), 0, 1)
    assert feed.capped == 4


def test_events_of_equal_timestamps_are_not_late():
    from stream_app.core.ordering import Sequencer, always

    seq = Sequencer(60_000, always)
    for name in ("a", "b"):
        seq.push(0, 1, 1_700_000_000_000, name)
    _, out = seq.take(10)
    assert [r.late for r in out] == [False, False] and seq.late == 0


def test_an_equal_time_event_of_an_earlier_lane_after_its_lane_was_gone_on_without_is_late():
    """The log puts a browse before a click of the same time; released after it (its topic skipped when idle,
    then receiving), it is out of that order and must be counted, or a run counting 0 late was not the log's."""
    seq = Sequencer(MINUTE, always)
    seq.push(0, CLICK, T0, "click")
    seq.take(10)
    seq.push(0, BROWSE, T0, "browse")
    seq.push(0, CLICK, T0, "click 2")
    seq.push(0, PURCHASE, T0, "purchase")
    _, out = seq.take(10)
    assert [(r.item, r.late) for r in out] == [("browse", True), ("click 2", False), ("purchase", False)]
    assert seq.late == 1


def test_co_visitation_pairs_an_item_only_with_other_items_seen_within_the_window():
    """Behaviours the pinned OTTO figures alone covered: the co-visitation window and no item paired with itself."""

    def neighbours(window_ms: int) -> dict:
        settings = Settings(covis_window_ms=window_ms)
        feed = ItemFeed(settings, InMemoryItemIndex(settings))
        for n, (item, ts) in enumerate([("a", T0), ("b", T0 + 5 * MINUTE), ("b", T0 + 6 * MINUTE)]):
            feed.add(Event(f"e{n}", "u", item, "click", ts), 0, 1)
        feed.advance(1)
        return feed.index.neighbors("b")

    assert set(neighbours(10 * MINUTE)) == {"a"}  # never "b" itself, though the user saw it twice
    assert neighbours(2 * MINUTE) == {}


def test_a_logged_sessions_trail_leaves_after_session_idle_ms_and_a_later_event_begins_a_new_session():
    """With session ids, every user ever seen kept an item-feed trail in every worker for good."""
    from stream_app.core.item_feed import ItemFeed
    from stream_app.core.items import InMemoryItemIndex

    settings = Settings(session_idle_ms=3_600_000)
    feeds = [ItemFeed(settings, InMemoryItemIndex(settings)) for _ in range(2)]
    day = 86_400_000
    first = [Event(f"e{i}", "u1", f"i{i}", "click", T0 + i * 1000, session_id="s1") for i in range(3)]
    later = Event("e9", "u1", "i9", "click", T0 + 2 * day, session_id="s1")  # the same session id, 2 days on
    for n, feed in enumerate(feeds):
        for event in first:
            feed.add(event, 0, event.ts // settings.item_epoch_ms)
        feed.advance(first[-1].ts // settings.item_epoch_ms)
        if n == 0:  # one feed runs the eviction pass before the later event, the other does not
            feed.advance(later.ts // settings.item_epoch_ms - 1)
            assert "u1" not in feed.users and feed.evicted_trails == 1
        feed.add(later, 0, later.ts // settings.item_epoch_ms)
        feed.advance(later.ts // settings.item_epoch_ms)
    assert feeds[0].index.store == feeds[1].index.store  # dropping the trail changed no signal
    assert not feeds[0].index.store["i:i2"]["followed_by"]  # a new session: i9 does not follow i2


def test_rounds_of_a_log_in_time_order_are_the_whole_logs_rounds_one_epoch_held_at_a_time():
    """`evaluate` streams a long log: each epoch is released once the next one begins. The rounds (epochs, batch
    bounds, order, ties between topics) must be those of the whole log pushed at once, and the first round must
    come before the log is read to its end."""
    settings = Settings(partitions=4, batch_max=7)
    log = synthetic_log(n=900)
    for i in range(0, 900, 50):  # ties across topics and partitions at one time
        log[i]["ts"] = log[i + 1]["ts"] = log[i + 2]["ts"]
    log.sort(key=lambda e: e["ts"])
    whole = [(epoch, [(r.group, r.lane, r.epoch, r.late, r.item["event_id"]) for r in out])
             for epoch, out in rounds(log, settings, partition_of)]
    taken = {"n": 0}

    def reading():
        for event in log:
            taken["n"] += 1
            yield event

    streamed = rounds(reading(), settings, partition_of, in_time_order=True)
    first = next(streamed)
    assert taken["n"] < len(log) // 10  # one epoch and the first event of the next, not the log
    rest = [first, *streamed]
    assert [(epoch, [(r.group, r.lane, r.epoch, r.late, r.item["event_id"]) for r in out])
            for epoch, out in rest] == whole
    assert len(whole) > 30


def test_rounds_in_time_order_refuse_an_event_of_an_epoch_already_released():
    settings = Settings()
    log = [{"event_id": "a", "user_id": "u", "item_id": "i", "type": "browse", "ts": T0 + MINUTE},
           {"event_id": "b", "user_id": "u", "item_id": "i", "type": "browse", "ts": T0 + 2 * MINUTE},
           {"event_id": "c", "user_id": "u", "item_id": "i", "type": "click", "ts": T0}]
    with pytest.raises(ValueError, match="'c'.*not in time order"):
        list(rounds(log, settings, partition_of, in_time_order=True))
    assert sum(len(out) for _, out in rounds(log, settings, partition_of)) == 3  # any order without the flag
