"""Standard Webhooks signatures: known vectors, and the reference library verifying ours."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.webhooks.support import SECRET, SECRET_2
from worker.secrets import Secret
from worker.webhooks.signing import headers, secret_key, signature

# The example from the Standard Webhooks specification (and the reference library's tests).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 - published test vector
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_specifications_example_signature() -> None:
    """Our signature of the spec's example message is the spec's signature, byte for byte."""
    key = secret_key(SPEC_SECRET)
    assert signature(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY, [key]) == SPEC_SIGNATURE


def test_secret_key_is_the_base64_after_the_prefix() -> None:
    """whsec_<base64>: the HMAC key is the decoded bytes, from a Secret or a plain string."""
    assert secret_key(Secret(SECRET)) == b"callwatch-webhook-test-secret-1"
    assert secret_key(SECRET_2) == b"callwatch-webhook-test-secret-2"


def test_headers_carry_id_timestamp_signature_and_json_type() -> None:
    """Every attempt sends the three Standard Webhooks headers and Content-Type JSON."""
    sent = headers("msg_1", 1700000000, b"{}", [secret_key(SECRET)])
    assert sent["webhook-id"] == "msg_1"
    assert sent["webhook-timestamp"] == "1700000000"
    assert sent["webhook-signature"].startswith("v1,")
    assert sent["content-type"] == "application/json"


def test_reference_library_verifies_our_signature() -> None:
    """standardwebhooks.Webhook(secret).verify accepts our headers and returns the body."""
    body = '{"type":"call.ended","data":{"call_id":"é"}}'.encode()
    sent = headers("msg_abc", int(time.time()), body, [secret_key(SECRET)])
    assert Webhook(SECRET).verify(body, sent) == {"type": "call.ended",
                                                   "data": {"call_id": "é"}}


def test_during_rotation_either_secret_verifies() -> None:
    """With two secrets both sign: a consumer holding only the old or only the new one verifies."""
    body = b'{"type":"call.started"}'
    sent = headers("msg_rot", int(time.time()), body, [secret_key(SECRET), secret_key(SECRET_2)])
    assert len(sent["webhook-signature"].split(" ")) == 2
    Webhook(SECRET).verify(body, sent)
    Webhook(SECRET_2).verify(body, sent)
    stranger = "whsec_" + base64.b64encode(b"somebody-else-entirely-123").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(stranger).verify(body, sent)


def test_any_change_breaks_the_signature() -> None:
    """A changed body, id or timestamp no longer verifies: the signature covers all three."""
    now = int(time.time())
    body = b'{"n":1}'
    sent = headers("msg_1", now, body, [secret_key(SECRET)])
    for tampered_body, changes in [(b'{"n":2}', {}), (body, {"webhook-id": "msg_2"}),
                                   (body, {"webhook-timestamp": str(now + 1)})]:
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(tampered_body, {**sent, **changes})


def test_nothing_to_sign_with_is_an_error() -> None:
    """Signing without a key is refused rather than sending an unsigned webhook."""
    with pytest.raises(ValueError, match="no key"):
        signature("msg_1", 1, b"{}", [])
