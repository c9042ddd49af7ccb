"""The SQL of the PostgreSQL store (``postgres.py``), kept apart from its Python.

Built only from constants: values are always bound parameters ($1, $2...). The columns match
the SQLite schema, so ``store/rows.py`` maps rows of both.
"""

from __future__ import annotations

from worker.store import rows

# Advisory lock keys (any bigint; these spell "cw" and a number).
MIGRATE_LOCK = 0x6377_0001
# Held by every transaction that inserts events, until it commits: seq values are then handed
# out in commit order, so a reader that follows seq (the fan-out cursor, events_after) never
# passes a seq whose transaction commits later. Without it a bigserial allocated in a slow
# transaction could commit after a faster, larger one and be skipped for good.
EVENTS_LOCK = 0x6377_0002
# Held by every transaction that opens or closes deliveries (fan-out, results, replay): the
# head-of-chain invariant (store/deliveries.py) needs each of them to see the others' writes.
CHAINS_LOCK = 0x6377_0003

CHANNEL = "callwatch_changed"  # NOTIFY payload: 'calls:<provider>' or 'events'

SCHEMA_TABLE = ("CREATE TABLE IF NOT EXISTS callwatch_schema (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at float8 NOT NULL)")

_C = ", ".join(f"c.{name}" for name in rows.CALL_COLUMNS.split(", "))

TRACK = ("INSERT INTO calls (provider, call_id, metadata, webhook_url, tracked_at, updated_at, "
         "next_poll_at) VALUES ($1, $2, $3, $4, $5, $5, $5) "
         "ON CONFLICT (provider, call_id) DO NOTHING RETURNING pk")

# Many calls in one statement (arrays: provider, call_id, metadata, webhook_url, now), in
# their order, so a call given twice is tracked as its first occurrence says; the new ones
# counted by provider (who to notify), never by counting the table (other writers' rows).
TRACK_MANY = (
    "WITH new AS (INSERT INTO calls (provider, call_id, metadata, webhook_url, tracked_at, "
    "updated_at, next_poll_at) SELECT p, c, m, w, n, n, n FROM unnest($1::text[], "
    "$2::text[], $3::text[], $4::text[], $5::float8[]) WITH ORDINALITY AS t(p, c, m, w, n, i) "
    "ORDER BY i ON CONFLICT (provider, call_id) DO NOTHING RETURNING provider) "
    "SELECT provider, count(*) FROM new GROUP BY provider ORDER BY provider")

# Due and free (never leased, or its lease ran out: its worker is gone or stalled), earliest
# first; rows another worker is claiming at this instant are skipped, not waited for.
CLAIM_CALLS = (
    "WITH due AS (SELECT pk FROM calls WHERE provider = $1 AND next_poll_at IS NOT NULL "
    "AND next_poll_at <= $2 AND (lease_until IS NULL OR lease_until < $2) "
    "ORDER BY next_poll_at LIMIT $3 FOR UPDATE SKIP LOCKED) "
    "UPDATE calls AS c SET lease_owner = $4, lease_until = $5 FROM due WHERE c.pk = due.pk "
    f"RETURNING {_C}, EXISTS (SELECT 1 FROM recordings r WHERE r.call_pk = c.pk)"
)

RECORDINGS_OF = (f"SELECT {rows.RECORDING_COLUMNS} FROM recordings WHERE call_pk = ANY($1) "
                 "ORDER BY call_pk, first_seen_at, recording_id")

# One statement for a batch of call rows (``rows.call_update_params`` order), written only
# where this worker still holds the lease (or nobody does): a worker whose lease lapsed
# while it stalled must not overwrite what the worker that took over wrote.
UPDATE_CALLS = (
    "UPDATE calls AS c SET status = v.status, provider_status = v.provider_status, "
    "started_at = v.started_at, ended_at = v.ended_at, end_reason = v.end_reason, "
    "started_notified = v.started_notified, ended_notified = v.ended_notified, "
    "terminal = v.terminal, terminal_reason = v.terminal_reason, "
    "not_found_since = v.not_found_since, consecutive_failures = v.consecutive_failures, "
    "updated_at = v.updated_at, last_polled_at = v.last_polled_at, "
    # An untracked call stays unpolled even if a poll in flight commits after it.
    "next_poll_at = CASE WHEN c.untracked_at IS NULL THEN v.next_poll_at END, "
    "lease_owner = NULL, lease_until = NULL, "
    "last_snapshot = COALESCE(v.last_snapshot, c.last_snapshot) "
    "FROM unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::text[], $6::int[], "
    "$7::int[], $8::text[], $9::text[], $10::float8[], $11::int[], $12::float8[], "
    "$13::float8[], $14::float8[], $15::text[], $16::int8[]) AS v(status, provider_status, "
    "started_at, ended_at, end_reason, started_notified, ended_notified, terminal, "
    "terminal_reason, not_found_since, consecutive_failures, updated_at, last_polled_at, "
    "next_poll_at, last_snapshot, pk) "
    "WHERE c.pk = v.pk AND (c.lease_owner IS NULL OR c.lease_owner = $17 "
    "OR c.lease_until < v.updated_at) RETURNING c.pk"
)

