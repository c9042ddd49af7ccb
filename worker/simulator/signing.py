"""Signed recording links in the three shapes real object stores hand out.

Ultravox redirects to Google Cloud Storage (V4: ``X-Goog-Date`` + ``X-Goog-Expires``),
apifycloud hands out S3 presigned URLs (SigV4: ``X-Amz-Date`` + ``X-Amz-Expires``), Envoy a
CloudFront-style link (``Expires=<unix seconds>``). The signature is an HMAC over the raw path
and the raw query minus the signature parameter, so a client that re-encodes any byte of the
URL gets 403, as with the real services.
"""

from __future__ import annotations

import base64
import calendar
import enum
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from worker.simulator.world import DEFAULT_CONTENT_TYPES, RecordingScript


class Verdict(enum.Enum):
    """What the file store makes of a link."""

    OK = "ok"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    REVOKED = "revoked"


_BUCKETS = {
    "ultravox": "ultravox-call-recordings",
    "envoy": "envoy-recordings",
    "apifycloud": "realtimekit-recordings",
}
BUCKET_PROVIDERS = {bucket: provider for provider, bucket in _BUCKETS.items()}
_SIGNATURE_PARAMS = (b"X-Goog-Signature=", b"X-Amz-Signature=", b"Signature=")
_EXTENSIONS = {
    "audio/wav": ".wav",
    "audio/mp4": ".m4a",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "audio/webm": ".weba",
}
_CLOUDFRONT_B64 = bytes.maketrans(b"+=/", b"-_~")


@dataclass(frozen=True, slots=True)
class SignedUrl:
    url: str
    expires_at: float


def _stamp(seconds: int) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(seconds))


def _parse_stamp(text: str) -> int | None:
    try:
        return calendar.timegm(time.strptime(text, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return None


class Signer:
    """Issues and checks links; ``ttl`` is the link lifetime in whole seconds.

    ``base_url`` is the file store's origin, set once its socket is bound.
    """

    def __init__(self, *, ttl: int = 300, secret: bytes | None = None) -> None:
        self.ttl = ttl
        self.base_url = ""
        self._secret = secret or secrets.token_bytes(32)
        self._revoked: set[bytes] = set()

    def object_path(self, provider: str, call_id: str, recording: RecordingScript) -> str:
        bucket = _BUCKETS[provider]
        ext = _EXTENSIONS.get(recording.content_type or DEFAULT_CONTENT_TYPES[provider], ".bin")
        return f"/{bucket}/{quote(call_id, safe='')}/{quote(recording.id, safe='')}{ext}"

    def sign(
        self, provider: str, call_id: str, recording: RecordingScript, now: float
    ) -> SignedUrl:
        """A fresh link to the recording, valid ``ttl`` seconds from the whole second ``now``."""
        path = self.object_path(provider, call_id, recording)
        self._revoked.discard(path.encode())
        signed_at = int(now)
        expires = signed_at + self.ttl
        day = _stamp(signed_at)[:8]
        if provider == "ultravox":
            unsigned = (
                "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=callwatch-sim%40"
                f"callwatch-sim.iam.gserviceaccount.com%2F{day}%2Fauto%2Fstorage%2Fgoog4_request"
                f"&X-Goog-Date={_stamp(signed_at)}&X-Goog-Expires={self.ttl}"
                "&X-Goog-SignedHeaders=host"
            )
            query = f"{unsigned}&X-Goog-Signature={self._mac(path, unsigned).hex()}"
        elif provider == "apifycloud":
            unsigned = (
                "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIASIMULATOR00000000%2F"
                f"{day}%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date={_stamp(signed_at)}"
                f"&X-Amz-Expires={self.ttl}&X-Amz-SignedHeaders=host"
            )
            query = f"{unsigned}&X-Amz-Signature={self._mac(path, unsigned).hex()}"
        else:
            key_pair = "Key-Pair-Id=K2SIMULATOR0000"
            mac = self._mac(path, f"Expires={expires}&{key_pair}")
            token = base64.b64encode(mac).translate(_CLOUDFRONT_B64).decode()
            query = f"Expires={expires}&Signature={token}&{key_pair}"
        return SignedUrl(url=f"{self.base_url}{path}?{query}", expires_at=float(expires))

    def verify(self, raw_path: bytes, query: bytes, now: float) -> Verdict:
        """Check a link exactly as received: signature first, then revocation, then expiry."""
        parts = query.split(b"&")
        signature = next((p for p in parts if p.startswith(_SIGNATURE_PARAMS)), None)
        if signature is None:
            return Verdict.BAD_SIGNATURE
        name, _, given = signature.partition(b"=")
        unsigned = b"&".join(p for p in parts if p is not signature)
        mac = self._mac_bytes(raw_path, unsigned)
        if name == b"Signature":
            expected = base64.b64encode(mac).translate(_CLOUDFRONT_B64)
        else:
            expected = mac.hex().encode()
        if not hmac.compare_digest(given, expected):
            return Verdict.BAD_SIGNATURE
        if raw_path in self._revoked:
            return Verdict.REVOKED
        expires_at = _expiry(dict(parse_qsl(unsigned.decode("latin-1"))))
        if expires_at is None or now >= expires_at:
            return Verdict.EXPIRED
        return Verdict.OK

    def revoke(self, raw_path: bytes) -> None:
        """Kill every link to this object issued so far, until the next ``sign`` for it."""
        self._revoked.add(raw_path)

    def _mac(self, path: str, query: str) -> bytes:
        return self._mac_bytes(path.encode(), query.encode())

    def _mac_bytes(self, path: bytes, query: bytes) -> bytes:
        return hmac.new(self._secret, path + b"?" + query, hashlib.sha256).digest()


def _expiry(params: dict[str, str]) -> int | None:
    for prefix in ("X-Goog-", "X-Amz-"):
        if prefix + "Date" in params:
            signed_at = _parse_stamp(params[prefix + "Date"])
            lifetime = params.get(prefix + "Expires", "")
            if signed_at is None or not lifetime.isdigit():
                return None
            return signed_at + int(lifetime)
    expires = params.get("Expires", "")
    return int(expires) if expires.isdigit() else None
