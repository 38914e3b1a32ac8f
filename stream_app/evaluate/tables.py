"""The text tables `stream-app evaluate` prints: the scoreboard of every model, and the via-Kafka run
beside the in-process pass."""

from __future__ import annotations

from typing import Any

from ..logs import plural
from ..serving.registry import validation_said
from ..tools.log_checks import skipped_said
from .figures import rate_said, utc_said
from .metrics import COLD_START, truth_unmatched
from .via_kafka import compare_to_best


def _left_out(result: dict[str, Any], via_kafka: bool) -> list[str]:
    """The events a worker would not apply: refused for their time or size, or repeating an earlier event's id
    (`via_kafka`: that pass sends none of the refused ones; a replay would, and the workers dead-letter them)."""
    lines, fate = [], "which were not sent" if via_kafka else "which the workers dead-letter"
    if result.get("timestamp_out_of_range"):
        lines.append(f"left out: {plural(result['timestamp_out_of_range'], 'event')} outside the accepted time window "
                     f"(STREAM_APP_MAX_FUTURE_MS, STREAM_APP_MAX_AGE_MS around now), {fate}")
    if result.get("payload_too_large"):
        lines.append(f"left out: {plural(result['payload_too_large'], 'event')} over STREAM_APP_MAX_PAYLOAD_BYTES as "
                     f"JSON, {fate}")
    if result.get("repeated_event_ids"):
        lines.append(f"repeated: {result['repeated_event_ids']:,} of the events have the event_id of an earlier one "
                     "of their user: a worker applies an id once, so they teach nothing and are not judged")
    return lines


def not_evaluated_said(result: dict[str, Any], via_kafka: bool = False) -> list[str]:
    """The lines of the log no pass judged (`tools.line_rejections.not_evaluated`'s counts), in words (`via_kafka`: that pass
    sends none of them)."""
    lines, fate = [], "not sent, not evaluated" if via_kafka else "not evaluated"
    cut = (f"; counted over the whole file, of which --limit evaluated the first {result['events']:,} events in time"
           if result.get("line_counts_include_beyond_limit") else "")
    if result.get("skipped_lines", {}).get("skipped"):
        lines.append(f"{skipped_said(result['skipped_lines'])} ({fate}{cut})")
    if result.get("rejected_lines"):
        first_said = f", the first as {result['first_rejection']}" if result.get("first_rejection") else ""
        lines_of, parts = result["rejected_lines"], result.get("rejections", result["rejected_lines"])
        what = (f"{plural(lines_of, 'line')} of the log that cannot be read as events"
                if parts == lines_of and result.get("format") != "otto" else
                f"{plural(parts, 'record')} of {plural(lines_of, 'line')} of "
                "the log that cannot be read as events (a whole line, or one event of a session line whose other events "
                "were read)")
        lines.append(f"rejected: {what} ({fate}{cut}){first_said}; `stream-app replay` sends them to the dead-letter "
                     "topic, where `stream-app dead-letters` shows them with their reasons")
        reasons = result.get("rejections_by_reason", {})
        if len(reasons) > 1:  # the first rejection says one kind only
            lines.append("rejected by reason: " + "; ".join(f"{reason} {found['count']:,}, the first as {found['first']}"
                                                            for reason, found in reasons.items()))
        # of the records read, refused or not; an OTTO line is a session of many events, one record when rejected
        # whole: the sessions rejected whole against every session read (one with a bad event among good ones was read)
        read = parts + result["events"] + result.get("timestamp_out_of_range", 0) + result.get("payload_too_large", 0)
        whole = result.get("rejected_sessions", 0) if result.get("format") == "otto" else 0
        sessions = whole + result.get("users", result.get("in_process", {}).get("users", 0))
        share, what = max((parts / read if read else 0.0, "events"), (whole / sessions if sessions else 0.0, "sessions"))
        if share >= 0.1 and not cut:  # a figure over what is left of a log is easy to take for the log's
            lines.append(f"warning: {share:.0%} of the {what} read were rejected: the figures are over the rest only; "
                         "fix the lines (their reasons, above) and evaluate again")
    return lines + _left_out(result, via_kafka)


#: What the events/s column holds (the text table's header and the HTML report say it)
RATES_SAID = ("events/s: each model's alone, its own time in the pass; -: a row that ranks the stream-app row's "
              "candidates, whose time is that row's")
NO_VARIANTS_SAID = "--no-variants: the stream-app row's variants (a setting changed or a model left out) were not run"


