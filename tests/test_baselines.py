"""The session-based baselines on tiny hand-made logs; every expected list is worked out by hand in
the comments. A `None` in a batch list is a batch boundary (end_batch, then begin_batch)."""

import doctest

import numpy as np

from stream_app.core.content import ContentIndex
from stream_app.core.events import Event
from stream_app.evaluate import rules_then_text, session_knn
from stream_app.evaluate.baselines import CoVisitationUnseen, RecentThenCoVisitation, SequentialRules
from stream_app.evaluate.rules_then_text import SequentialRulesThenText
from stream_app.evaluate.session_knn import SKNN, VSKNN, rates_alone, share_searches

MIN = 60_000


def ev(user, item, ts, session=None):
    return Event(f"{user}-{ts}-{item}", user, item, "click", ts, session_id=session)


def run(model, batches):
    """Every list the model returns, batch by batch."""
    lists = []
    for batch in batches:
        model.begin_batch(batch)
        lists.append([model.learn(e) for e in batch])
        model.end_batch()
    return lists


# Batch 1: sessions a1 = x y z (user A), b1 = x w (user B), c1 = x (user C).
BATCH_1 = [ev("A", "x", 1, "a1"), ev("A", "y", 2, "a1"), ev("A", "z", 3, "a1"),
           ev("B", "x", 4, "b1"), ev("B", "w", 5, "b1"), ev("C", "x", 6, "c1")]
# Batch 2: C goes on with y in c1; D starts d1 with w, then x.
BATCH_2 = [ev("C", "y", 7, "c1"), ev("D", "w", 8, "d1"), ev("D", "x", 9, "d1")]


def test_covisitation_unseen_excludes_what_the_user_had_and_waits_for_the_batch():
    lists = run(CoVisitationUnseen(k=10, recent=2), [BATCH_1, BATCH_2])
    # batch 1: other users' sessions are not visible before end_batch
    assert lists[0] == [[]] * 6
    # session counts after batch 1: x~y 1, x~z 1, x~w 1, y~z 1
    # C y: recent [y, x]: x 1, z 1+1, y 1, w 1; x and y seen -> z (2), w (1)
    # D w: recent [w]: x (1)
    # D x: recent [x, w]: y 1, z 1, w 1 (from x), x 1 (from w); w and x seen (w from this batch) -> y, z
    assert lists[1] == [["z", "w"], ["x"], ["y", "z"]]


def test_recent_then_covisitation():
    lists = run(RecentThenCoVisitation(k=4, recent=2), [BATCH_1, BATCH_2])
    assert lists[0] == [["x"], ["y", "x"], ["z", "y"], ["x"], ["w", "x"], ["x"]]
    # C y: [y, x], then z (2), w (1); D w: [w], then x; D x: [x, w], then y, z (1 each, by id)
    assert lists[1] == [["y", "x", "z", "w"], ["w", "x"], ["x", "w", "y", "z"]]
    assert run(RecentThenCoVisitation(k=3, recent=2), [BATCH_1, BATCH_2])[1][0] == ["y", "x", "z"]


def test_sknn_uses_past_sessions_after_the_batch_and_not_its_own():
    # Batch 2, C y: the session {x, y}; neighbours a1 (cos 2/sqrt(6) = 0.816) and b1 (1/sqrt(4) = 0.5);
    # c1 is C's own session (in the pool as {x}, cos 0.707): excluded, else it would push b1 out.
    # Scores: x 1.316, y 0.816, z 0.816, w 0.5.
    # D w: {w}: only b1 -> x, w (0.707 each); D x: {w, x}: a1 1/sqrt(6), b1 2/sqrt(4), c1 1/sqrt(2):
    # b1 (1.0) and c1 (0.707) -> x 1.707, w 1.0
    lists = run(SKNN(k=10, neighbours=2, sample_size=10), [BATCH_1, BATCH_2])
    assert lists[0] == [[]] * 6
    assert lists[1] == [["x", "y", "z", "w"], ["w", "x"], ["x", "w"]]


