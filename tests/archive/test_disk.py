"""Scratch files, atomic commit, stale clean-up and the fault seam, on a real file system."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from pathlib import Path, PurePosixPath

import pytest

from tests.archive.faults import FaultyOps
from worker.archive.disk import Disk, FinalFile, describe, is_pause_error
from worker.archive.layout import final_candidates


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_committed_file_appears_whole_and_only_then(disk: Disk) -> None:
    """Bytes live under .partial until commit; then the final name holds all of them."""
    final = PurePosixPath("envoy/call_1/rec.m4a")
    partial = disk.create_partial("rec")
    partial.append(b"a" * 1000)
    partial.append(b"b" * 24)
    assert not (disk.root / final).exists()
    assert [p.name for p in (disk.root / ".partial").iterdir()] == [partial.name]
    partial.commit(final)
    assert (disk.root / final).read_bytes() == b"a" * 1000 + b"b" * 24
    assert partial.sha256 == hashlib.sha256(b"a" * 1000 + b"b" * 24).hexdigest()
    assert list((disk.root / ".partial").iterdir()) == []


def test_reset_starts_the_file_and_the_digest_over(disk: Disk) -> None:
    """After a reset nothing of the earlier bytes is in the file or in the digest."""
    partial = disk.create_partial("rec")
    partial.append(b"wrong bytes")
    partial.reset()
    partial.append(b"right")
    partial.commit(PurePosixPath("p/c/r.bin"))
    assert (disk.root / "p/c/r.bin").read_bytes() == b"right"
    assert partial.sha256 == hashlib.sha256(b"right").hexdigest()
    assert partial.size == 5


def test_discard_leaves_nothing(disk: Disk) -> None:
    """A discarded download leaves no file anywhere in the archive."""
    partial = disk.create_partial("rec")
    partial.append(b"x" * 100)
    partial.discard()
    assert _tree(disk.root) == [".partial"]


def test_a_planted_symlink_cannot_carry_a_write_outside(disk: Disk, tmp_path: Path) -> None:
    """A symlink inside the archive is never followed: the commit fails, outside stays empty."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (disk.root / "ultravox").symlink_to(outside)
    partial = disk.create_partial("rec")
    partial.append(b"secret audio")
    with pytest.raises(OSError, match=r"symbolic links|Not a directory") as caught:
        partial.commit(PurePosixPath("ultravox/call/rec.wav"))
    assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR)
    partial.discard()
    assert list(outside.iterdir()) == []


def test_stale_scratch_files_go_and_live_ones_stay(disk: Disk) -> None:
    """At start, scratch files nobody holds a lock on are deleted; a locked one is kept."""
    live = disk.create_partial("live")
    live.append(b"in progress")
    stale = disk.root / ".partial" / "dead-0000.part"
    stale.write_bytes(b"left by a killed run")
    (disk.root / ".partial" / "notes.txt").write_text("not ours")
    assert disk.remove_stale_partials() == 1
    names = sorted(p.name for p in (disk.root / ".partial").iterdir())
    assert names == sorted([live.name, "notes.txt"])
    live.discard()


def test_the_lock_is_what_marks_a_file_live(disk: Disk) -> None:
    """A scratch file locked through another descriptor (another process) is not deleted."""
    path = disk.root / ".partial" / "other-1234.part"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert disk.remove_stale_partials() == 0
    finally:
        os.close(fd)
    assert disk.remove_stale_partials() == 1


def test_a_full_disk_raises_a_pause_error(tmp_path: Path) -> None:
    """ENOSPC from a write surfaces as an OSError that means 'pause', described for humans."""
    ops = FaultyOps(errno.ENOSPC)
    disk = Disk(tmp_path / "archive", ops)
    disk.open()
    partial = disk.create_partial("rec")
    ops.failing = True
    with pytest.raises(OSError, match="No space left") as caught:
        partial.append(b"x" * 10)
    assert is_pause_error(caught.value)
    assert describe(caught.value) == "disk full (ENOSPC)"
    assert not is_pause_error(OSError(errno.EIO, "io"))
    partial.discard()
    disk.close()


def test_the_probe_fails_while_the_disk_is_full_and_passes_after(tmp_path: Path) -> None:
    """The probe writes and syncs a file, and leaves nothing behind either way."""
    ops = FaultyOps(errno.EROFS)
    disk = Disk(tmp_path / "archive", ops)
    disk.open()
    ops.failing = True
    with pytest.raises(OSError, match="Read-only") as caught:
        disk.probe()
    assert describe(caught.value) == "read-only file system (EROFS)"
    ops.failing = False
    disk.probe()
    assert _tree(disk.root) == [".partial"]
    disk.close()


