"""A write the database refuses is retried with back-off until it goes through, never dropped."""

from __future__ import annotations

import sqlite3

import pytest
import structlog
from structlog.testing import capture_logs

from worker.store import retry

pytestmark = pytest.mark.anyio


async def test_refusals_are_logged_and_retried_until_the_write_succeeds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "FIRST_DELAY", 0.01)
    answers: list[Exception | str] = [sqlite3.OperationalError("database or disk is full"),
                                      sqlite3.OperationalError("database is locked"), "done"]

    async def write() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    with capture_logs() as logs:
        result = await retry.until_written(write, structlog.get_logger(), calls=3)
    assert result == "done" and answers == []
    failed = [e for e in logs if e["event"] == "store.write_failed"]
    assert [(e["calls"], e["retry_in"], e["error"]) for e in failed] == [
        (3, 0.01, "database or disk is full"), (3, 0.02, "database is locked")]

