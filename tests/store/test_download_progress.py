"""The store contract for download progress: written by the lease holder, read by status."""

from __future__ import annotations

import pytest

from tests.store.conftest import StoreFactory
from tests.store.support import T0, ended_with_recording, poll, tracked
from worker.archive.base import DownloadProgress

pytestmark = pytest.mark.anyio
ALL = ["envoy"]


async def test_progress_of_a_leased_download_is_recorded_and_read_back(
        store_factory: StoreFactory) -> None:
    """The holder's progress shows in download_info; another worker's write is ignored."""
    one = await store_factory(owner="host-a:1:x")
    two = await store_factory(owner="host-b:2:y")
    await tracked(one, "c1")
    await poll(one, "c1", ended_with_recording(), T0)
    assert (await one.download_info("envoy", "c1"))["r1"].progress is None
    [job] = await one.claim_due_downloads(ALL, T0 + 1, 10)
    assert (await one.download_info("envoy", "c1"))["r1"].progress is None  # none written yet
    seen = DownloadProgress(bytes=4096, total=10_000, started_at=T0 + 1, at=T0 + 3)
    await one.record_download_progress([(job, seen)])
    await two.record_download_progress(
        [(job, DownloadProgress(bytes=1, total=None, started_at=T0, at=T0 + 4))])
    info = (await two.download_info("envoy", "c1"))["r1"]
    assert info.in_progress and info.progress == seen
    assert info.progress.rate == 2048 and info.progress.eta == pytest.approx(5904 / 2048)
    await one.record_download_failure(job, reason="cut", retry_at=T0 + 60, counted=True)
    assert (await one.download_info("envoy", "c1"))["r1"].progress is None  # not in progress
    await one.record_download_progress([])
