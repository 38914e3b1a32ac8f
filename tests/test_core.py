import jsonschema
import orjson
import pytest

from stream_app.config import Settings
from stream_app.contracts import load_schema
from stream_app.core.events import Event
from stream_app.core.item_feed import ItemFeed
from stream_app.core.items import InMemoryItemIndex
from stream_app.core.process import event_digest, new_partition_learners, new_profile, process
from stream_app.core.profile import Profile

T0 = 1_700_000_000_000


def ev(i, user="u1", item="a", kind="click", ts=None, **extra):
    return Event(event_id=f"e{i}", user_id=user, item_id=item, type=kind, ts=T0 + i * 1000 if ts is None else ts,
                 **extra)


def run(events, settings=None, profile=None, index=None):
    settings = settings or Settings()
    index = index or InMemoryItemIndex(settings)
    profile = profile or new_profile(events[0].user_id, settings)
    feed = ItemFeed(settings, index)
    outcomes = []
    for event in events:  # each event its own item epoch: visible to the next one
        epoch = (feed.applied_through or 0) + 1
        outcomes.append(process(profile, event, index, settings, now_ms=T0))
        feed.add(event, 0, epoch)
        feed.advance(epoch)
    return profile, outcomes, index


def test_event_updates_counts_sequence_affinities_and_times():
    profile, outcomes, _ = run([ev(1, item="a", category="shoes"), ev(2, item="b", kind="browse"),
                                ev(3, item="a", kind="purchase", stage="cart")])
    assert profile.event_count == 3 and profile.version == 3
    assert profile.counts == {"click": 1, "browse": 1, "purchase": 1}
    assert profile.stages == {"cart": 1}
    assert [r[0] for r in profile.recent] == ["a", "b", "a"]
    assert profile.first_seen == T0 + 1000 and profile.last_seen == T0 + 3000
    assert profile.item_affinity["a"] > profile.item_affinity["b"]
    assert list(profile.category_affinity) == ["shoes"]
    assert all(o.applied for o in outcomes)


def test_same_event_id_twice_changes_nothing():
    profile, _, _ = run([ev(1), ev(2, item="b")])
    before = profile.to_dict()
    _, outcomes, _ = run([ev(2, item="b"), ev(1)], profile=profile)
    assert [o.applied for o in outcomes] == [False, False]
    assert all(o.recommendation is None for o in outcomes)
    assert profile.to_dict() == before


def test_forgotten_event_ids_raise_a_floor_so_nothing_is_applied_twice():
    settings = Settings(seen_ids_max=4)
    events = [ev(i, item=f"i{i}") for i in range(1, 11)]
    profile, _, _ = run(events, settings)
    # over 4 + 4 // 4 digests the oldest are forgotten, down to 4: at e6, e8 and e10
    assert set(profile.seen_event_ids) == {event_digest(f"e{i}") for i in range(7, 11)}
    assert profile.dedupe_floor == T0 + 6 * 1000 + 1  # just past e6, the last forgotten
    _, again, _ = run(events, settings, profile=profile)
    assert not any(o.applied for o in again)
    assert profile.event_count == 10
    # a new event id older than the floor cannot be told from a forgotten one: dropped; at the floor: applied
    _, late, _ = run([ev(98, item="z", ts=T0 + 6000), ev(99, item="z", ts=T0 + 6001)], settings, profile=profile)
    assert [o.applied for o in late] == [False, True] and profile.event_count == 11


def test_late_event_keeps_the_sequence_in_time_order_and_recent_is_bounded():
    settings = Settings(recent_max=3)
    profile, _, _ = run([ev(1, item="a"), ev(3, item="c"), ev(2, item="b"), ev(4, item="d")], settings)
    assert [r[0] for r in profile.recent] == ["b", "c", "d"]


