"""The archiver's seam to the database, in domain words (SQL: ``store/downloads.py``).

The download queue is not a table of its own: every ``available`` recording of a call that is
still tracked *is* a job, so a recording is fetched once however many snapshots mention it,
and a job cannot outlive or miss its recording.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from worker.model import DownloadSource
from worker.reconcile import Archived, ArchiveFailed, Policy


@dataclass(frozen=True, kw_only=True, slots=True)
class DownloadJob:
    """One claimed recording to fetch, with the link the last poll or refresh stored."""

    call_pk: int
    provider: str
    call_id: str
    recording_id: str
    url: str | None
    url_expires_at: float | None
    content_type: str | None
    size: int | None
    attempts: int  # failed attempts so far
    last_error: str | None = None

    @property
    def key(self) -> tuple[int, str]:
        return (self.call_pk, self.recording_id)


@dataclass(frozen=True, kw_only=True, slots=True)
class DownloadInfo:
    """What ``status`` shows about a recording still waiting to be archived."""

    attempts: int
    last_error: str | None
    next_attempt_at: float | None
    in_progress: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class ArchiveState:
    """Whether archiving is paused (disk full, read-only...), why and since when."""

    paused_reason: str | None = None
    paused_since: float | None = None
    pending: int = 0  # recordings waiting to be archived


class DownloadStore(Protocol):
    """What the archiver asks of the database."""

    owner: str

    async def claim_due_downloads(self, providers: list[str], now: float,
                                  limit: int) -> list[DownloadJob]:
        """Lease up to ``limit`` due jobs, earliest link expiry first (unknown first)."""
        ...

    async def next_download_due_at(self, providers: list[str]) -> float | None:
        """When the earliest unleased job falls due, None when there is none."""
        ...

    async def record_download_failure(self, job: DownloadJob, *, reason: str, retry_at: float,
                                      counted: bool) -> None:
        """Release the job until ``retry_at``; ``counted`` spends one of its attempts."""
        ...

    async def update_recording_link(self, job: DownloadJob, source: DownloadSource) -> None:
        """Keep a fresh link (never its headers: they can hold our API key)."""
        ...

    async def apply_archive_result(self, job: DownloadJob, outcome: Archived | ArchiveFailed,
                                   now: float, policy: Policy) -> bool:
        """Settle the recording and write its events in one transaction.

        False, and nothing changed, while a poll holds the call: try again in a moment.
        """
        ...

    async def extend_download_leases(self, now: float) -> int:
        """Push back the lease of every job this process holds (long downloads)."""
        ...

    async def release_downloads(self) -> int:
        """At stop: hand back jobs this process claimed but did not settle."""
        ...

    async def recover_downloads(self) -> int:
        """At start: release jobs leased by processes that are gone; return how many."""
        ...

    async def set_archive_paused(self, reason: str | None, now: float) -> None:
        """Record that archiving is paused (``reason``) or running again (None)."""
        ...

    async def archive_state(self) -> ArchiveState: ...

    async def download_info(self, provider: str, call_id: str) -> dict[str, DownloadInfo]:
        """Per recording id of the call: attempts and last error of pending downloads."""
        ...
