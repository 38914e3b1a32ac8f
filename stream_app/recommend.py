"""Recommendations v0: co-visitation of the user's recent items, blended with popularity. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from . import decay
from .config import Settings
from .items import ItemIndex
from .profile import Profile

MODEL_VERSIONS = {"recommender": "covis-pop-v0"}
MAX_REASONS = 2


@dataclass(slots=True)
class Scored:
    item_id: str
    score: float
    reasons: list[str]

    def to_dict(self) -> dict:
        return {"item_id": self.item_id, "score": round(self.score, 6), "reasons": self.reasons}


def normalised(scores, n: int | None = None) -> list[tuple[str, float]]:
    """Scores as fractions of the strongest one (decay is uniform, so no clock is needed)."""
    ranked = decay.top(dict(scores), n) if n is not None else list(scores)
    if not ranked:
        return []
    best = ranked[0][1]
    return [(item_id, 2.0 ** (score - best)) for item_id, score in ranked]


def recommend(profile: Profile, index: ItemIndex, popular: list[tuple[str, float]],
              settings: Settings) -> list[Scored]:
    """Top-K items for the profile. `popular` is the merged popular list (best first)."""
    candidates: dict[str, Scored] = {}
    anchors = profile.recent_items(settings.covis_prev_items)
    for rank, anchor in enumerate(anchors):
        recency = 1.0 / (rank + 1)
        for item_id, share in normalised(index.neighbors(anchor), settings.covis_neighbors_max):
            entry = candidates.get(item_id)
            if entry is None:
                candidates[item_id] = Scored(item_id, recency * share, [f"co-visited with {anchor}"])
            else:
                entry.score += recency * share
                if len(entry.reasons) < MAX_REASONS:
                    entry.reasons.append(f"co-visited with {anchor}")
    for item_id, share in normalised(popular):
        bonus = settings.popularity_weight * share
        entry = candidates.get(item_id)
        if entry is None:
            candidates[item_id] = Scored(item_id, bonus, ["popular"])
        else:
            entry.score += bonus
            entry.reasons.append("popular")
    ranked = sorted(candidates.values(), key=lambda s: (-s.score, s.item_id))
    return ranked[: settings.top_k]
