"""One try at archiving one recording: a fresh link when needed, the bytes, the commit.

The result is a value the archiver acts on, never an exception::

    Archived(path, size, sha256)   complete, verified and committed to the target (or adopted)
    ArchiveFailed(reason)          gone at the provider, or over max_size: give up for good
    Retry(reason, retry_after)     this attempt failed: spend one attempt, try again later
    Pause(reason)                  the target cannot take objects (disk full, bucket missing...)

An attempt has an overall deadline, ``[archive] max_seconds``: a server dripping a byte every
few seconds (never idle long enough for ``timeout``) does not hold a slot for ever.

Links: the stored one (from the last poll or refresh) is used while it has more than
``refresh_margin`` seconds to live; otherwise the provider is asked for a fresh one, the
provider's way. A 401/403 from storage means the link died under us: ask again, up to
``MAX_REFRESHES`` times per attempt, without spending attempts. A 404/410 on a link the
provider just handed out means the file is gone. The stored link never carries headers: a
link on the provider's own API (Ultravox serving the bytes itself) gets the provider's
credentials from ``Provider.download_headers``, for that origin only.

Adoption: before any link or byte, the attempt asks the target for an object already at one
of the recording's final names (any extension). An object only ever gets a final name after a
complete, verified upload, so one found there was left by an earlier attempt killed
between its rename and the database commit: it is hashed and returned as ``Archived`` with no
HTTP at all (``recording.adopted``), even if the provider no longer serves the recording. One
whose size differs from the size the provider announced is not trusted
(``recording.adopt_skipped``): the download goes ahead and replaces it when the extension is
the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import httpx
from structlog.typing import FilteringBoundLogger

from worker.archive import layout
from worker.archive.base import DownloadJob, DownloadProgress
from worker.archive.download import (
    DownloadError,
    GoneError,
    LinkRejectedError,
    TooLargeError,
    Transfer,
    TransientError,
    fetch,
)
from worker.archive.target import ArchiveTarget, Fault, TargetError, Upload
from worker.config_sections import ArchiveConfig
from worker.model import DownloadSource, NotFound, PollFailed
from worker.providers.base import Provider
from worker.reconcile import Archived, ArchiveFailed
from worker.store.base import DownloadStore
from worker.urls import safe_url

MAX_REFRESHES = 2
ADOPT_REASON = "a complete file from an earlier attempt that stopped before its commit"


@dataclass(frozen=True, kw_only=True, slots=True)
class Retry:
    """This attempt failed; try again after the back-off (or ``retry_after``, if longer)."""

    reason: str
    retry_after: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Pause:
    """The archive target cannot take objects; nothing is wrong with the recording."""

    reason: str


Outcome = Archived | ArchiveFailed | Retry | Pause


@dataclass(frozen=True, kw_only=True, slots=True)
class Live:
    """A download under way: its job, its transfer (bytes so far) and when it began."""

    job: DownloadJob
    transfer: Transfer
    started_at: float  # wall time

    def progress(self, now: float) -> DownloadProgress:
        transfer = self.transfer
        total = transfer.total if transfer.total is not None else transfer.expected_size
        return DownloadProgress(bytes=transfer.received, total=total,
                                started_at=self.started_at, at=now)


@dataclass(frozen=True, kw_only=True, slots=True)
class Tools:
    """What every attempt shares."""

    client: httpx.AsyncClient
    target: ArchiveTarget
    store: DownloadStore
    config: ArchiveConfig
    clock: Callable[[], float]
    live: dict[tuple[int, str], Live] = field(default_factory=dict)  # downloads under way


def needs_fresh_link(source: DownloadSource, now: float, margin: float) -> bool:
    """Whether the link expires within ``margin`` seconds (an unknown expiry is tried)."""
    return source.expires_at is not None and source.expires_at - now <= margin


class Attempt:
    """One try at one recording; ``run`` once."""

    def __init__(self, job: DownloadJob, provider: Provider, tools: Tools,
                 log: FilteringBoundLogger) -> None:
        self.job = job
        self.provider = provider
        self.tools = tools
        self.log = log

    async def run(self) -> Outcome:
        try:
            return await self._run()
        except TargetError as exc:  # the target's, classified by the target
            if exc.kind is Fault.PAUSE:
                return Pause(reason=exc.reason)
            if exc.kind is Fault.GIVE_UP:
                return ArchiveFailed(reason=exc.reason)
            return Retry(reason=exc.reason)

    async def _run(self) -> Outcome:
        adopted = await self._adopt()
        if adopted is not None:
            return adopted
        job, config = self.job, self.tools.config
        # The stored link carries no headers; one on the provider's own API gets its key.
        source = None if job.url is None else DownloadSource(
            url=job.url, headers=self.provider.download_headers(job.url),
            expires_at=job.url_expires_at, content_type=job.content_type, size=job.size)
        fresh = False
        if source is None or needs_fresh_link(source, self.tools.clock(), config.refresh_margin):
            got = await self._refresh()
            if not isinstance(got, DownloadSource):
                return got
            source, fresh = got, True
        size = source.size if source.size is not None else job.size
        if size is not None and size > config.max_size:
            return ArchiveFailed(reason=f"the provider says {size} bytes, over max_size "
                                        f"({config.max_size})")
        partial = await self.tools.target.start(layout.component(job.recording_id))
        committed = False
        try:
            transfer = Transfer(partial=partial, expected_size=size)
            self.tools.live[job.key] = Live(job=job, transfer=transfer,
                                            started_at=self.tools.clock())
            self.log.info("recording.download_started", attempt=job.attempts + 1,
                          url=safe_url(source.url), expires_in=self._expires_in(source))
            with anyio.move_on_after(config.max_seconds) as deadline:
                failed = await self._fetch(source, fresh, transfer)
            if deadline.cancelled_caught:
                return Retry(reason=f"not done within max_seconds ({config.max_seconds:g} s)"
                                    f" after {transfer.partial.size} bytes")
            if failed is not None:
                return failed
            content_type = _content_type(transfer, source, job)
            final = layout.final_path(job.provider, job.call_id, job.recording_id,
                                      content_type)
            await partial.commit(final, content_type)
            committed = True
            return Archived(path=final.as_posix(), size=partial.size, sha256=partial.sha256)
        finally:
            self.tools.live.pop(job.key, None)
            if not committed:
                await _discard(partial)

    async def _adopt(self) -> Archived | None:
        """The file an earlier attempt placed but never committed, if there is a sound one."""
        job = self.job
        candidates = layout.final_candidates(job.provider, job.call_id, job.recording_id)
        found = await self.tools.target.find(candidates)
        if found is None:
            return None
        path = found.path.as_posix()
        if job.size is not None and found.size != job.size:
            self.log.warning("recording.adopt_skipped", path=path, size=found.size,
                             expected_size=job.size,
                             reason="a file is already there, of another size: downloading")
            return None
        self.log.info("recording.adopted", path=path, size=found.size, reason=ADOPT_REASON)
        return Archived(path=path, size=found.size, sha256=found.sha256)

    async def _fetch(self, source: DownloadSource, fresh: bool,
                     transfer: Transfer) -> Outcome | None:
        """Fetch into ``transfer``; None when every byte is there and checked."""
        tools, refreshes = self.tools, 0
        while True:
            try:
                await fetch(tools.client, source, transfer, tools.config, self.log)
            except DownloadError as exc:
                verdict = _verdict(exc, fresh=fresh, refreshes=refreshes)
                if verdict is not None:
                    return verdict
                cause = exc.reason
            else:
                return None
            refreshes += 1
            self.log.info("recording.link_rejected", cause=cause, url=safe_url(source.url))
            got = await self._refresh()
            if not isinstance(got, DownloadSource):
                return got
            source, fresh = got, True
            if got.size is not None:
                transfer.expected_size = got.size

    async def _refresh(self) -> DownloadSource | ArchiveFailed | Retry:
        """Ask the provider for a fresh link and keep it (without its headers)."""
        job = self.job
        try:
            got = await self.provider.recording_source(job.call_id, job.recording_id)
        except Exception:  # an adapter bug must not take the archiver down
            self.log.exception("recording.refresh_crashed")
            return Retry(reason="internal error while asking for a fresh link")
        if isinstance(got, NotFound):
            return ArchiveFailed(reason="the provider no longer has the recording")
        if isinstance(got, PollFailed):
            return Retry(reason=f"no fresh link: {got.message}", retry_after=got.retry_after)
        self.log.info("recording.link_refreshed", url=safe_url(got.url),
                      expires_in=self._expires_in(got))
        try:
            await self.tools.store.update_recording_link(job, got)
        except Exception as exc:  # only a cache for the next attempt: not worth failing over
            self.log.warning("store.write_failed", what="recording link", error=str(exc))
        return got

    def _expires_in(self, source: DownloadSource) -> float | None:
        if source.expires_at is None:
            return None
        return round(source.expires_at - self.tools.clock(), 1)


def _verdict(exc: DownloadError, *, fresh: bool, refreshes: int) -> Outcome | None:
    """What a failed fetch means for the attempt; None: get a fresh link and go on."""
    if isinstance(exc, LinkRejectedError):
        if refreshes >= MAX_REFRESHES:
            return Retry(reason=f"{exc.reason}, even with a fresh link")
        return None
    if isinstance(exc, GoneError):
        return ArchiveFailed(reason=f"the recording is gone ({exc.reason})") if fresh else None
    if isinstance(exc, TooLargeError):
        return ArchiveFailed(reason=exc.reason)
    if isinstance(exc, TransientError):
        return Retry(reason=exc.reason, retry_after=exc.retry_after)
    return Retry(reason=exc.reason)


def _content_type(transfer: Transfer, source: DownloadSource, job: DownloadJob) -> str | None:
    """The served type when it names a format we know, else what the provider said."""
    if layout.is_known_type(transfer.content_type):
        return transfer.content_type
    return source.content_type or job.content_type or transfer.content_type


async def _discard(partial: Upload) -> None:
    # Shielded: a cancelled attempt (drain past its grace) still drops its upload.
    with anyio.CancelScope(shield=True), anyio.move_on_after(30):
        await partial.abort()
