-- Day-2 operations (issue 17), as SQLite's 0006_untrack_heartbeat.sql: untracking and
-- worker heartbeats. The newest-first listing already has its index (calls_listed).

-- When `callwatch untrack` (or DELETE /v1/calls/...) stopped the call; NULL while tracked.
-- A call is settled once it has a terminal event or untracked_at.
ALTER TABLE calls ADD COLUMN untracked_at float8;

-- One row per running worker, written every few seconds, removed at a clean stop.
CREATE TABLE workers (
    owner         text PRIMARY KEY,
    host          text NOT NULL,
    pid           integer NOT NULL,
    version       text NOT NULL,
    started_at    float8 NOT NULL,
    beat_at       float8 NOT NULL,
    progress_at   float8,
    last_error    text,
    last_error_at float8
);
