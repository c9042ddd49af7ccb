"""backfill's progress: a rich display on a terminal, plain lines elsewhere."""

from __future__ import annotations

import io

import pytest

from worker.cli.backfill import Progress
from worker.discovery_sweep import SweepReport

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_plain_lines_when_not_on_a_terminal() -> None:
    """Without a terminal the first page prints one plain line with pages, found and new."""
    out = io.StringIO()
    with Progress(out) as progress:
        await progress.update(SweepReport(pages=1, found=100, new=60))
        await progress.update(SweepReport(pages=2, found=200, new=60))  # within 5 s: quiet
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("pages 1, calls found 100, new 60, ")
    assert lines[0].endswith("calls/s")


async def test_rich_display_on_a_terminal() -> None:
    """On a terminal rich draws the live line instead of printing plain ones."""
    out = Terminal()
    with Progress(out) as progress:
        await progress.update(SweepReport(pages=3, found=300, new=250))
    text = out.getvalue()
    assert "pages 3, calls found 300, new 250" in text
    assert "\x1b[" in text  # terminal control sequences: a live display, not a plain line
