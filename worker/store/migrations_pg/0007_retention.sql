-- Retention (issue 17), as SQLite's 0007_retention.sql: when a call settled, so settled calls
-- can be pruned after [retention] settled_calls seconds, and how far a download in progress
-- has got. Times are POSIX seconds (float8).

-- When the call settled: its terminal state was written (set by the trigger below). NULL
-- while the call is still tracked.
ALTER TABLE calls ADD COLUMN settled_at float8;
UPDATE calls SET settled_at = updated_at WHERE terminal IS NOT NULL;
UPDATE calls SET settled_at = untracked_at WHERE settled_at IS NULL AND untracked_at IS NOT NULL;

-- Set in the same statement that makes a call terminal, whichever code path writes it. A
-- BEFORE trigger writes the new row itself (SQLite's AFTER trigger needs a second UPDATE).
CREATE FUNCTION calls_settled() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.terminal IS NOT NULL AND OLD.terminal IS NULL AND NEW.settled_at IS NULL THEN
        NEW.settled_at := NEW.updated_at;
    END IF;
    -- An untracked call is settled too (CONTRACT: "a terminal event or untrack").
    IF NEW.untracked_at IS NOT NULL AND NEW.settled_at IS NULL THEN
        NEW.settled_at := NEW.untracked_at;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER calls_settled BEFORE UPDATE OF terminal, untracked_at ON calls
    FOR EACH ROW EXECUTE FUNCTION calls_settled();

-- The prune's one query: settled calls, oldest first.
CREATE INDEX calls_settled_at ON calls (settled_at) WHERE settled_at IS NOT NULL;

-- The pruning deletes by call: these find a call's rows without a scan (deliveries_open
-- only covers open ones; recordings' primary key starts with call_pk).
CREATE INDEX events_of_call ON events (call_pk);
CREATE INDEX deliveries_of_call ON deliveries (call_pk);

-- A download in progress, written by the archiver every few seconds (for `status`, another
-- process): bytes so far, the expected size when known, and when the attempt started.
ALTER TABLE recordings ADD COLUMN download_bytes bigint;
ALTER TABLE recordings ADD COLUMN download_total bigint;
ALTER TABLE recordings ADD COLUMN download_started_at float8;
ALTER TABLE recordings ADD COLUMN download_progress_at float8;
