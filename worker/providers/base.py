"""The one seam between callwatch and a call platform.

An adapter turns the provider's HTTP API into normalized values and never raises for anything
the network or the provider does: every outcome is a value (``Snapshot``, ``NotFound`` or
``PollFailed``), so the scheduler can never be crashed by a reply. Programming errors still
raise, as they should.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from worker.model import DownloadSource, NotFound, PollFailed, PollResult


class Provider(Protocol):
    """What the scheduler and the archiver need from a call platform."""

    name: str

    def validate_call_id(self, call_id: str) -> str | None:
        """Return why ``call_id`` cannot be one of this provider's ids, or None if it can."""
        ...

    async def fetch_call(self, call_id: str) -> PollResult:
        """Poll the call once (plus its recording endpoint where the API needs it)."""
        ...

    async def recording_source(
        self, call_id: str, recording_id: str
    ) -> DownloadSource | NotFound | PollFailed:
        """Ask the provider for a fresh link to the recording's bytes, the provider's way."""
        ...

    def download_headers(self, url: str) -> Mapping[str, str]:
        """The credentials to send when fetching ``url``: the provider's own for its own
        origin (a link that is the API itself), none anywhere else."""
        ...
