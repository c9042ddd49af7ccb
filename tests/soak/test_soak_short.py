"""The short fault soak (CI): kills, 429 storms, cut downloads, a flaky receiver, a full disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_short_soak_loses_nothing(tmp_path: Path) -> None:
    """Under injected faults and 3 SIGKILLs, every event is delivered and every recording is
    archived intact or reported failed; the soak driver checks it all from outside."""
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--calls", "45", "--kills", "3",
         "--chaos-seconds", "8", "--settle-seconds", "90", "--json", str(out)],
        capture_output=True, text=True, timeout=240, check=False,
        cwd=Path(__file__).parent.parent.parent)
    assert out.exists(), result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["ok"], result.stdout + result.stderr[-3000:]
    assert report["kills"] == 3
    assert report["events_missing"] == 0
    assert report["events_expected"] > 45 * 2
    assert report["recordings_corrupt"] == 0
    assert report["recordings_archived"] > 0


def test_two_postgres_workers_archiving_to_s3_lose_nothing(tmp_path: Path,
                                                            pg_server: str) -> None:
    """Two workers on one fresh PostgreSQL database archive to a moto S3 server while one
    drawn at random is SIGKILLed, twice: every event once in the outbox and delivered in
    order, no call polled by two workers at once, every object whole when read back with a
    plain GET, nothing unfinished left in the bucket, and the soak's database dropped."""
    import psycopg

    def soak_databases() -> set[str]:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            rows = admin.execute("SELECT datname FROM pg_database "
                                 "WHERE datname LIKE 'callwatch_soak_%'").fetchall()
        return {row[0] for row in rows}

    before = soak_databases()
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--database", pg_server, "--workers", "2",
         "--archive", "s3", "--calls", "9", "--kills", "2", "--chaos-seconds", "3",
         "--waves", "2", "--settle-seconds", "60", "--json", str(out)],
        capture_output=True, text=True, timeout=180, check=False,
        cwd=Path(__file__).parent.parent.parent)
    assert out.exists(), result.stdout + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ok"], result.stdout + result.stderr[-3000:]
    assert (report["database"], report["workers"], report["archive"]) == ("postgresql", 2, "s3")
    assert report["kills"] == sum(report["kills_by_worker"]) == 2
    assert report["events_expected"] > 9 * 2
    assert report["events_missing"] == report["outbox_duplicates"] == 0
    assert report["polls_of_one_call_at_once"] == 1
    assert report["recordings_archived"] == report["s3_objects_checked"] > 0
    assert report["s3_unfinished_uploads"] == report["s3_scratch_objects"] == 0
    assert soak_databases() <= before