def test_sknn_samples_the_most_recent_sessions_sharing_an_item():
    # after batch 1, E x: sessions with x, most recent first: c1 {x}, b1 {x, w}, a1 {x, y, z}
    def lists(sample_size):
        return run(SKNN(k=10, neighbours=3, sample_size=sample_size), [BATCH_1, [ev("E", "x", 10)]])[1][0]

    assert lists(3) == ["x", "w", "y", "z"]  # x 1+0.707+0.577, w 0.707, y and z 0.577
    assert lists(2) == ["x", "w"]  # a1 is not in the sample
    assert lists(1) == ["x"]


# Batch 1: p1 = a d, q1 = c e, and three sessions with e only; batch 2: R's session a, c.
VS_BATCHES = [[ev("P", "a", 1, "p1"), ev("P", "d", 2, "p1"), ev("Q", "c", 3, "q1"), ev("Q", "e", 4, "q1"),
               ev("T", "e", 5, "t1"), ev("U", "e", 6, "t2"), ev("V", "e", 7, "t3")],
              [ev("R", "a", 10, "r1"), ev("R", "c", 11, "r1")]]


def test_vsknn_weights_later_events_and_rare_items():
    # R's session [a, c]: weights a 1/2, c 2/2. Dot products: p1 {a, d} 0.5, q1 {c, e} 1.0.
    # Without IDF: c 1.0, e 1.0, a 0.5, d 0.5.
    assert run(VSKNN(k=10, idf_weight=0.0, score_decay=False), VS_BATCHES)[1][1] == ["c", "e", "a", "d"]
    # With IDF (5 sessions in the pool; e in 4, the others in 1): c 1 * (1 + ln 5) = 2.61,
    # a and d 0.5 * (1 + ln 5) = 1.30, e 1 * (1 + ln 1.25) = 1.22
    assert run(VSKNN(k=10, idf_weight=1.0, score_decay=False), VS_BATCHES)[1][1] == ["c", "a", "d", "e"]
    # SKNN (binary cosine) sees no order: p1 and q1 both 1/sqrt(2*2) = 0.5, all four items tie
    assert run(SKNN(k=10), VS_BATCHES)[1][1] == ["a", "c", "d", "e"]
    # R's first event (batch 2, session [a]): only p1 shares a
    assert run(VSKNN(k=10), VS_BATCHES)[1][0] == ["a", "d"]
    # a again: [a, c, a] weighs a 3/3 (its last position), c 2/3: p1 1.0, q1 0.667
    again = [VS_BATCHES[0], [*VS_BATCHES[1], ev("R", "a", 12, "r1")]]
    assert run(VSKNN(k=10, idf_weight=0.0, score_decay=False), again)[1][2] == ["a", "d", "c", "e"]
    # session-rec's weighting_score "div": a neighbour's share x 1 / steps back to the latest event it shares.
    # [a, c]: q1 shares c (1 step back) 1.0 x 1; p1 shares a (2 steps back) 0.5 x 1/2 = 0.25.
    # IDF on: c 2.61, e 1.22, a and d 0.25 x 2.61 = 0.65
    assert run(VSKNN(k=10, idf_weight=1.0), VS_BATCHES)[1][1] == ["c", "e", "a", "d"]


def test_sequential_rules_weight_by_gap_within_steps():
    batches = [[ev("A", "x", 1, "a1"), ev("A", "y", 2, "a1"), ev("A", "z", 3, "a1"), ev("A", "x", 4, "a1"),
                ev("B", "x", 5, "b1"), ev("B", "w", 6, "b1")],
               [ev("C", "x", 7, "c1"), ev("C", "y", 8, "c1")]]
    # steps 2: a1 gives x->y 1, y->z 1, x->z 1/2, z->x 1, y->x 1/2; b1 gives x->w 1
    lists = run(SequentialRules(k=10, steps=2), batches)
    assert lists[0] == [[], [], [], [], [], []]  # rules become visible at the batch boundary
    assert lists[1] == [["w", "y", "z"], ["z", "x"]]
    # steps 1: no x->z and no y->x
    assert run(SequentialRules(k=10, steps=1), batches)[1] == [["w", "y"], ["z"]]
    assert run(SequentialRules(k=2, steps=2), batches)[1][0] == ["w", "y"]


POPULAR = ["x", "w", "y", "z"]


