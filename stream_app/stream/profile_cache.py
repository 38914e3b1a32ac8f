"""The profiles a worker wrote, kept as objects beside the bytes it wrote for them, so that a user's next batch
takes up the object instead of parsing the table's record again (parsing, decoding the shown rows and reading the
learners' state cost about 8% of a worker's samples at full speed)."""

from __future__ import annotations

from ..core.profile import Profile
from ..partitioning import partition_of


class ProfileCache:
    """At most `capacity` profiles (0: none), each with the table record written from it; the least recently
    written leaves first.

    An object is handed out only while the table holds exactly the bytes written from it, so it is the profile
    that parsing the table's value gives: a record recovered from the changelog, rewritten by an erasure, removed
    or written by another owner meanwhile differs, and is parsed as before. `take` removes the entry: a profile in
    use is never in the cache, so a batch that changes it and then fails (or undoes an event) leaves nothing
    behind that the table does not hold; `keep` puts it back with the record of its next write.

    >>> from stream_app.core.profile import Profile
    >>> cache = ProfileCache(capacity=1)
    >>> alice = Profile("alice", version=3)
    >>> cache.keep("alice", alice.to_json(), alice)
    >>> cache.take("alice", alice.to_json()) is alice
    True
    >>> cache.take("alice", alice.to_json()) is None  # taken: in use until kept again
    True
    >>> cache.keep("alice", b'{"version":3}', alice)
    >>> cache.take("alice", b'{"version":4}') is None  # the table holds other bytes
    True
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.held: dict[str, tuple[bytes, Profile]] = {}  # in the order kept: the first leaves first

    def take(self, user_id: str, stored: bytes) -> Profile | None:
        """The user's profile if the table's `stored` record is the one last kept for it, else None."""
        held = self.held.pop(user_id, None)
        return held[1] if held is not None and (held[0] is stored or held[0] == stored) else None

    def keep(self, user_id: str, record: bytes, profile: Profile) -> None:
        """Hold `profile`, just written to the table as `record`."""
        if self.capacity <= 0:
            return
        held = self.held
        held.pop(user_id, None)
        held[user_id] = (record, profile)
        if len(held) > self.capacity:
            del held[next(iter(held))]

    def holds(self, user_id: str) -> bool:
        """Whether a profile of the user is kept (an erasure receipt lists it among what the worker dropped)."""
        return user_id in self.held

    def drop(self, user_id: str) -> None:
        """Hold nothing of the user (erased, reset or evicted)."""
        self.held.pop(user_id, None)

    def keep_only(self, owned: set[int], partitions: int) -> None:
        """Drop the profiles of users whose partition is not `owned` (after a rebalance: their new owner serves
        them, and may erase them, while this worker would hold their profile until newer ones push it out)."""
        for user_id in [u for u in self.held if partition_of(u, partitions) not in owned]:
            del self.held[user_id]
