"""`callwatch prune`'s progress display and its refusals of bad input."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from worker.cli import prune


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_rich_display_shows_the_count() -> None:
    """rich draws the running count on a terminal (and clears it at the end)."""
    stream = Terminal()
    with prune.Progress(stream, dry_run=False) as progress:
        progress.update(1500)
    assert "calls pruned: 1500" in stream.getvalue()


def test_off_a_terminal_plain_lines_come_every_few_seconds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a pipe or in a journal: plain lines, no escape codes, at most every PLAIN_EVERY."""
    stream = io.StringIO()
    with prune.Progress(stream, dry_run=True) as progress:
        progress.update(10)  # too soon after the start: nothing
        monkeypatch.setattr(prune, "PLAIN_EVERY", 0.0)
        progress.update(20)
    assert stream.getvalue().startswith("calls found: 20 (") and "\x1b" not in stream.getvalue()
    assert "calls found: 10" not in stream.getvalue()


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A negative --older-than: one line on stderr, exit 2, nothing opened."""
    config = tmp_path / "callwatch.toml"
    config.write_text('[worker]\ndatabase = "callwatch.db"\n[providers.apifycloud]\n'
                      'widget_key_env = "W"\n', encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "worker", "--config", str(config), "prune",
                           "--older-than", "-5"], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "callwatch: error: --older-than must be 0 or more seconds"]
    assert not (tmp_path / "callwatch.db").exists()


def test_retention_off_prunes_nothing_without_older_than(tmp_path: Path) -> None:
    """settled_calls = 0 means never: prune says so and exits 0."""
    config = tmp_path / "callwatch.toml"
    config.write_text('[worker]\ndatabase = "callwatch.db"\n[providers.apifycloud]\n'
                      'widget_key_env = "W"\n[retention]\nsettled_calls = 0\n', encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "worker", "--config", str(config), "prune"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "retention is off" in done.stdout
