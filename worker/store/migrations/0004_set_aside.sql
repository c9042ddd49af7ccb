-- A call whose poll results the database refuses for good (a permanent StoreError narrowed
-- down to this call, say metadata that cannot be encoded) is set aside: it is never claimed
-- again (next_poll_at is NULL), `status` and metrics count it, and it stays so across
-- restarts. Times are POSIX seconds (REAL).
ALTER TABLE calls ADD COLUMN set_aside_reason TEXT;
ALTER TABLE calls ADD COLUMN set_aside_at REAL;