def table(result: dict[str, Any]) -> str:
    k = result["k"]
    types = sorted({t for m in result["models"].values() for t in m["by_type"]})
    width = max(32, *(len(name) for name in result["models"]))
    type_heads = {t: f"R@{k} {t}" for t in types}
    type_width = {t: max(12, len(head)) for t, head in type_heads.items()}
    head = f"{'model':<{width}} {'Recall@' + str(k):>9} {'MRR@' + str(k):>8} {'NDCG@' + str(k):>8} " + \
        " ".join(f"{type_heads[t]:>{type_width[t]}}" for t in types) + f" {'R@' + str(k) + ' cold':>11}" + \
        f" {'coverage':>9} {'pop.pct':>8} {'events/s':>9}"
    lines = [f"{result['events']:,} events, {result['users']:,} users, {result['items']:,} items; "
             f"batches of {result['batch']}; {rate_said(result['events_per_s'])} events/s for all models together"
             f"{processes_said(result.get('processes'))} ({RATES_SAID})",
             *facts(result), head, "-" * len(head)]
    for name, m in result["models"].items():
        per_type = " ".join(f"{m['by_type'].get(t, {}).get(f'recall@{k}', 0.0):>{type_width[t]}.4f}" for t in types)
        lines.append(f"{name:<{width}} {m[f'recall@{k}']:>9.4f} {m[f'mrr@{k}']:>8.4f} {m[f'ndcg@{k}']:>8.4f} "
                     f"{per_type} {m['cold_start'][f'recall@{k}']:>11.4f} "
                     f"{m['coverage']:>9.3f} {m['popularity_percentile']:>8.3f} {rate_said(m.get('events_per_s')):>9}")
    return "\n".join(lines + footnotes(result) + _accuracy_lines(result.get("profile_accuracy"), width))


def processes_said(processes: dict[str, Any] | None) -> str:
    return f" in {processes['count']} processes" if processes else ""


def facts(result: dict[str, Any]) -> list[str]:
    """What the table says above its rows (the HTML report too): what was judged, the models beside the log, the
    lines and events not evaluated, the cold targets and the reachable ceiling."""
    first = next(iter(result["models"].values()), None)
    how = ""
    if result.get("judged_from_ts") is not None:
        because = "; ".join(result.get("judged_from_because") or ["the encoder trained on the earlier part of this log"])
        how = f" from {utc_said(result['judged_from_ts'])} on ({because}; every model still learns from all of it)"
    lines = judged_said(first["judged"] if first else 0, how, asked=_none_applied(result) or "is --limit too small? "
                        "with --encoder, only events after its training cutoff are judged")
    lines += _models_beside(result)
    lines += tuning_said(result.get("tuning"))
    lines += not_evaluated_said(result)
    cold_judged = first["cold_start"]["judged"] if first else 0
    lines.append(f"cold: {cold_judged:,} judged events whose item had fewer than {COLD_START} interactions before")
    reachable = result.get("reachable")
    if reachable and reachable["judged"]:
        known, own, of = reachable["known_item"], reachable["own_item"], reachable["judged"]
        recent = reachable.get("recent_own_item", 0)
        lines.append(f"reachable: {known:,} judged events ({known / of:.4f}) on an item the log had before: the "
                     f"highest Recall a model that recommends only items it has seen can reach; {own:,} "
                     f"({own / of:.4f}) on one the user had; {recent:,} ({recent / of:.4f}) on one of the user's "
                     f"{result['k']} most recent distinct items")
    if 0 < result.get("items", 0) <= result["k"]:  # every list can hold the whole catalogue: the rows tie
        lines.append(f"warning: the log has {result['items']:,} items and a list holds {result['k']}: a model can list "
                     "every item, so the rows say little; give a smaller --k or a larger log")
    return lines + _ceiling_said(result)


def _ceiling_said(result: dict[str, Any]) -> list[str]:
    """The synthetic log's ceiling (evaluate/ceiling.py) and the stream-app row's share of it; [] without a truth."""
    if "ceiling" not in result:
        return []
    ceiling, k = result["ceiling"], result["k"]
    if "left_out" in ceiling:
        return [f"ceiling: not worked out: {ceiling['left_out']}"]
    recall = ceiling[f"recall@{k}"]
    hybrid = result["models"].get("stream-app")
    share = f"; the stream-app row reaches {hybrid[f'recall@{k}'] / recall:.1%} of it" if hybrid and recall else ""
    best = compare_to_best(hybrid, result["models"], k) if hybrid else None
    if best is not None and recall:
        share += (f", the best other row ({best['row']}) {best[f'recall@{k}'] / recall:.1%}; 10% over that row would "
                  f"be {1.1 * best[f'recall@{k}'] / recall:.1%} of it")
    return [f"ceiling: Recall@{k} {recall:.4f}, MRR@{k} {ceiling[f'mrr@{k}']:.4f} for {ceiling['name']} (the settings "
            f"of `stream-app synth` in the ground truth): no model that learns from the log can expect more{share}"]


