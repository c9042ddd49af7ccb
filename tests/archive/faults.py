"""A file layer that fails on demand, for disk-full and read-only tests."""

from __future__ import annotations

import errno
import os

from worker.archive.disk import FileOps


class FaultyOps(FileOps):
    """Writes (and optionally renames) fail with ``error`` while ``failing`` is set.

    ``allow`` bytes still go through after ``failing`` is set, so a download can fail half-way
    through a file, as a real full disk makes it do.
    """

    def __init__(self, error: int = errno.ENOSPC, *, allow: int = 0,
                 fail_rename: bool = False) -> None:
        self.error = error
        self.allow = allow
        self.fail_rename = fail_rename
        self.failing = False
        self.failures = 0

    def _fail(self) -> OSError:
        self.failures += 1
        return OSError(self.error, os.strerror(self.error))

    def write(self, fd: int, data: memoryview) -> int:
        if self.failing:
            if self.allow <= 0:
                raise self._fail()
            data = data[: self.allow]
            self.allow -= len(data)
        return super().write(fd, data)

    def rename(self, src: str, dst: str, src_dir: int, dst_dir: int) -> None:
        if self.failing and self.fail_rename:
            raise self._fail()
        super().rename(src, dst, src_dir, dst_dir)