def test_affinity_decays_with_time():
    settings = Settings(half_life_ms=1000)
    profile, _, _ = run([ev(1, item="old", ts=T0), ev(2, item="new", ts=T0 + 5000)], settings)
    assert profile.item_affinity["new"] - profile.item_affinity["old"] == pytest.approx(5.0)


def test_recommendation_follows_contract_and_rec_id_is_deterministic():
    _, outcomes, _ = run([ev(1, item="a"), ev(2, item="b")])
    rec = outcomes[-1].recommendation
    jsonschema.validate(rec, load_schema("recommendation"))
    assert rec["trigger_event_id"] == "e2" and rec["profile_version"] == 2
    assert rec["rec_id"] == "rec-dcffb678e7baaca7c9aeaa49"  # blake2b-96 of the trigger's event_id, pinned
    assert outcomes[0].recommendation["rec_id"] != rec["rec_id"]
    # the generation orders a user's lists across profiles made anew, where profile_version starts again at 1
    assert rec["generation"] == outcomes[0].recommendation["generation"] == outcomes[0].recommendation["event_ts"]


def test_co_visited_items_are_recommended_with_a_reason():
    settings = Settings(repeat_weight=0.0)
    index = InMemoryItemIndex(settings)
    for user in ("x", "y", "z"):  # other users went from a to b
        run([ev(1, user=user, item="a"), ev(2, user=user, item="b")], settings, index=index)
    _, outcomes, _ = run([ev(10, user="new", item="a")], settings, index=index)
    items = outcomes[0].recommendation["items"]
    assert items[0]["item_id"] == "b"
    assert "co-visited with a" in items[0]["reasons"]


@pytest.mark.parametrize("cap", [0, 1, 2])
def test_an_item_co_visited_with_many_recent_items_names_at_most_the_cap_of_them(monkeypatch, cap):
    """The cap was checked after a reason was added: a cap of 0 still named one anchor."""
    monkeypatch.setattr("stream_app.core.recommend.MAX_COVIS_REASONS", cap)
    settings = Settings(repeat_weight=0.0, covis_prev_items=3)
    index = InMemoryItemIndex(settings)
    for user in ("x", "y", "z"):  # others went from each of a, b and c to t
        for anchor in "abc":
            run([ev(1, user=f"{user}{anchor}", item=anchor), ev(2, user=f"{user}{anchor}", item="t")], settings,
                index=index)
    _, outcomes, _ = run([ev(10, user="new", item="a", ts=T0), ev(11, user="new", item="b", ts=T0 + 1000),
                          ev(12, user="new", item="c", ts=T0 + 2000)], settings, index=index)
    reasons = {i["item_id"]: i["reasons"] for i in outcomes[-1].recommendation["items"]}
    named = [reason for reason in reasons["t"] if reason.startswith("co-visited with ")]
    assert named == [f"co-visited with {anchor}" for anchor in "cba"[:cap]]  # the most recent first


def test_an_item_removed_from_the_catalogue_is_never_shown_and_the_rest_move_up():
    """Only the content sources knew the catalogue: a product taken off it (a tombstone on the items topic) was
    still recommended by co-visitation, popularity and the rest."""
    settings = Settings(repeat_weight=0.0)
    index = InMemoryItemIndex(settings)
    for user in ("x", "y", "z"):  # other users went from a to b, and from a to c
        run([ev(1, user=user, item="a"), ev(2, user=user, item="b"), ev(3, user=user, item="c")], settings,
            index=index)
    shown = [item["item_id"] for item in run([ev(10, user="new", item="a")], settings, index=index)[1][0]
             .recommendation["items"]]
    assert "b" in shown
    index.withdrawn = frozenset({"b"})
    again = [item["item_id"] for item in run([ev(10, user="other", item="a")], settings, index=index)[1][0]
             .recommendation["items"]]
    assert again == [item for item in shown if item != "b"]


