"""A self-contained HTML report of an evaluation: the table, Recall@K over time, Recall@K per event
type. Plain SVG, no scripts, no external files: it opens anywhere and can be attached to a ticket."""

from __future__ import annotations

import html
from typing import Any

from .figures import rate_said
from .metrics import truth_unmatched
from .tables import RATES_SAID, facts, footnotes, processes_said

# One colour per row: a full pass has 28 rows, more with an encoder, a shadow and item text.
PALETTE = ["#1b6ca8", "#d1495b", "#66a182", "#edae49", "#8d6a9f", "#4f5d75", "#2e4057", "#00a6a6", "#bc4b51",
           "#8cb369", "#f4a259", "#5b8e7d", "#7d4e57", "#3d348b", "#c9a227", "#e76f51", "#264653", "#a8dadc",
           "#6d597a", "#b5838d", "#588157", "#ff7f11", "#0b3954", "#bfa89e", "#9a031e", "#5f0f40", "#0f4c5c",
           "#e36414", "#606c38", "#283618", "#dda15e", "#bc6c25", "#7209b7", "#3a0ca3", "#4361ee", "#4cc9f0"]


def _line_chart(series: dict[str, list[float]], width: int = 760, height: int = 300) -> str:
    pad_l, pad_b, pad_t, pad_r = 48, 28, 12, 12
    longest = max((len(v) for v in series.values()), default=0)
    top = max((max(v) for v in series.values() if v), default=1.0) or 1.0
    top = min(1.0, top * 1.1)
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">']
    for i in range(5):
        value = top * i / 4
        y = pad_t + plot_h - plot_h * value / top
        parts.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{pad_l - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{value:.2f}</text>')
    for n, (name, values) in enumerate(series.items()):
        if len(values) < 2:
            continue
        step = plot_w / max(longest - 1, 1)
        points = " ".join(f"{pad_l + i * step:.1f},{pad_t + plot_h - plot_h * v / top:.1f}"
                          for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{PALETTE[n % len(PALETTE)]}" stroke-width="2" '
                     f'points="{points}"><title>{html.escape(name)}</title></polyline>')
    parts.append(f'<text x="{pad_l + plot_w / 2}" y="{height - 6}" font-size="11" text-anchor="middle">'
                 f'judged events, in windows, in stream order</text></svg>')
    return "".join(parts)


def _bar_chart(groups: list[str], series: dict[str, dict[str, float]], width: int = 760,
               height: int = 280) -> str:
    pad_l, pad_b, pad_t = 48, 36, 12
    plot_w, plot_h = width - pad_l - 12, height - pad_t - pad_b
    top = max((v for per in series.values() for v in per.values()), default=1.0) or 1.0
    group_w = plot_w / max(len(groups), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">']
    for g, group in enumerate(groups):
        x0 = pad_l + g * group_w + group_w * 0.1
        for n, (name, per) in enumerate(series.items()):
            value = per.get(group, 0.0)
            h = plot_h * value / top
            parts.append(f'<rect x="{x0 + n * bar_w:.1f}" y="{pad_t + plot_h - h:.1f}" width="{bar_w - 2:.1f}" '
                         f'height="{h:.1f}" fill="{PALETTE[n % len(PALETTE)]}"><title>{html.escape(name)}: '
                         f'{value:.4f}</title></rect>')
        parts.append(f'<text x="{x0 + group_w * 0.4:.1f}" y="{height - 14}" font-size="12" '
                     f'text-anchor="middle">{html.escape(group)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _rows(result: dict[str, Any], types: list[str]) -> str:
    """The table's heading and rows: the text table's columns, and the events each row judged."""
    k = result["k"]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in (
        "model", f"Recall@{k}", f"MRR@{k}", f"NDCG@{k}", *(f"R@{k} {t}" for t in types), f"R@{k} cold", "coverage",
        "pop.pct", "judged", "events/s alone"))
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{m[f'recall@{k}']:.4f}</td><td>{m[f'mrr@{k}']:.4f}</td>"
        f"<td>{m[f'ndcg@{k}']:.4f}</td>"
        + "".join(f"<td>{m['by_type'].get(t, {}).get(f'recall@{k}', 0.0):.4f}</td>" for t in types)
        + f"<td>{m['cold_start'][f'recall@{k}']:.4f}</td><td>{m['coverage']:.3f}</td>"
        f"<td>{m['popularity_percentile']:.3f}</td><td>{m['judged']:,}</td><td>{rate_said(m.get('events_per_s'))}</td>"
        "</tr>" for name, m in result["models"].items())
    return f"<table><tr>{head}</tr>{rows}</table>"


def _paragraphs(lines: list[str]) -> str:
    """Lines of the text table as paragraphs, each a sentence."""
    return "".join(f"<p>{html.escape(line[:1].upper() + line[1:])}.</p>\n" for line in lines)


def _accuracy(result: dict[str, Any]) -> str:
    """The profile-accuracy section of a pass with a ground truth ("" without one)."""
    accuracy_html = ""
    for name, accuracy in (result.get("profile_accuracy") or {}).items():
        if not accuracy_html:
            accuracy_html = "<h2>Profile accuracy</h2><p>NDCG@3 of each user's true top-category interests " \
                "against the profile's long-term interests.</p>"
        unmatched = truth_unmatched(accuracy)
        if unmatched:
            accuracy_html += f"<p>{html.escape(name)}: {html.escape(unmatched)}</p>"
            continue
        accuracy_html += f"<p>{html.escape(name)}: " + ", ".join(
            f"{html.escape(key.split('_', 1)[1])} <b>{value:.3f}</b>" for key, value in accuracy.items()
            if key.startswith("ndcg") and value is not None) + \
            f" ({accuracy['users_drifted']} drifted, {accuracy['users_stable']} stable users).</p>"
    return accuracy_html


def render(result: dict[str, Any]) -> str:
    """The page: what the text table says (`tables.facts`, the rows, `tables.footnotes`), then the charts."""
    k = result["k"]
    models = result["models"]
    legend = "".join(f'<span style="color:{PALETTE[n % len(PALETTE)]}">&#9632;</span> {html.escape(name)} &nbsp; '
                     for n, name in enumerate(models))
    types = sorted({t for m in models.values() for t in m["by_type"]})
    per_type = {name: {t: m["by_type"].get(t, {}).get(f"recall@{k}", 0.0) for t in types}
                for name, m in models.items()}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>stream-app evaluation: {html.escape(result.get('log', ''))}</title>
<style>body{{font:14px system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}}
td:first-child,th:first-child{{text-align:left}}</style></head><body>
<h1>Prequential evaluation</h1>
<p>{html.escape(result.get('log', ''))}: {result['events']:,} events, {result['users']:,} users,
{result['items']:,} items; K = {k}; batches of {result['batch']}; {rate_said(result['events_per_s'])} events/s
for all models together{processes_said(result.get("processes"))} ({html.escape(RATES_SAID)}).</p>
{_paragraphs(facts(result))}{_rows(result, types)}
{_paragraphs(footnotes(result))}
<h2>Recall@{k} over the stream</h2><p>{legend}</p>{_line_chart({n: m.get('timeline', []) for n, m in models.items()})}
<h2>Recall@{k} by type of the judged event</h2><p>{legend}</p>{_bar_chart(types, per_type)}
{_accuracy(result)}
</body></html>
"""
