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
class DownloadProgress:
    """How far one download in progress has got: measured by the archiver at ``at``.

    Kept in the archiver's memory (the API and /metrics read it live) and written to the
    recording's row every few seconds for ``status``, which runs in another process.
    """

    bytes: int  # received so far in this attempt
    total: int | None  # the expected size, when the provider or storage said
    started_at: float  # wall time the attempt began
    at: float  # wall time of the measurement

    @property
    def rate(self) -> float:
        """Bytes per second since the attempt began."""
        return self.bytes / max(self.at - self.started_at, 1e-3)

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None without a known size or any byte yet."""
        if self.total is None or self.bytes <= 0 or self.total < self.bytes:
            return None
        return (self.total - self.bytes) / self.rate


@dataclass(frozen=True, kw_only=True, slots=True)
class DownloadInfo:
    """What ``status`` shows about a recording still waiting to be archived."""

    attempts: int
    last_error: str | None
    next_attempt_at: float | None
    in_progress: bool
    progress: DownloadProgress | None = None  # while in progress, once the archiver wrote it


@dataclass(frozen=True, kw_only=True, slots=True)
class ArchiveState:
    """Whether archiving is paused (disk full, read-only...), why and since when."""

    paused_reason: str | None = None
    paused_since: float | None = None
    pending: int = 0  # recordings waiting to be archived
