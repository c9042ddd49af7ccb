"""The folder target: ``[worker] archive_dir``, on the ``Disk`` (see disk.py for the how).

Scratch files live in ``.partial`` on the same file system, are fsynced and renamed into place
by ``commit``: the final name holds either nothing or the whole file. Every blocking call runs
in a worker thread. OS errors become ``TargetError``: a full, read-only or forbidden archive
pauses archiving, anything else fails the attempt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import TypeVar

import anyio

from worker.archive.disk import Disk, FileOps, PartialFile, describe, is_pause_error
from worker.archive.target import Fault, StoredObject, TargetError, join_url

T = TypeVar("T")


def classify(exc: OSError) -> TargetError:
    """A disk error as the archiver should act on it."""
    if is_pause_error(exc):
        return TargetError(Fault.PAUSE, describe(exc))
    return TargetError(Fault.RETRY, f"local error: {describe(exc)}")


async def _io(call: Callable[[], T]) -> T:
    try:
        return await anyio.to_thread.run_sync(call)
    except OSError as exc:
        raise classify(exc) from None


class FolderUpload:
    """A scratch file in ``.partial`` (the ``Upload`` of the folder target)."""

    def __init__(self, partial: PartialFile) -> None:
        self._partial = partial

    @property
    def size(self) -> int:
        return self._partial.size

    @property
    def sha256(self) -> str:
        return self._partial.sha256

    async def write(self, chunks: Sequence[bytes]) -> None:
        await _io(lambda: self._partial.extend(chunks))

    async def reset(self) -> None:
        await _io(self._partial.reset)

    async def commit(self, final: PurePosixPath, content_type: str | None) -> None:
        del content_type  # the extension in ``final`` already says it
        await _io(lambda: self._partial.commit(final))

    async def abort(self) -> None:
        # On a read-only archive the unlink fails: the scratch file goes at the next start.
        with contextlib.suppress(OSError):
            await anyio.to_thread.run_sync(self._partial.discard)


class FolderTarget:
    """Recordings as files under one folder."""

    def __init__(self, root: Path, ops: FileOps | None = None) -> None:
        self.root = root
        self.disk = Disk(root, ops)

    @property
    def url(self) -> str:
        return self.root.absolute().as_uri()

    def object_url(self, path: str) -> str:
        return join_url(self.url, path)

    async def open(self) -> None:
        await _io(self.disk.open)

    async def close(self) -> None:
        self.disk.close()

    async def cleanup(self) -> int:
        return await _io(self.disk.remove_stale_partials)

    async def probe(self) -> None:
        await _io(self.disk.probe)

    async def start(self, stem: str) -> FolderUpload:
        if not self.disk.is_open:
            await self.open()
        return FolderUpload(await _io(lambda: self.disk.create_partial(stem)))

    async def find(self, candidates: Sequence[PurePosixPath]) -> StoredObject | None:
        if not self.disk.is_open:
            await self.open()
        found = await _io(lambda: self.disk.find_final(candidates))
        if found is None:
            return None
        return StoredObject(path=found.path, size=found.size, sha256=found.sha256)

