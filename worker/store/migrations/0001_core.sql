-- Tracked calls, their recordings, and the outbox of events written with them.
-- Times are POSIX seconds (REAL). A call with next_poll_at IS NULL is terminal.

CREATE TABLE calls (
    pk                   INTEGER PRIMARY KEY,
    provider             TEXT    NOT NULL,
    call_id              TEXT    NOT NULL,
    status               TEXT    NOT NULL DEFAULT 'pending',
    provider_status      TEXT,
    started_at           REAL,
    ended_at             REAL,
    end_reason           TEXT,
    metadata             TEXT    NOT NULL DEFAULT '{}',
    webhook_url          TEXT,
    started_notified     INTEGER NOT NULL DEFAULT 0,
    ended_notified       INTEGER NOT NULL DEFAULT 0,
    terminal             TEXT,
    terminal_reason      TEXT,
    not_found_since      REAL,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    tracked_at           REAL    NOT NULL,
    updated_at           REAL    NOT NULL,
    last_polled_at       REAL,
    next_poll_at         REAL,
    -- Leases let several workers share one database later: a claimed call is not claimed
    -- again until its lease runs out or its owner releases it.
    lease_owner          TEXT,
    lease_until          REAL,
    last_snapshot        TEXT,
    UNIQUE (provider, call_id)
);

-- The scheduler's one hot query: the earliest due calls of one provider.
CREATE INDEX calls_due ON calls (provider, next_poll_at) WHERE next_poll_at IS NOT NULL;

CREATE TABLE recordings (
    call_pk        INTEGER NOT NULL REFERENCES calls (pk),
    recording_id   TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    url            TEXT,
    url_expires_at REAL,
    content_type   TEXT,
    size           INTEGER,
    first_seen_at  REAL    NOT NULL,
    reason         TEXT,
    archive_path   TEXT,
    archive_size   INTEGER,
    archive_sha256 TEXT,
    PRIMARY KEY (call_pk, recording_id)
) WITHOUT ROWID;

-- The outbox. body holds the exact bytes consumers receive; (call_pk, key) makes every
-- promised-once event impossible to write twice.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT    NOT NULL UNIQUE,
    call_pk     INTEGER NOT NULL REFERENCES calls (pk),
    type        TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    occurred_at REAL    NOT NULL,
    body        BLOB    NOT NULL,
    UNIQUE (call_pk, key)
);
