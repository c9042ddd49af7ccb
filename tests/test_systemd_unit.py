"""The shipped systemd unit: valid, hardened to "OK", and consistent with the daemon."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from worker.config import WorkerConfig
from worker.config_reader import CREDENTIAL_PREFIX

UNIT = Path(__file__).parent.parent / "systemd" / "callwatch.service"
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def local_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's callwatch, which verify requires."""
    exe = Path(sys.executable).parent / "callwatch"
    text = UNIT.read_text().replace("/opt/callwatch/bin/callwatch", str(exe))
    copy = tmp_path / "callwatch.service"
    copy.write_text(text)
    return copy


def test_unit_matches_the_daemon() -> None:
    """Type=notify, reload by SIGHUP, stop timeout longer than the default drain grace."""
    unit = directives()
    assert unit["Type"] == ["notify"]
    reload = unit["ExecReload"][0]
    assert "check-config" in reload and 'kill -HUP "$$MAINPID"' in reload  # validate, then HUP
    assert reload.endswith("exit $$ok'")  # the reload fails when check-config does
    assert unit["Restart"] == ["on-failure"]
    assert "run" in unit["ExecStart"][0].split()
    stop = int(unit["TimeoutStopSec"][0].rstrip("s"))
    assert stop > WorkerConfig(database=Path("x")).drain_grace + 10
    assert int(unit["WatchdogSec"][0].rstrip("s")) >= 10
    assert unit["DynamicUser"] == ["yes"] and unit["StateDirectory"] == ["callwatch"]
    # one folder: any subset of secrets, no line per file (CREDENTIAL_PREFIX is its ID + "_")
    assert unit["LoadCredential"] == [f"{CREDENTIAL_PREFIX[:-1]}:/etc/callwatch/credentials"]


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the unit without a warning."""
    result = subprocess.run(["systemd-analyze", "verify", str(local_copy(tmp_path))],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


@needs_analyze
def test_security_exposure_is_ok(tmp_path: Path) -> None:
    """systemd-analyze security rates the unit 2.0 or lower ("OK" or better)."""
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                             str(local_copy(tmp_path))], capture_output=True, text=True,
                            check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout
