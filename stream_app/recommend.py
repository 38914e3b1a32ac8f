"""Recommendations v0: co-visitation of the user's recent items, blended with popularity. Pure."""

from __future__ import annotations

import heapq
from typing import Any

from . import decay
from .config import Settings
from .items import ItemIndex, shares
from .profile import Profile

MODEL_VERSIONS = {"recommender": "covis-repeat-pop-v1"}
MAX_COVIS_REASONS = 2


def recommend(profile: Profile, index: ItemIndex, settings: Settings) -> list[dict[str, Any]]:
    """Top-K items as {item_id, score, reasons}: the sum over the user's recent items (weighted 1/rank)
    of their co-visitation shares, plus repeat_weight x the item's share of the user's strongest
    decayed affinity (items the user already engaged with), plus popularity_weight x popularity
    share. Ties break on item_id."""
    scores: dict[str, float] = {}
    reasons: dict[str, list[str]] = {}
    per_anchor = settings.covis_candidates_per_item
    for rank, anchor in enumerate(profile.recent_items(settings.covis_prev_items)):
        recency = 1.0 / (rank + 1)
        reason = f"co-visited with {anchor}"
        for item_id, share in index.ranked_neighbors(anchor)[:per_anchor]:
            if item_id in scores:
                scores[item_id] += recency * share
                if len(reasons[item_id]) < MAX_COVIS_REASONS:
                    reasons[item_id].append(reason)
            else:
                scores[item_id] = recency * share
                reasons[item_id] = [reason]
    if settings.repeat_weight > 0 and profile.item_affinity:
        for item_id, share in shares(decay.top(profile.item_affinity, settings.repeat_candidates)):
            bonus = settings.repeat_weight * share
            if item_id in scores:
                scores[item_id] += bonus
                reasons[item_id].append("viewed before")
            else:
                scores[item_id] = bonus
                reasons[item_id] = ["viewed before"]
    weight = settings.popularity_weight
    for position, (item_id, share) in enumerate(index.popular()):
        if item_id in scores:
            scores[item_id] += weight * share
            reasons[item_id].append("popular")
        elif position < settings.top_k:  # beyond K, a popularity-only item cannot make the list
            scores[item_id] = weight * share
            reasons[item_id] = ["popular"]
    best = heapq.nsmallest(settings.top_k, scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"item_id": item_id, "score": round(score, 6), "reasons": reasons[item_id]} for item_id, score in best]
