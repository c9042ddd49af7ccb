-- Discovery (issue 15): one row per provider whose list endpoint callwatch sweeps, leased so
-- that several workers never sweep one provider at once (as in SQLite's 0005_discovery.sql).
CREATE TABLE discovery (
    provider     text PRIMARY KEY,
    first_ran_at float8 NOT NULL,
    mark         float8,
    lease_owner  text,
    lease_until  float8,
    updated_at   float8 NOT NULL
);
