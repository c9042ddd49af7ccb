"""The signed-URL file store: recording bytes behind links that expire, like GCS and S3.

Every request is checked against its signature byte for byte; a bad, revoked or expired link
answers 403 with an S3-style XML error. Bytes are generated while streaming (see
``content``), with Content-Length, ETag and single ``Range`` requests (206). A client that hangs
up stops the generation at once, so an abandoned 1 GiB download costs nothing more.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from xml.sax.saxutils import escape

import anyio

from worker.simulator.asgi import (
    Headers,
    Receive,
    Request,
    Scope,
    Send,
    cancel_on_disconnect,
    send_body,
)
from worker.simulator.content import iter_content
from worker.simulator.faults import DOWNLOAD_FAULTS, Fault, Faults, Rule, apply_early
from worker.simulator.signing import BUCKET_PROVIDERS, Signer, Verdict
from worker.simulator.world import RecordingScript, World

XML_TYPE = b"application/xml"
_DENIED = {
    Verdict.BAD_SIGNATURE: "The request signature we calculated does not match the signature "
    "you provided. Check your key and signing method.",
    Verdict.EXPIRED: "Request has expired",
    Verdict.REVOKED: "Request has expired",
}
_CUT_MESSAGE = "ASGI callable returned without completing response."


def xml_error(code: str, message: str) -> bytes:
    """An S3/GCS-style XML error document."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        "<RequestId>CALLWATCHSIMULATOR</RequestId></Error>"
    ).encode()


def xml_error_body(status: int, message: str) -> tuple[bytes, bytes]:
    """The file store's error format, for faults answered before the real reply."""
    code = {429: "SlowDown", 503: "SlowDown"}.get(status, "InternalError")
    return xml_error(code, message), XML_TYPE


class _CutsAreIntentional(logging.Filter):
    """Hide uvicorn's error line for a connection we cut on purpose (a simulated fault)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _CUT_MESSAGE


def quiet_intentional_cuts() -> None:
    """Install the filter once; uvicorn logs every deliberate truncation as an error."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _CutsAreIntentional) for f in logger.filters):
        logger.addFilter(_CutsAreIntentional())


class RangeNotSatisfiableError(Exception):
    """The requested range starts past the end of the object."""


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """Inclusive ``(first, last)`` of one ``bytes=`` range; None to send the whole object.

    Syntax we do not serve (several ranges, other units, garbage) is ignored, as RFC 9110
    allows; a range starting past the end raises ``RangeNotSatisfiableError``.
    """
    if value is None or not value.startswith("bytes=") or "," in value:
        return None
    first_text, sep, last_text = value[6:].strip().partition("-")
    if not sep or not (first_text.isdigit() or (not first_text and last_text.isdigit())):
        return None
    if not first_text:
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiableError
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if first >= size:
        raise RangeNotSatisfiableError
    if not last_text:
        return first, size - 1
    if not last_text.isdigit() or int(last_text) < first:
        return None
    return first, min(int(last_text), size - 1)


def etag(recording: RecordingScript) -> bytes:
    ctype = (recording.content_type or "").encode()
    seed = recording.content_key + b"|%d|" % recording.size + ctype
    return b'"' + hashlib.blake2b(seed, digest_size=16).hexdigest().encode() + b'"'


