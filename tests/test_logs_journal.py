"""Log levels reach journald as priorities: `<N>` prefixes when stderr is the journal stream."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import structlog

from worker import logs


def test_journal_stream_is_recognised_by_device_and_inode(tmp_path: Path) -> None:
    """stderr is the journal only when $JOURNAL_STREAM names this very file (not inherited)."""
    with (tmp_path / "stream").open("w") as stream, (tmp_path / "other").open("w") as other:
        info = os.fstat(stream.fileno())
        environ = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        assert logs.is_journal(stream, environ)
        assert not logs.is_journal(other, environ)
        assert not logs.is_journal(stream, {})
        assert not logs.is_journal(io.StringIO(), environ)  # no file descriptor at all


def test_each_line_carries_its_priority() -> None:
    """error -> <3>, warning -> <4>, info -> <6>, and the rest of the line is plain JSON."""
    out = io.StringIO()
    logs.setup("debug", stream=out, json=True, journal=True)
    log = structlog.get_logger("test")
    log.error("config.reload_rejected", problems=["x"])
    log.warning("poll.rate_limited")
    log.info("daemon.ready")
    log.debug("poll.done")
    lines = out.getvalue().splitlines()
    assert [line[:3] for line in lines] == ["<3>", "<4>", "<6>", "<7>"]
    assert json.loads(lines[0][3:])["event"] == "config.reload_rejected"


def test_no_prefix_outside_the_journal() -> None:
    """On a plain pipe or file, lines are JSON from their first character."""
    out = io.StringIO()
    logs.setup("info", stream=out, json=True)
    structlog.get_logger("test").error("x.y")
    assert json.loads(out.getvalue())["event"] == "x.y"
