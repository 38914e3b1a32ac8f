"""The candidates' feature rows: the features every candidate gets (`FEATURES`, in this order), and the rows of a
shown list as a profile keeps them (float16, sparse, in base64) until the user's next event judges them and the
ranker learns from them. Pure: numpy only, so the profile writes them without importing the recommender."""

from __future__ import annotations

import base64

import numpy as np

FEATURES = (
    "prior",  # the fixed blend of the source scores (recommend._prior): the ranker starts from it and corrects it
    "covis",  # sum over recent items (weighted 1/rank) of the co-visitation share
    "covis_last",  # co-visitation share with the item just seen
    "rules",  # sum over the session's recent items (weighted 1/rank) of the share of "followed by" it
    "rules_last",  # the share of "followed by the item just seen" (sequential rules)
    "in_session",  # the user had it in the current session
    "seen",  # the user had it before (among the items the profile keeps affinity for)
    "repeat",  # the item's share of the user's strongest item affinity
    "recent_rank",  # its rank's weight among the user's most recent distinct items (learned; 0: not among them)
    "repeat_x_propensity",  # ... times the user's learned repeat propensity
    "last_after_browse", "last_after_click", "last_after_cart", "last_after_order",  # it is the item just seen
    "same_category",  # in the category of the event just seen
    "category_affinity",  # the user's affinity to its category, as a share of the strongest
    "category_rank",  # its popularity share within its category
    "category_rank_here",  # ... if in the category of the event just seen, else 0
    "category_in_session",  # the share of the current session's items in its category
    "category_rank_in_session",  # category_rank x category_in_session
    "category_next",  # how often its category came next after the event's category in sessions (share of the best)
    "category_rank_next",  # category_rank x category_next
    "category_model",  # P(its category comes next) x P(it, within its category), both from the item state
    "category_model_session",  # ... with the categories that come next after the session's most common one
    "popular",
    "trending",
    "encoder",  # the item's score under the user's sequence-encoder embedding, as a share of the best
    "content",  # the cosine of its text with the user's interest vector, above the floor (content.share_of)
    "content_last",  # ... with the text of the item just seen
)
N_FEATURES = len(FEATURES)


def encode_rows(rows: np.ndarray) -> str:
    """Rows as float16, sparse (two thirds of the values are 0): a header (rows, features), a bit per value (is
    it non-zero), the non-zero values; in base64 after SPARSE. Two fifths of the bytes of the dense rows (1,557
    of 3,845 on the synthetic log), which were more than half of a profile's."""
    flat = rows.astype(np.float16).ravel()
    present = flat != 0
    payload = (np.array(rows.shape, dtype="<u2").tobytes() + np.packbits(present).tobytes()
               + flat[present].astype("<f2").tobytes())
    return SPARSE + base64.b64encode(payload).decode("ascii")


def shown_matrix(rows: np.ndarray | None, text: str | None, count: int) -> np.ndarray | None:
    """The shown list's feature rows to learn from: the profile's float16 rows when it holds them (what
    `decode_features` reads back from their text), else its stored text decoded."""
    if rows is None:
        return decode_features(text, count)
    if rows.shape != (count, N_FEATURES) or not np.isfinite(rows).all():
        return None
    return rows.astype(np.float64) + 0.0  # + 0.0: a -0.0 as the text reads it back (a zero is not written)


#: Marks sparse rows (':' is not base64: the dense base64 of earlier releases reads as it was written).
SPARSE = "s:"


def decode_features(text: str | None, rows: int) -> np.ndarray | None:
    """The stored rows of a shown list, or None if absent, unreadable or of another feature layout."""
    if not text:
        return None
    try:
        raw = base64.b64decode(text[len(SPARSE):] if text.startswith(SPARSE) else text, validate=True)
    except ValueError:
        return None
    if not text.startswith(SPARSE):
        if len(raw) % 2:
            return None
        flat = np.frombuffer(raw, dtype="<f2")
    else:
        size, bits = rows * N_FEATURES, (rows * N_FEATURES + 7) // 8
        if (len(raw) < 4 + bits or (len(raw) - 4 - bits) % 2
                or tuple(np.frombuffer(raw[:4], dtype="<u2")) != (rows, N_FEATURES)):
            return None
        present = np.unpackbits(np.frombuffer(raw[4:4 + bits], dtype=np.uint8), count=size).astype(bool)
        values = np.frombuffer(raw[4 + bits:], dtype="<f2")
        if values.size != np.count_nonzero(present):
            return None
        flat = np.zeros(size, dtype="<f2")
        flat[present] = values
    if flat.size != rows * N_FEATURES or not np.isfinite(flat).all():  # inf: a value over float16's range
        return None
    return flat.reshape(rows, N_FEATURES).astype(np.float64)