def tuning_said(tuning: dict[str, Any] | None) -> list[str]:
    """What --tune-baselines chose, and on what (`tuning.Tuning.summary`); [] without it."""
    if not tuning:
        return []
    k = tuning["k"]
    grids = []
    for family, grid in tuning["grids"].items():
        values = {name: list(dict.fromkeys(p[name] for p in grid["values"])) for name in grid["default"]}
        grids.append(f"{family}: " + " x ".join(f"{name.replace('_size', '')} {', '.join(map(str, found))}"
                                                for name, found in values.items())
                     + " (default " + ", ".join(map(str, grid["default"].values())) + ")")
    lines = [f"tuned: each baseline row's main parameters, by Recall@{k} over the log's first {tuning['share']:g} "
             f"of its events ({tuning['events']:,} events, {tuning['judged']:,} judged; a pass of the baselines alone, "
             "each once per value; of equal Recall, the values changing the fewest defaults), then the whole pass with them, the values in the "
             f"row's name; grids: {'; '.join(grids)}; the stream-app rows are not tuned (their defaults are the "
             "same for every log)"]
    moved = [_moved(name, row, k) for name, row in tuning["rows"].items() if row["chosen"] != row["default"]]
    lines.append("tuned away from the defaults: " + "; ".join(moved) if moved else
                 "tuned: every baseline row kept its defaults (none did better on the share)" if tuning["judged"] else
                 "tuned: nothing: no event of the share was judged, so every row kept its defaults (give a larger "
                 "--tune-baselines)")
    return lines


def _moved(name: str, row: dict[str, Any], k: int) -> str:
    """A tuned row whose values are not its defaults: which moved, and its Recall on the share at both."""
    def recall(values: dict[str, int]) -> float:
        return next(tried[f"recall@{k}"] for tried in row["prefix_recall"] if tried["values"] == values)

    changed = ", ".join(f"{key.replace('_size', '')} {row['default'][key]} -> {value}"
                        for key, value in row["chosen"].items() if value != row["default"][key])
    return f"{name}: {changed} (Recall@{k} on the share {recall(row['default']):.4f} -> {recall(row['chosen']):.4f})"


def _none_applied(result: dict[str, Any]) -> str:
    """Why no event was judged when a worker would have taken none of the log's (each refused for its time or size:
    the "left out" lines), else ""."""
    left_out = result.get("timestamp_out_of_range", 0) + result.get("payload_too_large", 0)
    if result.get("events") or not left_out:
        return ""
    return (f"a worker would take none of the log's events: all {left_out:,} were left out, below; for an old log, "
            "unset STREAM_APP_MAX_AGE_MS (0: no limit)" if result.get("timestamp_out_of_range") else
            f"a worker would take none of the log's events: all {left_out:,} were left out, below")


def judged_said(judged: int, how: str = "", asked: str = "is --limit too small?") -> list[str]:
    """How many events were judged (`how`: by which pass, when two differ), and when none was, why every figure is 0
    and what to look at (`asked`)."""
    lines = [f"judged: {judged:,} events{how}, each by the list its user was shown after the user's previous event"]
    if not judged:
        lines.append("nothing to judge, so every figure below is 0: an event is judged by the list shown after its "
                     f"user's previous event ({asked})")
    return lines


def _models_beside(result: dict[str, Any]) -> list[str]:
    """The encoders and the content model the stream-app rows ran, and a warning for one of another catalogue."""
    lines = []
    for role in ("encoder", "shadow_encoder"):
        manifest = result.get(role)
        if manifest:
            training = manifest["training"]
            lines.append(f"{role.replace('_', ' ')}: {manifest['version']} ({validation_said(manifest)}, trained on "
                         f"{training['events']:,} events before {utc_said(training['train_until_ts'])})")
            share = result.get(f"{role}_log_events_known")
            if share is not None and share < 0.5:
                lines.append(f"warning: it knows the item of only {share:.0%} of this log's events: was it trained on "
                             "another catalogue? its candidates are items this log does not have")
    if result.get("content"):
        content = result["content"]
        lines.append(f"content model: {content['version']} over {content['items']:,} catalogue items "
                     f"({content['terms']:,} terms for interests in words)")
        share = result.get("content_log_events_known")
        if share is not None and share < 0.5:
            lines.append(f"warning: the catalogue (--items) holds the item of only {share:.0%} of this log's events: "
                         "is it another shop's? the content rows have little or nothing to work from")
    return lines


def footnotes(result: dict[str, Any]) -> list[str]:
    """What the table says below its rows (the HTML report too): the rows that proposed nothing, the columns' meaning."""
    lines = []
    empty = [name for name, m in result["models"].items()
             if m["judged"] and (not m["coverage"] or m.get("source_proposed_nothing"))]
    if empty:
        lines.append(f"proposed no item on this log (its source has nothing to work from here, e.g. no categories in "
                     f"the log; a row \"..., then popular\" showed its fill alone: the hybrid's own popular items, "
                     f"not the \"popular\" row's list): {', '.join(empty)}")
    if result.get("variants") is False:
        lines.append(NO_VARIANTS_SAID)
    lines.append(f"coverage: the share of the log's items that were in some shown top {result['k']}; pop.pct: the "
                 "mean popularity percentile of the shown items (1: the most popular)")
    return lines


