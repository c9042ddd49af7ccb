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
