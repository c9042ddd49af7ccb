"""The unit under a real systemd (deploy/systemd-check), when this machine can boot one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHECK = Path(__file__).parent.parent / "deploy" / "systemd-check"
SKIPPED = 77  # the script's own "cannot run here", with its reason on stderr


@pytest.mark.skipif(shutil.which("systemd-nspawn") is None,
                    reason="systemd-nspawn is not installed (Debian: apt-get install "
                           "systemd-container); deploy/systemd-check not run")
@pytest.mark.skipif(os.geteuid() != 0, reason="deploy/systemd-check boots a container: root")
def test_unit_under_a_real_systemd() -> None:
    """READY, STATUS, watchdog restart, good and bad reloads, drain on stop: all as promised,
    and nothing is left mounted or running afterwards."""
    before = Path("/proc/self/mounts").read_text()
    with subprocess.Popen([str(CHECK)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            _, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.terminate()  # SIGTERM: the script's trap stops the container and unmounts
            _, err = proc.communicate(timeout=150)
            pytest.fail(f"deploy/systemd-check took over 240 s:\n{err[-4000:]}")
    if proc.returncode == SKIPPED:
        pytest.skip(err.strip().splitlines()[-1])
    assert proc.returncode == 0, err[-4000:]
    assert "all checks passed" in err
    assert Path("/proc/self/mounts").read_text().count("callwatch-systemd-check") == \
        before.count("callwatch-systemd-check") == 0
    assert not list(Path("/tmp").glob("callwatch-systemd-check.*"))  # noqa: S108 - where the script works