def test_then_popular_fills_a_short_list_and_session_items_out_leaves_the_running_session_out():
    batches = [[ev("A", "x", 1, "a1"), ev("A", "y", 2, "a1"), ev("A", "z", 3, "a1"), ev("A", "x", 4, "a1"),
                ev("B", "x", 5, "b1"), ev("B", "w", 6, "b1")],
               [ev("C", "x", 7, "c1"), ev("C", "y", 8, "c1")]]
    # rules (steps 2) as in the test above; the popular items: x, w, y, z
    filled = run(SequentialRules(k=4, steps=2, then_popular=lambda: POPULAR), batches)
    assert filled[0] == [POPULAR] * 6  # no rule before the first batch boundary: the popular items alone
    # C x: the rules' w, y, z, then x; C y: the rules' z, x, then w and y
    assert filled[1] == [["w", "y", "z", "x"], ["z", "x", "w", "y"]]
    out = run(SequentialRules(k=4, steps=2, then_popular=lambda: POPULAR, session_items_out=True), batches)
    # A x, y, z, x: the popular items but the session's; B x: w, y, z; B w: y, z
    assert out[0] == [["w", "y", "z"], ["w", "z"], ["w"], ["w"], ["w", "y", "z"], ["y", "z"]]
    # C x: session [x]: the rules' w, y, z, and no x; C y: session [x, y]: the rules' z (x out), then w
    assert out[1] == [["w", "y", "z"], ["z", "w"]]
    # the paper's algorithm is the same without the options
    assert run(SequentialRules(k=4, steps=2), batches)[1] == [["w", "y", "z"], ["z", "x"]]


def test_the_unseen_baseline_fills_with_unseen_popular_items_only():
    # C y had x and y: [z, w] stays; D w: [x], then y and z; D x had w and x: [y, z]
    lists = run(CoVisitationUnseen(k=3, recent=2, then_popular=lambda: POPULAR), [BATCH_1, BATCH_2])
    assert lists[1] == [["z", "w"], ["x", "y", "z"], ["y", "z"]]


def test_sknn_with_session_items_out_ranks_the_rest():
    # as in test_sknn_uses_past_sessions_after_the_batch_and_not_its_own: C y scores x, y, z, w; x and y
    # are C's session's; D w: x and w score, w is D's; D x: x and w are D's, nothing else scores
    model = SKNN(k=10, neighbours=2, sample_size=10, session_items_out=True)
    assert run(model, [BATCH_1, BATCH_2])[1] == [["z", "w"], ["x"], []]
    model = SKNN(k=10, neighbours=2, sample_size=10, session_items_out=True, then_popular=lambda: POPULAR)
    assert run(model, [BATCH_1, BATCH_2])[1] == [["z", "w"], ["x", "y", "z"], ["y", "z"]]
    assert model.name == "SKNN (k=2, sample 10), session's items out, then popular"


def test_seen_items_out_leaves_out_what_the_user_had_in_earlier_sessions_too():
    """On a log where no user has an item twice the hybrid's ranker learns to leave the user's items out; a baseline
    that could only leave the running session's out was held below what such a log lets it reach."""
    # batch 1 as BATCH_1; batch 2: C starts a new session c2 with y (C had x in c1), D as in BATCH_2
    batch_2 = [ev("C", "y", 7, "c2"), ev("D", "w", 8, "d1"), ev("D", "x", 9, "d1")]
    # SKNN, C y in c2 = [y]: a1 (x y z) shares y, cosine 1/sqrt(3); it scores x, y, z. Session's items out: x, z;
    # the user's seen items out: z (C had x in c1 and y now); D's lists as with the session's items out
    session_out = SKNN(k=10, neighbours=2, sample_size=10, session_items_out=True)
    assert run(session_out, [BATCH_1, batch_2])[1][0] == ["x", "z"]
    seen_out = SKNN(k=10, neighbours=2, sample_size=10, seen_items_out=True, then_popular=lambda: POPULAR)
    assert run(seen_out, [BATCH_1, batch_2])[1] == [["z", "w"], ["x", "y", "z"], ["y", "z"]]
    assert seen_out.name == "SKNN (k=2, sample 10), user's seen items out, then popular"
    # sequential rules (steps 2) of batch 1: x -> y (1), z (1/2), w (1); C y: y -> z (1), and C had x
    rules = SequentialRules(k=4, steps=2, seen_items_out=True, then_popular=lambda: POPULAR)
    assert run(rules, [BATCH_1, batch_2])[1][0] == ["z", "w"]  # the rule's z, then the popular w (not x, not y)
    assert run(SequentialRules(k=4, steps=2, session_items_out=True, then_popular=lambda: POPULAR),
               [BATCH_1, batch_2])[1][0] == ["z", "x", "w"]


def test_reminders_put_the_running_sessions_last_items_first_then_the_list_without_them():
    """The session-rec framework's reminders: on a log where users come back to what they just had, a kNN baseline
    without them was held below what the literature's option reaches (helper-144's review)."""
    # as in test_sknn_with_session_items_out_ranks_the_rest: C y scores x, y, z, w (x and y are C's session's, the
    # last y); D w: x and w score; D x: the session's last 2 distinct items are x, w, and nothing else scores
    model = SKNN(k=3, neighbours=2, sample_size=10, reminders=2, then_popular=lambda: POPULAR)
    lists = run(model, [BATCH_1, BATCH_2])[1]
    assert lists[0][:2] == ["y", "x"] and len(lists[0]) == 3 and lists[0][2] in ("z", "w")
    assert lists[1][:1] == ["w"] and lists[2][:2] == ["x", "w"]
    assert all(len(listed) == 3 and len(set(listed)) == 3 for listed in lists)
    assert model.name == "SKNN (k=2, sample 10), session's last 2 first, then popular"


def test_sequential_rules_read_a_session_id_as_one_session_across_gaps_as_the_hybrid_does():
    batch_1 = [ev("A", "x", 0, "s1"), ev("A", "y", 90 * MIN, "s1")]  # one session, a gap inside
    batch_2 = [ev("B", "x", 100 * MIN, "s2")]
    assert run(SequentialRules(k=10), [batch_1, batch_2])[1] == [["y"]]


def test_sessions_without_ids_split_on_the_gap():
    # A: x, y 10 minutes later, z 30 minutes after y: a new session with the default gap
    batch_1 = [ev("A", "x", 0), ev("A", "y", 10 * MIN), ev("A", "z", 40 * MIN)]
    batch_2 = [ev("B", "y", 50 * MIN), ev("B", "x", 51 * MIN)]
    assert run(SequentialRules(k=10), [batch_1, batch_2])[1] == [[], ["y"]]
    assert run(SequentialRules(k=10, session_gap_ms=60 * MIN), [batch_1, batch_2])[1] == [["z"], ["y", "z"]]
    # one user's sessions are separate sessions in the pool: A's {x, y} and {z}
    assert run(SKNN(k=10), [batch_1, [ev("B", "x", 50 * MIN)]])[1][0] == ["x", "y"]


def test_sequential_rules_then_the_nearest_texts_fill_a_short_list():
    # unit vectors; cosines: y~z 0.96, x~y 0.8, y~w 0.6, z~w 0.8, x~v 0.96, w~v 0.28, x~w 0; v listed at ts 8
    text = ContentIndex("v", ["x", "y", "z", "w", "v"], list("xyzwv"),
                        np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1], [0.96, 0.28]], np.float32),
                        listed_at=[None, None, None, None, 8])
    lists = run(SequentialRulesThenText(text, k=3), [BATCH_1, BATCH_2])
    # batch 1: no rules yet; A x: the texts nearest x by ts 1 (v not listed yet): y, z, w
    assert lists[0][0] == ["y", "z", "w"]
    # rules after batch 1 (a1 = x y z, b1 = x w): x->y 1, x->w 1, x->z 1/2, y->z 1
    # C y: rules [z], then the nearest texts of y but z: x (0.8), w (0.6)
    # D w: no rules; nearest w by ts 8, v listed then: z (0.8), y (0.6), v (0.28)
    # D x: the rules fill the list: w, y (1 each, by id), z
    assert lists[1] == [["z", "x", "w"], ["z", "y", "v"], ["w", "y", "z"]]
    # the rules' lists are the rules' own where they hold k
    assert run(SequentialRules(k=3), [BATCH_1, BATCH_2])[1][2] == ["w", "y", "z"]
    result = doctest.testmod(rules_then_text)
    assert result.attempted > 0 and result.failed == 0


