-- Discovery (issue 15): one row per provider whose list endpoint callwatch sweeps.
-- Times are POSIX seconds (REAL).
CREATE TABLE discovery (
    provider     TEXT PRIMARY KEY,
    -- When discovery first ran for this provider: the floor when discover_since is not set.
    first_ran_at REAL NOT NULL,
    -- The high-water mark: every call created before it has been listed. NULL: no sweep yet.
    mark         REAL,
    -- Like calls.lease_*: one worker sweeps a provider at a time.
    lease_owner  TEXT,
    lease_until  REAL,
    updated_at   REAL NOT NULL
);
