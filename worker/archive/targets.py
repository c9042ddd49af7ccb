"""Build the configured archive target: a folder (``archive_dir``) or a bucket (``archive``)."""

from __future__ import annotations

from worker.archive.folder import FolderTarget
from worker.archive.s3 import S3Target
from worker.archive.target import ArchiveTarget
from worker.config import Config

STALE_MARGIN = 600.0  # seconds past max_seconds before a leftover upload counts as dead


def open_target(config: Config) -> ArchiveTarget:
    """The target ``config`` names; ValueError when archiving is off."""
    if config.worker.archive_dir is not None:
        return FolderTarget(config.worker.archive_dir)
    if config.archive.s3 is not None:
        return S3Target(config.archive.s3,
                        stale_after=config.archive.max_seconds + STALE_MARGIN)
    raise ValueError("archiving is off: set [worker] archive_dir or archive")


def archive_root(config: Config) -> str | None:
    """The target's URL (events' ``archive.url`` is this + ``/`` + path); None when off."""
    if config.worker.archive_dir is not None:
        return config.worker.archive_dir.absolute().as_uri()
    if config.archive.s3 is not None:
        s3 = config.archive.s3
        return f"s3://{s3.bucket}/{s3.prefix}" if s3.prefix else f"s3://{s3.bucket}"
    return None
