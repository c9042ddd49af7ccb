"""Fixtures the archive tests share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3server import S3_KEY_ID, S3_SECRET, S3Server, s3_config
from worker.archive.disk import Disk

__all__ = ["S3_KEY_ID", "S3_SECRET", "S3Server", "s3_config"]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    """The archive folder under this test's tmp_path, opened."""
    found = Disk(tmp_path / "archive")
    found.open()
    yield found
    found.close()

