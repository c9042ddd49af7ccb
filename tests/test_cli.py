"""The command line: exit codes 0/2/1 and one-line errors, as CONTRACT.md promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from worker.cli import main

UUID = "6f1c2a9e-5b8d-4f3e-9a0b-2c4d6e8f0a1b"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "callwatch.toml"
    path.write_text('[worker]\ndatabase = "state/cw.db"\n\n[providers.ultravox]\n'
                    'api_key_env = "UV_KEY"\n\n[providers.envoy]\napi_key_env = "ENVOY_KEY"\n')
    return path


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_track_records_and_is_idempotent(config: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    """track exits 0 and writes the call; tracking it again changes nothing and exits 0."""
    assert run(config, "track", "ultravox", UUID, "--metadata", '{"ticket": 7}') == 0
    assert "tracking" in capsys.readouterr().out
    assert run(config, "track", "ultravox", UUID, "--metadata", '{"ticket": 8}') == 0
    assert "already tracked" in capsys.readouterr().out
    assert run(config, "status", "ultravox", UUID, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["metadata"] == {"ticket": 7}
    assert shown["state"] == "pending"


@pytest.mark.parametrize(("args", "needle"), [
    (["track", "zoom", UUID], "unknown provider 'zoom'"),
    (["track", "apifycloud", UUID], "not configured"),
    (["track", "ultravox", "not-a-uuid"], "malformed ultravox call id"),
    (["track", "ultravox", "../../etc/passwd"], "malformed ultravox call id"),
    (["track", "envoy", "call_1\x1b[31m"], "malformed envoy call id"),
    (["track", "envoy", "call_1'; DROP TABLE calls; --"], "malformed envoy call id"),
    (["track", "envoy", "call_1", "--metadata", "{not json"], "--metadata is not valid JSON"),
    (["track", "envoy", "call_1", "--metadata", "[1, 2]"], "must be a JSON object"),
    (["track", "envoy", "call_1", "--metadata", json.dumps({"x": "y" * 17000})], "16 KiB"),
    (["track", "envoy", "call_1", "--webhook", "ftp://x/y"], "--webhook must be an http(s)"),
    (["status", "ultravox"], "either nothing or PROVIDER CALL_ID"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(config: Path, capsys: pytest.CaptureFixture[str],
                                         args: list[str], needle: str) -> None:
    """Bad usage or input exits 2 with one readable line naming the problem, nothing stored."""
    assert run(config, *args) == 2
    err = one_line(capsys.readouterr().err)
    assert needle in err
    assert "\x1b" not in err  # control characters are shown escaped, never sent to the terminal


def test_sql_in_an_id_is_just_data(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A quote-laden but well-formed Envoy id is stored as text; the table is still there."""
    assert run(config, "track", "envoy", "call_x--1") == 0
    assert run(config, "status", "--json") == 0
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after "tracking: ..."
    assert [c["call_id"] for c in listed["recent"]] == ["call_x--1"]


def test_bad_config_exits_2_listing_every_problem(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """check-config prints FILE: KEY: MESSAGE per mistake and exits 2."""
    path = tmp_path / "bad.toml"
    path.write_text('[worker]\ndatabse = "x"\n[tracking]\npoll_interval = -1\n'
                    '[providers.zoom]\n')
    assert main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3
    assert all(line.startswith(f"{path}: ") for line in err)
    assert any("worker.databse: unknown key" in line for line in err)
    assert any("tracking.poll_interval" in line for line in err)


def test_check_config_ok_needs_the_secrets(config: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """check-config resolves secrets (exit 2 naming the variable when unset, 0 when set)."""
    monkeypatch.delenv("UV_KEY", raising=False)
    assert run(config, "check-config") == 2
    assert "UV_KEY" in capsys.readouterr().err
    monkeypatch.setenv("UV_KEY", "k")
    monkeypatch.setenv("ENVOY_KEY", "k")
    assert run(config, "check-config") == 0
    assert "OK" in capsys.readouterr().out


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config path that does not exist is one line and exit 2."""
    assert main(["--config", str(tmp_path / "nope.toml"), "status"]) == 2
    assert "file not found" in one_line(capsys.readouterr().err)


def test_status_of_an_untracked_call_exits_1(config: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Asking for a call that is not tracked is a failure (1), not bad usage."""
    assert run(config, "track", "envoy", "call_a") == 0
    capsys.readouterr()
    assert run(config, "status", "envoy", "call_b") == 1
    assert "not tracked" in one_line(capsys.readouterr().err)


def test_unusable_database_is_exit_1_without_traceback(tmp_path: Path) -> None:
    """A database path that is a directory fails with one line and exit 1 - in a real process."""
    (tmp_path / "db").mkdir()
    path = tmp_path / "c.toml"
    path.write_text('[worker]\ndatabase = "db"\n[providers.envoy]\napi_key_env = "E"\n')
    result = subprocess.run([sys.executable, "-m", "worker", "--config", str(path), "track",
                             "envoy", "call_1"], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "callwatch: error:" in one_line(result.stderr)
    debug = subprocess.run([sys.executable, "-m", "worker", "--debug", "--config", str(path),
                            "track", "envoy", "call_1"], capture_output=True, text=True,
                           check=False)
    assert "Traceback" in debug.stderr


def test_status_overview_table(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """status lists calls with state, age and next poll, and a summary line."""
    assert run(config, "track", "ultravox", UUID) == 0
    assert run(config, "track", "envoy", "call_2") == 0
    capsys.readouterr()
    assert run(config, "status") == 0
    out = capsys.readouterr().out
    assert out.startswith("daemon: stopped (no worker has a heartbeat on this database)\n"
                          "calls: 2 pending; active: 2")
    assert "PROVIDER" in out and UUID in out and "call_2" in out


def test_untrack_exit_codes_and_status(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """untrack: 0 for a tracked call (twice), 1 with one line if unknown, 2 for bad input."""
    assert run(config, "untrack", "envoy", "call_2") == 1  # no database yet: unknown
    assert capsys.readouterr().err.count("\n") == 1
    assert run(config, "track", "envoy", "call_2") == 0
    assert run(config, "untrack", "envoy", "call_2") == 0
    assert run(config, "untrack", "envoy", "call_2") == 0
    assert run(config, "untrack", "envoy", "call_3") == 1
    err = capsys.readouterr().err
    assert err == "callwatch: envoy 'call_3' is not tracked\n"
    assert run(config, "untrack", "nosuch", "call_2") == 2
    assert run(config, "untrack", "ultravox", "not-a-uuid") == 2
    capsys.readouterr()
    assert run(config, "status", "--state", "untracked") == 0
    out = capsys.readouterr().out
    assert "call_2" in out and "untracked" in out
    assert run(config, "status", "envoy", "call_2", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "untracked" and data["next_poll_at"] is None
    assert data["untracked_at"] is not None


def test_deliveries_show_refuses_bad_ids_and_unknown_events(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """deliveries show: exit 2 for a malformed id, 1 with one line for an unknown event."""
    assert run(config, "track", "envoy", "call_2") == 0
    assert run(config, "deliveries", "show", "nope") == 2
    assert run(config, "deliveries", "show") == 2
    capsys.readouterr()
    assert run(config, "deliveries", "show", "msg_" + "a" * 32) == 1
    assert capsys.readouterr().err == f"callwatch: no event {'msg_' + 'a' * 32!r}\n"
