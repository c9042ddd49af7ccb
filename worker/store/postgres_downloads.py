"""The DownloadStore seam (``archive/base.py``) over PostgreSQL, for ``PostgresStore``.

The queue is the ``recordings`` table, as in the SQLite store (``store/downloads.py``). A
claim takes free jobs with ``FOR UPDATE OF r SKIP LOCKED`` and leases them for
``lease_seconds``; the store's heartbeat renews the lease while the archiver holds the job
(from its claim to its result or failure being recorded), so a slow download is never taken
over by a second worker, and a dead worker's job is free again ``lease_seconds`` after its
last renewal. A job handed back, or given up when even its failure cannot be recorded, is no
longer renewed: its lease runs out and it is claimed again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncpg
import structlog

from worker.archive.base import ArchiveState, DownloadInfo, DownloadJob, DownloadProgress
from worker.model import DownloadSource
from worker.reconcile import Archived, ArchiveFailed, Policy
from worker.store import postgres_sql as sql
from worker.store import rows
from worker.store.planning import dead_owners, poll_holds, settle_archive
from worker.store.postgres_db import Connections, write_decisions

log = structlog.get_logger("worker.store")

_JOB_COLUMNS = ("r.call_pk, r.recording_id, c.provider, c.call_id, r.url, r.url_expires_at, "
                "r.content_type, r.size, r.download_attempts, r.download_error")
_PENDING = ("r.status = 'available' AND c.terminal IS NULL AND c.untracked_at IS NULL "
            "AND c.provider = ANY($1)")
_CLAIM = (
    "WITH due AS (SELECT r.call_pk, r.recording_id FROM recordings r JOIN calls c ON "
    f"c.pk = r.call_pk WHERE {_PENDING} AND r.download_next_at <= $2 AND "
    "(r.download_lease_until IS NULL OR r.download_lease_until < $2) "
    "ORDER BY r.url_expires_at NULLS FIRST, r.first_seen_at LIMIT $3 FOR UPDATE OF r SKIP LOCKED) "
    "UPDATE recordings AS r SET download_lease_owner = $4, download_lease_until = $5 "
    "FROM due, calls c WHERE r.call_pk = due.call_pk AND r.recording_id = due.recording_id "
    f"AND c.pk = r.call_pk RETURNING {_JOB_COLUMNS}"
)


class PostgresDownloads:
    """The archiver's queue in the same database (and transactions) as calls and events."""

    def __init__(self, db: Connections, owner: str, lease_seconds: float,
                 on_claim: Callable[[], None]) -> None:
        self.db = db
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.on_claim = on_claim  # the store's heartbeat renews what a claim leases
        self._held: set[tuple[int, str]] = set()  # (call_pk, recording_id) the archiver holds

    def held(self) -> tuple[list[int], list[str]]:
        """The jobs to renew, as the two arrays of ``sql.RENEW_DOWNLOADS``."""
        keys = sorted(self._held)
        return [k[0] for k in keys], [k[1] for k in keys]

    async def claim_due_downloads(self, providers: list[str], now: float,
                                  limit: int) -> list[DownloadJob]:
        if limit <= 0 or not providers:
            return []
        self.on_claim()
        async with self.db.transaction() as conn:  # all or nothing: see Connections.transaction
            found = await conn.fetch(_CLAIM, providers, now, limit, self.owner,
                                     now + self.lease_seconds)
        jobs = [_job(r) for r in found]
        self._held.update(job.key for job in jobs)  # committed: ours now
        jobs.sort(key=lambda j: (j.url_expires_at is not None, j.url_expires_at or 0.0))
        return jobs

    async def next_download_due_at(self, providers: list[str]) -> float | None:
        if not providers:
            return None
        async with self.db.connection() as conn:
            due = await conn.fetchval(
                "SELECT MIN(GREATEST(r.download_next_at, COALESCE(r.download_lease_until, 0))) "
                f"FROM recordings r JOIN calls c ON c.pk = r.call_pk WHERE {_PENDING}",
                providers)
        return float(due) if due is not None else None

    async def record_download_failure(self, job: DownloadJob, *, reason: str, retry_at: float,
                                      counted: bool) -> None:
        # Handed back: no longer renewed, even if this write fails for good (the archiver
        # then gives the job up, and its lease must run out for it to be tried again).
        self._held.discard(job.key)
        async with self.db.connection() as conn:
            await conn.execute(
                "UPDATE recordings SET download_attempts = download_attempts + $1, "
                "download_next_at = $2, download_error = $3, download_lease_owner = NULL, "
                "download_lease_until = NULL WHERE call_pk = $4 AND recording_id = $5",
                int(counted), retry_at, reason, job.call_pk, job.recording_id)

    async def update_recording_link(self, job: DownloadJob, source: DownloadSource) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                "UPDATE recordings SET url = $1, url_expires_at = $2, "
                "content_type = COALESCE($3, content_type), size = COALESCE($4, size) "
                "WHERE call_pk = $5 AND recording_id = $6 AND status = 'available'",
                source.url, source.expires_at, source.content_type, source.size,
                job.call_pk, job.recording_id)

    async def apply_archive_result(self, job: DownloadJob, outcome: Archived | ArchiveFailed,
                                   now: float, policy: Policy) -> bool:
        async with self.db.transaction(sql.EVENTS_LOCK) as conn:
            found = await conn.fetchrow(
                f"SELECT {rows.CALL_COLUMNS}, lease_until FROM calls WHERE pk = $1 FOR UPDATE",
                job.call_pk)
            if found is not None and poll_holds(found["lease_until"], now):
                return False  # a poll holds the call: it writes the call back itself
            if found is not None:
                recordings = rows.recordings_by_call(
                    await conn.fetch(sql.RECORDINGS_OF, [job.call_pk]))
                call = rows.call_from_row(found, recordings.get(job.call_pk, ()))
                decision = settle_archive(call, job.recording_id, outcome, now, policy)
                if decision is not None:
                    await write_decisions(conn, rows.decision_writes(
                        [(decision.call, decision.events, None)], now), self.owner)
            reason = outcome.reason if isinstance(outcome, ArchiveFailed) else None
            await conn.execute(
                "UPDATE recordings SET download_lease_owner = NULL, download_lease_until = NULL, "
                "download_error = COALESCE($1, download_error) "
                "WHERE call_pk = $2 AND recording_id = $3", reason, job.call_pk,
                job.recording_id)
        self._held.discard(job.key)
        return True

    async def extend_download_leases(self, now: float) -> int:
        call_pks, recording_ids = self.held()
        if not call_pks:
            return 0
        async with self.db.connection() as conn:
            status = await conn.execute(sql.RENEW_DOWNLOADS, self.owner, now + self.lease_seconds,
                                        call_pks, recording_ids)
        return int(status.split()[-1])

    async def release_downloads(self) -> int:
        self._held.clear()
        async with self.db.connection() as conn:
            status = await conn.execute(
                "UPDATE recordings SET download_lease_owner = NULL, download_lease_until = NULL "
                "WHERE status = 'available' AND download_lease_owner = $1", self.owner)
        return int(status.split()[-1])

    async def recover_downloads(self) -> int:
        async with self.db.connection() as conn:
            owners = [r[0] for r in await conn.fetch(
                "SELECT DISTINCT download_lease_owner FROM recordings "
                "WHERE download_lease_owner IS NOT NULL")]
            dead = dead_owners(owners, self.owner)
            if not dead:
                return 0
            status = await conn.execute(
                "UPDATE recordings SET download_lease_owner = NULL, download_lease_until = NULL "
                "WHERE download_lease_owner = ANY($1)", dead)
        released = int(status.split()[-1])
        log.info("store.download_leases_recovered", recordings=released, owners=len(dead))
        return released

    async def set_archive_paused(self, reason: str | None, now: float) -> None:
        async with self.db.connection() as conn:
            await conn.execute(
                "INSERT INTO archive_state (id, paused_reason, paused_since, updated_at) "
                "VALUES (1, $1, $2, $3) ON CONFLICT (id) DO UPDATE SET "
                "paused_reason = excluded.paused_reason, updated_at = excluded.updated_at, "
                "paused_since = CASE WHEN excluded.paused_reason IS NULL THEN NULL "
                "ELSE COALESCE(archive_state.paused_since, excluded.paused_since) END",
                reason, now if reason is not None else None, now)

    async def archive_state(self) -> ArchiveState:
        async with self.db.connection() as conn:
            state = await conn.fetchrow(
                "SELECT paused_reason, paused_since FROM archive_state WHERE id = 1")
            pending = await conn.fetchval(
                "SELECT COUNT(*) FROM recordings r JOIN calls c ON c.pk = r.call_pk "
                "WHERE r.status = 'available' AND c.terminal IS NULL "
                "AND c.untracked_at IS NULL")
        return ArchiveState(paused_reason=state[0] if state else None,
                            paused_since=state[1] if state else None,
                            pending=int(pending or 0))

    async def download_info(self, provider: str, call_id: str) -> dict[str, DownloadInfo]:
        async with self.db.connection() as conn:
            found = await conn.fetch(
                "SELECT r.recording_id, r.download_attempts, r.download_error, "
                "r.download_next_at, r.download_lease_until, r.status, r.download_bytes, "
                "r.download_total, r.download_started_at, r.download_progress_at "
                "FROM recordings r JOIN calls c ON c.pk = r.call_pk "
                "WHERE c.provider = $1 AND c.call_id = $2", provider, call_id)
        return {r[0]: DownloadInfo(attempts=r[1], last_error=r[2],
                                   next_attempt_at=r[3] if r[5] == "available" else None,
                                   in_progress=r[4] is not None,
                                   progress=_progress(r) if r[4] is not None else None)
                for r in found}

    async def record_download_progress(
            self, items: Sequence[tuple[DownloadJob, DownloadProgress]]) -> None:
        if not items:
            return
        async with self.db.transaction() as conn:
            await conn.executemany(
                "UPDATE recordings SET download_bytes = $1, download_total = $2, "
                "download_started_at = $3, download_progress_at = $4 WHERE call_pk = $5 "
                "AND recording_id = $6 AND download_lease_owner = $7",
                [(p.bytes, p.total, p.started_at, p.at, job.call_pk, job.recording_id,
                  self.owner) for job, p in items])


def _progress(row: asyncpg.Record) -> DownloadProgress | None:
    """The progress columns (bytes, total, started, measured at), once they were written."""
    if row[6] is None or row[8] is None or row[9] is None:
        return None
    return DownloadProgress(bytes=row[6], total=row[7], started_at=row[8], at=row[9])


def _job(row: asyncpg.Record) -> DownloadJob:
    return DownloadJob(call_pk=row[0], recording_id=row[1], provider=row[2], call_id=row[3],
                       url=row[4], url_expires_at=row[5], content_type=row[6], size=row[7],
                       attempts=row[8], last_error=row[9])
