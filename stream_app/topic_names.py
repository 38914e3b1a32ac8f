"""The topics' names, each behind the deployment's namespace (`Settings.topics`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Topic names, each behind the namespace (see Settings.namespace)."""

    prefix: str = ""
    app_id: str = "stream-app"

    def _name(self, base: str) -> str:
        return f"{self.prefix}{base}"

    @property
    def browse(self) -> str:
        return self._name("events.browse")

    @property
    def click(self) -> str:
        return self._name("events.click")

    @property
    def purchase(self) -> str:
        return self._name("events.purchase")

    @property
    def inputs(self) -> tuple[str, str, str]:
        return (self.browse, self.click, self.purchase)

    def for_type(self, event_type: str) -> str:
        return self._name(f"events.{event_type}")

    @property
    def recommendations(self) -> str:
        return self._name("recommendations")

    @property
    def profiles(self) -> str:
        return self._name("profiles")

    @property
    def dlq(self) -> str:
        return self._name("events.dlq")

    @property
    def items(self) -> str:
        """The item catalogue (compacted, key item_id, one partition): read whole by every worker."""
        return self._name("items")

    @property
    def model_control(self) -> str:
        """Encoder versions announced to every worker (compacted, key: role live|shadow)."""
        return self._name("models.control")

    @property
    def model_status(self) -> str:
        """What each worker did with each announcement: serving, refused (why), withdrawn."""
        return self._name("models.status")

    @property
    def erasures(self) -> str:
        """Requests to erase a user (`stream-app erase`; key user_id, partitioned like the input)."""
        return self._name("erasures")

    @property
    def redrive_positions(self) -> str:
        """How far `stream-app redrive` read the dead-letter topic, per reason (key: the reason)."""
        return self._name("redrive.positions")

    @property
    def erasure_receipts(self) -> str:
        """What each erasure deleted where, written by the worker that applied it (key user_id)."""
        return self._name("erasures.receipts")
