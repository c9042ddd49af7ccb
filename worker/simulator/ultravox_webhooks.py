"""What Ultravox's own webhooks look like on the wire, for tests, the demo and benchmarks.

The simulator does not push them by itself (``World.end_call`` only changes state); a test
that wants event-driven end detection builds the request here and posts it to the daemon's
``/v1/providers/ultravox/webhook``. Written from PROVIDERS.md alone, independently of the
daemon's verifier, so the two can disagree if either is wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from worker.simulator.ultravox import call_object, iso
from worker.simulator.world import CallScript


def ultravox_webhook(script: CallScript, event: str, secrets: list[str], now: float,
                     *, sent_at: float | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers Ultravox sends for ``event`` about ``script`` at ``now``."""
    body = json.dumps({"event": event, "call": call_object(script, now)}).encode()
    return body, signed_headers(body, secrets, now if sent_at is None else sent_at)


def signed_headers(body: bytes, secrets: list[str], sent_at: float) -> dict[str, str]:
    """Ultravox's headers for ``body``: one signature per secret, comma-separated (a rotation
    lists several)."""
    stamp = iso(sent_at)
    signatures = [hmac.new(secret.encode(), body + stamp.encode(), hashlib.sha256).hexdigest()
                  for secret in secrets]
    return {"Content-Type": "application/json",
            "X-Ultravox-Webhook-Timestamp": stamp,
            "X-Ultravox-Webhook-Signature": ",".join(signatures)}
