"""The archive on disk: scratch files that become final files only when complete and synced.

A download writes to ``archive_dir/.partial/<name>.part`` (same file system, so the final
``rename`` is atomic), hashing every byte it writes. ``commit`` then fsyncs the file, renames
it to its final path and fsyncs that folder: after a crash the final name holds either nothing
or the whole, verified file. Every path operation is relative to an open directory descriptor
with ``O_NOFOLLOW``, so a symlink planted inside the archive cannot carry a write outside it.

Each scratch file is ``flock``ed by the process writing it. At start, a scratch file nobody
holds a lock on belongs to a run that died and is deleted (resuming it would mean trusting
bytes that were never fsynced); one that is locked belongs to a live process and is left.

``find_final`` looks for a file already at a recording's final name (one a run killed between
the rename and the database commit left behind) without creating or following anything: it
only reads, so it does not go through ``FileOps``.

``FileOps`` is the seam for the few system calls that write: tests swap it for one that raises
``ENOSPC`` to prove a full disk pauses archiving without leaving anything behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from worker.archive.layout import PARTIAL_DIR

# A full, read-only or forbidden archive is the machine's problem, not the recording's:
# archiving pauses instead of spending the recording's attempts.
PAUSE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM})
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_MODE = 0o640  # recordings are personal data: never world-readable, whatever the umask
_DIR_MODE = 0o750
_PROBE_BYTES = 64 * 1024
# A final file is only ever read here: never through a symlink, never blocking on a FIFO.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_HASH_CHUNK = 1024 * 1024
# "No file of ours there": missing, a symlink (never followed), or a folder that is not one.
_ABSENT_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


def is_pause_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the archive itself is unusable right now (full, read-only...)."""
    return isinstance(exc, OSError) and exc.errno in PAUSE_ERRNOS


def describe(exc: OSError) -> str:
    """``disk full (ENOSPC)``-style text for logs and ``status``; never a path."""
    name = errno.errorcode.get(exc.errno or 0, "error")
    text = {errno.ENOSPC: "disk full", errno.EDQUOT: "quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted"}.get(exc.errno or 0, exc.strerror or "error")
    return f"{text} ({name})"


@dataclass(frozen=True, kw_only=True, slots=True)
class FinalFile:
    """A regular file found at a final name: its path relative to the archive, size, digest."""

    path: PurePosixPath
    size: int
    sha256: str


class FileOps:
    """The system calls that change the disk, one method each (tests replace them)."""

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def rename(self, src: str, dst: str, src_dir: int, dst_dir: int) -> None:
        os.rename(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)

    def mkdir(self, name: str, dir_fd: int) -> None:
        os.mkdir(name, _DIR_MODE, dir_fd=dir_fd)