def test_the_users_own_items_rank_by_decayed_affinity_and_recency():
    settings = Settings(popularity_weight=0.0, trending_weight=0.0, covis_prev_items=1, half_life_ms=1000)
    _, outcomes, _ = run([ev(1, item="old", ts=T0), ev(2, item="new", ts=T0 + 3000)], settings)
    items = outcomes[-1].recommendation["items"]
    assert [i["item_id"] for i in items[:2]] == ["new", "old"]
    assert items[0]["reasons"] == ["clicked before"]
    # the prior: a quarter affinity (a share of the best, decayed 3 half-lives), three quarters recency
    # rank (old is not among the covis_prev_items=1 most recent)
    assert items[0]["score"] == pytest.approx(settings.repeat_weight * 1.0)
    assert items[1]["score"] == pytest.approx(settings.repeat_weight * 0.25 * 2 ** -3)


def test_popular_items_fill_in_for_a_new_user():
    settings = Settings(top_k=2, repeat_weight=0.0)
    index = InMemoryItemIndex(settings)
    for i, item in enumerate(["p", "p", "p", "q", "q", "r"]):
        run([ev(i, user=f"u{i}", item=item)], settings, index=index)
    _, outcomes, _ = run([ev(50, user="fresh", item="zzz")], settings, index=index)
    items = outcomes[0].recommendation["items"]
    assert [i["item_id"] for i in items] == ["p", "q"]
    assert items[0]["reasons"] == ["popular", "trending"]


@pytest.mark.parametrize("policy,kinds,expected", [
    ("every", ["click", "browse", "click"], [True, True, True]),
    ("purchase", ["click", "purchase", "browse"], [False, True, False]),
])
def test_emission_policies(policy, kinds, expected):
    events = [ev(i, kind=k, stage="order" if k == "purchase" else None) for i, k in enumerate(kinds)]
    _, outcomes, _ = run(events, Settings(rec_policy=policy))
    assert [o.recommendation is not None for o in outcomes] == expected
    assert all(o.applied for o in outcomes)


def test_debounce_emits_at_most_once_per_window():
    events = [ev(i, ts=T0 + ms) for i, ms in enumerate([0, 1000, 4000, 5000, 12000])]
    _, outcomes, _ = run(events, Settings(rec_policy="debounce", rec_debounce_ms=5000))
    assert [o.recommendation is not None for o in outcomes] == [True, False, False, True, True]


def test_profile_survives_json_round_trip_and_public_snapshot_has_no_dedupe_state():
    profile, _, _ = run([ev(1, category="c"), ev(2, item="b", kind="purchase", stage="order")])
    assert Profile.from_json(profile.to_json()).to_dict() == profile.to_dict()
    public = profile.to_dict(internal=False)
    assert "seen_event_ids" not in public
    internal_json, public_json = profile.snapshots()
    assert orjson.loads(internal_json) == profile.to_dict() and orjson.loads(public_json) == public
    jsonschema.validate(public, load_schema("profile"))
    jsonschema.validate(profile.to_dict(), load_schema("profile"))


