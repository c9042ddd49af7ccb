"""/metrics: the database's size and rows, and the bytes of downloads under way."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.api.support import FakeArchiver, TestRuntime
from tests.api.test_health_metrics import families
from worker.archive.base import DownloadJob, DownloadProgress
from worker.store.base import NewCall
from worker.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


async def test_database_size_and_rows_follow_the_store(client: httpx.AsyncClient,
                                                      store: SQLiteStore) -> None:
    """Rows per table and the size come from the store, and move when calls are pruned."""
    now = time.time()
    await store.track_many([(NewCall(provider="envoy", call_id=f"c{i}"), now) for i in range(5)])
    got = families((await client.get("/metrics")).text)
    rows = got["callwatch_rows"]
    assert rows[("callwatch_rows", (("table", "calls"),))] == 5
    assert rows[("callwatch_rows", (("table", "attempts"),))] == 0
    size = got["callwatch_database_size_bytes"][("callwatch_database_size_bytes", ())]
    assert size == (await store.table_stats()).size_bytes > 0
    async with store.db.transaction() as db:
        await db.execute("UPDATE calls SET terminal = 'completed', updated_at = ?", (now,))
    assert len(await store.prune_settled(now + 1, limit=10)) == 5
    got = families((await client.get("/metrics")).text)
    assert got["callwatch_rows"][("callwatch_rows", (("table", "calls"),))] == 0


async def test_bytes_in_flight_sum_the_archivers_live_downloads(
        client: httpx.AsyncClient, runtime: TestRuntime) -> None:
    """callwatch_download_bytes_in_flight is the sum over the archiver's downloads()."""
    job = DownloadJob(call_pk=1, provider="envoy", call_id="c", recording_id="r", url=None,
                      url_expires_at=None, content_type=None, size=None, attempts=0)
    runtime.archiver = FakeArchiver(live=[
        (job, DownloadProgress(bytes=1000, total=None, started_at=0, at=1)),
        (job, DownloadProgress(bytes=24, total=4096, started_at=0, at=1))])
    got = families((await client.get("/metrics")).text)
    assert got["callwatch_download_bytes_in_flight"][
        ("callwatch_download_bytes_in_flight", ())] == 1024
