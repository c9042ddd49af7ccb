"""The SQLite backend's ``DownloadStore`` (``store/base.py``): a part ``SQLiteStore`` holds.

The queue is the ``recordings`` table (migration 0003): a job is an ``available`` recording
of a call that is still tracked, claimed earliest link expiry first through a partial index
that holds only such rows. A claim is a lease, as for calls: a crashed daemon's jobs come
back when its leases run out, or at once when the next start sees its process is gone.

Settling a recording goes through ``planning.settle_archive`` inside one transaction with the
call's new state and events. A call a poll has leased is left alone (``False``): the poll
will write the call back from what it read, and must not overwrite a fresh archive result.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

import structlog

from worker.archive.base import ArchiveState, DownloadInfo, DownloadJob, DownloadProgress
from worker.model import DownloadSource
from worker.reconcile import Archived, ArchiveFailed, Policy
from worker.store import jobs, rows
from worker.store.planning import dead_owners, poll_holds, settle_archive
from worker.store.sqlite_db import SQLiteDatabase

log = structlog.get_logger("worker.store")

_JOB_COLUMNS = (
    "r.call_pk, r.recording_id, c.provider, c.call_id, r.url, r.url_expires_at, "
    "r.content_type, r.size, r.download_attempts, r.download_error"
)
_PENDING = ("r.status = 'available' AND c.terminal IS NULL AND c.untracked_at IS NULL "
            "AND c.provider IN ({providers})")
_FREE = "(r.download_lease_until IS NULL OR r.download_lease_until < ?)"


def _marks(items: list[str]) -> str:
    return ",".join("?" * len(items))


class SQLiteDownloads:
    """The archiver's queue in the same SQLite file (and transactions) as calls and events."""

    def __init__(self, db: SQLiteDatabase, owner: str, lease_seconds: float) -> None:
        self._db = db
        self.owner = owner
        self.lease_seconds = lease_seconds

    async def claim_due_downloads(self, providers: list[str], now: float,
                                  limit: int) -> list[DownloadJob]:
        if limit <= 0 or not providers:
            return []
        pending = _PENDING.format(providers=_marks(providers))
        async with self._db.transaction() as db:
            found = list(await db.execute_fetchall(
                f"SELECT {_JOB_COLUMNS} FROM recordings r JOIN calls c ON c.pk = r.call_pk "
                f"WHERE {pending} AND r.download_next_at <= ? AND {_FREE} "
                f"ORDER BY r.url_expires_at, r.first_seen_at LIMIT ?",
                (*providers, now, now, limit)))
            await db.executemany(
                "UPDATE recordings SET download_lease_owner = ?, download_lease_until = ? "
                "WHERE call_pk = ? AND recording_id = ?",
                [(self.owner, now + self.lease_seconds, r["call_pk"], r["recording_id"])
                 for r in found])
        return [_job(r) for r in found]

    async def next_download_due_at(self, providers: list[str]) -> float | None:
        if not providers:
            return None
        pending = _PENDING.format(providers=_marks(providers))
        row = await self._db.fetchone(
            f"SELECT MIN(r.download_next_at) FROM recordings r JOIN calls c ON c.pk = r.call_pk "
            f"WHERE {pending} AND r.download_lease_until IS NULL", tuple(providers))
        return float(row[0]) if row and row[0] is not None else None

    async def record_download_failure(self, job: DownloadJob, *, reason: str, retry_at: float,
                                      counted: bool) -> None:
        async with self._db.transaction() as db:
            await db.execute(
                "UPDATE recordings SET download_attempts = download_attempts + ?, "
                "download_next_at = ?, download_error = ?, download_lease_owner = NULL, "
                "download_lease_until = NULL WHERE call_pk = ? AND recording_id = ?",
                (int(counted), retry_at, reason, job.call_pk, job.recording_id))

    async def update_recording_link(self, job: DownloadJob, source: DownloadSource) -> None:
        async with self._db.transaction() as db:
            await db.execute(
                "UPDATE recordings SET url = ?, url_expires_at = ?, "
                "content_type = COALESCE(?, content_type), size = COALESCE(?, size) "
                "WHERE call_pk = ? AND recording_id = ? AND status = 'available'",
                (source.url, source.expires_at, source.content_type, source.size,
                 job.call_pk, job.recording_id))

    async def apply_archive_result(self, job: DownloadJob, outcome: Archived | ArchiveFailed,
                                   now: float, policy: Policy) -> bool:
        async with self._db.transaction() as db:
            found = list(await db.execute_fetchall(
                f"SELECT {rows.CALL_COLUMNS}, lease_until FROM calls WHERE pk = ?",
                (job.call_pk,)))
            if found and poll_holds(found[0]["lease_until"], now):
                return False
            if found:
                recordings = rows.recordings_by_call(await db.execute_fetchall(
                    jobs.RECORDINGS_OF, (json.dumps([job.call_pk]),)))
                call = rows.call_from_row(found[0], recordings.get(job.call_pk, ()))
                decision = settle_archive(call, job.recording_id, outcome, now, policy)
                if decision is not None:
                    writes = rows.decision_writes([(decision.call, decision.events, None)], now)
                    await self._db.job_in_transaction(jobs.write_decisions, writes,
                                                      rows.call_updates(writes.calls))
            reason = outcome.reason if isinstance(outcome, ArchiveFailed) else None
            await db.execute(
                "UPDATE recordings SET download_lease_owner = NULL, download_lease_until = NULL, "
                "download_error = COALESCE(?, download_error) "
                "WHERE call_pk = ? AND recording_id = ?", (reason, job.call_pk, job.recording_id))
        return True

    async def extend_download_leases(self, now: float) -> int:
        async with self._db.transaction() as db:
            cursor = await db.execute(
                "UPDATE recordings SET download_lease_until = ? "
                "WHERE status = 'available' AND download_lease_owner = ?",
                (now + self.lease_seconds, self.owner))
            return cursor.rowcount

    async def release_downloads(self) -> int:
        async with self._db.transaction() as db:
            cursor = await db.execute(
                "UPDATE recordings SET download_lease_owner = NULL, download_lease_until = NULL "
                "WHERE status = 'available' AND download_lease_owner = ?", (self.owner,))
            return cursor.rowcount

    async def recover_downloads(self) -> int:
        owners = await self._db.fetchall("SELECT DISTINCT download_lease_owner FROM recordings "
                                         "WHERE download_lease_owner IS NOT NULL")
        dead = dead_owners([r[0] for r in owners], self.owner)
        released = 0
        if dead:
            async with self._db.transaction() as db:
                for owner in dead:
                    cursor = await db.execute(
                        "UPDATE recordings SET download_lease_owner = NULL, "
                        "download_lease_until = NULL WHERE download_lease_owner = ?", (owner,))
                    released += cursor.rowcount
        if released:
            log.info("store.download_leases_recovered", recordings=released, owners=len(dead))
        return released

    async def set_archive_paused(self, reason: str | None, now: float) -> None:
        async with self._db.transaction() as db:
            await db.execute(
                "INSERT INTO archive_state (id, paused_reason, paused_since, updated_at) "
                "VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "paused_reason = excluded.paused_reason, updated_at = excluded.updated_at, "
                "paused_since = CASE WHEN excluded.paused_reason IS NULL THEN NULL "
                "ELSE COALESCE(archive_state.paused_since, excluded.paused_since) END",
                (reason, now if reason is not None else None, now))

    async def archive_state(self) -> ArchiveState:
        state = await self._db.fetchone("SELECT paused_reason, paused_since FROM archive_state "
                                     "WHERE id = 1")
        pending = await self._db.fetchone(
            "SELECT COUNT(*) FROM recordings r JOIN calls c ON c.pk = r.call_pk "
            "WHERE r.status = 'available' AND c.terminal IS NULL AND c.untracked_at IS NULL")
        return ArchiveState(paused_reason=state[0] if state else None,
                            paused_since=state[1] if state else None,
                            pending=int(pending[0]) if pending else 0)

    async def download_info(self, provider: str, call_id: str) -> dict[str, DownloadInfo]:
        found = await self._db.fetchall(
            "SELECT r.recording_id, r.download_attempts, r.download_error, r.download_next_at, "
            "r.download_lease_until, r.status, r.download_bytes, r.download_total, "
            "r.download_started_at, r.download_progress_at FROM recordings r JOIN calls c "
            "ON c.pk = r.call_pk WHERE c.provider = ? AND c.call_id = ?", (provider, call_id))
        return {r[0]: DownloadInfo(attempts=r[1], last_error=r[2],
                                   next_attempt_at=r[3] if r[5] == "available" else None,
                                   in_progress=r[4] is not None,
                                   progress=_progress(r) if r[4] is not None else None)
                for r in found}

    async def record_download_progress(
            self, items: Sequence[tuple[DownloadJob, DownloadProgress]]) -> None:
        if not items:
            return
        async with self._db.transaction() as db:
            await db.executemany(
                "UPDATE recordings SET download_bytes = ?, download_total = ?, "
                "download_started_at = ?, download_progress_at = ? WHERE call_pk = ? "
                "AND recording_id = ? AND download_lease_owner = ?",
                [(p.bytes, p.total, p.started_at, p.at, job.call_pk, job.recording_id,
                  self.owner) for job, p in items])


def _progress(row: sqlite3.Row) -> DownloadProgress | None:
    """The progress columns (bytes, total, started, measured at), once they were written."""
    if row[6] is None or row[8] is None or row[9] is None:
        return None
    return DownloadProgress(bytes=row[6], total=row[7], started_at=row[8], at=row[9])


def _job(row: sqlite3.Row) -> DownloadJob:
    return DownloadJob(call_pk=row[0], recording_id=row[1], provider=row[2], call_id=row[3],
                       url=row[4], url_expires_at=row[5], content_type=row[6], size=row[7],
                       attempts=row[8], last_error=row[9])
