"""The command line as an operator meets it: version, help, pipes, escaping, filters, width."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.cli import main
from worker.cli.status import next_poll
from worker.model import CallStatus, TrackedCall
from worker.terminal import printable, table

UUID = "6f1c2a9e-5b8d-4f3e-9a0b-2c4d6e8f0a1b"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "callwatch.toml"
    path.write_text('[worker]\ndatabase = "cw.db"\n\n[providers.ultravox]\n'
                    'api_key_env = "UV_KEY"\n\n[providers.envoy]\napi_key_env = "ENVOY_KEY"\n')
    return path


def cli(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "worker", *args], stdout=stdout,
                            stderr=subprocess.PIPE, text=True)


def test_version_prints_the_package_version() -> None:
    """--version prints `callwatch X.Y.Z` from the package metadata and exits 0."""
    with cli("--version") as proc:
        out, err = proc.communicate(timeout=60)
    assert out == f"callwatch {version('callwatch')}\n" and err == ""


def test_help_is_written_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    """--help describes callwatch (not the module's internals); every command has its own."""
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "Track voice and video calls" in text and "argument parsing" not in text
    assert "Exit status: 0 success" in text
    for command in ("run", "track", "status", "check-config", "demo", "deliveries", "replay"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        description = out.split("\n\n")[1]
        assert description.endswith(".") and len(description) > 20, (command, out)


@pytest.mark.parametrize("args", [["status"], ["status", "ultravox", UUID], ["--version"]])
def test_a_closed_pipe_is_a_quiet_exit_0(config: Path, args: list[str]) -> None:
    """A reader that went away (`| head -1`) is neither an error message nor exit 1."""
    assert main(["--config", str(config), "track", "ultravox", UUID]) == 0
    with cli("--config", str(config), *args) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # before the child writes a byte: its first write gets EPIPE
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0
    assert err == ""


def test_status_escapes_provider_strings(config: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    """Control characters from a provider reach the terminal escaped, in table and detail."""
    assert main(["--config", str(config), "track", "ultravox", UUID]) == 0
    with sqlite3.connect(config.parent / "cw.db") as db:
        db.execute("UPDATE calls SET provider_status = ?, end_reason = ?",
                   ("\x1b[2J\x1b[31mred", "bye\rnow\u202e"))
    capsys.readouterr()
    assert main(["--config", str(config), "status", "ultravox", UUID]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "\\x1b[2J\\x1b[31mred" in out and "bye\\rnow\\u202e" in out


def test_overdue_poll_and_filters(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A poll 2 minutes late shows `overdue 2m`; --provider and --state narrow the list."""
    assert main(["--config", str(config), "track", "ultravox", UUID]) == 0
    assert main(["--config", str(config), "track", "envoy", "call_9"]) == 0
    with sqlite3.connect(config.parent / "cw.db") as db:
        db.execute("UPDATE calls SET next_poll_at = ? WHERE provider = 'envoy'",
                   (time.time() - 150,))
    capsys.readouterr()
    assert main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    envoy_row = next(line for line in out.splitlines() if "call_9" in line)
    assert envoy_row.endswith("overdue 2m")
    assert "overdue" in next(line for line in out.splitlines() if line.startswith("warning:"))
    assert main(["--config", str(config), "status", "--provider", "envoy"]) == 0
    out = capsys.readouterr().out
    assert "call_9" in out and UUID not in out
    assert main(["--config", str(config), "status", "--state", "live"]) == 0
    out = capsys.readouterr().out
    assert "no call matches --state live" in out and "call_9" not in out
    assert main(["--config", str(config), "status", "--state", "nonsense"]) == 2


def test_status_fits_100_columns(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The overview and a call's detail (even with large metadata) are at most 100 wide."""
    metadata = '{"note": "' + "x" * 2000 + '"}'
    assert main(["--config", str(config), "track", "ultravox", UUID, "--metadata", metadata]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "status"]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 100
    assert main(["--config", str(config), "status", "ultravox", UUID]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 100 and '{"note": "xxx' in out


def _call(next_poll_at: float, *, settled: bool = False) -> TrackedCall:
    from worker.model import Terminal

    return TrackedCall(provider="envoy", call_id="call_1", status=CallStatus.PENDING,
                       tracked_at=0.0, next_poll_at=next_poll_at,
                       terminal=Terminal.COMPLETED if settled else None)


@given(st.floats(-1e6, 1e6), st.floats(0, 2e6))
def test_next_poll_says_when(delta: float, now: float) -> None:
    """Future polls say `in`, a few seconds late says `due now`, later says `overdue`."""
    at = now + delta
    shown = next_poll(_call(at), now)
    if at > now:
        assert shown.startswith("in ")
    elif now - at < 5:
        assert shown == "due now"
    else:
        assert shown.startswith("overdue ")
    assert next_poll(_call(now + delta, settled=True), now) == "-"


@given(st.text())
def test_printable_leaves_no_control_character(text: str) -> None:
    """Whatever a provider sends, what is printed is printable, and printable text is kept."""
    shown = printable(text)
    assert shown.isprintable()
    assert printable(shown) == shown
    if text.isprintable():
        assert shown == text


@given(st.lists(st.lists(st.text(max_size=80), min_size=3, max_size=3), max_size=5))
def test_table_fits_by_cutting_free_text_only(rows: list[list[str]]) -> None:
    """A table is cut to its width by the shrinkable column; ids are never cut."""
    ids = [["msg_" + "a" * 32, *row[1:]] for row in rows]
    out = table(ids, ["ID", "NOTE", "OTHER"], shrink=("NOTE",), width=100)
    assert all(line.isprintable() for line in out.splitlines())
    for line in out.splitlines()[1:]:
        assert line.startswith("msg_" + "a" * 32)
    if all(len(printable(row[2])) <= 40 for row in ids):
        assert max(len(line) for line in out.splitlines()) <= 100
