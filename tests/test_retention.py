"""Retention's pure parts (cut-off, pass interval, config) and its daemon component."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.archive.base import DownloadProgress
from worker.cli.archive_report import progress_text, size_text
from worker.config import ConfigError, parse
from worker.config_sections import RetentionConfig
from worker.retention import EVERY, Retention, cutoff, pass_interval
from worker.store.base import NewCall
from worker.store.sqlite import SQLiteStore

T0 = 1_800_000_000.0
seconds = st.floats(min_value=0, max_value=10 * 365 * 86_400, allow_nan=False)


@given(now=st.floats(min_value=0, max_value=4e9), keep=seconds)
def test_the_cutoff_is_now_minus_the_retention_and_none_when_off(now: float, keep: float) -> None:
    """0 = never prune; otherwise calls settled before now - settled_calls may go."""
    got = cutoff(now, RetentionConfig(settled_calls=keep))
    assert got is None if keep == 0 else got == now - keep


@given(keep=seconds)
def test_passes_come_often_enough_for_a_short_retention(keep: float) -> None:
    """Between 1 s and EVERY, and never more than a tenth of a retention over 10 s."""
    every = pass_interval(RetentionConfig(settled_calls=keep))
    assert 1.0 <= every <= EVERY
    if keep >= 10:
        assert every <= keep / 10


def parsed(retention: str) -> RetentionConfig:
    text = '[providers.apifycloud]\nwidget_key_env = "W"\n' + retention
    import tomllib

    return parse(tomllib.loads(text), Path("/etc/callwatch/callwatch.toml"),
                 {"W": "wk.x"}).retention


def test_retention_config_defaults_to_30_days_and_refuses_negative_values() -> None:
    """Absent: 30 days; 0 is accepted (never); a negative or text value is one problem."""
    assert parsed("").settled_calls == 30 * 86_400
    assert parsed("[retention]\nsettled_calls = 0\n").enabled is False
    assert parsed("[retention]\nsettled_calls = 3600\n").settled_calls == 3600
    for bad in ("-1", '"30d"', "nan"):
        with pytest.raises(ConfigError) as caught:
            parsed(f"[retention]\nsettled_calls = {bad}\n")
        assert [p for p in caught.value.problems if "retention.settled_calls" in p]
    with pytest.raises(ConfigError, match=r"retention\.keep"):
        parsed("[retention]\nkeep = 1\n")


@given(done=st.integers(min_value=0, max_value=2**40), extra=st.integers(0, 2**40),
       took=st.floats(min_value=0.001, max_value=1e6), known=st.booleans())
def test_progress_rate_and_eta_agree(done: int, extra: int, took: float, known: bool) -> None:
    """rate x (elapsed + eta) is the total; no ETA without a size or a first byte."""
    progress = DownloadProgress(bytes=done, total=done + extra if known else None,
                                started_at=T0, at=T0 + took)
    assert progress.rate == pytest.approx(done / took)
    eta = progress.eta
    if not known or done == 0:
        assert eta is None
    else:
        assert eta is not None
        assert progress.rate * (took + eta) == pytest.approx(done + extra, rel=1e-6)
    assert "/s" in progress_text(progress, T0 + took)


def test_progress_text_reads_like_a_person_wrote_it() -> None:
    """Sizes in KiB/MiB, a percentage, the rate, the time left and the age of the figure."""
    progress = DownloadProgress(bytes=400 * 2**20, total=800 * 2**20, started_at=T0,
                                at=T0 + 80)
    assert progress_text(progress, T0 + 83) == (
        "400.0 MiB of 800.0 MiB (50%), 5.0 MiB/s, about 80s left (as of 3s ago)")
    assert size_text(512) == "512 B" and size_text(3 * 2**30) == "3.0 GiB"


@pytest.mark.anyio
async def test_the_component_prunes_only_past_the_retention(tmp_path: Path) -> None:
    """A pass removes calls settled longer ago than settled_calls, and counts them."""
    store = await SQLiteStore.open(tmp_path / "callwatch.db")
    clock = [T0]
    try:
        await store.track_many([(NewCall(provider="envoy", call_id=f"c{i}"), T0)
                                for i in range(3)])
        async with store.db.transaction() as db:  # settled at T0 (old) and T0 + 50 (recent)
            await db.execute("UPDATE calls SET terminal = 'completed', updated_at = ? "
                             "WHERE call_id != 'c2'", (T0,))
            await db.execute("UPDATE calls SET terminal = 'completed', updated_at = ? "
                             "WHERE call_id = 'c2'", (T0 + 50,))
        retention = Retention(store, RetentionConfig(settled_calls=100),
                              clock=lambda: clock[0], pause=0)
        clock[0] = T0 + 120
        assert await retention.prune_once() == 2
        assert await store.get_call("envoy", "c2") is not None
        clock[0] = T0 + 151
        assert await retention.prune_once() == 1
        stats = retention.stats
        assert stats.pruned == 3 and stats.passes == 2 and stats.last_error is None
        off = Retention(store, RetentionConfig(settled_calls=0), clock=lambda: clock[0])
        assert await off.prune_once() == 0
    finally:
        await store.close()
