"""The SQL of the delivery store (``deliveries.py``), kept apart from its Python.

Built only from constants: values are always bound parameters. See ``deliveries.py`` for the
head-of-chain invariant these statements keep.
"""

from __future__ import annotations


def earlier_open(alias: str) -> str:
    """SQL: an earlier delivery of the same call to the same endpoint is still open."""
    return (f"EXISTS (SELECT 1 FROM deliveries p WHERE p.call_pk = {alias}.call_pk "
            f"AND p.endpoint = {alias}.endpoint AND p.event_seq < {alias}.event_seq "
            f"AND p.finished_at IS NULL)")


# Every endpoint that has a pending head, with its earliest next_attempt_at: a loose index
# scan (one index seek per endpoint), not a read of every pending row.
HEADS = (
    "WITH RECURSIVE ep(url) AS ("
    " SELECT (SELECT MIN(endpoint) FROM deliveries"
    "         WHERE state = 'pending' AND next_attempt_at IS NOT NULL)"
    " UNION ALL"
    " SELECT (SELECT MIN(endpoint) FROM deliveries"
    "         WHERE state = 'pending' AND next_attempt_at IS NOT NULL AND endpoint > ep.url)"
    " FROM ep WHERE ep.url IS NOT NULL) "
    "SELECT url, (SELECT MIN(next_attempt_at) FROM deliveries"
    "             WHERE state = 'pending' AND next_attempt_at IS NOT NULL AND endpoint = ep.url)"
    " FROM ep WHERE url IS NOT NULL"
)

# Lease one endpoint's due heads and return all that sending them needs, in one statement.
CLAIM = (
    "UPDATE deliveries SET lease_owner = ?, next_attempt_at = ? WHERE pk IN ("
    " SELECT q.pk FROM deliveries q WHERE q.endpoint = ? AND q.state = 'pending'"
    f" AND q.next_attempt_at <= ? AND NOT {earlier_open('q')}"
    " ORDER BY q.next_attempt_at LIMIT ?) RETURNING pk,"
    " (SELECT e.id FROM events e WHERE e.seq = deliveries.event_seq),"
    " (SELECT e.type FROM events e WHERE e.seq = deliveries.event_seq),"
    " (SELECT c.provider FROM calls c WHERE c.pk = deliveries.call_pk),"
    " (SELECT c.call_id FROM calls c WHERE c.pk = deliveries.call_pk),"
    " endpoint, (SELECT e.body FROM events e WHERE e.seq = deliveries.event_seq),"
    " schedule_step, (SELECT c.webhook_url FROM calls c WHERE c.pk = deliveries.call_pk)"
)

LOG_ATTEMPT = ("INSERT INTO delivery_attempts (delivery_pk, attempt, started_at, status_code,"
                " latency, error, reply) VALUES (?, ?, ?, ?, ?, ?, ?)")

SETTLE = ("attempts = attempts + :made, schedule_step = schedule_step + :made, last_status ="
           " COALESCE(:status, last_status), last_error = :reason, lease_owner = NULL,"
           " updated_at = :now")

# Delivered or dead (a replay may have finished it meanwhile: the first end stands).
FINISH = (f"UPDATE deliveries SET {SETTLE}, next_attempt_at = NULL, finished_at ="
           " COALESCE(finished_at, :now), state = CASE WHEN finished_at IS NULL THEN :state"
           " ELSE state END WHERE pk = :pk")

# The next delivery of a finished one's chain is due now (see the module docstring).
PROMOTE_NEXT = (
    "UPDATE deliveries AS d SET next_attempt_at = ? WHERE d.call_pk = (SELECT call_pk FROM"
    " deliveries WHERE pk = ?) AND d.endpoint = ? AND d.finished_at IS NULL AND d.state ="
    f" 'pending' AND d.next_attempt_at IS NULL AND NOT {earlier_open('d')}")

# Due again at :at, unless a 410 disabled it (or its endpoint, :at NULL) or a replay queued
# an earlier event of its call meanwhile: then it waits without a time, like any non-head.
RETRY = (f"UPDATE deliveries AS d SET {SETTLE}, next_attempt_at = CASE WHEN d.state <>"
          f" 'pending' OR :at IS NULL OR {earlier_open('d')} THEN NULL ELSE :at END"
          " WHERE d.pk = :pk")

NEXT_DUE = ("SELECT MIN(next_attempt_at) FROM deliveries"
             " WHERE state = 'pending' AND next_attempt_at IS NOT NULL AND endpoint = ?")

VIEW = (
    "SELECT e.id, e.type, c.provider, c.call_id, d.endpoint, d.state, d.attempts,"
    " d.last_status, d.last_error, d.next_attempt_at, d.lease_owner IS NOT NULL,"
    " d.created_at, d.finished_at FROM deliveries d JOIN events e ON e.seq = d.event_seq"
    " JOIN calls c ON c.pk = d.call_pk "
)
