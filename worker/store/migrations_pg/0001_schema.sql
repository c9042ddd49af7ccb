-- The PostgreSQL schema: the same tables and columns as the SQLite migrations 0001-0004, so
-- the shared row mapping (store/rows.py) reads both. Times are POSIX seconds (float8).
-- Leases (lease_owner, lease_until) are what let several workers share the database: a
-- claimed row is not claimed again until its lease runs out or its owner releases it, and a
-- live worker renews its leases every lease_seconds / 3 (store/postgres.py).

CREATE TABLE calls (
    pk                   bigserial PRIMARY KEY,
    provider             text    NOT NULL,
    call_id              text    NOT NULL,
    status               text    NOT NULL DEFAULT 'pending',
    provider_status      text,
    started_at           float8,
    ended_at             float8,
    end_reason           text,
    metadata             text    NOT NULL DEFAULT '{}',
    webhook_url          text,
    started_notified     integer NOT NULL DEFAULT 0,
    ended_notified       integer NOT NULL DEFAULT 0,
    terminal             text,
    terminal_reason      text,
    not_found_since      float8,
    consecutive_failures integer NOT NULL DEFAULT 0,
    tracked_at           float8  NOT NULL,
    updated_at           float8  NOT NULL,
    last_polled_at       float8,
    next_poll_at         float8,
    lease_owner          text,
    lease_until          float8,
    last_snapshot        text,
    -- A call whose results the database refuses for good is set aside (never claimed again).
    set_aside_reason     text,
    set_aside_at         float8,
    UNIQUE (provider, call_id)
);

CREATE INDEX calls_due ON calls (provider, next_poll_at) WHERE next_poll_at IS NOT NULL;
CREATE INDEX calls_leased ON calls (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX calls_listed ON calls (tracked_at DESC, pk DESC);

CREATE TABLE recordings (
    call_pk              bigint  NOT NULL REFERENCES calls (pk),
    recording_id         text    NOT NULL,
    status               text    NOT NULL,
    url                  text,
    url_expires_at       float8,
    content_type         text,
    size                 bigint,
    first_seen_at        float8  NOT NULL,
    reason               text,
    archive_path         text,
    archive_size         bigint,
    archive_sha256       text,
    download_attempts    integer NOT NULL DEFAULT 0,
    download_next_at     float8  NOT NULL DEFAULT 0,
    download_lease_owner text,
    download_lease_until float8,
    download_error       text,
    PRIMARY KEY (call_pk, recording_id)
);

CREATE INDEX recordings_download_queue ON recordings (url_expires_at NULLS FIRST, first_seen_at)
    WHERE status = 'available';

-- The outbox. seq is handed out under an advisory lock (see postgres_sql.EVENTS_LOCK), so the
-- order of seq is the order of commits and a reader following seq never skips a late commit.
CREATE TABLE events (
    seq         bigserial PRIMARY KEY,
    id          text    NOT NULL UNIQUE,
    call_pk     bigint  NOT NULL REFERENCES calls (pk),
    type        text    NOT NULL,
    key         text    NOT NULL,
    occurred_at float8  NOT NULL,
    body        bytea   NOT NULL,
    UNIQUE (call_pk, key)
);

CREATE TABLE deliveries (
    pk              bigserial PRIMARY KEY,
    event_seq       bigint  NOT NULL REFERENCES events (seq),
    call_pk         bigint  NOT NULL REFERENCES calls (pk),
    endpoint        text    NOT NULL,
    state           text    NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    schedule_step   integer NOT NULL DEFAULT 0,
    next_attempt_at float8,
    last_status     integer,
    last_error      text,
    created_at      float8  NOT NULL,
    updated_at      float8  NOT NULL,
    finished_at     float8,
    lease_owner     text,
    UNIQUE (event_seq, endpoint)
);

CREATE INDEX deliveries_due ON deliveries (endpoint, next_attempt_at)
    WHERE state = 'pending' AND next_attempt_at IS NOT NULL;
CREATE INDEX deliveries_open ON deliveries (call_pk, endpoint, event_seq)
    WHERE finished_at IS NULL;
CREATE INDEX deliveries_dead ON deliveries (created_at) WHERE state = 'dead';
CREATE INDEX deliveries_leased ON deliveries (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE delivery_attempts (
    pk          bigserial PRIMARY KEY,
    delivery_pk bigint  NOT NULL REFERENCES deliveries (pk),
    attempt     integer NOT NULL,
    started_at  float8  NOT NULL,
    status_code integer,
    latency     float8  NOT NULL,
    error       text,
    reply       bytea
);

CREATE INDEX delivery_attempts_of ON delivery_attempts (delivery_pk);

CREATE TABLE endpoints (
    url             text PRIMARY KEY,
    disabled_at     float8 NOT NULL,
    disabled_reason text   NOT NULL
);

CREATE TABLE outbox_cursors (
    name text PRIMARY KEY,
    seq  bigint NOT NULL
);

CREATE TABLE archive_state (
    id            integer PRIMARY KEY CHECK (id = 1),
    paused_reason text,
    paused_since  float8,
    updated_at    float8 NOT NULL
);
