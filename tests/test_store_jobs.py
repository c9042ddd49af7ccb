"""The hot paths' few-step SQL (store/jobs.py, rows.call_updates) on a real SQLite file.

A claim reads its calls back as one aggregated JSON row, with every REAL as quote()d text;
the writer persists a batch with one multi-row UPDATE. Both must give back exactly what
was written: a timestamp off by one ulp would change an event's bytes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.config import TrackingConfig
from worker.model import CallStatus, Snapshot, Terminal, TrackedCall
from worker.reconcile import Decision, Policy, on_poll
from worker.store import jobs, rows
from worker.store.base import NewCall, PermanentStoreError, PollApplied
from worker.store.sqlite import SQLiteStore, migrations

T0 = 1_800_000_000.0
POLICY = Policy(tracking=TrackingConfig(), archiving=False)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    # Every statement here commits on its own: without this each one waits for an fsync,
    # which is most of these tests' time and nothing they check.
    conn.execute("PRAGMA synchronous = OFF")
    for _, _, sql in migrations():
        conn.executescript(sql)
    yield conn
    conn.close()


def track(db: sqlite3.Connection, count: int, provider: str = "ultravox") -> list[int]:
    return [db.execute("INSERT INTO calls (provider, call_id, tracked_at, updated_at, "
                       "next_poll_at) VALUES (?, ?, ?, ?, ?) RETURNING pk",
                       (provider, f"c{i}", T0, T0, T0 + i)).fetchone()[0]
            for i in range(count)]


def claim(db: sqlite3.Connection, now: float, limit: int,
          provider: str = "ultravox") -> list[TrackedCall]:
    claimed, recordings = jobs.claim_due(db, provider, now=now, owner="me", until=now + 120,
                                         limit=limit)
    return rows.calls_from_values(claimed, recordings)


# Seconds since the epoch (and before it), as providers and our clock produce them. SQLite's
# quote() round-trips these; it does not for subnormal-sized values, which no timestamp is.
timestamps = st.one_of(st.none(), st.just(0.0),
                       st.floats(min_value=1e-6, max_value=1e12),
                       st.floats(min_value=-1e12, max_value=-1e-6))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(times=st.fixed_dictionaries({
    "started_at": timestamps, "ended_at": timestamps, "not_found_since": timestamps,
    "last_polled_at": timestamps, "next_poll_at": st.floats(min_value=0.0, max_value=T0)}))
def test_a_claim_gives_back_exactly_what_was_written(
        db: sqlite3.Connection, times: dict[str, float | None]) -> None:
    db.execute("DELETE FROM calls")
    [pk] = track(db, 1)
    [call] = claim(db, T0, 1)
    written = call.replace(status=CallStatus.LIVE, provider_status="joined\u00e9\"",
                           consecutive_failures=3, started_notified=True, **times)
    for statement, params in rows.call_updates([rows.call_update_params(written, T0, None)]):
        db.execute(statement, params)
    [again] = claim(db, T0, 1)
    assert again == written
    assert again.pk == pk


def test_a_claim_leases_the_earliest_due_calls_and_nothing_else(db: sqlite3.Connection) -> None:
    track(db, 5)
    track(db, 2, provider="envoy")
    first = claim(db, T0 + 10, 3)
    assert sorted(c.call_id for c in first) == ["c0", "c1", "c2"]
    leased = db.execute("SELECT provider, call_id FROM calls WHERE lease_owner = 'me' "
                        "ORDER BY pk").fetchall()
    assert [tuple(r) for r in leased] == [("ultravox", "c0"), ("ultravox", "c1"),
                                          ("ultravox", "c2")]
    assert sorted(c.call_id for c in claim(db, T0 + 10, 10)) == ["c3", "c4"]
    assert claim(db, T0 + 10, 10) == []
    assert db.execute("SELECT COUNT(*) FROM calls WHERE lease_owner IS NULL").fetchone()[0] == 2


def test_a_call_taken_by_another_process_between_read_and_lease_is_left_to_it(
        tmp_path: Path, db: sqlite3.Connection) -> None:
    """The lease takes only what is still due and free; the claim returns just those."""
    track(db, 4)
    read = jobs.read_due(db, "ultravox", now=T0 + 10, limit=4)
    assert len(read) == 4
    other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    other.execute("UPDATE calls SET lease_owner = 'other', lease_until = ? WHERE call_id = 'c1'",
                  (T0 + 100,))
    other.execute("UPDATE calls SET next_poll_at = ? WHERE call_id = 'c2'", (T0 + 50,))
    other.close()
    claimed, _ = jobs.lease(db, read, now=T0 + 10, owner="me", until=T0 + 130)
    calls = rows.calls_from_values(claimed, [])
    assert sorted(c.call_id for c in calls) == ["c0", "c3"]
    owners = dict(db.execute("SELECT call_id, lease_owner FROM calls").fetchall())
    assert owners == {"c0": "me", "c1": "other", "c2": None, "c3": "me"}


def test_call_updates_keep_the_last_write_of_a_call_and_cover_every_row(
        db: sqlite3.Connection) -> None:
    """600 calls: three statements (256, 256, 88 padded to 128); a call written twice in
    the batch keeps its second values, as row-by-row UPDATEs in order would."""
    track(db, 600)
    calls = claim(db, T0 + 1000, 600)
    params = [rows.call_update_params(c.replace(provider_status=f"p{c.pk}", next_poll_at=5.0),
                                      T0, None) for c in calls]
    first = calls[0]
    params.insert(0, rows.call_update_params(first.replace(provider_status="old"), T0, None))
    params.append(rows.call_update_params(first.replace(provider_status="new",
                                                        terminal=Terminal.COMPLETED), T0, None))
    statements = rows.call_updates(params)
    assert len(statements) == 3
    assert len({sql for sql, _ in statements}) == 2  # the 256-row text is shared
    for statement, values in statements:
        db.execute(statement, values)
    stored = {r["pk"]: r for r in db.execute(
        "SELECT pk, provider_status, next_poll_at, terminal, lease_owner FROM calls")}
    assert all(r["lease_owner"] is None for r in stored.values())
    assert stored[first.pk]["provider_status"] == "new"
    assert stored[first.pk]["next_poll_at"] is None  # terminal: never due again
    assert all(stored[c.pk]["provider_status"] == f"p{c.pk}" and
               stored[c.pk]["next_poll_at"] == 5.0 for c in calls[1:])


@pytest.mark.anyio
async def test_a_batch_larger_than_one_statement_is_still_one_transaction(
        tmp_path: Path) -> None:
    """Two UPDATE statements, then an event that cannot be written: none of it stays."""
    store = await SQLiteStore.open(tmp_path / "callwatch.db")
    try:
        await store.track_many([(NewCall(provider="envoy", call_id=f"c{i}"), T0)
                                for i in range(300)])
        calls = await store.claim_due_calls("envoy", T0, 300)
        items = [PollApplied(decision=Decision(call=c.replace(provider_status="seen")))
                 for c in calls]
        live = on_poll(calls[0], Snapshot(status=CallStatus.LIVE, provider_status="live"),
                       T0 + 1, POLICY)
        assert live.events  # call.started, for a call without a pk: refused by the schema
        items.append(PollApplied(decision=Decision(call=live.call.replace(pk=None),
                                                   events=live.events)))
        with pytest.raises(PermanentStoreError):
            await store.apply_poll_results(items, T0 + 1)
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("SELECT COUNT(*) FROM calls WHERE provider_status = 'seen'"
                                ).fetchone() == (0,)
    finally:
        await store.close()


def test_a_failed_transaction_rolls_back_and_keeps_its_own_error(db: sqlite3.Connection) -> None:
    """The work's error comes out, not a failed ROLLBACK's, whether or not SQLite had
    already rolled the transaction back by itself."""
    [pk] = track(db, 1)

    def fails_in_sql(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE calls SET provider_status = 'half' WHERE pk = ?", (pk,))
        conn.execute("INSERT INTO events (id, call_pk, type, key, occurred_at, body) "
                     "VALUES ('e', 999, 't', 'k', 0, x'')")  # no call 999: foreign key

    def already_rolled_back(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")  # as SQLite does by itself after some I/O errors
        raise OSError("the disk went away")

    db.execute("PRAGMA foreign_keys=ON")
    with pytest.raises(sqlite3.IntegrityError):
        jobs.transaction(db, fails_in_sql)
    with pytest.raises(OSError, match="went away"):
        jobs.transaction(db, already_rolled_back)
    assert not db.in_transaction
    assert db.execute("SELECT provider_status FROM calls").fetchone()[0] is None
