"""Reading a provider's reply body with a cap on the DECODED size, compression included.

Why not ``httpx.Response.aiter_bytes``: httpx inflates each raw chunk whole before handing
it over, so a 64 KiB chunk of a gzip bomb becomes about 64 MB in one call, whatever cap is
checked afterwards (measured: +130 MB of RSS per poll). Here the raw bytes are fed to
``zlib`` with ``max_length``, so no call ever produces more than the room left under the cap.

Why not ask for ``identity`` and refuse compressed replies: a provider (or a CDN in front of
it) that compresses anyway would then fail every poll, and compression is worth having for
large call objects. We advertise exactly what we can inflate under a bound (``gzip``,
``deflate``); a reply in any other encoding (``br``, ``zstd``, stacked encodings) is
refused as unreadable rather than trusted.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from worker.errors import CallwatchError

ACCEPT_ENCODING = "gzip, deflate"
_GZIP_WBITS = zlib.MAX_WBITS | 16
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS
MAX_GZIP_MEMBERS = 64  # a real reply has one; each member costs a new decompressor


class UnsupportedEncodingError(CallwatchError):
    """The reply is in a content coding we did not ask for and cannot bound."""


class _Inflater:
    """gzip (several members too) or deflate (zlib-wrapped or raw), decoded under a bound."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        # "deflate" arrives zlib-wrapped (as RFC 9110 says) or raw (as some servers send it):
        # the first two bytes tell which, so they are held until both are here.
        self._head: bytes | None = None if self._gzip else b""
        self._zobj = zlib.decompressobj(_GZIP_WBITS)
        self._members = 1

    def feed(self, data: bytes, room: int) -> bytes:
        """Up to ``room`` (>= 1) decoded bytes from ``data``, after what an earlier call held."""
        if self._head is not None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            self._head = None
            wrapped = data[0] & 0x0F == 8 and int.from_bytes(data[:2], "big") % 31 == 0
            self._zobj = zlib.decompressobj(_ZLIB_WBITS if wrapped else _RAW_DEFLATE_WBITS)
        out = [self._zobj.decompress(data, room)]
        got = len(out[0])
        while self._gzip and self._zobj.eof and self._zobj.unused_data and got < room:
            self._members += 1
            if self._members > MAX_GZIP_MEMBERS:  # thousands of empty members: CPU, no data
                raise zlib.error(f"more than {MAX_GZIP_MEMBERS} gzip members")
            rest = self._zobj.unused_data
            self._zobj = zlib.decompressobj(_GZIP_WBITS)  # the next gzip member
            out.append(self._zobj.decompress(rest, room - got))
            got += len(out[-1])
        return b"".join(out)

    @property
    def pending(self) -> bytes:
        """Input accepted but not yet decoded because the bound was reached."""
        return self._zobj.unconsumed_tail


async def read_capped(raw: AsyncIterator[bytes], encoding: str, cap: int) -> tuple[bytes, bool]:
    """Decode ``raw`` (the undecoded body) into at most ``cap`` bytes; say if there was more.

    On overflow the bytes returned are the first ``cap + 1`` decoded ones (callers keep a
    snippet for the log). zlib errors propagate as ``zlib.error``.
    """
    coding = encoding.strip().lower()
    inflater = None if coding in ("", "identity") else _inflater(coding)
    chunks: list[bytes] = []
    total = 0
    async for chunk in raw:
        data = chunk
        while True:
            piece = data if inflater is None else inflater.feed(data, cap + 1 - total)
            chunks.append(piece)
            total += len(piece)
            if total > cap:
                return b"".join(chunks)[: cap + 1], True
            if inflater is None or not (data := inflater.pending):
                break
    return b"".join(chunks), False


def _inflater(coding: str) -> _Inflater:
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedEncodingError(f"content-encoding {coding[:40]!r} was not asked for")
    return _Inflater(coding)