def test_names_are_distinct():
    models = [CoVisitationUnseen(), RecentThenCoVisitation(), SKNN(), VSKNN(), SequentialRules(),
              SequentialRulesThenText(ContentIndex("v", [], [], np.zeros((0, 2), np.float32))),
              SequentialRules(then_popular=list), SequentialRules(then_popular=list, session_items_out=True),
              SKNN(reminders=3), VSKNN(reminders=3)]
    assert len({m.name for m in models}) == 10


def knn_rows():
    """The twelve kNN rows of the full pass: SKNN and V-SKNN (IDF off and on), each filled, session's items out,
    user's seen items out and with reminders."""
    options = [{}, {"session_items_out": True}, {"seen_items_out": True}, {"reminders": 3}]
    return [knn(k=10, neighbours=5, sample_size=20, then_popular=lambda: ["p", "q"], **option) for option in options
            for knn in (SKNN, lambda **o: VSKNN(idf_weight=0.0, **o), lambda **o: VSKNN(idf_weight=1.0, **o))]


def test_rows_sharing_a_search_list_what_each_lists_with_its_own():
    # a stream where sessions overlap a lot: 40 users over 30 items, sessions cut by gaps, many batches
    rng = np.random.default_rng(3)
    batches, ts = [], 0
    for _ in range(30):
        batch = []
        for _ in range(20):
            ts += int(rng.integers(1, 20)) * MIN
            batch.append(Event(f"e{ts}", f"u{rng.integers(40)}", f"i{rng.integers(30)}", "click", ts))
        batches.append(batch)
    alone = [run(row, batches) for row in knn_rows()]
    shared = knn_rows()
    share_searches(shared)
    assert len({id(row.search) for row in shared}) == 2  # one search per method
    together = [[[] for _ in batches] for _ in shared]
    for b, batch in enumerate(batches):  # as the pass runs them: each event to every row in turn
        for row in shared:
            row.begin_batch(batch)
        for event in batch:
            for lists, row in zip(together, shared):
                lists[b].append(row.learn(event))
        for row in shared:
            row.end_batch()
    assert together == alone
    assert sum(listed != alone[0][b][e] for row in alone[1:] for b, lists in enumerate(row)
               for e, listed in enumerate(lists)) > 100  # the options give different lists: the test tells them apart


def test_a_knn_row_whose_class_keeps_a_session_id_across_gaps_has_a_search_that_does():
    class OneSessionPerId(SKNN):
        gap_splits_sessions = False  # as sequential rules read a log's session_id

    rows = [OneSessionPerId(k=5), SKNN(k=5)]
    share_searches(rows)
    assert rows[0].search is not rows[1].search  # the key tells them apart
    for row in rows:
        for n, (item, ts) in enumerate([("x", 0), ("y", 120 * MIN)]):  # one session_id, a 2 h gap inside
            row.learn(Event(f"e{n}", "a", item, "click", ts, session_id="s1"))
        row.end_batch()
    assert [sorted(map(sorted, row.search._pool.values())) for row in rows] == [[["x", "y"]], [["x"], ["y"]]]


def test_a_row_sharing_a_search_shows_the_rate_it_would_have_alone():
    rows = [VSKNN(idf_weight=0.0), VSKNN(idf_weight=1.0), SKNN()]
    share_searches(rows)
    rows[0].search.seconds = 2.0  # the first asks first: its time holds the search's
    rows[2].search.seconds = 3.0  # SKNN's own search: its row's time holds it already
    rates = {row.name: {"events_per_s": rate} for row, rate in zip(rows, (100.0, 1000.0, 50.0))}
    rates_alone(rows, rates, 1000)
    # 1,000 events: the second row spent 1 s ranking, plus the search's 2 s
    assert [rates[row.name]["events_per_s"] for row in rows] == [100.0, 1000 / 3, 50.0]


def test_the_knn_rows_docstring_example_runs():
    result = doctest.testmod(session_knn)
    assert result.attempted > 0 and result.failed == 0