RECORDING_UPSERT = (
    f"INSERT INTO recordings ({rows.RECORDING_COLUMNS}) VALUES "
    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
    "ON CONFLICT (call_pk, recording_id) DO UPDATE SET status = excluded.status, "
    "url = excluded.url, url_expires_at = excluded.url_expires_at, "
    "content_type = excluded.content_type, size = excluded.size, "
    "reason = excluded.reason, archive_path = excluded.archive_path, "
    "archive_size = excluded.archive_size, archive_sha256 = excluded.archive_sha256"
)

# In the order given (ordinality), so seq follows the decisions' order; a key already in
# the outbox means the event was emitted before: the first stays.
EVENT_INSERT = (
    "INSERT INTO events (id, call_pk, type, key, occurred_at, body) "
    "SELECT id, call_pk, type, key, occurred_at, body FROM unnest($1::text[], $2::int8[], "
    "$3::text[], $4::text[], $5::float8[], $6::bytea[]) WITH ORDINALITY "
    "AS v(id, call_pk, type, key, occurred_at, body, n) ORDER BY n ON CONFLICT DO NOTHING "
    "RETURNING seq"
)

# When this worker can next claim a call of a provider: its own leased calls do not count
# (their results are on the way); another worker's count from its lease's end, so a dead
# worker's calls wake the others when they become theirs.
# Two index probes, not one MIN over an expression (a scan of every call of the provider, a
# quarter of a second at 1 000 000 calls, on every idle lane): the earliest free call from
# calls_due, and the other workers' leased calls (few) from calls_leased. A lease's owner and
# its end are written and cleared together.
NEXT_DUE = ("SELECT LEAST((SELECT next_poll_at FROM calls WHERE provider = $1 "
            "AND next_poll_at IS NOT NULL AND lease_until IS NULL "
            "AND lease_owner IS DISTINCT FROM $2 ORDER BY next_poll_at LIMIT 1), "
            "(SELECT MIN(GREATEST(next_poll_at, lease_until)) FROM calls WHERE provider = $1 "
            "AND next_poll_at IS NOT NULL AND lease_owner IS NOT NULL "
            "AND lease_owner <> $2))")

MAKE_DUE = ("UPDATE calls SET next_poll_at = LEAST(next_poll_at, $1) WHERE provider = $2 "
            "AND call_id = $3 AND next_poll_at IS NOT NULL AND terminal IS NULL")

EVENT_SELECT = ("SELECT e.seq, e.id, c.provider, c.call_id, e.type, e.occurred_at, e.body "
                "FROM events e JOIN calls c ON c.pk = e.call_pk ")

# The heartbeat: the leases of what this worker holds (claimed, and not yet finished, handed
# back or given up: ``postgres.py``), pushed forward. $3 (and $4) name the rows; a row leased
# to us that we no longer hold is left to run out and be claimed again, by anyone.
RENEW_CALLS = ("UPDATE calls SET lease_until = $2 WHERE pk = ANY($3) AND lease_owner = $1 "
               "AND lease_until IS NOT NULL")
RENEW_DELIVERIES = ("UPDATE deliveries SET next_attempt_at = $2 WHERE pk = ANY($3) "
                    "AND lease_owner = $1 AND state = 'pending' AND finished_at IS NULL")
RENEW_DOWNLOADS = (
    "UPDATE recordings AS r SET download_lease_until = $2 FROM unnest($3::int8[], $4::text[]) "
    "AS h(call_pk, recording_id) WHERE r.call_pk = h.call_pk "
    "AND r.recording_id = h.recording_id AND r.download_lease_owner = $1 "
    "AND r.status = 'available'"
)

# Maintained call counts (migration 0008): rows at 0 are kept but not reported.
COUNTS = "SELECT provider, state, n FROM call_counts WHERE n <> 0"
ADD_COUNT = ("INSERT INTO call_counts (provider, state, n) VALUES ($1, $2, $3) "
             "ON CONFLICT (provider, state) DO UPDATE SET n = call_counts.n + excluded.n")
# The earliest due poll: one probe of calls_due per provider.
OLDEST_DUE = ("SELECT MIN(m) FROM (SELECT DISTINCT provider FROM call_counts) AS p, "
              "LATERAL (SELECT MIN(next_poll_at) AS m FROM calls "
              "WHERE provider = p.provider AND next_poll_at IS NOT NULL) AS d")