class PartialFile:
    """One scratch file being filled: bytes appended, digested, truncated back to zero.

    Its methods block (file I/O, hashing) and are meant for a worker thread.
    """

    def __init__(self, disk: Disk, name: str, fd: int) -> None:
        self._disk = disk
        self.name = name
        self._fd = fd
        self._hash = hashlib.sha256()
        self.size = 0

    def append(self, data: bytes) -> None:
        """Write all of ``data`` at the end and feed it to the digest."""
        view = memoryview(data)
        while view:
            written = self._disk.ops.write(self._fd, view)
            view = view[written:]
        self._hash.update(data)
        self.size += len(data)

    def extend(self, chunks: Sequence[bytes]) -> None:
        """``append`` each chunk: the caller need not copy them into one buffer first."""
        for chunk in chunks:
            self.append(chunk)

    def reset(self) -> None:
        """Start over from byte zero (the server would not resume)."""
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hash = hashlib.sha256()
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def sync(self) -> None:
        self._disk.ops.fsync(self._fd)

    def commit(self, final: PurePosixPath) -> None:
        """fsync, rename to ``final`` (relative to the archive), fsync its folder."""
        self.sync()
        self._disk.place(self.name, final)
        self.close()

    def discard(self) -> None:
        """Remove the scratch file; nothing of it stays on disk."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name, dir_fd=self._disk.partial_fd)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # also drops the flock
            self._fd = -1


class Disk:
    """The archive folder, opened once; every later operation is relative to it."""

    def __init__(self, root: Path, ops: FileOps | None = None) -> None:
        self.root = root
        self.ops = ops or FileOps()
        self._root_fd = -1
        self.partial_fd = -1

    def open(self) -> None:
        """Create (if needed) and open the archive and its scratch folder; OSError if not."""
        self.close()
        self.root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.partial_fd = self._subdir(self._root_fd, PARTIAL_DIR)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        for fd in (self.partial_fd, self._root_fd):
            if fd >= 0:
                os.close(fd)
        self._root_fd = self.partial_fd = -1

    @property
    def is_open(self) -> bool:
        return self.partial_fd >= 0

    def create_partial(self, stem: str) -> PartialFile:
        """A new, locked scratch file named after ``stem`` (already a safe component)."""
        name = f"{stem[:80]}-{secrets.token_hex(4)}.part"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, _FILE_MODE, dir_fd=self.partial_fd)
        try:
            os.fchmod(fd, _FILE_MODE)  # the umask narrowed or widened nothing: exactly 0640
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        return PartialFile(self, name, fd)

    def place(self, partial_name: str, final: PurePosixPath) -> None:
        """Rename a scratch file into ``final``, creating its folders, syncing each change."""
        *folders, filename = final.parts
        fds: list[int] = []
        try:
            parent = self._root_fd
            for folder in folders:
                parent = self._subdir(parent, folder)
                fds.append(parent)
            self.ops.rename(partial_name, filename, self.partial_fd, parent)
            self.ops.fsync(parent)
        finally:
            for fd in fds:
                os.close(fd)

    def find_final(self, candidates: Sequence[PurePosixPath]) -> FinalFile | None:
        """The first candidate that is a regular file in the archive, hashed; None if none is.

        Creates nothing and follows no symlink: a symlink (file or folder) counts as absent.
        Other errors (permissions, I/O) are raised. Blocks: meant for a worker thread.
        """
        for candidate in candidates:
            fd = self._open_final(candidate)
            if fd is None:
                continue
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    size, digest = _hash_file(fd)
                    return FinalFile(path=candidate, size=size, sha256=digest)
            finally:
                os.close(fd)
        return None

    def _open_final(self, final: PurePosixPath) -> int | None:
        """Open ``final`` for reading through existing, real folders; None when absent."""
        *folders, filename = final.parts
        fds: list[int] = []
        try:
            parent = self._root_fd
            for folder in folders:
                parent = os.open(folder, _DIR_FLAGS, dir_fd=parent)
                fds.append(parent)
            return os.open(filename, _READ_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in _ABSENT_ERRNOS:
                return None
            raise
        finally:
            for fd in fds:
                os.close(fd)

    def _subdir(self, parent: int, name: str) -> int:
        """Open folder ``name`` under ``parent`` (never through a symlink), creating it."""
        try:
            self.ops.mkdir(name, parent)
        except FileExistsError:
            pass
        else:
            self.ops.fsync(parent)  # the new entry must survive a crash too
        return os.open(name, _DIR_FLAGS, dir_fd=parent)

    def remove_stale_partials(self) -> int:
        """Delete scratch files whose writer is gone (no lock held); return how many."""
        removed = 0
        for name in os.listdir(self.partial_fd):  # noqa: PTH208 - a descriptor, not a path
            if not name.endswith(".part"):
                continue
            try:
                fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.partial_fd)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live process is writing it
            try:
                os.unlink(name, dir_fd=self.partial_fd)
                removed += 1
            finally:
                os.close(fd)
        return removed

    def probe(self) -> None:
        """Write, sync and delete a small scratch file; OSError when the archive cannot take it."""
        if not self.is_open:
            self.open()
        partial = self.create_partial("probe")
        try:
            partial.append(bytes(_PROBE_BYTES))
            partial.sync()
        finally:
            partial.discard()


def _hash_file(fd: int) -> tuple[int, str]:
    """Size and hex SHA-256 of everything readable from ``fd``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    while chunk := os.read(fd, _HASH_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()
