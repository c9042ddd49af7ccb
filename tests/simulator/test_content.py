"""Recording bytes: deterministic, seekable, and digestible without storing them."""

from __future__ import annotations

import hashlib

from worker.simulator import RecordingScript, content_bytes, expected_sha256, iter_content
from worker.simulator.content import BLOCK


def test_any_slice_equals_the_same_slice_of_the_whole() -> None:
    """content_bytes(start, end) is the matching slice of the full content, across blocks."""
    rec = RecordingScript(size=3 * BLOCK + 123, seed=7, content_type="audio/wav")
    whole = content_bytes(rec)
    assert len(whole) == rec.size
    for start, end in [(0, 10), (40, 50), (BLOCK - 5, BLOCK + 5), (2 * BLOCK, None), (5, 4)]:
        assert content_bytes(rec, start, end) == whole[start:end]


def test_expected_sha256_matches_the_streamed_bytes() -> None:
    """expected_sha256 equals the digest of what iter_content yields."""
    rec = RecordingScript(size=2 * BLOCK + 1, seed=1, content_type="video/mp4")
    digest = hashlib.sha256()
    for piece in iter_content(rec):
        assert len(piece) <= 2 * BLOCK
        digest.update(piece)
    assert expected_sha256(rec) == digest.hexdigest()


def test_content_starts_with_a_real_file_signature() -> None:
    """WAV content starts RIFF....WAVE and MP4 content has an ftyp box, never '<'."""
    assert content_bytes(RecordingScript(size=64, content_type="audio/wav"))[:4] == b"RIFF"
    assert content_bytes(RecordingScript(size=64, content_type="audio/wav"))[8:12] == b"WAVE"
    assert content_bytes(RecordingScript(size=64, content_type="audio/mp4"))[4:8] == b"ftyp"


def test_blocks_differ_and_seeds_differ() -> None:
    """Successive blocks are not repeats, and another seed gives other bytes."""
    rec = RecordingScript(size=4 * BLOCK, seed=2)
    whole = content_bytes(rec)
    assert len({whole[i : i + BLOCK] for i in range(0, rec.size, BLOCK)}) == 4
    assert content_bytes(RecordingScript(size=4096, seed=3)) != whole[:4096]
