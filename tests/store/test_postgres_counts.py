"""The PostgreSQL side of maintained counts: triggers on deletes, the repair of drift."""

from __future__ import annotations

import psycopg
import pytest
from structlog.testing import capture_logs

from tests.store.support import T0, tracked
from worker.store.factory import open_store

pytestmark = pytest.mark.anyio

RECOUNT = ("SELECT provider, COALESCE(terminal, CASE WHEN set_aside_reason IS NOT NULL "
           "THEN 'set_aside' END, status), COUNT(*) FROM calls GROUP BY 1, 2")


def sql(url: str, *statements: str) -> dict[tuple[str, str], int]:
    """Run ``statements``, then return the full count of the calls."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)
        return {(r[0], r[1]): r[2] for r in conn.execute(RECOUNT).fetchall()}


async def test_deletes_leave_the_counts_and_drift_is_repaired(pg_url: str) -> None:
    """A deleted call is taken off its count; counts edited by hand are put right by
    ``recount_calls`` with a warning, and are kept exactly from then on."""
    store = await open_store(pg_url)
    try:
        await tracked(store, "a", "b", "c")
        await store.set_aside("envoy", "c", "bad", T0)
        after = sql(pg_url, "DELETE FROM calls WHERE call_id IN ('a', 'c')")
        assert dict((await store.counts()).calls_by_state) == after == {("envoy", "pending"): 1}
        sql(pg_url, "UPDATE call_counts SET n = 7",
            "INSERT INTO call_counts VALUES ('ghost', 'live', 3)")
        with capture_logs() as logs:
            assert await store.recount_calls() == 3  # pending, set_aside (was 0), ghost
        assert [e["groups"] for e in logs if e["event"] == "store.counts_repaired"] == [3]
        await tracked(store, "d")
        assert dict((await store.counts()).calls_by_state) == {("envoy", "pending"): 2}
        assert await store.recount_calls() == 0
    finally:
        await store.close()
