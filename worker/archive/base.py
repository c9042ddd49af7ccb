"""The archiver's types, in domain words (the store Protocol: ``worker.store.base.DownloadStore``).

The download queue is not a table of its own: every ``available`` recording of a call that is
still tracked *is* a job, so a recording is fetched once however many snapshots mention it,
and a job cannot outlive or miss its recording.
"""

from __future__ import annotations

from dataclasses import dataclass


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