def test_a_new_folder_is_created_private(disk: Disk) -> None:
    """Folders and files are not world-readable: recordings are personal data."""
    partial = disk.create_partial("rec")
    partial.append(b"x")
    partial.commit(PurePosixPath("p/c/r.bin"))
    assert (disk.root / "p").stat().st_mode & 0o007 == 0
    assert (disk.root / "p/c/r.bin").stat().st_mode & 0o007 == 0


def _commit(disk: Disk, final: str, data: bytes) -> None:
    partial = disk.create_partial("rec")
    partial.append(data)
    partial.commit(PurePosixPath(final))


def test_a_placed_file_is_found_with_its_size_and_digest(disk: Disk) -> None:
    """The lookup reports the first candidate that is there, hashed over every chunk."""
    data = os.urandom(1024 * 1024) + b"tail"  # more than one 1 MiB read
    _commit(disk, "envoy/call_1/rec.m4a", data)
    found = disk.find_final(final_candidates("envoy", "call_1", "rec"))
    assert found == FinalFile(path=PurePosixPath("envoy/call_1/rec.m4a"), size=len(data),
                              sha256=hashlib.sha256(data).hexdigest())


def test_candidates_are_tried_in_order(disk: Disk) -> None:
    """With two files there (types changed between attempts) the earlier candidate wins."""
    _commit(disk, "p/c/r.bin", b"bin")
    _commit(disk, "p/c/r.wav", b"wav")
    found = disk.find_final(final_candidates("p", "c", "r"))
    assert found is not None and found.path == PurePosixPath("p/c/r.wav")
    assert found.size == 3


def test_nothing_there_is_none_and_nothing_is_created(disk: Disk) -> None:
    """Missing provider folder, call folder or file: None, and no folder appears."""
    assert disk.find_final(final_candidates("p", "c", "r")) is None
    (disk.root / "p").mkdir()
    assert disk.find_final(final_candidates("p", "c", "r")) is None
    (disk.root / "p/c").mkdir()
    (disk.root / "p/c/other.wav").write_bytes(b"someone else")
    assert disk.find_final(final_candidates("p", "c", "r")) is None
    assert _tree(disk.root) == [".partial", "p", "p/c", "p/c/other.wav"]


def test_a_folder_at_the_final_name_is_not_a_file(disk: Disk) -> None:
    """Only a regular file counts; anything else at the name is skipped."""
    (disk.root / "p/c/r.wav").mkdir(parents=True)
    (disk.root / "p/c/r.wav/inner").write_bytes(b"x")
    assert disk.find_final(final_candidates("p", "c", "r")) is None


def test_a_symlinked_file_is_not_followed(disk: Disk, tmp_path: Path) -> None:
    """A final name that is a symlink to a file outside counts as absent."""
    outside = tmp_path / "outside.wav"
    outside.write_bytes(b"not a recording of ours")
    (disk.root / "p/c").mkdir(parents=True)
    (disk.root / "p/c/r.wav").symlink_to(outside)
    assert disk.find_final(final_candidates("p", "c", "r")) is None


@pytest.mark.parametrize("linked", ["p", "p/c"])
def test_a_symlinked_folder_is_not_followed(disk: Disk, tmp_path: Path, linked: str) -> None:
    """A provider or call folder that is a symlink is never entered, whatever lies beyond."""
    outside = tmp_path / "outside"
    (outside / "c").mkdir(parents=True)
    (outside / "c/r.wav").write_bytes(b"x")
    (outside / "r.wav").write_bytes(b"x")
    (disk.root / linked).parent.mkdir(parents=True, exist_ok=True)
    (disk.root / linked).symlink_to(outside)
    assert disk.find_final(final_candidates("p", "c", "r")) is None


def test_an_unreadable_folder_is_an_error_not_absence(disk: Disk) -> None:
    """Permission trouble is raised (the attempt maps it to a pause), never read as 'absent'."""
    if os.geteuid() == 0:
        pytest.skip("root reads any folder")
    (disk.root / "p/c").mkdir(parents=True)
    (disk.root / "p").chmod(0)
    try:
        with pytest.raises(PermissionError):
            disk.find_final(final_candidates("p", "c", "r"))
    finally:
        (disk.root / "p").chmod(0o750)
