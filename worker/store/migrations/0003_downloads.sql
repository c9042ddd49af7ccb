-- The download queue of the archiver is the recordings table itself: an 'available' recording
-- of a call still being tracked is a job. These columns hold the job's attempts and lease.
-- Times are POSIX seconds (REAL).

ALTER TABLE recordings ADD COLUMN download_attempts INTEGER NOT NULL DEFAULT 0;
-- When the next attempt may start; 0 = at once.
ALTER TABLE recordings ADD COLUMN download_next_at REAL NOT NULL DEFAULT 0;
-- Like calls.lease_*: a claimed job is not claimed again until released or expired.
ALTER TABLE recordings ADD COLUMN download_lease_owner TEXT;
ALTER TABLE recordings ADD COLUMN download_lease_until REAL;
-- Why the last attempt failed (shown by `status`), NULL when none did.
ALTER TABLE recordings ADD COLUMN download_error TEXT;

-- Earliest deadline first: jobs in the order their links expire. NULL (unknown expiry)
-- sorts first, which is what we want: an unknown expiry may be a short one.
CREATE INDEX recordings_download_queue ON recordings (url_expires_at, first_seen_at)
    WHERE status = 'available';

-- One row: whether archiving is paused (disk full, read-only...) and why; read by `status`.
CREATE TABLE archive_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    paused_reason TEXT,
    paused_since  REAL,
    updated_at    REAL NOT NULL
);
