"""Standard Webhooks signatures (https://www.standardwebhooks.com), exactly as the spec says.

    webhook-id:        the event's id, the same on every retry and replay (consumers dedupe)
    webhook-timestamp: unix seconds of this attempt (consumers reject stale replays)
    webhook-signature: "v1,<base64 HMAC-SHA256(key, f'{id}.{timestamp}.{body}')>" per key,
                       space-separated: several while a secret is being rotated

A secret is ``whsec_`` + base64 of the key bytes. Keys are bytes from here on and never
logged; ``Secret`` (config) is revealed only in ``secret_key``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

from worker.secrets import Secret

PREFIX = "whsec_"


def secret_key(secret: Secret | str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (config validated it is base64 already)."""
    raw = secret.reveal() if isinstance(secret, Secret) else secret
    return base64.b64decode(raw.removeprefix(PREFIX), validate=True)


def signature(msg_id: str, timestamp: int, body: bytes, keys: Sequence[bytes]) -> str:
    """The ``webhook-signature`` value: one ``v1,`` signature per key, in the keys' order."""
    if not keys:
        raise ValueError("nothing to sign with: no key")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )


def headers(msg_id: str, timestamp: int, body: bytes, keys: Sequence[bytes]) -> dict[str, str]:
    """Every header of one signed delivery attempt."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(msg_id, timestamp, body, keys),
    }
