-- Retention (issue 17): when a call settled, so settled calls can be pruned after
-- [retention] settled_calls seconds, and how far a download in progress has got.
-- Times are POSIX seconds (REAL).

-- When the call settled: its terminal state was written (set by the trigger below), or it
-- was untracked. NULL while the call is still tracked.
ALTER TABLE calls ADD COLUMN settled_at REAL;
UPDATE calls SET settled_at = updated_at WHERE terminal IS NOT NULL;

-- Set in the same statement that makes a call terminal, whichever code path writes it.
CREATE TRIGGER calls_settled AFTER UPDATE OF terminal ON calls
    WHEN NEW.terminal IS NOT NULL AND OLD.terminal IS NULL AND NEW.settled_at IS NULL
BEGIN
    UPDATE calls SET settled_at = NEW.updated_at WHERE pk = NEW.pk;
END;

-- An untracked call is settled too (CONTRACT: "a terminal event or untrack"), from the
-- first untrack on.
UPDATE calls SET settled_at = untracked_at WHERE settled_at IS NULL AND untracked_at IS NOT NULL;
CREATE TRIGGER calls_untracked_settled AFTER UPDATE OF untracked_at ON calls
    WHEN NEW.untracked_at IS NOT NULL AND NEW.settled_at IS NULL
BEGIN
    UPDATE calls SET settled_at = NEW.untracked_at WHERE pk = NEW.pk;
END;

-- The prune's one query: settled calls, oldest first.
CREATE INDEX calls_settled_at ON calls (settled_at) WHERE settled_at IS NOT NULL;

-- The pruning deletes by call: these find a call's rows without a scan.
CREATE INDEX events_of_call ON events (call_pk);
CREATE INDEX deliveries_of_call ON deliveries (call_pk);

-- A download in progress, written by the archiver every few seconds (for `status`, another
-- process): bytes so far, the expected size when known, and when the attempt started.
ALTER TABLE recordings ADD COLUMN download_bytes INTEGER;
ALTER TABLE recordings ADD COLUMN download_total INTEGER;
ALTER TABLE recordings ADD COLUMN download_started_at REAL;
ALTER TABLE recordings ADD COLUMN download_progress_at REAL;