def _accuracy_lines(accuracies: dict[str, Any] | None, width: int) -> list[str]:
    """The profile-accuracy lines of a pass with a ground truth ([] without one)."""
    if not accuracies:
        return []
    lines = ["", "profile accuracy (NDCG@3 of true top-category interests):"]
    for name, accuracy in accuracies.items():
        unmatched = truth_unmatched(accuracy)
        if unmatched:
            lines.append(f"  {name:<{width + 2}}{unmatched}")
            continue
        lines.append(f"  {name:<{width + 2}}" + ", ".join(
            f"{key.split('_', 1)[1]} {value:.3f}" for key, value in accuracy.items()
            if key.startswith("ndcg") and value is not None)
            + f" ({accuracy['users_drifted']} drifted, {accuracy['users_stable']} stable users)")
    return lines


def via_kafka_table(result: dict[str, Any]) -> str:
    keys = list(result["abs_difference"])
    rate = "full speed" if not result["rate"] else f"{rate_said(result['rate'])} events/s"
    lines = [f"{result['events']:,} events of {result['log']} replayed at {rate} "
             f"({rate_said(result['via_kafka']['events_per_s'])} events/s end to end) through {result['workers']} "
             f"worker(s){' beside a CPU-bound process' if result['busy'] else ''}, read back from the "
             f"recommendations topic; in process: the same core and settings"]
    judged, in_process = result["via_kafka"]["judged"], result["in_process"]["judged"]
    how = "" if judged == in_process else f" via Kafka, {in_process:,} in process"
    if result.get("judged_from_ts") is not None:
        how += (f" from {utc_said(result['judged_from_ts'])} on (--judge-from {result['judge_from']:g}; every model "
                "still learns from all of it)")
    lines += judged_said(judged, how, **({"asked": _none_applied(result)} if _none_applied(result) else {}))
    lines += not_evaluated_said(result, via_kafka=True)
    lines.append(f"{'':<12}" + "".join(f"{key:>11}" for key in keys))
    for name in ("via_kafka", "in_process"):
        lines.append(f"{name.replace('_', '-'):<12}" + "".join(f"{result[name][key]:>11.4f}" for key in keys))
    lines.append(f"{'|difference|':<12}" + "".join(f"{result['abs_difference'][key]:>11.4f}" for key in keys))
    lines.append(f"recommendations: {result['recommendations_published']:,} published, "
                 f"{result['recommendations_in_process']:,} in process; lists that differ: {result['lists_differ']:,}; "
                 f"profile versions that differ: {result['versions_differ']:,}; "
                 f"published twice: {result['repeated_recommendations']:,}")
    ordering = result["ordering"]
    lines.append(f"late events (workers): {ordering['late_for_user']:,} older than their user's last event, "
                 f"{ordering['late_in_partition']:,} older than their partition's clock, "
                 f"{ordering['late_for_item_state']:,} after their item epoch was applied, "
                 f"{ordering['unscheduled']:,} outside the schedule, {ordering['stale_item_state']:,} with an item "
                 f"state past their epoch (a partition taken over from a worker that was behind)")
    others, best, k = result.get("other_rows") or {}, result.get("against_best"), result["k"]
    if others:
        width = max(32, *(len(name) for name in others))
        lines.append(f"the other rows of the in-process pass:\n{'model':<{width}} {'Recall@' + str(k):>9} "
                     f"{'MRR@' + str(k):>8} {'NDCG@' + str(k):>8} {'R@' + str(k) + ' cold':>11}")
        for name, m in others.items():
            lines.append(f"{name:<{width}} {m[f'recall@{k}']:>9.4f} {m[f'mrr@{k}']:>8.4f} {m[f'ndcg@{k}']:>8.4f} "
                         f"{m['cold_start'][f'recall@{k}']:>11.4f}")
        if result.get("variants") is False:
            lines.append(NO_VARIANTS_SAID)
    if best is not None:
        relative = "-" if best["relative_recall"] is None else f"{best['relative_recall']:+.1%}"
        lines.append(f"through Kafka against the best baseline row, {best['row']} ({best[f'recall@{k}']:.4f}, "
                     f"MRR {best[f'mrr@{k}']:.4f}): Recall@{k} {relative}, MRR@{k} "
                     + ("not worse" if best["mrr_not_worse"] else "worse"))
    missing = result["via_kafka"]["missing_recommendations"]
    if missing:
        lines.append(f"{missing} judged events had no published recommendation before them")
    return "\n".join(lines)
