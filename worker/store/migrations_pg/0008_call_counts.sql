-- Maintained call counts (issue 18), as SQLite's migration 0008: `counts` reads this small
-- table instead of grouping every call. Row triggers keep it in the transaction of every
-- change (insert, a change of state, delete: untrack and prune need nothing of their own);
-- the update trigger fires only when a state column is in the SET list and does its work
-- only when the state really changed. Several workers: the counter rows are locked only on
-- a real state change (a few per call's life, not per poll) and only until commit.
-- Rows that fall to n = 0 are kept (and not reported). The number matches SQLite's 0008 so
-- the phase-2 migrations of the two backends line up.

CREATE TABLE call_counts (
    provider text   NOT NULL,
    state    text   NOT NULL,
    n        bigint NOT NULL,
    PRIMARY KEY (provider, state)
);
CREATE FUNCTION call_state(terminal text, untracked_at float8, set_aside_reason text, status text)
    RETURNS text LANGUAGE sql IMMUTABLE AS
    $$ SELECT COALESCE(terminal, CASE WHEN untracked_at IS NOT NULL THEN 'untracked'
                                      WHEN set_aside_reason IS NOT NULL THEN 'set_aside' END,
                       status) $$;
INSERT INTO call_counts (provider, state, n)
    SELECT provider, call_state(terminal, untracked_at, set_aside_reason, status), count(*) FROM calls GROUP BY 1, 2;
CREATE FUNCTION call_counts_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE call_counts SET n = n - 1
        WHERE provider = OLD.provider
          AND state = call_state(OLD.terminal, OLD.untracked_at, OLD.set_aside_reason, OLD.status);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO call_counts (provider, state, n)
        VALUES (NEW.provider, call_state(NEW.terminal, NEW.untracked_at, NEW.set_aside_reason, NEW.status), 1)
        ON CONFLICT (provider, state) DO UPDATE SET n = call_counts.n + 1;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER call_counts_insert AFTER INSERT ON calls
    FOR EACH ROW EXECUTE FUNCTION call_counts_change();
CREATE TRIGGER call_counts_delete AFTER DELETE ON calls
    FOR EACH ROW EXECUTE FUNCTION call_counts_change();
CREATE TRIGGER call_counts_update AFTER UPDATE OF provider, status, terminal, set_aside_reason,
    untracked_at
    ON calls FOR EACH ROW
    WHEN (OLD.provider IS DISTINCT FROM NEW.provider
          OR call_state(OLD.terminal, OLD.untracked_at, OLD.set_aside_reason, OLD.status)
             IS DISTINCT FROM call_state(NEW.terminal, NEW.untracked_at, NEW.set_aside_reason, NEW.status))
    EXECUTE FUNCTION call_counts_change();
