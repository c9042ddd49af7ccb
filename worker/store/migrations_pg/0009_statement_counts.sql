-- Call counts kept per statement, not per row, on insert and delete. 0008's row triggers
-- updated the same counter row once per call; inside one transaction every such update adds
-- a version of that row that the next one must walk past, so a transaction inserting or
-- deleting N calls cost O(N^2) (the import of a SQLite database, a batch of discovery pages,
-- a prune). Here each statement adds its calls to each counter row once, from its transition
-- table, grouped. The counter rows are written in (provider, state) order, as recount's
-- repair does, so two workers' statements lock them in the same order; ON CONFLICT lets two
-- workers create the same row at once.
-- A change of state stays a row trigger (0008's call_counts_update): PostgreSQL allows no
-- transition table on an `UPDATE OF columns` trigger, and a statement trigger on every UPDATE
-- would copy the changed rows of each claim and lease renewal; a state changes a few times
-- in a call's life, in batches no larger than a poll batch.
-- PostgreSQL only: SQLite's numbering needs no 0009 (each backend counts its own).

DROP TRIGGER call_counts_insert ON calls;
DROP TRIGGER call_counts_delete ON calls;

CREATE FUNCTION call_counts_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO call_counts (provider, state, n)
        SELECT provider, call_state(terminal, untracked_at, set_aside_reason, status), count(*)
        FROM inserted_calls GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (provider, state) DO UPDATE SET n = call_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

-- A deleted call was counted when it was inserted (or its state last changed), so its row
-- exists: the conflict branch always runs and the count goes down.
CREATE FUNCTION call_counts_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO call_counts (provider, state, n)
        SELECT provider, call_state(terminal, untracked_at, set_aside_reason, status), -count(*)
        FROM deleted_calls GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (provider, state) DO UPDATE SET n = call_counts.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE TRIGGER call_counts_insert AFTER INSERT ON calls
    REFERENCING NEW TABLE AS inserted_calls
    FOR EACH STATEMENT EXECUTE FUNCTION call_counts_inserted();
CREATE TRIGGER call_counts_delete AFTER DELETE ON calls
    REFERENCING OLD TABLE AS deleted_calls
    FOR EACH STATEMENT EXECUTE FUNCTION call_counts_deleted();
