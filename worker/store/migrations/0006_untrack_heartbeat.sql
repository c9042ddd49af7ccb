-- Day-2 operations (issue 17): untracking, the newest-first listing, worker heartbeats.
-- Times are POSIX seconds (REAL).

-- When `callwatch untrack` (or DELETE /v1/calls/...) stopped the call; NULL while tracked.
-- An untracked call is never polled again (next_poll_at is NULL) and its recordings are no
-- longer download jobs. A call is settled once it has a terminal event or untracked_at:
-- retention counts from COALESCE(untracked_at, <the terminal time>).
ALTER TABLE calls ADD COLUMN untracked_at REAL;

-- GET /v1/calls: newest first by (tracked_at, pk), paged by keyset, never by OFFSET.
CREATE INDEX calls_newest ON calls (tracked_at, pk);

-- One row per running worker (`callwatch run`), written every few seconds and removed at a
-- clean stop, so `status` can say whether a daemon runs on this database instead of guessing.
CREATE TABLE workers (
    owner       TEXT PRIMARY KEY,   -- the store's owner: host:pid:nonce
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    version     TEXT NOT NULL,
    started_at  REAL NOT NULL,
    beat_at     REAL NOT NULL,      -- the last heartbeat
    progress_at REAL,               -- the last time every component went round its loop
    last_error  TEXT,               -- the last error logged, one line
    last_error_at REAL
) WITHOUT ROWID;
