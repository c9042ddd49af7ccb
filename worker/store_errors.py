"""Counts the database's refusals, as the daemon reports them, for ``callwatch_store_errors_total``.

Every part that reaches the store already reports a refusal in one place: a log line named
``store.<what>_failed`` (``store.write_failed`` from the shared retry, ``store.claim_failed``,
``store.read_failed``, ``store.release_failed``) or ``delivery.store_failed``. Counting those
lines, as a structlog processor the daemon installs while it runs, counts every refusal
without touching the store or its callers, and cannot drift from what the log says.
(When the store raises its own typed errors, it can count them itself and this goes.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

KNOWN = ("write", "claim", "read", "release", "delivery")


def operation(event: str) -> str | None:
    """``store.write_failed`` -> ``write``; ``delivery.store_failed`` -> ``delivery``."""
    if event == "delivery.store_failed":
        return "delivery"
    if event.startswith("store.") and event.endswith("_failed"):
        return event.removeprefix("store.").removesuffix("_failed")
    return None


class StoreErrors:
    """Store refusals by operation; every known operation present from the start."""

    def __init__(self) -> None:
        self.by_operation: Counter[str] = Counter(dict.fromkeys(KNOWN, 0))

    def __call__(self, _logger: Any, _method: str,
                 event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        what = operation(str(event_dict.get("event", "")))
        if what is not None:
            self.by_operation[what] += 1
        return event_dict

    @contextmanager
    def counting(self) -> Iterator[StoreErrors]:
        """Count while the block runs (the daemon's lifetime), then put logging back."""
        processors = list(structlog.get_config()["processors"])
        structlog.configure(processors=[self, *processors])
        try:
            yield self
        finally:
            structlog.configure(processors=processors)
