"""The archive-target seam: where verified recordings end up (a folder, a bucket).

The archiver never knows which target it writes to. One attempt at one recording::

    upload = await target.start(stem)        a scratch object, invisible under any final name
    await upload.write(chunks)  ...          bytes in order, hashed as they pass
    await upload.reset()                     the server would not resume: back to byte zero
    await upload.commit(final, content_type, expected_size)
                                             verified (length, type, sha256) and atomic:
                                             after it, ``final`` holds the whole recording
    await upload.abort()                     nothing of the upload stays behind

``find`` is adoption after a crash: a verified object already at one of a recording's final
names (a run killed between ``commit`` and the database commit left it) is archived without
downloading again. ``cleanup`` removes what dead runs left behind (scratch files, multipart
uploads older than a bound). ``probe`` answers "can the target take objects right now?" while
archiving is paused.

Errors a target raises are ``TargetError`` with a ``kind`` the archiver acts on: ``PAUSE``
(the target itself is unusable: disk full, bucket missing, credentials refused; no attempt is
spent), ``RETRY`` (5xx, timeouts, throttling: this attempt failed) or ``GIVE_UP``. Reasons are
one line and never hold a credential.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol

from worker.errors import CallwatchError


class Fault(enum.StrEnum):
    """What a target's error means for archiving."""

    PAUSE = "pause"  # the target cannot take objects: stop claiming, probe, resume
    RETRY = "retry"  # this attempt failed: spend one attempt, back off
    GIVE_UP = "give_up"  # this recording can never be stored there


class TargetError(CallwatchError):
    """A target's own failure, classified; ``reason`` is safe to log, store and show."""

    def __init__(self, kind: Fault, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredObject:
    """A verified object found at a final name: relative path, size, sha256 (hex)."""

    path: PurePosixPath
    size: int
    sha256: str


class Upload(Protocol):
    """One recording's bytes on their way into the target."""

    @property
    def size(self) -> int:
        """Bytes written so far."""
        ...

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes written so far."""
        ...

    async def write(self, chunks: Sequence[bytes]) -> None:
        """Append ``chunks`` in order (the caller need not join them)."""
        ...

    async def reset(self) -> None:
        """Forget every byte written: the next write is byte zero again."""
        ...

    async def commit(self, final: PurePosixPath, content_type: str | None) -> None:
        """Verify and make the object visible at ``final`` atomically, or raise and leave
        nothing there. ``final`` is relative to the target."""
        ...

    async def abort(self) -> None:
        """Drop the upload; never raises (leftovers go at the next ``cleanup``)."""
        ...


class ArchiveTarget(Protocol):
    """A place recordings are archived to."""

    @property
    def url(self) -> str:
        """Where the target is, without credentials (``file:///srv/rec``, ``s3://b/p``)."""
        ...

    def object_url(self, path: str) -> str:
        """The URL of the object at relative ``path`` (events' ``archive.url``)."""
        ...

    async def open(self) -> None:
        """Connect/create what is needed; TargetError when the target is unusable."""
        ...

    async def close(self) -> None: ...

    async def cleanup(self) -> int:
        """Remove leftovers of dead runs; return how many."""
        ...

    async def probe(self) -> None:
        """Store and remove a small object; TargetError if the target cannot take it."""
        ...

    async def start(self, stem: str) -> Upload:
        """A new upload for a recording whose safe name is ``stem``."""
        ...

    async def find(self, candidates: Sequence[PurePosixPath]) -> StoredObject | None:
        """The first candidate already stored and verified; None when there is none."""
        ...


def join_url(root: str, path: str) -> str:
    """``root`` + ``/`` + ``path``, one slash between them whatever ``root`` ends with."""
    return f"{root.rstrip('/')}/{path.lstrip('/')}"
