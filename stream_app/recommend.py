"""Recommendations v0: co-visitation of the user's recent items, blended with popularity. Pure."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from .config import Settings
from .items import ItemIndex
from .profile import Profile

MODEL_VERSIONS = {"recommender": "covis-pop-v0"}
MAX_COVIS_REASONS = 2


@dataclass(slots=True)
class Scored:
    item_id: str
    score: float
    reasons: list[str]

    def to_dict(self) -> dict:
        return {"item_id": self.item_id, "score": round(self.score, 6), "reasons": self.reasons}


def recommend(profile: Profile, index: ItemIndex, settings: Settings) -> list[Scored]:
    """Top-K items: sum over the user's recent items (weighted 1/rank) of their co-visitation shares,
    plus popularity_weight x popularity share. Ties break on item_id, so the order is deterministic."""
    candidates: dict[str, Scored] = {}
    for rank, anchor in enumerate(profile.recent_items(settings.covis_prev_items)):
        recency = 1.0 / (rank + 1)
        reason = f"co-visited with {anchor}"
        for item_id, share in index.ranked_neighbors(anchor):
            entry = candidates.get(item_id)
            if entry is None:
                candidates[item_id] = Scored(item_id, recency * share, [reason])
            else:
                entry.score += recency * share
                if len(entry.reasons) < MAX_COVIS_REASONS:
                    entry.reasons.append(reason)
    weight = settings.popularity_weight
    for position, (item_id, share) in enumerate(index.popular()):
        entry = candidates.get(item_id)
        if entry is not None:
            entry.score += weight * share
            entry.reasons.append("popular")
        elif position < settings.top_k:  # beyond K, a popularity-only item cannot make the list
            candidates[item_id] = Scored(item_id, weight * share, ["popular"])
    return heapq.nsmallest(settings.top_k, candidates.values(), key=lambda s: (-s.score, s.item_id))
