"""check-config as an operator runs it: credentials where the unit finds them, the machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker.cli import main


def write(tmp_path: Path, worker: str = 'database = "state/cw.db"', extra: str = "") -> Path:
    path = tmp_path / "etc" / "callwatch.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"[worker]\n{worker}\n\n[providers.ultravox]\napi_key_file = "
                    f'"ultravox.key"\n{extra}')
    return path


def test_credentials_dir_is_searched_like_the_unit(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """--credentials-dir is looked in first, as $CREDENTIALS_DIRECTORY under the unit."""
    config = write(tmp_path)
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "ultravox.key").write_text("uv-key\n")
    assert main(["--config", str(config), "check-config"]) == 2
    err = capsys.readouterr().err
    assert "file not found" in err and str(config.parent / "ultravox.key") in err
    assert main(["--config", str(config), "check-config", "--credentials-dir", str(creds)]) == 0
    assert "OK" in capsys.readouterr().out


def test_credentials_directory_from_the_environment(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """$CREDENTIALS_DIRECTORY (what systemd sets for ExecReload=) is honoured as well, with
    the callwatch_ prefix systemd gives credentials loaded from the unit's folder."""
    config = write(tmp_path)
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "callwatch_ultravox.key").write_text("k")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert main(["--config", str(config), "check-config"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(("worker", "extra", "needle"), [
    ('database = "/nonexistent/dir/x.db"', "", "worker.database: folder /nonexistent/dir does "
                                               "not exist"),
    ('database = "cw.db"\narchive_dir = "/proc/version"', "",
     "worker.archive_dir: /proc/version exists and is not a folder"),
    ('database = "cw.db"\narchive_dir = "/proc/version/x"', "", "/proc/version is not a folder"),
    ('database = "cw.db"', "[tracking]\npoll_interval = 0.0001\n",
     "tracking.poll_interval: 0.0001 s is too short"),
    ('database = "cw.db"', "recording_poll_interval = 0.1\n",
     "providers.ultravox.recording_poll_interval: 0.1 s is too short"),
    ('database = "."', "", "is a folder, not a database file"),
])
def test_machine_problems_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      worker: str, extra: str, needle: str) -> None:
    """A database folder that cannot exist, a file as archive_dir, absurd intervals: exit 2."""
    config = write(tmp_path, worker, extra)
    (config.parent / "ultravox.key").write_text("k")
    assert main(["--config", str(config), "check-config"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"{config}: "), err
    assert needle in err[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: run as a normal user")
def test_read_only_database_folder_is_refused(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A database folder the daemon cannot write to is refused."""
    config = write(tmp_path, 'database = "ro/cw.db"')
    (config.parent / "ultravox.key").write_text("k")
    (config.parent / "ro").mkdir(mode=0o555)
    assert main(["--config", str(config), "check-config"]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_one_missing_level_is_fine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A database folder whose parent exists is created at start (like StateDirectory=)."""
    config = write(tmp_path, 'database = "state/cw.db"\narchive_dir = "state/rec/a"')
    (config.parent / "ultravox.key").write_text("k")
    assert main(["--config", str(config), "check-config"]) == 0
    assert "OK" in capsys.readouterr().out
