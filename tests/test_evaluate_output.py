"""What `stream-app evaluate` prints and writes: the text tables (in process and via Kafka) and the HTML report
say the same facts, rates and times in a form a reader takes in."""

import html

import numpy as np
from conftest import REPO

from stream_app.config import Settings
from stream_app.core.content import ContentIndex
from stream_app.evaluate.prequential import evaluate_log
from stream_app.evaluate.report import render
from stream_app.evaluate.tables import table
from stream_app.tools.recorded import load_sorted

ONLINE_RETAIL_SAMPLE = REPO / "stream_app" / "data" / "online-retail-sample.csv"


def test_the_html_report_carries_the_facts_of_the_text_table():
    """Its content model, cold-start figures and skipped lines were only in the text table."""
    items = [e["item_id"] for e in load_sorted(ONLINE_RETAIL_SAMPLE, "online-retail")[0]][:4]
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(4, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    content = ContentIndex("content-sample", items, ["a", "b", "c", "d"], vectors)
    result = evaluate_log(ONLINE_RETAIL_SAMPLE, "online-retail", Settings(), content=content, light=True)
    text, page = table(result), render(result)
    assert "content-sample" in page and "R@20 cold" in page
    assert f"Skipped {result['skipped_lines']['skipped']:,} lines" in page
    cold = result["models"]["stream-app"]["cold_start"]["recall@20"]
    assert f"<td>{cold:.4f}</td>" in page
    lines = text.splitlines()
    facts = lines[1:next(n for n, line in enumerate(lines) if line.startswith("model "))]
    assert len(facts) >= 5
    for fact in facts:  # the HTML starts each with a capital letter
        assert html.escape(fact[1:]) in page, fact