def test_a_brand_new_item_is_recommended_by_co_visitation_once_its_epoch_is_applied():
    """Cold start of an item: no model knows it; co-visitation brings it to the next user of its
    neighbour, but only from the next item epoch on (item state by event time)."""
    settings = Settings(repeat_weight=0, category_weight=0, popularity_weight=0, trending_weight=0,
                        item_epoch_ms=60_000)
    index = InMemoryItemIndex(settings)
    feed = ItemFeed(settings, index)
    fan, other = new_profile("fan", settings), new_profile("other", settings)
    for i, item in enumerate(["known", "brand-new"]):
        event = ev(i, user="fan", item=item, ts=T0 + i * 1000)
        process(fan, event, index, settings, now_ms=T0)
        feed.add(event, 0, (T0 + i * 1000) // 60_000)
    same_epoch = ev(5, user="other", item="known", ts=T0 + 5000)
    feed.advance(same_epoch.ts // 60_000 - 1)
    listed = process(other, same_epoch, index, settings, now_ms=T0).recommendation["items"]
    assert "brand-new" not in [r["item_id"] for r in listed]
    next_epoch = ev(6, user="other", item="known", ts=T0 + 120_000)
    feed.add(same_epoch, 0, same_epoch.ts // 60_000)
    feed.advance(next_epoch.ts // 60_000 - 1)
    listed = process(other, next_epoch, index, settings, now_ms=T0).recommendation["items"]
    assert listed[0]["item_id"] == "brand-new"
    assert any("co-visited" in reason for reason in listed[0]["reasons"])


def test_items_that_came_next_in_other_sessions_are_recommended_with_the_reason():
    settings = Settings(popularity_weight=0.0, trending_weight=0.0, covis_weight=0.0, repeat_weight=0.0)
    index = InMemoryItemIndex(settings)
    run([ev(1, user="u0", item="a"), ev(2, user="u0", item="b"), ev(3, user="u0", item="c")], settings, index=index)
    _, outcomes, _ = run([ev(10, user="u1", item="a")], settings, index=index)
    items = outcomes[-1].recommendation["items"]
    # a -> b one step later, a -> c two: 2 * (1, 1/2) by the prior's rules weight
    assert [(i["item_id"], i["score"]) for i in items[:2]] == [("b", settings.rules_weight * 1.0),
                                                               ("c", pytest.approx(settings.rules_weight * 0.5,
                                                                                   rel=1e-5))]
    assert "often next after a" in items[0]["reasons"]


def test_the_ranker_sees_which_candidates_the_user_had_in_this_session_and_before():
    from stream_app.core.feature_rows import FEATURES, decode_features
    from stream_app.core.recommend import session_items
    settings = Settings(session_gap_ms=60_000)
    _, _, index = run([ev(0, user="u0", item="p"), ev(1, user="u0", item="q")], settings)  # popular, unseen by u1
    events = [ev(1, item="old", ts=T0), ev(2, item="x", ts=T0 + 120_000), ev(3, item="y", ts=T0 + 121_000)]
    profile, _, index = run(events, settings, index=index)
    assert list(session_items(profile, settings.session_gap_ms)) == ["y", "x"]  # "old" was another session
    learners = new_partition_learners(settings, 0)
    process(profile, ev(4, item="y", ts=T0 + 122_000), index, settings, now_ms=T0, learners=learners)
    rows = decode_features(profile.to_dict()["shown_features"], len(profile.shown))
    by_item = dict(zip(profile.shown, rows))
    assert by_item["old"][FEATURES.index("seen")] == 1.0 and by_item["old"][FEATURES.index("in_session")] == 0.0
    assert by_item["x"][FEATURES.index("seen")] == 1.0 and by_item["x"][FEATURES.index("in_session")] == 1.0
    unseen = [item for item in profile.shown if item not in ("old", "x", "y")]
    assert sorted(unseen) == ["p", "q"] and all(by_item[item][FEATURES.index("seen")] == 0.0 for item in unseen)


def test_every_feature_column_is_filled_on_a_synthetic_log():
    """Each feature the ranker learns from takes a non-zero value for some candidate (the ones a model
    feeds excepted when no such model is live): a column that is never filled teaches nothing, and a
    refactoring that drops one (as once happened to popular and trending) fails here."""
    import numpy as np

    from stream_app.core.ordering import rounds
    from stream_app.core.recommend import FEATURES, recommend
    from stream_app.evaluate.models import StreamAppModel
    from stream_app.partitioning import partition_of
    from stream_app.tools.synth import SynthConfig, generate

    log, _ = generate(SynthConfig(events=3000, seed=5))
    model = StreamAppModel(Settings(rec_policy="every"))
    rows = []
    for epoch, released in rounds(list(log), model.settings, partition_of):
        batch = [Event.from_dict(r.item) for r in released]
        model.begin_batch(batch, epoch)
        for event in batch:
            model.learn(event)
            ranker = model.learners_for(partition_of(event.user_id, model.settings.partitions)).ranker
            rows.append(recommend(model.profiles[event.user_id], event, model.index, model.settings, ranker,
                                  0.5).features)
    filled = np.abs(np.vstack(rows)).max(axis=0) > 0
    unfilled = {name for name, ok in zip(FEATURES, filled) if not ok}
    assert unfilled == {"encoder", "content", "content_last"}


def test_shown_rows_are_stored_sparse_and_rows_an_earlier_release_stored_dense_still_read():
    import base64

    import numpy as np

    from stream_app.core.feature_rows import N_FEATURES, decode_features, encode_rows, shown_matrix

    rows = np.zeros((50, N_FEATURES))
    rows[:, :5] = np.linspace(0.0, 1.0, 250).reshape(50, 5)  # a sixth non-zero; real lists hold a third
    rows[3, 7] = -0.25
    rows[4, 8] = 1e-9  # 0 in float16
    text = encode_rows(rows)
    # what the next event learns from: the rows a profile kept in memory, or their text once it was written
    rows[5, 9] = -1e-9  # -0.0 in float16, not written: read back as +0.0
    text = encode_rows(rows)
    assert shown_matrix(rows.astype(np.float16), None, 50).tobytes() == decode_features(text, 50).tobytes()
    assert shown_matrix(None, text, 50) is not None and shown_matrix(rows.astype(np.float16), None, 49) is None
    dense = base64.b64encode(rows.astype(np.float16).tobytes()).decode("ascii")  # as written before
    assert text.startswith("s:") and len(text) < len(dense) / 3
    for stored in (text, dense):
        assert np.array_equal(decode_features(stored, 50), rows.astype(np.float16).astype(np.float64))
    assert decode_features(text, 49) is None and decode_features(dense, 49) is None  # another layout
    empty = encode_rows(np.zeros((0, N_FEATURES)))
    assert decode_features(empty, 0).shape == (0, N_FEATURES)
    for broken in ("s:AAAA", "s:!!", "%%%", "s:" + text[2:-8], dense[:-4] + "AA=="):  # nothing learned, nothing raised
        assert decode_features(broken, 50) is None, broken


def test_new_events_sharing_one_timestamp_with_thousands_are_not_dropped_by_the_dedupe_floor():
    """A basket of more lines than seen_ids_max under one timestamp: forgetting must not cut that time in
    two (a floor just past it refused the basket's later lines, silently)."""
    settings = Settings(seen_ids_max=8)
    profile, outcomes, _ = run([ev(i, item=f"i{i % 5}", ts=T0) for i in range(1, 30)], settings)
    assert all(o.applied for o in outcomes) and profile.event_count == 29
    _, again, _ = run([ev(i, item=f"i{i % 5}", ts=T0) for i in range(1, 30)], settings, profile=profile)
    assert not any(o.applied for o in again)  # still told apart: every digest of the time is kept
    profile, outcomes, _ = run([ev(i, item="x", ts=T0) for i in range(1, 60)], settings)  # past 4x the cap
    assert profile.dedupe_floor == T0 + 1 and len(profile.seen_event_ids) <= 4 * settings.seen_ids_max + 2


def test_a_late_event_moves_first_seen_back_but_not_the_generation():
    settings = Settings()
    profile, index = new_profile("u", settings), InMemoryItemIndex(settings)
    process(profile, Event("e1", "u", "a", "click", 5000), index, settings, 0)
    process(profile, Event("e0", "u", "b", "click", 3000), index, settings, 0)  # late
    assert (profile.first_seen, profile.last_seen, profile.generation) == (3000, 5000, 5000)


def test_the_item_just_seen_is_not_similar_to_itself():
    from test_content import content_index

    from stream_app.core.recommend import FEATURES, recommend

    settings = Settings(ranker=False, covis_weight=0, repeat_weight=0, rules_weight=0, category_weight=0,
                        popularity_weight=0, trending_weight=0, content_weight=1.0)
    content, index, profile = content_index(), InMemoryItemIndex(settings), new_profile("u", settings)
    event = Event("e1", "u", "lantern-1", "click", 1000)
    process(profile, event, index, settings, 0, content=content)
    ranked = recommend(profile, event, index, settings, content=content)
    row = dict(zip(ranked.pool, ranked.features))["lantern-1"]
    assert row[FEATURES.index("content_last")] == 0.0
    assert ranked.items[0]["item_id"] != "lantern-1"


def test_the_repeat_feature_is_weighted_by_the_users_repeat_propensity():
    from stream_app.core.recommend import FEATURES, recommend

    settings = Settings(ranker=False)
    index, profile = InMemoryItemIndex(settings), new_profile("u", settings)
    for i, item in enumerate(["a", "b", "a"]):
        event = Event(f"e{i}", "u", item, "click", 1000 * (i + 1))
        process(profile, event, index, settings, 0)
    ranked = recommend(profile, event, index, settings, repeat_propensity=0.25)
    repeat, weighted = FEATURES.index("repeat"), FEATURES.index("repeat_x_propensity")
    assert ranked.features[:, repeat].max() > 0
    assert ranked.features[:, weighted].tolist() == pytest.approx((0.25 * ranked.features[:, repeat]).tolist())


def test_rules_and_co_visitation_weigh_each_anchor_by_its_recency_and_only_the_configured_anchors_count():
    from stream_app.core.recommend import _by_recency, recommend

    related = [{"x": 0.5, "y": 0.2}, {"x": 0.4}, {"z": 0.9}]  # the lists of the most recent anchor first
    assert _by_recency(related) == pytest.approx({"x": 0.5 + 0.4 / 2, "y": 0.2, "z": 0.9 / 3})

    class Index(InMemoryItemIndex):  # each session item is followed by an item of its own
        def followers(self, item_id):
            return {f"after-{item_id}": 1.0}

    def followers_shown(anchors: int) -> set:
        settings = Settings(rules_anchors=anchors, ranker=False)
        index, profile = Index(settings), new_profile("u", settings)
        for n, item in enumerate(["a", "b", "c", "d"]):
            event = Event(f"e{n}", "u", item, "click", 1000 * (n + 1))
            process(profile, event, index, settings, 0)
        return {i["item_id"] for i in recommend(profile, event, index, settings).items if i["item_id"].startswith("after-")}

    assert followers_shown(2) == {"after-d", "after-c"} and followers_shown(4) == {f"after-{i}" for i in "abcd"}


def test_every_shown_item_the_user_had_says_so_not_only_the_strongest_affinities():
    """The reason came from the repeat source alone (the user's repeat_candidates strongest items): an item the
    user had just browsed, shown for co-visitation, went without it."""
    settings = Settings(repeat_candidates=1, covis_prev_items=1)
    index = InMemoryItemIndex(settings)
    for user in ("x", "y"):  # others went from c to a
        run([ev(1, user=user, item="c"), ev(2, user=user, item="a")], settings, index=index)
    _, outcomes, _ = run([ev(10, item="a", ts=T0), ev(11, item="b", ts=T0 + 1000), ev(12, item="c", ts=T0 + 2000)],
                         settings, index=index)
    reasons = {i["item_id"]: i["reasons"] for i in outcomes[-1].recommendation["items"]}
    assert "co-visited with c" in reasons["a"] and "clicked before" in reasons["a"]  # not among the 1 strongest
    assert "clicked before" in reasons["b"]


def test_events_on_one_item_share_one_item_id_object():
    """The item state holds an item's id in every neighbour and follower list it is in: one string for all of them
    (interned when the event is read), not one per event read (each record's JSON gives its own)."""
    first, second = (Event.from_dict(orjson.loads(orjson.dumps(ev(i, item="item-7").to_dict()))) for i in (1, 2))
    assert first.item_id == second.item_id == "item-7" and first.item_id is second.item_id


def test_a_profile_for_people_counts_one_event_in_the_singular():
    from stream_app.tools.demo import describe_user

    def shown(events):
        profile, _, _ = run(events)
        stored = profile.to_dict(internal=False)
        return describe_user({"event_count": profile.event_count, "profile_version": profile.version,
                              "updated_at": T0, "profile": stored}, None)[0]

    assert shown([ev(1)]).startswith("user u1: 1 event (1 click), profile v1")  # it said "1 events"
    assert shown([ev(1), ev(2, item="b")]).startswith("user u1: 2 events (2 click), profile v2")
    # the purchases' stages split the purchases: "2 purchase; 2 order" read as 4 events (helper-137)
    assert shown([ev(1, kind="purchase", stage="order"), ev(2, kind="purchase", stage="cart")]).startswith(
        "user u1: 2 events (2 purchase; purchase stages given: 1 cart, 1 order), profile v2")


def test_a_profile_for_people_without_likes_says_what_item_text_takes():
    from stream_app.tools.demo import describe_user

    profile, _, _ = run([ev(1)])
    stored = {"event_count": 1, "profile_version": 1, "updated_at": T0, "profile": profile.to_dict(internal=False)}
    said = [line for line in describe_user(stored, None) if line.startswith("  likes")]
    assert said == ["  likes: none in words (they come from a content model served with the catalogue's titles, once "
                    "the user has had items with text: docs/item-text.md)"]


def test_items_named_by_titles_with_commas_are_told_apart():
    from stream_app.tools.demo import describe_user

    profile, _, _ = run([ev(1, item="I5"), ev(2, item="I2")])
    stored = {"event_count": 2, "profile_version": 2, "updated_at": T0, "profile": profile.to_dict(internal=False)}
    lines = describe_user(stored, None, titles={"I5": "TEA POT, WHITE", "I2": "MUG"})
    assert 'most recent items: I2 "MUG"; I5 "TEA POT, WHITE"' in lines[2]
    # ids and titles both hold spaces: the title in quotes tells them apart (a new user's walkthrough); none, none shown
    assert describe_user(stored, None, titles={"I5": "", "I2": "MUG"})[2] == '  most recent items: I2 "MUG"; I5'


def test_a_profile_for_people_names_each_recent_item_once():
    """A user who looked at one item three times and another once has two most recent items, not "a, a, a, b"."""
    from stream_app.tools.demo import describe_user

    profile, _, _ = run([ev(1, item="b"), ev(2, item="a"), ev(3, item="c"), ev(4, item="a"), ev(5, item="a")])
    stored = {"event_count": 5, "profile_version": 5, "updated_at": T0, "profile": profile.to_dict(internal=False)}
    assert describe_user(stored, None, shown=2)[2] == "  most recent items: a, c"
    assert describe_user(stored, None)[2] == "  most recent items: a, c, b"


def test_with_the_ranker_off_each_event_is_judged_against_the_list_shown_after_the_one_before():
    """A review: with the ranker off (no learners) the shown list was neither set nor cleared, so a profile kept the
    last list a ranker-on worker showed and every later event was judged (`shown_hits`, the live hit rate) against
    it; a profile that never had a ranker was never judged."""
    from stream_app.core.process import shown_hits

    settings = Settings()
    index = InMemoryItemIndex(settings)
    index.begin_batch()
    profile = new_profile("u1", settings)
    process(profile, ev(0, item="a"), index, settings, T0, new_partition_learners(settings, 0))  # ranker on
    assert profile.shown == ["a"]
    for i, item in enumerate(["b", "c", "d"], 1):  # then off
        shown = [entry["item_id"] for entry in process(profile, ev(i, item=item), index, settings, T0).recommendation["items"]]
        assert profile.shown[:settings.top_k] == shown and profile.shown_rows is None  # this event's list, no rows
    assert shown_hits(profile, ev(9, item="d"), settings.top_k)[0] is True
    assert shown_hits(profile, ev(9, item="z"), settings.top_k)[0] is False
    restored = Profile.from_json(profile.to_json())
    assert restored.shown == profile.shown and restored.shown_rows is None


def test_a_basket_of_thousands_under_one_timestamp_sorts_the_digests_once_a_quarter_cap():
    """A review: while no time could be cut (one basket over 1.25 times seen_ids_max under one timestamp), every
    further line sorted every digest again: 8,000 lines took 2.1 s against 0.01 s for 2,000."""
    import sys

    from stream_app.core.profile import apply_event

    sorts = []

    def count_sorts(frame, what, arg):  # every call of sorted() or list.sort, however the code spells it
        if what == "c_call" and getattr(arg, "__name__", "") in ("sorted", "sort"):
            sorts.append(1)

    settings = Settings(seen_ids_max=64)
    profile = new_profile("u1", settings)
    sys.setprofile(count_sorts)
    try:
        for i in range(1000):
            event = ev(i, item=f"i{i % 7}", ts=T0)
            apply_event(profile, event, event_digest(event.event_id), settings)
    finally:
        sys.setprofile(None)
    assert 0 < len(sorts) <= 1000 // (64 // 4)  # once per 16 new digests at most, not once per line
    assert len(profile.seen_event_ids) <= 4 * 64 + 64 // 4 and profile.dedupe_floor == T0 + 1


def test_an_item_is_never_said_to_come_often_next_after_itself():
    """A review: a session that saw an item twice (a browse, then a click) made the rule "a is followed by a", and a
    list after `a` gave `a` the reason "often next after a"."""
    settings = Settings()
    index = InMemoryItemIndex(settings)
    run([ev(1, user="u0", item="a", kind="browse"), ev(2, user="u0", item="a"), ev(3, user="u0", item="b")], settings,
        index=index)
    _, outcomes, _ = run([ev(10, user="u1", item="a")], settings, index=index)
    reasons = {i["item_id"]: i["reasons"] for i in outcomes[-1].recommendation["items"]}
    assert "often next after a" in reasons["b"]
    assert not [r for r in reasons["a"] if r.startswith("often next after")], reasons["a"]


def test_an_item_the_user_had_says_how_by_the_strongest_of_the_users_recent_events_on_it():
    """On a purchase log every item was bought: "viewed before" told shoppers they had looked at what they bought."""
    settings = Settings(popularity_weight=0.0, trending_weight=0.0, recent_max=5)
    events = [ev(1, item="kept", kind="purchase"), ev(2, item="looked", kind="browse"), ev(3, item="kept", kind="browse"),
              ev(4, item="tried", kind="browse"), ev(5, item="tried", kind="click"), ev(6, item="old", kind="purchase")]
    events += [ev(7 + i, item=item, kind="browse") for i, item in enumerate("xyzwv")]
    _, outcomes, _ = run(events[:5], settings)
    reasons = {i["item_id"]: i["reasons"] for i in outcomes[-1].recommendation["items"]}
    assert "bought before" in reasons["kept"]  # browsed again after: the purchase is the stronger
    assert "viewed before" in reasons["looked"] and "clicked before" in reasons["tried"]
    _, outcomes, _ = run(events, settings)  # "old" has left the 5 recent events, not the decayed affinity
    reasons = {i["item_id"]: i["reasons"] for i in outcomes[-1].recommendation["items"]}
    assert "had before" in reasons["old"] and "viewed before" in reasons["z"]
    # a shop whose purchases include cart stages: `recent` keeps no stage, so a purchase may be in the basket still
    # (on the shop's log of orders every purchase said "in your basket before": helper-137)
    carted = [*events[:4], ev(5, item="tried", kind="purchase", stage="cart")]
    _, outcomes, _ = run(carted, settings)
    reasons = {i["item_id"]: i["reasons"] for i in outcomes[-1].recommendation["items"]}
    assert "in your basket or bought before" in reasons["kept"] and "bought before" not in reasons["kept"]
