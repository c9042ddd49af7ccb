"""The bytes of a simulated recording: deterministic, generated block by block, never stored.

A recording is a sequence of 1 MiB blocks. Block ``i`` is one keystream per seed (SHAKE-256,
computed once and cached) rotated by an amount that depends on ``i``, so streaming costs one
memory copy per MiB (hashing none) and no per-byte Python work, while a resume at a wrong
offset still yields different bytes. The first bytes are a plausible file header for the
content type, so a client sniffing for ``<?xml`` or ``<html`` never takes a recording for an
error page.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator

from worker.simulator.world import RecordingScript

BLOCK = 1 << 20
_STRIDE = 0x9E3779B1 % BLOCK  # odd, so successive blocks are rotated differently


@functools.lru_cache(maxsize=32)
def _keystream(key: bytes) -> bytes:
    return hashlib.shake_256(b"callwatch-simulator\0" + key).digest(BLOCK)


def _header(content_type: str | None, size: int) -> bytes:
    """A file signature matching ``content_type`` (a WAV header, an MP4 ftyp box...).

    Without a known type (None means "the provider's usual one", unknown here) the bytes start
    with zeros: still nothing a client could take for text.
    """
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind in {"audio/wav", "audio/x-wav", "audio/wave"}:
        riff = min(max(size - 8, 0), 0xFFFFFFFF).to_bytes(4, "little")
        data = min(max(size - 44, 0), 0xFFFFFFFF).to_bytes(4, "little")
        fmt = bytes.fromhex("10000000 0100 0100 80bb0000 00770100 0200 1000")  # PCM 48 kHz
        return b"RIFF" + riff + b"WAVEfmt " + fmt + b"data" + data
    if kind in {"audio/mp4", "video/mp4", "audio/m4a", "audio/x-m4a"}:
        return (24).to_bytes(4, "big") + b"ftypmp42" + bytes(4) + b"mp42isom"
    if kind in {"video/webm", "audio/webm"}:
        return bytes.fromhex("1a45dfa3")
    return bytes(8)


def _views(recording: RecordingScript, start: int, end: int) -> Iterator[memoryview]:
    """Zero-copy views over the cached keystream (and header) covering ``[start, end)``."""
    header = _header(recording.content_type, recording.size)
    pos = start
    if pos < len(header) and pos < end:
        stop = min(len(header), end)
        yield memoryview(header)[pos:stop]
        pos = stop
    stream = memoryview(_keystream(recording.content_key))
    while pos < end:
        index, offset = divmod(pos, BLOCK)
        source = (offset + index * _STRIDE) % BLOCK
        run = min(BLOCK - source, BLOCK - offset, end - pos)  # contiguous in both
        yield stream[source : source + run]
        pos += run


def iter_content(
    recording: RecordingScript, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """Yield bytes ``[start, end)`` of the recording, about one block (1 MiB) at a time."""
    stop = recording.size if end is None else min(end, recording.size)
    pending: list[memoryview] = []
    size = 0
    for view in _views(recording, max(start, 0), stop):
        pending.append(view)
        size += len(view)
        if size >= BLOCK:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def content_bytes(recording: RecordingScript, start: int = 0, end: int | None = None) -> bytes:
    """The recording's bytes ``[start, end)`` in memory: for tests of small recordings."""
    return b"".join(iter_content(recording, start, end))


@functools.lru_cache(maxsize=256)
def expected_sha256(recording: RecordingScript) -> str:
    """Hex SHA-256 of the whole recording, as an archive of it must have."""
    digest = hashlib.sha256()
    for view in _views(recording, 0, recording.size):
        digest.update(view)
    return digest.hexdigest()
