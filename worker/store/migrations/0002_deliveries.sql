-- Webhook delivery: one row per (event, endpoint), the attempts made, endpoint state, and the
-- relay's cursor in the outbox. Times are POSIX seconds (REAL). Endpoints are named by URL.
--
-- A delivery's state: 'pending' (to be sent), 'delivered', 'dead' (schedule ran out, or it
-- could not be signed), 'disabled' (its endpoint answered 410; it waits for a replay).
-- Open = pending or disabled = finished_at IS NULL. Only the head of each (call, endpoint)
-- chain (the open delivery with the lowest event_seq) has a next_attempt_at; the others
-- wait with NULL until the head is delivered or dies. While an attempt is in flight,
-- next_attempt_at holds the lease's expiry, so a leased delivery is simply not due.

CREATE TABLE deliveries (
    pk              INTEGER PRIMARY KEY,
    event_seq       INTEGER NOT NULL REFERENCES events (seq),
    call_pk         INTEGER NOT NULL REFERENCES calls (pk),
    endpoint        TEXT    NOT NULL,
    state           TEXT    NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,  -- every attempt ever made
    schedule_step   INTEGER NOT NULL DEFAULT 0,  -- attempts since it was (re)queued
    next_attempt_at REAL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    finished_at     REAL,                        -- when it was delivered or died
    lease_owner     TEXT,
    UNIQUE (event_seq, endpoint)                 -- a fan-out re-run after a crash adds nothing
);

-- The claim: due heads of one endpoint, earliest first; and the endpoints that have any.
CREATE INDEX deliveries_due ON deliveries (endpoint, next_attempt_at)
    WHERE state = 'pending' AND next_attempt_at IS NOT NULL;

-- The ordering gate: is an earlier delivery of this call to this endpoint still open?
CREATE INDEX deliveries_open ON deliveries (call_pk, endpoint, event_seq)
    WHERE finished_at IS NULL;

-- `deliveries --dead`, `replay --dead` and the dead count, without reading delivered rows.
CREATE INDEX deliveries_dead ON deliveries (created_at) WHERE state = 'dead';

-- One row per attempt: what was answered, how fast, and the first bytes of the reply.
CREATE TABLE delivery_attempts (
    pk          INTEGER PRIMARY KEY,
    delivery_pk INTEGER NOT NULL REFERENCES deliveries (pk),
    attempt     INTEGER NOT NULL,
    started_at  REAL    NOT NULL,
    status_code INTEGER,
    latency     REAL    NOT NULL,
    error       TEXT,
    reply       BLOB
);

CREATE INDEX delivery_attempts_of ON delivery_attempts (delivery_pk);

-- Endpoints that answered 410 Gone: nothing is sent to them until a replay re-enables them.
CREATE TABLE endpoints (
    url             TEXT PRIMARY KEY,
    disabled_at     REAL NOT NULL,
    disabled_reason TEXT NOT NULL
) WITHOUT ROWID;

-- How far readers of the outbox got: 'deliveries' is the last event seq fanned out.
CREATE TABLE outbox_cursors (
    name TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
) WITHOUT ROWID;