async def send_recording(
    send: Send,
    request: Request,
    recording: RecordingScript,
    *,
    content_type: str | None = None,
    cut_after: int | None = None,
    stall: float = 0.0,
    drip: float = 0.0,
) -> None:
    """Stream the recording (or the requested range); ``cut_after`` bytes then hang up
    (or, with ``drip``, go on one byte every ``drip`` seconds)."""
    size = recording.size
    try:
        span = parse_range(request.header(b"range"), size)
    except RangeNotSatisfiableError:
        headers = [(b"content-range", b"bytes */%d" % size)]
        body = xml_error("InvalidRange", "The requested range is not satisfiable")
        await send_body(send, 416, body, XML_TYPE, headers)
        return
    first, last = span if span is not None else (0, size - 1)
    ctype = content_type or recording.content_type or "application/octet-stream"
    out: Headers = [
        (b"content-length", str(last - first + 1).encode()),
        (b"content-type", ctype.encode()),
        (b"accept-ranges", b"bytes"),
        (b"etag", etag(recording)),
    ]
    if span is not None:
        out.append((b"content-range", b"bytes %d-%d/%d" % (first, last, size)))
    await send({"type": "http.response.start", "status": 206 if span else 200, "headers": out})
    if request.method == "HEAD":
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    pieces = iter_content(recording, first, last + 1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(cancel_on_disconnect, request.receive, tg.cancel_scope)
        if drip:
            await _drip(send, pieces, cut_after or 0, drip)
        else:
            await _pump(send, pieces, cut_after, stall)
        tg.cancel_scope.cancel()


async def _pump(send: Send, pieces: Iterator[bytes], cut_after: int | None, stall: float) -> None:
    sent = 0
    for piece in pieces:
        if cut_after is not None and sent + len(piece) > cut_after:
            head = piece[: cut_after - sent]
            if head:
                await send({"type": "http.response.body", "body": head, "more_body": True})
            with anyio.move_on_after(stall):
                await anyio.sleep_forever()
            return  # returning mid-body makes uvicorn close the connection: the cut
        await send({"type": "http.response.body", "body": piece, "more_body": True})
        sent += len(piece)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _drip(send: Send, pieces: Iterator[bytes], after: int, delay: float) -> None:
    """``after`` bytes at full speed, then one byte every ``delay`` seconds: never idle
    long enough for a read timeout, never done."""
    data = b"".join(pieces)
    await send({"type": "http.response.body", "body": data[:after], "more_body": True})
    for index in range(after, len(data)):
        await anyio.sleep(delay)
        await send({"type": "http.response.body", "body": data[index:index + 1],
                    "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class FileStore:
    """ASGI app serving ``/{bucket}/{call_id}/{recording_id}.{ext}?<signed query>``."""

    def __init__(self, world: World, signer: Signer, faults: Faults | None = None) -> None:
        self.world = world
        self.signer = signer
        self.faults = faults or Faults(DOWNLOAD_FAULTS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        if request.method not in {"GET", "HEAD"}:
            body = xml_error("MethodNotAllowed", "The specified method is not allowed.")
            await send_body(send, 405, body, XML_TYPE, [(b"allow", b"GET, HEAD")])
            return
        now = self.world.clock()
        verdict = self.signer.verify(request.raw_path, request.query, now)
        if verdict is not Verdict.OK:
            await send_body(send, 403, xml_error("AccessDenied", _DENIED[verdict]), XML_TYPE)
            return
        found = self._lookup(request.path)
        if found is None:
            body = xml_error("NoSuchKey", "The specified key does not exist.")
            await send_body(send, 404, body, XML_TYPE)
            return
        rule = self.faults.pick(request.path, now) if self.faults.rules else None
        if rule is not None and await apply_early(rule, receive, send, xml_error_body):
            return
        await self._serve(send, request, *found, rule)

    def _lookup(self, path: str) -> tuple[RecordingScript, str] | None:
        """The recording a path names, and its content type; None when there is none."""
        parts = path.split("/")
        if len(parts) != 4 or parts[1] not in BUCKET_PROVIDERS:
            return None
        script = self.world.get(BUCKET_PROVIDERS[parts[1]], parts[2])
        recording = None if script is None else script.recording(parts[3].rsplit(".", 1)[0])
        if script is None or recording is None:
            return None
        return recording, script.content_type(recording)

    async def _serve(
        self,
        send: Send,
        request: Request,
        recording: RecordingScript,
        content_type: str,
        rule: Rule | None,
    ) -> None:
        kind = rule.kind if rule is not None else None
        cut = recording.size // 2 if rule is None or rule.after is None else rule.after
        if kind is Fault.XML_ERROR_200:
            body = xml_error("InternalError", "We encountered an internal error. Please try again.")
            await send_body(send, 200, body, XML_TYPE)
        elif rule is not None and kind is Fault.WRONG_CONTENT_TYPE:
            await send_recording(send, request, recording, content_type=rule.content_type)
        elif kind is Fault.TRUNCATE_BODY:
            await send_recording(send, request, recording, content_type=content_type, cut_after=cut)
        elif rule is not None and kind is Fault.EXPIRE_MID_DOWNLOAD:
            self.signer.revoke(request.raw_path)
            await send_recording(
                send, request, recording, content_type=content_type, cut_after=cut, stall=rule.stall
            )
        elif rule is not None and kind is Fault.DRIP:
            await send_recording(send, request, recording, content_type=content_type,
                                 cut_after=rule.after or 0, drip=rule.delay)
        else:  # no fault, or SLOW (already waited)
            await send_recording(send, request, recording, content_type=content_type)
